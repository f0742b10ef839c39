"""slim generator → TFLite with litert-torch (imported only here), checked with LiteRT."""

from __future__ import annotations

import contextlib
import os
import signal
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from coronet.bundle import PRECISIONS
from coronet.files import atomic_write_bytes
from export.errors import ExportError
from export.litert import interpreter, op_counts, quiet_native_output, xnnpack_partitions
from export.passes import TFLITE_INT8_PASSES, TFLITE_PASSES, apply_passes
from export.quantize import tflite_int8

LAYOUTS = ("NCHW", "NHWC")
INT8_NORMS = ("integer", "float")  # how an int8 file computes InstanceNorm's 1/sqrt(var + eps)


@dataclass(frozen=True)
class TfliteFile:
    path: Path
    precision: str
    layout: str


@contextlib.contextmanager
def _interrupt_after(what: str):
    """Ctrl-C while the converter runs is taken after it: a KeyboardInterrupt raised inside
    litert-torch's native passes used to end the process by SIGSEGV/SIGABRT with no message (or
    the converter swallowed it). The first Ctrl-C says so and waits; a second one exits at once.
    Only the main thread can take signals; elsewhere this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []
    stderr = os.dup(2)  # the console, even while the converter's own output goes to /dev/null

    def defer(signum: int, frame: object) -> None:
        if pending:
            os.write(stderr, f"\ninterrupted again: stopping {what} at once\n".encode())
            os._exit(130)
        pending.append(signum)
        os.write(stderr, f"\ninterrupted: finishing {what} first (Ctrl-C again to stop at once)\n".encode())

    previous = signal.signal(signal.SIGINT, defer)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        os.close(stderr)
    if pending:
        raise KeyboardInterrupt


@contextlib.contextmanager
def _greedy_layout():
    """litert-torch's greedy layout partitioner for one conversion: it puts an op in NHWC when
    any input is NHWC, where the default min-cut left a U-Net's skip concatenations (and the
    down path feeding them, a transpose out and back per level) in NCHW. U-Net ngf 64 at 256²,
    LiteRT 2 threads, interleaved: dense 103 -> 94 ms, 4x fewer MACs 30.5 -> 29.6 ms, 37 -> 9
    TRANSPOSEs; the ResNet and DCGAN files come out the same either way. litert-torch reads the
    setting from the environment at conversion time; the caller's value is put back after."""
    name = "LAYOUT_OPTIMIZE_PARTITIONER"
    before = os.environ.get(name)
    os.environ[name] = "GREEDY"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before


def to_tflite(
    model: nn.Module,
    out_dir: str | Path,
    input_shape: tuple[int, ...],
    precision: str = "fp32",
    layout: str = "NCHW",
    filename: str = "model.tflite",
    calibration: list[np.ndarray] | None = None,
    int8_io: bool = False,
    int8_norm: str = "integer",
) -> TfliteFile:
    """Convert `model` for a fixed NCHW `input_shape`; `layout="NHWC"` makes the file take and
    return channels-last tensors (what phone camera pipelines hand over). int8 is full integer,
    calibrated on `calibration` (NCHW images), with float input and output unless `int8_io`;
    `int8_norm="float"` keeps InstanceNorm's reciprocal square root in float (finer than int8 for
    channels of small variance, where an int8 1/sqrt saturates; the file is then not full integer,
    and XNNPACK still takes the whole graph)."""
    if precision not in PRECISIONS:
        raise ExportError(f"unknown TFLite precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    if int8_norm not in INT8_NORMS:
        raise ExportError(f"unknown int8 norm {int8_norm!r}; choose one of {', '.join(INT8_NORMS)}")
    if layout not in LAYOUTS:
        raise ExportError(f"unknown layout {layout!r}; choose NCHW or NHWC")
    try:
        with _interrupt_after("loading litert-torch"), quiet_native_output():  # torchao and torch warn on import
            import litert_torch
    except ImportError:
        raise ExportError("TFLite export needs litert-torch: pip install 'coronetgan[tflite]'") from None
    model = apply_passes(model, TFLITE_INT8_PASSES if precision == "int8" else TFLITE_PASSES)
    sample = torch.zeros(input_shape)
    if layout == "NHWC":
        model = litert_torch.to_channel_last_io(model, args=[0], outputs=[0])
        sample = sample.permute(0, 2, 3, 1).contiguous()
        calibration = [x.transpose(0, 2, 3, 1) for x in calibration or []]
    path = Path(out_dir) / filename
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        raw = Path(tmp) / "fp32.tflite"
        try:
            with _interrupt_after("the TFLite conversion"), quiet_native_output(), _greedy_layout():
                litert_torch.convert(model, (sample,)).export(str(raw))
                if precision == "int8":
                    float_ops = ("RSQRT",) if int8_norm == "float" else ()
                    data = tflite_int8(raw, calibration or [], int8_io, float_ops)
                else:
                    data = raw.read_bytes() if precision == "fp32" else _weight_only_fp16(raw)
        except ExportError:
            raise
        except Exception as exc:
            raise ExportError(f"TFLite conversion failed: {str(exc).splitlines()[0][:200]}") from None
    atomic_write_bytes(path, lambda f: f.write(data))
    return TfliteFile(path, precision, layout)


def _weight_only_fp16(float_model: Path) -> bytes:
    """Conv weights stored as fp16 and dequantized to fp32 in the graph (half the file; the
    DEQUANTIZE ops are folded when XNNPACK takes the graph)."""
    from ai_edge_quantizer import qtyping, quantizer, recipe_manager
    from ai_edge_quantizer.algorithm_manager import AlgorithmName

    rp = recipe_manager.RecipeManager()
    for op in (qtyping.TFLOperationName.CONV_2D, qtyping.TFLOperationName.CONV_2D_TRANSPOSE):
        rp.add_weight_only_config(
            regex=".*",
            operation_name=op,
            num_bits=16,
            granularity=qtyping.QuantGranularity.TENSORWISE,
            algorithm_key=AlgorithmName.FLOAT_CASTING,
        )
    q = quantizer.Quantizer(str(float_model))
    q.load_quantization_recipe(rp.get_quantization_recipe())
    return bytes(q.quantize().quantized_model)


__all__ = ["INT8_NORMS", "PRECISIONS", "TfliteFile", "interpreter", "op_counts", "to_tflite", "xnnpack_partitions"]
