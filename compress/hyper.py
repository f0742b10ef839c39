"""The hyper generator: every conv weight generated from per-group latent vectors, and the
proximal (soft-thresholding) step that sparsifies those latents."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from compress.errors import PlanError
from compress.hypernet import Hypernetwork
from compress.layers import HyperLayers
from compress.models import get_architecture, validate_plan
from compress.plan import ChannelPlan


class HyperGenerator(nn.Module):
    """A generator of family `arch` whose conv weights come from a hypernetwork.

    One latent vector per channel group (initialised N(0, 1)); a channel whose |z| is at most
    `threshold` is pruned and its output is masked to exactly zero after its norm and
    activation, so this network computes exactly what `slim_generator` will produce.
    """

    def __init__(self, arch: str, plan: ChannelPlan, embedding_dim: int = 8, threshold: float = 0.0) -> None:
        super().__init__()
        validate_plan(plan, arch)
        if embedding_dim < 1:
            raise ValueError(f"embedding_dim must be >= 1, got {embedding_dim}")
        if threshold < 0:
            raise ValueError(f"threshold must be >= 0, got {threshold}")
        self.arch = arch
        self.plan = plan
        self.embedding_dim = embedding_dim
        self.threshold = float(threshold)
        self.latents = nn.ParameterDict({g: nn.Parameter(torch.randn(w)) for g, w in plan.widths.items()})
        layers = HyperLayers(plan, self._weight_of, self.keep_mask)
        self.net = get_architecture(arch).module(layers)
        self.hypernet = Hypernetwork(layers.convs, embedding_dim)
        self._weights: list[torch.Tensor] | None = None  # set for the duration of a forward

    def generate_weights(self) -> list[torch.Tensor]:
        """Every conv's current weight, (C_out, C_in, k, k), in the order of the convs."""
        return self.hypernet.generate_all(self._latent_of)

    def _weight_of(self, index: int) -> torch.Tensor:
        if self._weights is not None:
            return self._weights[index]
        return self.hypernet.generate_one(index, self._latent_of)

    def _latent_of(self, groups: tuple[str, ...]) -> torch.Tensor:
        if len(groups) == 1:
            return self.latents[groups[0]]
        return torch.cat([self.latents[g] for g in groups])

    def keep_mask(self, group: str) -> torch.Tensor:
        """Boolean mask of the channels of `group` that survive pruning."""
        z = self.latents[group]
        if group in self.plan.fixed:
            return torch.ones_like(z, dtype=torch.bool)
        return z.detach().abs() > self.threshold

    def kept_indices(self, group: str) -> torch.Tensor:
        return torch.nonzero(self.keep_mask(group)).flatten()

    def pruned_widths(self) -> dict[str, int]:
        groups = list(self.plan.widths)
        counts = torch.stack([self.keep_mask(g).sum() for g in groups]).tolist()  # one sync
        return dict(zip(groups, counts, strict=True))

    def pruned_plan(self) -> ChannelPlan:
        """The plan of the slim generator this hyper generator currently stands for."""
        widths = self.pruned_widths()
        empty = [g for g, w in widths.items() if w == 0]
        if empty:
            raise PlanError(f"groups {empty} have no channel left; keep min_channels >= 1")
        return self.plan.with_widths(widths)

    @property
    def prunable_groups(self) -> list[str]:
        return self.plan.prunable

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._weights = self.generate_weights()
        try:
            return self.net(x)
        finally:
            self._weights = None


def _kept_count(survivors: torch.Tensor, alive: torch.Tensor, min_keep: int, round_to: int) -> torch.Tensor:
    """max(survivors, min_keep) rounded up to a multiple of `round_to`, at most `alive`."""
    needed = survivors.clamp(min=min_keep)
    return torch.minimum(torch.div(needed + round_to - 1, round_to, rounding_mode="floor") * round_to, alive)


Shrink = float | torch.Tensor  # one amount for every entry, or one per entry


def soft_threshold(
    z: torch.Tensor, shrink: Shrink, min_keep: int = 1, threshold: float = 0.0, round_to: int = 1
) -> torch.Tensor:
    """sign(z) * max(|z| - shrink, 0), except that the number of entries left above `threshold`
    is rounded up to a multiple of `round_to` and never falls below `min_keep`: the entries with
    the next largest |z| keep their values. No host-device sync (selection by `torch.where`)."""
    mags = z.abs()
    out = torch.sign(z) * torch.clamp(mags - shrink, min=0)
    survivors = (out.abs() > threshold).sum()
    keep = _kept_count(survivors, (mags > threshold).sum(), min_keep, round_to)
    rank = torch.empty_like(z, dtype=torch.long)
    rank[torch.argsort(mags, descending=True, stable=True)] = torch.arange(z.numel(), device=z.device)
    return torch.where(rank < keep, torch.where(out.abs() > threshold, out, z), out)


def shrunk_widths(
    latents: Mapping[str, torch.Tensor],
    groups: list[str],
    shrink: Shrink | Mapping[str, Shrink],
    min_keep: int,
    threshold: float,
    round_to: int | Mapping[str, int] = 1,
) -> dict[str, int]:
    """The widths that `soft_threshold(..., shrink)` would leave, without changing anything;
    `shrink` (and `round_to`) is one amount for all groups or a mapping group -> amount."""
    counts = []
    for g in groups:
        mags = latents[g].detach().abs()
        amount = shrink[g] if isinstance(shrink, Mapping) else shrink
        step = round_to[g] if isinstance(round_to, Mapping) else round_to
        # The same expression as soft_threshold, so both agree to the last float bit.
        survivors = (torch.clamp(mags - amount, min=0) > threshold).sum()
        counts.append(_kept_count(survivors, (mags > threshold).sum(), min_keep, step))
    return dict(zip(groups, torch.stack(counts).tolist(), strict=True))  # one sync for all groups


@torch.no_grad()
def proximal_step(hyper: HyperGenerator, lam: float, lr: float, min_channels: int = 1, round_to: int = 1) -> None:
    """One proximal-gradient step for the L1 penalty lam*|z|_1: soft-threshold every prunable
    latent by lam*lr. Each group's latent is one tensor, so shared latents are shrunk once."""
    apply_shrink(hyper, lam * lr, min_channels, round_to)


@torch.no_grad()
def apply_shrink(
    hyper: HyperGenerator,
    shrink: Shrink | Mapping[str, Shrink],
    min_channels: int = 1,
    round_to: int | Mapping[str, int] = 1,
) -> None:
    for g in hyper.prunable_groups:
        z = hyper.latents[g]
        amount = shrink[g] if isinstance(shrink, Mapping) else shrink
        step = round_to[g] if isinstance(round_to, Mapping) else round_to
        z.copy_(soft_threshold(z, amount, min_channels, hyper.threshold, step))


FITS = ("scale", "offset")


@torch.no_grad()
def init_from_dense(
    hyper: HyperGenerator,
    dense: nn.Module,
    latents: Mapping[str, torch.Tensor] | None = None,
    fit: str = "offset",
) -> None:
    """Start the hyper generator from a trained dense generator of the same plan: afterwards it
    computes what `dense` computes (float rounding aside). Biases and norm parameters are copied.

    `latents` (e.g. `compress.saliency.latents_from_saliency`) replace the prunable groups'
    latent vectors first. Each generated entry is ((z_out z_in + B0) w1 + b1) . W2 + b2; `fit`
    chooses which closed-form solution reproduces the dense weight W:
    - "offset": b2 = W - the rest, for the current latents. A latent that shrinks then moves
      its channels' weights by an amount unrelated to W, and a channel at z = 0 still has W.
    - "scale": B0 = b1 = b2 = 0 and W2 corrected (least change along w1) so that w1 . W2 =
      W / (z_out z_in): every weight is then proportional to its two latents, so shrinking a
      latent fades its channel out (its readers' weights go to zero with it) and leaves every
      other weight as it was. Latents must be positive: fixed groups (RGB) are set to 1, and
      so are prunable ones when no `latents` are given.
    """
    from compress.layers import HyperConv

    if fit not in FITS:
        raise ValueError(f"unknown fit {fit!r}; choose one of {', '.join(FITS)}")
    plan = getattr(dense, "plan", None)
    if plan is None or plan.widths != hyper.plan.widths:
        raise PlanError("the dense generator's plan differs from the hyper generator's; build both from one plan")
    if fit == "scale":
        for group in hyper.plan.widths:
            hyper.latents[group].fill_(1.0)
    for group, values in (latents or {}).items():
        hyper.latents[group].copy_(values)
    if fit == "scale" and any((z <= 0).any() for z in hyper.latents.values()):
        raise ValueError("the scale fit needs positive latents (saliency-derived ones are)")
    generated = hyper.generate_weights()
    targets = dict(dense.named_modules())
    for name, module in hyper.net.named_modules():
        source = targets[name]
        if isinstance(module, HyperConv):
            weight = source.weight.transpose(0, 1) if module.spec.transposed else source.weight
            p = hyper.hypernet.convs[module.index]
            k2 = module.spec.kernel**2
            if fit == "offset":
                p["b2"].add_(weight.reshape(-1, k2) - generated[module.index].reshape(-1, k2))
            else:
                slot = hyper.hypernet.slots[module.index]
                zz = hyper.hypernet._outer(slot, hyper._latent_of).detach()
                wanted = weight.reshape(-1, k2) / zz.unsqueeze(-1)
                w1, W2 = p["w1"], p["W2"]
                have = (w1.unsqueeze(-1) * W2).sum(1)
                W2.add_(w1.unsqueeze(-1) * ((wanted - have) / (w1 * w1).sum(1, keepdim=True)).unsqueeze(1))
                for key in ("B0", "b1", "b2"):
                    p[key].zero_()
            if module.bias is not None:
                module.bias.copy_(source.bias)
        else:
            for pname, param in module.named_parameters(recurse=False):
                param.copy_(getattr(source, pname))
            for bname, buf in module.named_buffers(recurse=False):
                buf.copy_(getattr(source, bname))
