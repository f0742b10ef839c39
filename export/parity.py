"""Parity: each exported file against the PyTorch module on several random inputs."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from export.errors import ParityError

# Tolerances on tanh outputs in [-1, 1]. fp32 and fp16, max-abs: float rounding (fp32), fp16
# weights or tensors (measured up to 1.8e-3 on small random generators). int8 (int8 activations
# too) is judged by the mean absolute error on images like the calibration ones: a few pixels
# near a quantization step can be far off (max-abs up to 1.1 measured on untrained generators),
# while a broken file (wrong scales, layout, calibration) is off everywhere. Measured mean-abs:
# 0.04 (TFLite) and 0.09 (ONNX) on untrained ResNets, far less after training; the loss on the
# task is measured separately (quality per precision).
TOLERANCE = {"fp32": 1e-4, "fp16": 1e-2, "int8": 0.2}
MEAN_ABS_PRECISIONS = ("int8",)


@dataclass(frozen=True)
class ParityResult:
    runtime: str
    precision: str
    inputs: int
    max_abs: float
    rel: float  # max-abs error / max |PyTorch output|
    tolerance: float
    mean_abs: float = 0.0
    judged_by: str = "max_abs"  # which of the two the tolerance applies to

    def to_dict(self) -> dict:
        return asdict(self)


def random_inputs(shape: tuple[int, ...], n: int, seed: int = 0, noise: bool = False) -> list[np.ndarray]:
    """Images uniform in [-1, 1] (or Gaussian noise vectors for DCGAN), reproducible by seed."""
    g = torch.Generator().manual_seed(seed)
    make = (lambda: torch.randn(shape, generator=g)) if noise else (lambda: torch.rand(shape, generator=g) * 2 - 1)
    return [make().numpy() for _ in range(n)]


@torch.no_grad()
def check_parity(
    model: nn.Module,
    run: Callable[[np.ndarray], np.ndarray],
    inputs: list[np.ndarray],
    runtime: str,
    precision: str = "fp32",
) -> ParityResult:
    """Compare `run` with `model` on every input; raise ParityError with the per-input table."""
    tolerance = TOLERANCE[precision]
    judged_by = "mean_abs" if precision in MEAN_ABS_PRECISIONS else "max_abs"
    table = []
    model = model.eval()
    for i, x in enumerate(inputs):
        ref = model(torch.from_numpy(x)).numpy()
        got = run(x)
        if got.shape != ref.shape:
            raise ParityError(f"{runtime}: output shape {got.shape} differs from PyTorch's {ref.shape}", [])
        err = np.abs(got - ref)
        rel = float(err.max()) / max(float(np.abs(ref).max()), 1e-12)
        table.append({"input": i, "max_abs": float(err.max()), "mean_abs": float(err.mean()), "rel": rel})
    worst = max(table, key=lambda row: row[judged_by])
    if worst[judged_by] > tolerance:
        rows = "; ".join(f"input {r['input']}: {r[judged_by]:.3g}" for r in table)
        raise ParityError(
            f"{runtime} ({precision}) differs from PyTorch by {worst[judged_by]:.3g} > {tolerance:g} "
            f"{judged_by.replace('_', '-')} ({rows})",
            table,
        )
    return ParityResult(runtime, precision, len(inputs), max(r["max_abs"] for r in table),
                        max(r["rel"] for r in table), tolerance, max(r["mean_abs"] for r in table),
                        judged_by)  # fmt: skip
