"""Writing a bundle: the exported files of one generator and `manifest.json`, written last
(reading one: `coronet.bundle.Bundle`, re-exported here). Exporting again into a folder first
removes its manifest, so an interrupted export never looks finished.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from torch import nn

from compress.formats import import_generator
from compress.hyper import HyperGenerator
from compress.macs import count_macs
from compress.models import example_input_shape
from compress.plan import ChannelPlan
from compress.slim import slim_generator
from coronet.bundle import FILENAMES, MANIFEST, SCHEMA_VERSION, Bundle, tool_versions
from coronet.files import atomic_write_bytes, sha256_file
from export.errors import ExportError
from export.onnx_export import to_onnx
from export.parity import check_parity, random_inputs
from export.runtimes import make_runner
from export.structure import check_structure
from export.tflite_export import PRECISIONS, to_tflite, xnnpack_partitions


def _load_source(source: str | Path | nn.Module) -> tuple[nn.Module, dict[str, Any], dict[str, Any] | None]:
    """(plain generator in eval mode, its training config, source file record). A path is read
    by `import_generator`: our checkpoints (a hyper one is slimmed) or an official generator file."""
    if isinstance(source, nn.Module):
        if not isinstance(getattr(source, "plan", None), ChannelPlan):
            raise ExportError("export needs a generator built from a channel plan (build_generator or slim_generator)")
        model = slim_generator(source.eval()) if isinstance(source, HyperGenerator) else source
        return model.eval(), {}, None
    path = Path(source)
    imported = import_generator(path)
    record = {"path": str(path), "sha256": sha256_file(path), "format": imported.source}
    return imported.model.eval(), imported.config, record


def _check_input(model: nn.Module, shape: tuple[int, ...]) -> None:
    plan: ChannelPlan = model.plan
    try:
        with torch.no_grad():
            out = model(torch.zeros(shape))
    except RuntimeError as exc:
        raise ExportError(
            f"the {plan.arch} generator cannot take an input of shape {list(shape)} "
            f"({str(exc).splitlines()[0][:120]}); pick another --image-size"
        ) from None
    if plan.arch != "dcgan" and out.shape[-2:] != shape[-2:]:
        factor = 4 if plan.arch == "resnet" else 2 ** plan.sizes["num_downs"]
        raise ExportError(
            f"the {plan.arch} generator maps {shape[-1]}x{shape[-2]} to {out.shape[-1]}x{out.shape[-2]}; "
            f"use an image size that is a multiple of {factor}"
        )


def export_bundle(
    source: str | Path | nn.Module,
    out_dir: str | Path,
    targets: tuple[str, ...] = ("onnx", "tflite"),
    image_size: int | None = None,
    precision: str = "fp32",
    layout: str = "NCHW",
    parity_inputs: int = 3,
    progress: bool = False,
    name: str = "",
) -> Bundle:
    """Export a slim (or dense) generator, check every file, and write the manifest last.

    `source` is a generator module or a checkpoint path (a hyper checkpoint is slimmed first);
    `name` labels the model in reports (default: the folder's name).
    """
    unknown = [t for t in targets if t not in FILENAMES]
    if unknown or not targets:
        raise ExportError(f"unknown export targets {unknown or '(none)'}; choose from onnx, tflite")
    if precision not in PRECISIONS:
        raise ExportError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    model, config, source_record = _load_source(source)
    plan: ChannelPlan = model.plan
    size = image_size or int(config.get("data", {}).get("image_size", 256))
    shape = example_input_shape(plan, size)
    _check_input(model, shape)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / MANIFEST).unlink(missing_ok=True)  # from here on the folder is incomplete
    inputs = random_inputs(shape, parity_inputs, noise=plan.arch == "dcgan")
    files: dict[str, Any] = {}
    parity: dict[str, Any] = {}
    structure: dict[str, Any] = {}
    from tqdm import tqdm

    for target in tqdm(targets, desc="export", disable=None if progress else True, leave=False):
        if target == "onnx":
            written = to_onnx(model, out, shape, filename=FILENAMES["onnx"])
            entry = {"opset": written.opset, "simplified": written.simplified, "warnings": written.warnings}
            file_precision, file_layout = "fp32", "NCHW"
        else:
            written = to_tflite(model, out, shape, precision=precision, layout=layout, filename=FILENAMES["tflite"])
            entry = {"xnnpack_partitions": xnnpack_partitions(written.path)}
            file_precision, file_layout = precision, layout
        structure[target] = check_structure(written.path, target, plan).to_dict()
        runner = make_runner(target, written.path, threads=1, layout=file_layout)
        parity[target] = check_parity(model, runner, inputs, target, file_precision).to_dict()
        files[target] = {
            "path": written.path.name,
            "sha256": sha256_file(written.path),
            "bytes": written.path.stat().st_size,
            "precision": file_precision,
            "layout": file_layout,
            **entry,
        }
    manifest = {
        "schema_version": SCHEMA_VERSION,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "model": {"name": name or out.resolve().name, "arch": plan.arch, "plan": plan.to_dict()},
        "input": {"shape": list(shape), "layout": "NCHW", "dtype": "float32"},
        "cost": count_macs(model, shape).to_dict(),
        "files": files,
        "parity": parity,
        "structure": structure,
        "tools": tool_versions(),
        "source": source_record,
    }
    atomic_write_bytes(out / MANIFEST, lambda f: f.write((json.dumps(manifest, indent=2) + "\n").encode()))
    return Bundle(out, manifest)


__all__ = ["FILENAMES", "MANIFEST", "SCHEMA_VERSION", "Bundle", "export_bundle", "tool_versions"]
