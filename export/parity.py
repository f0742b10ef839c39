"""Parity: each exported file against the PyTorch module on several random inputs."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from export.errors import ParityError

# Max-abs tolerances on tanh outputs in [-1, 1]. fp32: float rounding only. fp16 weights: measured
# up to 1.3e-3 on small random generators; int8 weights with float activations (dynamic range):
# up to 0.05. The tolerances leave headroom over those measurements.
TOLERANCE = {"fp32": 1e-4, "fp16": 1e-2, "int8": 0.1}


@dataclass(frozen=True)
class ParityResult:
    runtime: str
    precision: str
    inputs: int
    max_abs: float
    rel: float  # max-abs error / max |PyTorch output|
    tolerance: float

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
    table = []
    model = model.eval()
    for i, x in enumerate(inputs):
        ref = model(torch.from_numpy(x)).numpy()
        got = run(x)
        if got.shape != ref.shape:
            raise ParityError(f"{runtime}: output shape {got.shape} differs from PyTorch's {ref.shape}", [])
        err = float(np.abs(got - ref).max())
        table.append({"input": i, "max_abs": err, "rel": err / max(float(np.abs(ref).max()), 1e-12)})
    worst = max(table, key=lambda row: row["max_abs"])
    if worst["max_abs"] > tolerance:
        rows = "; ".join(f"input {r['input']}: {r['max_abs']:.3g}" for r in table)
        raise ParityError(
            f"{runtime} ({precision}) differs from PyTorch by {worst['max_abs']:.3g} > {tolerance:g} max-abs ({rows})",
            table,
        )
    return ParityResult(runtime, precision, len(inputs), worst["max_abs"], max(r["rel"] for r in table), tolerance)
