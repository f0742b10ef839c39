"""Did the phone compute the right image? The phone runs the file on the bundle's check input and
hands back the output tensor (benchmark_model's --output_filepath); the host runs its runtime's
fp32 file on the same input with the reference CPU kernels and compares. A delegate that times
well and computes garbage (a green mask, a half-black frame) fails its job with the numbers.

Judged per precision: fp32 by the largest absolute difference (a correct delegate differs in the
last bits only); fp16 and int8 by the mean absolute difference of the worst output channel, so
that one broken channel (the classic green or magenta cast) is caught even when the image's
average error is small. Outputs live in [-1, 1] (tanh)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

# precision -> (measure, tolerance): int8 as export's parity (a few pixels' worth on average per
# channel), fp16 an order above its rounding, fp32 what ARM and x86 kernels may differ by
TOLERANCE = {"fp32": ("max_abs", 1e-3), "fp16": ("channel_mean_abs", 2e-2), "int8": ("channel_mean_abs", 0.2)}


@dataclass(frozen=True)
class OutputCheck:
    reference: str  # what the output was compared with
    max_abs: float
    mean_abs: float
    worst_channel: int
    channel_mean_abs: float  # the worst channel's mean absolute difference
    psnr_db: float
    judged_by: str
    tolerance: float
    image_png: str | None = None  # the output as base64 PNG, for the report

    @property
    def ok(self) -> bool:
        return bool(getattr(self, self.judged_by) <= self.tolerance)

    def to_dict(self) -> dict:
        return {**asdict(self), "ok": self.ok}

    def describe(self) -> str:
        measure = self.judged_by.replace("_", "-")
        if self.judged_by == "channel_mean_abs":
            measure = f"channel {self.worst_channel} mean-abs"
        verdict = "<=" if self.ok else ">"
        return (f"{measure} {getattr(self, self.judged_by):.3g} {verdict} {self.tolerance:g} against "
                f"{self.reference} (PSNR {self.psnr_db:.1f} dB)")  # fmt: skip


def compare(got: np.ndarray, expected: np.ndarray, precision: str, reference: str) -> OutputCheck:
    """`got` and `expected`: NCHW outputs of one input."""
    if got.shape != expected.shape:
        raise ValueError(f"the output has shape {got.shape}, the reference {expected.shape}")
    diff = np.abs(got.astype(np.float64) - expected.astype(np.float64))
    per_channel = diff.mean(axis=(0, 2, 3)) if diff.ndim == 4 else diff.reshape(1, -1).mean(axis=1)
    worst = int(np.argmax(per_channel))
    mse = float((diff**2).mean())
    psnr = 10 * np.log10(4.0 / mse) if mse > 0 else float("inf")  # peak-to-peak 2 for [-1, 1]
    measure, tolerance = TOLERANCE[precision]
    return OutputCheck(reference, float(diff.max()), float(diff.mean()), worst, float(per_channel[worst]),
                       float(min(psnr, 999.0)), measure, tolerance)  # fmt: skip


def read_output(raw: bytes, path: str | Path) -> np.ndarray:
    """A TFLite file's first output from benchmark_model's --output_filepath bytes (the output
    tensors' raw bytes, one after another), dequantized when int8, in the file's own layout."""
    from export.litert import interpreter

    it = interpreter(path, xnnpack=False)
    out = it.get_output_details()[0]
    size = int(np.prod(out["shape"])) * np.dtype(out["dtype"]).itemsize
    if len(raw) < size:
        raise ValueError(f"the phone wrote {len(raw)} bytes of output, the file's output has {size}")
    values = np.frombuffer(raw[:size], dtype=out["dtype"]).reshape(out["shape"])
    if values.dtype == np.int8:
        scale, zero = out["quantization"]
        values = (values.astype(np.float32) - zero) * scale
    return values


def tensor_bytes(x: np.ndarray, path: str | Path, layout: str) -> tuple[str, list[int], bytes]:
    """The NCHW float32 input `x` as the TFLite file at `path` takes it: its input tensor's name,
    shape and raw bytes (NHWC when the file is; quantized with the file's scale when its input
    is int8), for benchmark_model's --input_layer_value_files."""
    from export.litert import interpreter

    inp = interpreter(path, xnnpack=False).get_input_details()[0]
    if layout == "NHWC":
        x = x.transpose(0, 2, 3, 1)
    x = np.ascontiguousarray(x, dtype=np.float32)
    if inp["dtype"] == np.int8:
        scale, zero = inp["quantization"]
        x = np.clip(np.round(x / scale) + zero, -128, 127).astype(np.int8)
    if list(x.shape) != [int(d) for d in inp["shape"]]:
        raise ValueError(f"the check input has shape {list(x.shape)}, the file takes {list(inp['shape'])}")
    return inp["name"], [int(d) for d in inp["shape"]], x.tobytes()
