"""The hypernetwork: the per-entry maps that turn latent vectors into conv weights.

For a conv from C_in to C_out channels with kernel k and embedding size m, each of the
C_out x C_in entries has its own parameters: Z = z_out z_in^T + B0; the entry is embedded to m
dims by its own affine map (w1, b1), and the embedding mapped to k*k values by its own affine
map (W2, b2). That is C_in*C_out*(1 + 2m + k*k*m + k*k) parameters per conv.

How the weights are computed depends on the device (the function is the same): on a GPU, the
convs of one kernel size are concatenated and generated in one batched pass, because ~20 small
kernels per conv made the step launch-bound; on a CPU, conv by conv, because the intermediates
of one conv stay in cache and the batched pass was ~2x slower there (both measured here).

`Hypernetwork.use_compiled()` generates through `torch.compile` instead: one fused loop per
pass, with no (N, m, k*k) temporaries. On this CPU it made generation + backward of the
ngf-64 ResNet's weights ~3x faster (370 → 120 ms) for a one-off compile of ~15-25 s, so it pays
off on full-size runs, not on the tiny ones of the demo and the tests.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from compress.plan import ConvSpec

LatentOf = Callable[[tuple[str, ...]], torch.Tensor]


@dataclass(frozen=True)
class ConvSlot:
    spec: ConvSpec
    in_width: int
    out_width: int

    @property
    def entries(self) -> int:
        return self.in_width * self.out_width


def _entries_to_weights(z: torch.Tensor, p: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """(N,) outer-product entries → (N, k*k) weight values, given the N entries' parameters."""
    embedding = torch.addcmul(p["b1"], (z + p["B0"]).unsqueeze(-1), p["w1"])
    # Per-entry (1 x m) @ (m x k^2) as a broadcast multiply-and-sum: faster than einsum or bmm,
    # which run N tiny matmuls (measured on the CPU here).
    return (embedding.unsqueeze(-1) * p["W2"]).sum(-2) + p["b2"]


@functools.cache
def _compiled_entries_to_weights() -> Callable[[torch.Tensor, Mapping[str, torch.Tensor]], torch.Tensor]:
    # One graph for every conv's entry count and kernel size, not one per shape: the entries'
    # parameters are nn.Parameters, whose shapes torch.compile would otherwise keep static.
    compiled = torch.compile(_entries_to_weights, dynamic=True)
    return torch._dynamo.config.patch(force_parameter_static_shapes=False)(compiled)


def _probe_compiled(device: torch.device, embedding_dim: int) -> str | None:
    """Compile forward and backward once on a small input; the reason it fails, or None."""
    n, m, k2 = 16, embedding_dim, 9
    z = torch.randn(n, device=device, requires_grad=True)
    shapes = {"B0": (n,), "w1": (n, m), "b1": (n, m), "W2": (n, m, k2), "b2": (n, k2)}
    params = {name: nn.Parameter(torch.randn(shape, device=device)) for name, shape in shapes.items()}
    try:
        compiled = _compiled_entries_to_weights()(z, params)
        compiled.sum().backward()
    except Exception as exc:  # no C++ compiler, an unsupported backend, ...: eager still works
        return f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
    eager = _entries_to_weights(z.detach(), {k: v.detach() for k, v in params.items()})
    if not torch.allclose(compiled.detach(), eager, rtol=1e-5, atol=1e-6):
        return "the compiled weights differ from the eager ones"
    return None


class Hypernetwork(nn.Module):
    def __init__(self, convs: Sequence[tuple[ConvSpec, int, int]], embedding_dim: int) -> None:
        super().__init__()
        self.embedding_dim = m = embedding_dim
        self.compiled = False
        self.slots = [ConvSlot(spec, in_width, out_width) for spec, in_width, out_width in convs]
        self.convs = nn.ModuleList()
        for slot in self.slots:
            n, k2 = slot.entries, slot.spec.kernel**2
            # The embedding has entries of std ~sqrt(2): start the generated weight at PyTorch's
            # default conv weight std, 1/sqrt(3 * fan_in).
            w2_std = 1.0 / math.sqrt(3 * slot.in_width * k2 * 2 * m)
            self.convs.append(
                nn.ParameterDict(
                    {
                        "B0": nn.Parameter(torch.zeros(n)),
                        "w1": nn.Parameter(torch.randn(n, m)),
                        "b1": nn.Parameter(torch.randn(n, m)),
                        "W2": nn.Parameter(torch.randn(n, m, k2) * w2_std),
                        "b2": nn.Parameter(torch.zeros(n, k2)),
                    }
                )
            )

    def use_compiled(self, enabled: bool = True) -> bool:
        """Generate through torch.compile (compiled here, once per process); False, with a
        warning, when this machine cannot compile, and generation stays eager."""
        self.compiled = False
        if enabled:
            reason = _probe_compiled(self.convs[0]["W2"].device, self.embedding_dim)
            if reason:
                message = f"torch.compile of the weight generation failed ({reason}); generating eagerly"
                warnings.warn(message, stacklevel=2)
            self.compiled = reason is None
        return self.compiled

    def _generate(self, z: torch.Tensor, params: Mapping[str, torch.Tensor]) -> torch.Tensor:
        if self.compiled:
            # a plain dict: a ParameterDict argument would be guarded by identity, one graph per conv
            return _compiled_entries_to_weights()(z, dict(params))
        return _entries_to_weights(z, params)

    def conv_parameters(self, index: int) -> list[nn.Parameter]:
        return list(self.convs[index].values())

    def _weight(self, slot: ConvSlot, values: torch.Tensor) -> torch.Tensor:
        k = slot.spec.kernel
        return values.view(slot.out_width, slot.in_width, k, k)

    @staticmethod
    def _outer(slot: ConvSlot, latent_of: LatentOf) -> torch.Tensor:
        return torch.outer(latent_of((slot.spec.out_group,)), latent_of(slot.spec.in_groups)).flatten()

    def generate_one(self, index: int, latent_of: LatentOf) -> torch.Tensor:
        """One conv's weight as (C_out, C_in, k, k), whatever the conv's direction."""
        slot = self.slots[index]
        return self._weight(slot, self._generate(self._outer(slot, latent_of), self.convs[index]))

    def generate_all(self, latent_of: LatentOf, batched: bool | None = None) -> list[torch.Tensor]:
        """Every conv's weight, in conv order; `batched` defaults to True off the CPU."""
        if batched is None:
            batched = self.convs[0]["W2"].device.type != "cpu"
        if not batched:
            return [self.generate_one(i, latent_of) for i in range(len(self.slots))]
        weights: list[torch.Tensor | None] = [None] * len(self.slots)
        for kernel in sorted({s.spec.kernel for s in self.slots}):
            members = [i for i, s in enumerate(self.slots) if s.spec.kernel == kernel]
            z = torch.cat([self._outer(self.slots[i], latent_of) for i in members])
            params = {k: torch.cat([self.convs[i][k] for i in members]) for k in ("B0", "w1", "b1", "W2", "b2")}
            values = self._generate(z, params).split([self.slots[i].entries for i in members])
            for i, chunk in zip(members, values, strict=True):
                weights[i] = self._weight(self.slots[i], chunk)
        return weights  # type: ignore[return-value]
