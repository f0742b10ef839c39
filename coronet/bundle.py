"""A bundle as its readers see it (the bench, the agent, the service, the report): the exported
files of one generator and `manifest.json`, written last by `export.export_bundle`.

A folder without a manifest, or whose files do not match it, is incomplete: an interrupted export
never looks finished. A manifest names files inside its bundle only (relative paths, no `..`, no
link that leads out): a crafted manifest cannot make a reader push, serve or overwrite any other
file of the machine.
"""

from __future__ import annotations

import json
import platform
import re
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path, PurePosixPath
from typing import Any

from coronet.errors import ExportError, IncompleteBundleError
from coronet.files import sha256_file

MANIFEST = "manifest.json"
CHECK_INPUT = "check_input.npy"  # the input every file is run on where its outputs are checked
SCHEMA_VERSION = 1
FILENAMES = {"onnx": "model.onnx", "tflite": "model.tflite", "executorch": "model.pte"}
PRECISIONS = ("fp32", "fp16", "int8")
# The form of the graph each runtime's export writes, numbered: one more whenever the export
# passes change what that runtime runs (a latency model measured on the older graph is stale).
# tflite 2: phase convs, pads and norms on channels-last views, greedy layout (U-Net 20-25 %
# faster, ResNet up to 8 %). tflite 3: int8 RSQRT as hinge tables (an int8 ResNet one XNNPACK
# partition, was one per norm). executorch 2: int8 norms' squares and variance means in float.
# tflite 4: float norms' spatial means row by row (2-4 % faster; export/passes.py).
# (Numbered per runtime: a change to one precision's graph bumps them all.)
GRAPH_FORM_KEY = "coronet-export-graph"
GRAPH_FORMS = {"onnx": 1, "tflite": 4, "executorch": 2}
# A bundle's files are keyed by runtime and precision: "onnx", "tflite" (fp32), "onnx-int8", ...
FILE_KEY = re.compile(r"^(onnx|tflite|executorch)(?:-(fp16|int8))?$")


def file_key(runtime: str, precision: str = "fp32") -> str:
    """The manifest key of a runtime's file in a precision: "tflite", "tflite-int8", ..."""
    return runtime if precision == "fp32" else f"{runtime}-{precision}"


def key_parts(key: str) -> tuple[str, str]:
    """(runtime, precision) of a manifest file key."""
    m = FILE_KEY.match(key)
    if m is None:
        raise ExportError(f"{key!r} is not a bundle file key (runtime or runtime-precision, e.g. tflite-int8)")
    return m.group(1), m.group(2) or "fp32"


def file_name(runtime: str, precision: str = "fp32") -> str:
    stem, suffix = FILENAMES[runtime].split(".")
    return FILENAMES[runtime] if precision == "fp32" else f"{stem}-{precision}.{suffix}"


TOOLS = ("torch", "onnx", "onnxruntime", "onnxsim", "litert-torch", "ai-edge-litert", "ai-edge-quantizer", "executorch")


def tool_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in TOOLS:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def member_path(name: Any, where: str = MANIFEST) -> PurePosixPath:
    """A manifest's file name as a path inside the bundle; anything else is refused with one line."""
    if not isinstance(name, str) or not name or "\\" in name or "\0" in name:
        raise IncompleteBundleError(f"{where} names a file {name!r}: expected a plain relative path")
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts or not path.parts:  # no parts: "." names the bundle itself
        raise IncompleteBundleError(f"{where} names {name!r}, outside its bundle: only files inside the bundle")
    return path


def inside(folder: Path, name: Any, where: str = MANIFEST) -> Path:
    """`folder / name` after checking that the name stays inside `folder`, links included."""
    target = folder / member_path(name, where)
    root = folder.resolve()
    if not target.resolve().is_relative_to(root):
        raise IncompleteBundleError(f"{where} names {name!r}, a link that leads outside its bundle")
    return target


def check_manifest(manifest: Any, where: str = MANIFEST) -> dict[str, Any]:
    """The manifest's shape: a schema we read, `files` with a path, size and digest each."""
    if not isinstance(manifest, dict):
        raise IncompleteBundleError(f"{where} is not a JSON object; export again")
    if manifest.get("schema_version") != SCHEMA_VERSION:
        raise IncompleteBundleError(f"{where} has schema {manifest.get('schema_version')}, expected {SCHEMA_VERSION}")
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        raise IncompleteBundleError(f"{where} lists no files; export again")
    for runtime, entry in files.items():
        if not isinstance(runtime, str) or not FILE_KEY.match(runtime):
            raise IncompleteBundleError(
                f"{where} lists a {runtime!r} file; known: onnx, tflite, executorch, each -fp16 or -int8"
            )
        if not isinstance(entry, dict) or not isinstance(entry.get("bytes"), int) or isinstance(entry["bytes"], bool):
            raise IncompleteBundleError(f"{where}: the {runtime} entry has no byte count; export again")
        digest = entry.get("sha256")
        if not isinstance(digest, str) or len(digest) != 64 or not all(c in "0123456789abcdef" for c in digest):
            raise IncompleteBundleError(f"{where}: the {runtime} entry has no SHA-256; export again")
        member_path(entry.get("path"), where)
    check = manifest.get("check_input")
    if check is not None:
        digest = check.get("sha256") if isinstance(check, dict) else None
        if not isinstance(digest, str) or len(digest) != 64 or not isinstance(check.get("bytes"), int):
            raise IncompleteBundleError(f"{where}: the check input has no size or SHA-256; export again")
        member_path(check.get("path"), where)
    return manifest


def members(manifest: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every file of a (checked) bundle but the manifest: the model files by key, and the check
    input. What is verified, uploaded and downloaded."""
    found = dict(manifest["files"])
    if manifest.get("check_input") is not None:
        found["check_input"] = manifest["check_input"]
    return found


@dataclass
class Bundle:
    path: Path
    manifest: dict[str, Any]

    @classmethod
    def open(cls, path: str | Path, verify: bool = True) -> Bundle:
        """Read a finished bundle; with `verify`, check every file's size and SHA-256."""
        path = Path(path)
        manifest_path = path / MANIFEST
        if not manifest_path.is_file():
            raise IncompleteBundleError(f"{path} has no {MANIFEST}: the export did not finish; export it again")
        try:
            manifest = json.loads(manifest_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise IncompleteBundleError(f"{manifest_path} is not valid JSON ({exc}); export again") from None
        check_manifest(manifest, str(manifest_path))
        for runtime, entry in members(manifest).items():
            file = inside(path, entry["path"], str(manifest_path))
            if verify and (
                not file.is_file() or file.stat().st_size != entry["bytes"] or sha256_file(file) != entry["sha256"]
            ):
                raise IncompleteBundleError(f"{file} does not match {MANIFEST} ({runtime}); export again")
        return cls(path, manifest)

    @property
    def plan(self):
        """The generator's ChannelPlan (needs the compress package, hence torch)."""
        from compress.plan import ChannelPlan

        return ChannelPlan.from_dict(self.manifest["model"]["plan"])

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.manifest["input"]["shape"])

    @property
    def runtimes(self) -> list[str]:
        """The runtimes the bundle has files for (each in one or more precisions)."""
        return list(dict.fromkeys(key_parts(key)[0] for key in self.manifest["files"]))

    @property
    def keys(self) -> list[str]:
        """Every file's key: "onnx", "tflite", "tflite-int8", ..."""
        return list(self.manifest["files"])

    def precisions(self, runtime: str) -> list[str]:
        return [key_parts(key)[1] for key in self.keys if key_parts(key)[0] == runtime]

    def file(self, key: str) -> Path:
        """The file of a key ("onnx", "tflite-int8", ...)."""
        if key not in self.manifest["files"]:
            raise ExportError(f"the bundle {self.path} has no {key} file; it has {', '.join(self.keys)}")
        return inside(self.path, self.manifest["files"][key]["path"])

    def runner(self, key: str, threads: int = 1):
        from export.runtimes import make_runner

        path = self.file(key)  # a key the bundle lacks is one clear error
        layout = self.manifest["files"][key].get("layout", "NCHW")
        return make_runner(key_parts(key)[0], path, threads, layout)

    def check_input(self):
        """The NCHW float32 input the bundle's outputs are checked on (None in bundles from
        before it existed), verified against the manifest."""
        import numpy as np

        record = self.manifest.get("check_input")
        if record is None:
            return None
        path = inside(self.path, record["path"])
        if not path.is_file() or sha256_file(path) != record["sha256"]:
            raise IncompleteBundleError(f"{path} does not match {MANIFEST}; export again")
        x = np.load(path, allow_pickle=False)
        if x.dtype != np.float32 or list(x.shape) != list(self.input_shape):
            raise IncompleteBundleError(f"{path} is not a {list(self.input_shape)} float32 input; export again")
        return x

    def run(self, x, key: str):
        """One inference: NCHW float32 in, NCHW out, whatever the file's own layout."""
        return self.runner(key)(x)
