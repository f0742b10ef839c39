"""Writing a bundle: the exported files of one generator and `manifest.json`, written last
(reading one: `coronet.bundle.Bundle`, re-exported here). Exporting again into a folder first
removes its manifest, so an interrupted export never looks finished.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from compress.formats import import_generator
from compress.hyper import HyperGenerator
from compress.macs import count_macs
from compress.metrics import paired_metrics
from compress.models import example_input_shape
from compress.plan import ChannelPlan, ConvSpec
from compress.slim import slim_generator
from coronet.bundle import (
    CHECK_INPUT,
    FILENAMES,
    MANIFEST,
    PRECISIONS,
    SCHEMA_VERSION,
    Bundle,
    file_key,
    file_name,
    tool_versions,
)
from coronet.files import atomic_write_bytes, sha256_file
from coronet.images import png_bytes
from export.errors import ExportError
from export.integer import check_integer
from export.litert import xnnpack_refused
from export.onnx_export import to_onnx
from export.parity import check_parity, random_inputs
from export.passes import phase_kernels
from export.quantize import onnx_fp16, onnx_int8
from export.runtimes import make_runner
from export.structure import check_structure
from export.tflite_export import to_tflite, xnnpack_partitions

SAMPLES = "samples"  # the sample images' folder in a bundle

# What each target can write: ExecuTorch's XNNPACK lowering here has no fp16 path of ours (yet).
TARGET_PRECISIONS = {"onnx": PRECISIONS, "tflite": PRECISIONS, "executorch": ("fp32", "int8")}


def to_executorch(*args: Any, **kwargs: Any):
    from export.executorch_export import to_executorch as convert  # the executorch extra, imported late

    return convert(*args, **kwargs)


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
    calibration: list[np.ndarray] | None = None,
    held_out: tuple[list[np.ndarray], list[np.ndarray] | None] | None = None,
    quality_budget_db: float = 0.5,
    int8_io: bool = False,
    int8_norm: str = "integer",
    sample_images: int = 8,
    latency_model: Any = None,
    target_ms: float | None = None,
) -> Bundle:
    """Export a slim (or dense) generator, check every file, and write the manifest last.

    `source` is a generator module or a checkpoint path (a hyper checkpoint is slimmed first);
    `name` labels the model in reports (default: the folder's name). Every target gets an fp32
    file; `precision` fp16 or int8 adds a file of that precision per target ("tflite-int8", ...),
    int8 being full integer, calibrated on `calibration` (NCHW images of one). With `held_out`
    (inputs and, when the task has them, true outputs), each file's quality on the task is
    measured in its own runtime, and a precision losing more than `quality_budget_db` of PSNR
    against its runtime's fp32 file is flagged. `int8_io` and `int8_norm`: see `to_tflite`.
    The first `sample_images` held-out inputs (or calibration inputs, for DCGAN's noise), their
    true outputs and every file's outputs are written as PNGs under samples/ for the report.
    With a `latency_model` (compress.latency), the plan's predicted latency on its device is
    recorded (and the search's `target_ms`), for the report to set beside what the bench measures.
    """
    unknown = [t for t in targets if t not in FILENAMES]
    if unknown or not targets:
        raise ExportError(f"unknown export targets {unknown or '(none)'}; choose from onnx, tflite, executorch")
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
    for runtime in FILENAMES:  # our files of another precision, from an earlier export here
        for stale in PRECISIONS:
            (out / file_name(runtime, stale)).unlink(missing_ok=True)
    shutil.rmtree(out / SAMPLES, ignore_errors=True)
    inputs = random_inputs(shape, parity_inputs, noise=plan.arch == "dcgan")
    # int8 is judged on images like those it was calibrated on, not on uniform noise
    images = (held_out[0] if held_out else calibration or [])[:parity_inputs]
    precisions = ("fp32",) if precision == "fp32" else ("fp32", precision)
    jobs = [(runtime, p) for runtime in targets for p in precisions if p in TARGET_PRECISIONS[runtime]]
    files: dict[str, Any] = {}
    parity: dict[str, Any] = {}
    structure: dict[str, Any] = {}
    from tqdm import tqdm

    for runtime, file_precision in tqdm(jobs, desc="export", disable=None if progress else True, leave=False):
        key, filename = file_key(runtime, file_precision), file_name(runtime, file_precision)
        entry: dict[str, Any] = {"runtime": runtime}
        if runtime == "onnx":
            if file_precision == "fp32":
                written = to_onnx(model, out, shape, filename=filename)
                entry.update(opset=written.opset, simplified=written.simplified, warnings=written.warnings)
                path = written.path
            elif file_precision == "fp16":
                path = onnx_fp16(out / FILENAMES["onnx"], out / filename)
            else:
                path = onnx_int8(out / FILENAMES["onnx"], out / filename, calibration or [], int8_io)
            file_layout = "NCHW"
        elif runtime == "tflite":
            path = to_tflite(model, out, shape, precision=file_precision, layout=layout, filename=filename,
                             calibration=calibration, int8_io=int8_io, int8_norm=int8_norm).path  # fmt: skip
            entry["xnnpack_partitions"] = xnnpack_partitions(path)
            if entry["xnnpack_partitions"] != 1:  # which ops split the graph, by type
                entry["xnnpack_refused"] = xnnpack_refused(path)
            file_layout = layout
        else:
            pte = to_executorch(model, out, shape, file_precision, filename, calibration)
            path, file_layout = pte.path, "NCHW"
            entry.update(xnnpack_calls=pte.delegated, portable_ops=pte.left_out)
        if file_precision == "int8" and runtime != "executorch":  # a .pte's graph is inside XNNPACK blobs
            entry["integer"] = check_integer(path, runtime).to_dict()
        if runtime != "executorch":
            structure[key] = check_structure(path, runtime, plan).to_dict()
        runner = make_runner(runtime, path, threads=1, layout=file_layout)
        checked_on = images if file_precision == "int8" and images else inputs
        parity[key] = check_parity(model, runner, checked_on, key, file_precision).to_dict()
        files[key] = {
            "path": path.name,
            "sha256": sha256_file(path),
            "bytes": path.stat().st_size,
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
        "layers": conv_layers(model),
        "files": files,
        "parity": parity,
        "structure": structure,
        "tools": tool_versions(),
        "source": source_record,
    }
    if latency_model is not None:
        predicted = latency_model.predict(plan.widths)
        manifest["latency_prediction"] = {"predicted_ms": predicted, "target_ms": target_ms,
                                          **asdict(latency_model.key),
                                          "model_measured": latency_model.measured}  # fmt: skip
    left_out = [file_key(rt, precision) for rt in targets if precision not in TARGET_PRECISIONS[rt]]
    if left_out:  # said in the manifest rather than silently missing
        manifest["not_exported"] = {key: "no export of this runtime in this precision yet" for key in left_out}
    sample_inputs = held_out[0] if held_out else (calibration or [])[:sample_images]
    outputs = _file_outputs(out, files, sample_inputs) if sample_inputs else {}
    if held_out:
        manifest["quality"] = file_quality(files, outputs, held_out[1], quality_budget_db)
    if sample_images and sample_inputs:
        truths = held_out[1] if held_out else None
        manifest["samples"] = _write_samples(out, sample_inputs, truths, outputs, sample_images)
    manifest["check_input"] = _write_check_input(out, (images or inputs)[0])
    atomic_write_bytes(out / MANIFEST, lambda f: f.write((json.dumps(manifest, indent=2) + "\n").encode()))
    return Bundle(out, manifest)


def conv_layers(model: nn.Module) -> list[dict[str, Any]]:
    """The generator's convolutions in forward order (module pre-order is forward order for these
    generators, the U-Net's nested blocks included): what a per-op profile is laid against.
    `phases`: how many convs the TFLite file computes a transposed conv with (export.passes)."""
    layers = []
    for name, m in model.named_modules():
        spec = getattr(m, "spec", None)
        if not isinstance(spec, ConvSpec) or not isinstance(m, nn.Conv2d | nn.ConvTranspose2d):
            continue
        kernels = phase_kernels(spec.kernel, spec.stride, spec.padding, spec.output_padding)
        layers.append({"name": name, "group": spec.out_group, "in": m.in_channels, "out": m.out_channels,
                       "kernel": spec.kernel, "stride": spec.stride, "transposed": spec.transposed,
                       "phases": len(kernels) if spec.transposed and kernels else 1})  # fmt: skip
    return layers


def _write_check_input(out: Path, x: np.ndarray) -> dict[str, Any]:
    """The input a phone runs each file on (NCHW float32, one image like the task's), so that the
    host can compare what the phone computed with its own fp32 output (device_bench)."""
    import io

    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(x, dtype=np.float32), allow_pickle=False)
    atomic_write_bytes(out / CHECK_INPUT, lambda f: f.write(buffer.getvalue()))
    path = out / CHECK_INPUT
    return {"path": CHECK_INPUT, "sha256": sha256_file(path), "bytes": path.stat().st_size, "shape": list(x.shape)}


def _file_outputs(folder: Path, files: dict[str, Any], inputs: list[np.ndarray]) -> dict[str, torch.Tensor]:
    """Every file's outputs on `inputs`, each file run in its own runtime (NCHW)."""
    outputs = {}
    for key, entry in files.items():
        runner = make_runner(entry["runtime"], folder / entry["path"], threads=1, layout=entry["layout"])
        outputs[key] = torch.from_numpy(np.concatenate([runner(x) for x in inputs]))
    return outputs


def _write_samples(
    out: Path, inputs: list[np.ndarray], truths: list[np.ndarray] | None, outputs: dict[str, torch.Tensor], count: int
) -> dict[str, Any]:
    """samples/<column>-<i>.png for the first `count` inputs (when they are images), their true
    outputs and each file's outputs; the manifest's record of them, column by column."""
    count = min(count, len(inputs))
    columns: dict[str, list[np.ndarray]] = {}
    if inputs[0].ndim == 4 and inputs[0].shape[-1] > 1:  # an image, not DCGAN's noise vector
        columns["input"] = [x[0] for x in inputs[:count]]
    if truths:
        columns["truth"] = [y[0] for y in truths[:count]]
    for key, values in outputs.items():
        columns[key] = [values[i].numpy() for i in range(count)]
    (out / SAMPLES).mkdir(exist_ok=True)
    record: dict[str, list[str]] = {}
    for name, images in columns.items():
        record[name] = []
        for i, image in enumerate(images):
            path = f"{SAMPLES}/{name}-{i}.png"
            atomic_write_bytes(out / path, lambda f, image=image: f.write(png_bytes(image)))
            record[name].append(path)
    return {"images": count, "columns": record}


def file_quality(
    files: dict[str, Any], outputs: dict[str, torch.Tensor], truths: list[np.ndarray] | None, budget_db: float
) -> dict[str, Any]:
    """Each file's quality on the held-out task, from its `outputs` run in its own runtime: L1
    and PSNR against the true outputs (when the task has them), and how far it is from its
    runtime's fp32 file (PSNR, and the loss of task PSNR, flagged past `budget_db`)."""
    truth = torch.from_numpy(np.concatenate(truths)) if truths else None
    quality: dict[str, Any] = {"budget_db": budget_db, "images": len(next(iter(outputs.values()))), "files": {}}
    for key, entry in files.items():
        record: dict[str, Any] = {"precision": entry["precision"]}
        if truth is not None:
            record.update(paired_metrics(outputs[key], truth))
        reference = file_key(entry["runtime"])
        if key != reference and reference in outputs:
            record["psnr_vs_fp32"] = paired_metrics(outputs[key], outputs[reference])["psnr"]
            if truth is not None:
                record["psnr_loss_db"] = quality["files"][reference]["psnr"] - record["psnr"]
                record["over_budget"] = record["psnr_loss_db"] > budget_db
        quality["files"][key] = record
    return quality


__all__ = ["FILENAMES", "MANIFEST", "SCHEMA_VERSION", "Bundle", "export_bundle", "tool_versions"]
