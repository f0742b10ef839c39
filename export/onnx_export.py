"""slim generator → ONNX: static shape, opset 18, one file, simplified with onnxsim."""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from coronet.files import atomic_write_bytes
from export.errors import ExportError
from export.passes import ONNX_PASSES, apply_passes

OPSET = 18


@contextlib.contextmanager
def quiet_logger(name: str) -> Iterator[None]:
    """Silence a library's INFO/WARNING log lines for the duration (restored afterwards)."""
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


@dataclass(frozen=True)
class OnnxFile:
    path: Path
    opset: int
    simplified: bool
    warnings: list[str] = field(default_factory=list)


def to_onnx(
    model: nn.Module,
    out_dir: str | Path,
    input_shape: tuple[int, ...],
    opset: int = OPSET,
    simplify: bool = True,
    filename: str = "model.onnx",
) -> OnnxFile:
    """Export `model` (eval mode, export passes applied) for a fixed `input_shape`."""
    import onnx

    if opset < 17:
        raise ExportError(f"opset {opset} is too old; use 17 or newer")
    model = apply_passes(model, ONNX_PASSES)
    sample = torch.zeros(input_shape)
    with warnings.catch_warnings(), quiet_logger("torch.onnx"):
        warnings.simplefilter("ignore")
        try:
            program = torch.onnx.export(
                model,
                (sample,),
                dynamo=True,
                opset_version=opset,
                input_names=["input"],
                output_names=["output"],
                external_data=False,
                verbose=False,
                optimize=True,
            )
        except Exception as exc:
            raise ExportError(f"ONNX export failed: {str(exc).splitlines()[0][:200]}") from None
    buffer = io.BytesIO()
    program.save(buffer, external_data=False)
    proto = onnx.load_from_string(buffer.getvalue())
    notes: list[str] = []
    simplified = False
    if simplify:
        try:
            from onnxsim import simplify as onnxsim_simplify

            candidate, ok = onnxsim_simplify(proto)
            if ok:
                proto, simplified = candidate, True
            else:
                notes.append("onnxsim could not verify the simplified graph; kept the unsimplified one")
        except Exception as exc:  # onnxsim raises bare RuntimeErrors from C++
            notes.append(f"onnxsim failed ({str(exc).splitlines()[0][:160]}); kept the unsimplified graph")
    for note in notes:
        warnings.warn(note, stacklevel=2)
    onnx.checker.check_model(proto)
    path = Path(out_dir) / filename
    atomic_write_bytes(path, lambda f: f.write(proto.SerializeToString()))
    return OnnxFile(path, opset, simplified, notes)
