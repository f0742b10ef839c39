"""The searching stage: train the hyper generator while the proximal step sparsifies its
latents, and stop once the remaining MACs are inside [target - tolerance, target]."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from compress.errors import ConfigError, SearchMissError, TrainingDivergedError
from compress.hyper import HyperGenerator, Shrink, apply_shrink, shrunk_widths
from compress.macs import MacCount, PlanCost
from compress.plan import ChannelPlan


@dataclass(frozen=True)
class SearchConfig:
    """How the search prunes. `lam` is the L1 weight of the latents: each step shrinks every
    prunable latent entry by lam * lr, so a larger `lam` reaches the target in fewer steps."""

    target_macs: float = 0.25
    tolerance: float = 0.02
    lam: float = 20.0
    lr: float = 2e-4  # the generators' Adam lr while searching (train.lr is the discriminators')
    beta1: float = 0.5
    beta2: float = 0.999
    max_steps: int = 2000
    check_every: int = 1
    min_channels: int = 1
    round_to: int = 1  # every pruned width a multiple of this (8 suits phone CPU kernels)
    embedding_dim: int = 8
    allow_miss: bool = False
    init_from: str = ""  # a trained dense generator (any format import_generator reads) to start from
    # Starting from init_from: the latents take the channels' saliency (compress/saliency.py:
    # "in", "out", "inout") or stay N(0, 1) ("none"); the hypernetwork reproduces the weights either way.
    saliency: str = "in"
    # "all": the plain proximal step shrinks every latent; "below_cut": only the latents of the
    # channels that the target would prune now (|z| under the cut where the MACs ratio reaches
    # the target) shrink, so the kept channels are not dragged away from their (trained) values;
    # "auto": below_cut when starting from init_from (measured: benchmarks/pretrained_quality.py),
    # all from scratch.
    shrink: str = "auto"
    # How the hypernetwork reproduces init_from's weights (compress.hyper.init_from_dense):
    # "scale": every weight proportional to its latents, so a shrinking channel fades out;
    # "offset": a per-entry offset b2.
    fit: str = "scale"
    checkpoint_every: int = 100  # steps between resumable search states
    # torch.compile the weight generation: ~3x faster generation on full-size generators for a
    # one-off compile of ~15-25 s (CPU, measured); the same weights within float rounding
    compile: bool = False
    # A latency target instead of a MACs one: the predicted median ms of the latency model
    # (device-bench calibrate) on its device; the stop window is then [target - tolerance x
    # dense ms, target] and each group's latents shrink in proportion to its ms per channel.
    target_latency_ms: float = 0.0
    latency_model: str = ""
    # With a latency target, how many plans the search times on the model's device as it goes (a
    # closed loop, compress.latency.MeasuredStop: it stops first 20 % above the target, and each
    # timing over the target re-aims it by the model's error there); 0: stop on the prediction alone.
    latency_timings: int = 3
    # How far under target_latency_ms the search aims, a fraction of it: the target is a budget
    # and the model is off by some percent either way (compress.latency.search_margin);
    # -1: the latency model's median error on the plans its calibration held out (at most 10 %).
    latency_margin: float = -1.0

    def __post_init__(self) -> None:
        if not 0 < self.target_macs <= 1:
            raise ConfigError(f"target_macs must be in (0, 1] (the fraction of MACs kept), got {self.target_macs}")
        if not 0 < self.tolerance < self.target_macs:
            raise ConfigError(f"tolerance must be in (0, target_macs), got {self.tolerance}")
        for name in ("lam", "lr"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.saliency not in ("in", "out", "inout", "none"):
            raise ConfigError(f"search.saliency must be in, out, inout or none, got {self.saliency!r}")
        if self.fit not in ("scale", "offset"):
            raise ConfigError(f"search.fit must be scale or offset, got {self.fit!r}")
        if self.shrink not in ("auto", "all", "below_cut"):
            raise ConfigError(f"search.shrink must be auto, all or below_cut, got {self.shrink!r}")
        if (self.target_latency_ms > 0) != bool(self.latency_model) or self.target_latency_ms < 0:
            raise ConfigError("a latency target needs both search.target_latency_ms (> 0) and search.latency_model "
                              "(--target-latency MS --latency-model FILE, from device-bench calibrate)")  # fmt: skip
        if self.latency_margin != -1 and not 0 <= self.latency_margin < 0.5:
            raise ConfigError(f"search.latency_margin must be in [0, 0.5) (a fraction of the target), or -1 for the "
                              f"latency model's held-out error; got {self.latency_margin}")  # fmt: skip
        if self.latency_timings < 0:
            raise ConfigError(f"search.latency_timings must be >= 0 (0 trusts the prediction), "
                              f"got {self.latency_timings}")  # fmt: skip
        for name in ("max_steps", "check_every", "min_channels", "round_to", "embedding_dim", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")


@dataclass
class SearchResult:
    steps: int
    ratio: float
    reached: bool
    plan: ChannelPlan
    macs: MacCount
    full_macs: MacCount
    log: list[dict[str, Any]] = field(default_factory=list)
    resumed_from: int = 0  # the step a resumed search went on from (0: it started afresh)
    predicted_ms: float | None = None  # with a latency target: the plan's predicted latency
    aim_ms: float | None = None  # with a latency target: the prediction it aimed at or under (target less margin)
    # with a measured stop: each plan the search stopped at, timed on the device (LatencyCheck's fields)
    latency_checks: list[dict[str, Any]] = field(default_factory=list)
    # the stop window's floor where the search had to widen it (ControlledPruner._land_in_window:
    # every block of channels left cost more than the window was wide), else None
    widened_floor: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "steps": self.steps,
            "ratio": self.ratio,
            "reached": self.reached,
            "plan": self.plan.to_dict(),
            "macs": self.macs.to_dict(),
            "full_macs": self.full_macs.to_dict(),
            "resumed_from": self.resumed_from,
            "predicted_ms": self.predicted_ms,
            "aim_ms": self.aim_ms,
            "latency_checks": self.latency_checks,
            "widened_floor": self.widened_floor,
        }


def least_width(min_channels: int, round_to: int) -> int:
    """The fewest channels the search leaves a group: min_channels, rounded up to round_to."""
    return -(-max(min_channels, 1) // round_to) * round_to


def group_steps(config: SearchConfig, groups: Iterable[str], budget: Any = None) -> dict[str, int]:
    """The multiple each group's width is rounded to: search.round_to where the user set one
    (> 1), else with a latency target the budget's (`LatencyBudget.round_to`: the tile of the
    device's kernels, finer for a group no wider than it), else 1."""
    rounding = getattr(budget, "round_to", None)
    if config.round_to == 1 and rounding:
        return dict(rounding)
    return dict.fromkeys(groups, config.round_to)


def fastest_widths(full: Mapping[str, int], steps: Mapping[str, int], min_channels: int) -> dict[str, int]:
    """The smallest plan a search can reach: each group at least_width with its step (at most
    its full width). What the stage refuses a target under and where the search stops shrinking."""
    return {g: min(full[g], least_width(min_channels, step)) for g, step in steps.items()}


def fewest(widths: Mapping[str, int]) -> str:
    """A smallest plan in words: "every group at 8 channels", or per width where they differ."""
    if len(set(widths.values())) == 1:
        return f"every group at {next(iter(widths.values()))} channel(s)"
    by_width: dict[int, list[str]] = {}
    for g, w in widths.items():
        by_width.setdefault(w, []).append(g)
    return "; ".join(f"{', '.join(gs)} at {w}" for w, gs in sorted(by_width.items()))


class ControlledPruner:
    """The proximal step with a floor: a step that would take the remaining-cost ratio below
    target - tolerance shrinks only as far as the floor allows (the largest shrink, among the
    points where a channel dies, that stays at or above the floor). If the ratio is then still
    above the target, the channel next in line costs more than the window is wide, so the
    cheapest way into the window is taken instead: the smallest-|z| channels whose removal keeps
    the ratio at or above the floor are pruned, until the ratio is at most the target.
    Everywhere else it is the plain soft threshold by lam * lr.

    The cost is MACs (`cost`, a PlanCost) or, given a `budget` (compress.latency.LatencyBudget),
    the predicted latency: then each group's latents shrink by lam * lr times the group's price
    (its predicted ms per channel against the average channel's), so the channels that cost the
    most time go first."""

    def __init__(self, hyper: HyperGenerator, cost: PlanCost, config: SearchConfig, budget: Any = None) -> None:
        self.hyper, self.config = hyper, config
        self.cost = budget if budget is not None else cost
        self.steps = group_steps(config, hyper.prunable_groups, budget)
        self.target = budget.target if budget is not None else config.target_macs
        self.floor = self.target - config.tolerance
        self.priced = budget is not None and hasattr(budget, "prices")
        self.prices: dict[str, float] = dict.fromkeys(hyper.prunable_groups, 1.0)
        self.clamped_steps = 0
        self.widened = False  # _land_in_window lowered the floor
        self.shrinks_below_cut = config.shrink == "below_cut" or (config.shrink == "auto" and bool(config.init_from))

    def retarget(self, target: float) -> None:
        """Aim at another ratio, with the same window width below it."""
        self.floor, self.target = target - self.config.tolerance, target

    def _widths(self, shrink: float, cut: float = math.inf) -> dict[str, int]:
        h = self.hyper
        widths = dict(h.plan.widths)
        c = self.config
        amounts = self._amounts(shrink, cut)
        widths.update(shrunk_widths(h.latents, h.prunable_groups, amounts, c.min_channels, h.threshold, self.steps))
        return widths

    def _amounts(self, shrink: float, cut: float) -> dict[str, Shrink]:
        """Per group, how far each latent shrinks: `shrink` times the group's price for those
        whose death point is at or under the cut."""
        h, p = self.hyper, self.prices
        if math.isinf(cut):
            return {g: shrink * p[g] for g in h.prunable_groups}
        return {g: ((h.latents[g].detach().abs() - h.threshold) / p[g] <= cut).to(h.latents[g].dtype) * shrink * p[g]
                for g in h.prunable_groups}  # fmt: skip

    def _cut(self) -> float:
        """The least plain shrink after which the MACs ratio is at most the target: the channels
        within it of the threshold are the ones the target prunes now (inf when none suffices)."""
        deaths = self._deaths()
        breakpoints = torch.unique(deaths[deaths > 0]).tolist()
        lo, hi, best = 0, len(breakpoints) - 1, math.inf
        while lo <= hi:  # the ratio only falls as the shrink grows
            mid = (lo + hi) // 2
            if self.cost.ratio(self._widths(breakpoints[mid])) <= self.target:
                best, hi = breakpoints[mid], mid - 1
            else:
                lo = mid + 1
        return best

    @torch.no_grad()
    def step(self, lr: float) -> float:
        """Apply the proximal step after an optimizer step; returns the new cost ratio."""
        shrink = self.config.lam * lr
        if self.priced:
            self.prices = self.cost.prices(self.hyper.pruned_widths())
        cut = self._cut() if self.shrinks_below_cut else math.inf
        c = self.config
        if self.cost.ratio(self._widths(shrink, cut)) >= self.floor:
            apply_shrink(self.hyper, self._amounts(shrink, cut), c.min_channels, self.steps)
            return self.ratio()
        self.clamped_steps += 1
        safe = self._largest_safe_shrink(shrink, cut)
        apply_shrink(self.hyper, self._amounts(safe, cut), c.min_channels, self.steps)
        if self.ratio() > self.target:
            self._land_in_window()
        return self.ratio()

    def _land_in_window(self) -> None:
        """Prune the cheapest-|z| channels (in blocks of the group's step) that keep the ratio at or
        above the floor, until it is at most the target. Where every block left costs more than
        the window is wide (a small generator rounded to tiles of 16: its groups of 16-64 channels
        go a quarter at a time), the block that lands highest under the target is pruned and the
        window widened down to it: kept above the target, the search stalled there until
        max_steps (benchmarks/latency_quality.py: 400 steps at 0.658 against an aim of 0.657)."""
        h, steps = self.hyper, self.steps
        widths = h.pruned_widths()
        blocks = []
        for g in h.prunable_groups:
            kept, step = h.kept_indices(g), steps[g]
            order = kept[torch.argsort(h.latents[g].detach()[kept].abs())]
            for start in range(0, len(order) - step + 1, step):
                block = order[start : start + step]
                blocks.append((float(h.latents[g].detach()[block].abs().max()) / self.prices[g], g, block))
        left = []
        for _, g, block in sorted(blocks, key=lambda b: b[0]):
            if widths[g] - steps[g] < max(self.config.min_channels, 1):
                continue
            trial = {**widths, g: widths[g] - steps[g]}
            if self.cost.ratio(trial) < self.floor:
                left.append((g, block))
                continue
            h.latents[g][block] = 0.0
            widths = trial
            if self.cost.ratio(widths) <= self.target:
                return
        # each block left lands under the floor (else the loop took it): the highest of them
        landings = [(self.cost.ratio({**widths, g: widths[g] - steps[g]}), g, block) for g, block in left
                    if widths[g] - steps[g] >= max(self.config.min_channels, 1)]  # fmt: skip
        if landings:
            ratio, g, block = max(landings, key=lambda r: r[0])
            h.latents[g][block] = 0.0
            self.widened = self.widened or ratio < self.floor
            self.floor = min(self.floor, ratio)

    def _deaths(self) -> torch.Tensor:
        """Every prunable latent's distance above the threshold over its group's price: the shrink
        at which it dies."""
        h = self.hyper
        return torch.cat([(h.latents[g].detach().abs() - h.threshold) / self.prices[g] for g in h.prunable_groups])

    def _largest_safe_shrink(self, shrink: float, cut: float = math.inf) -> float:
        breakpoints = sorted({float(d) for d in self._deaths() if 0 < d < shrink and d <= cut})
        lo, hi, best = 0, len(breakpoints) - 1, 0.0
        while lo <= hi:  # the ratio only falls as the shrink grows
            mid = (lo + hi) // 2
            if self.cost.ratio(self._widths(breakpoints[mid], cut)) >= self.floor:
                best, lo = breakpoints[mid], mid + 1
            else:
                hi = mid - 1
        return best

    def ratio(self) -> float:
        return self.cost.ratio(self.hyper.pruned_widths())

    def in_window(self, ratio: float) -> bool:
        return self.floor <= ratio <= self.target

    def fastest_widths(self) -> dict[str, int]:
        return fastest_widths(self.hyper.plan.widths, self.steps, self.config.min_channels)

    def fastest_ratio(self) -> float:
        return self.cost.ratio({**self.hyper.plan.widths, **self.fastest_widths()})


TrainStep = Callable[[int], dict[str, float]]


def run_search(
    hyper: HyperGenerator,
    train_step: TrainStep,
    config: SearchConfig,
    cost: PlanCost,
    current_lr: Callable[[], float] | None = None,
    log_path: Path | None = None,
    progress: bool = True,
    start_step: int = 0,
    save_state: Callable[[int], None] | None = None,
    writer: Any = None,
    on_check: Callable[[], dict[str, Any]] | None = None,
    budget: Any = None,
    stop: Any = None,
) -> SearchResult:
    """Alternate `train_step(step)` (one optimizer step of the GAN, returning its losses) with
    the controlled proximal step until the MACs ratio (or, with a `budget`, the predicted
    latency ratio: compress.latency.LatencyBudget) lands in the target window.

    `start_step` > 0 resumes (the log is appended to); `save_state(step)` is called every
    `checkpoint_every` steps and when the loop ends or is interrupted; `writer` is an optional
    TensorBoard SummaryWriter; `on_check()` runs at every check (on every rank under torchrun)
    and returns more fields for that step's log record.

    `stop` (compress.latency.MeasuredStop, with a `budget`) times each plan the search stops at on
    the device and re-aims it until a timing is within the target: the search then stops at the
    first check where the predicted ratio is at most the aim (a resumed search may be below it).
    It is never aimed under the smallest plan it can reach (`ControlledPruner.fastest_ratio`),
    and a timing of that plan over the target ends it: a miss (SearchMissError unless allowed)."""
    from coronet.progress import Progress

    pruner = ControlledPruner(hyper, cost, config, budget)
    if stop is not None:
        pruner.retarget(stop.aim)
    lr_of = current_lr or (lambda: config.lr)
    log: list[dict[str, Any]] = []
    log_file = None
    if log_path is not None:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        if start_step and log_path.is_file():  # keep the records up to the resumed state, no later ones
            kept = [line for line in log_path.read_text().splitlines() if json.loads(line)["step"] <= start_step]
            log_path.write_text("".join(f"{line}\n" for line in kept))
        log_file = open(log_path, "a" if start_step else "w")  # noqa: SIM115 - closed in finally
    ratio, reached, step, done = pruner.ratio(), False, start_step, start_step
    exhausted = False
    # a bar on a terminal; a line every few seconds in a log (CI, pipes), so a long search is never silent
    bar = Progress("search", config.max_steps, start_step, enabled=progress)
    try:
        for step in range(start_step + 1, config.max_steps + 1):
            losses = train_step(step)
            lr = lr_of()
            ratio = pruner.step(lr)
            bar.update(1)
            if step % config.check_every == 0 or step == config.max_steps:
                reached = pruner.in_window(ratio) if stop is None else ratio <= pruner.target
                widths = hyper.pruned_widths()
                check = stop.check(step, widths) if reached and stop is not None else None
                if check is not None and not check.accepted:
                    fastest = pruner.fastest_ratio()
                    exhausted = ratio <= fastest * (1 + 1e-9)  # the device says even this plan is slow
                    stop.aim_no_lower_than(fastest * budget.model.dense_ms)
                    pruner.retarget(stop.aim)
                    reached = False
                record = {
                    "step": step,
                    "losses": {k: float(v) for k, v in losses.items()},
                    "macs_ratio": cost.ratio(widths) if budget is not None else ratio,
                    "lr": lr,
                    "widths": widths,
                    **({"latency_ratio": ratio, "predicted_ms": budget.predict(widths)} if budget is not None else {}),
                    **({"latency_check": asdict(check)} if check is not None else {}),
                    **(on_check() if on_check is not None else {}),
                }
                log.append(record)
                if log_file is not None:
                    log_file.write(json.dumps(record) + "\n")
                    log_file.flush()
                if writer is not None:
                    writer.add_scalar("search/macs_ratio", ratio, step)
                    for name, value in record["losses"].items():
                        writer.add_scalar(f"search/{name}", value, step)
                if check is not None:
                    bar.show(measured_ms=check.measured_ms, predicted_ms=check.predicted_ms,
                             target_ms=budget.target_ms, next_aim_ms=stop.aim_ms)  # fmt: skip
                elif budget is not None:
                    bar.show(**record["losses"], predicted_ms=record["predicted_ms"], target_ms=budget.target_ms,
                             aim_ms=budget.aim_ms)  # fmt: skip
                else:
                    bar.show(**record["losses"], macs_ratio=ratio, target=config.target_macs)
            done = step  # this step's update, proximal step and log record are all in
            if reached or exhausted:
                break
            if save_state is not None and step % config.checkpoint_every == 0:
                save_state(step)
    finally:
        bar.close()
        if log_file is not None:
            log_file.close()
        if save_state is not None and done > start_step:
            save_state(done)  # also on Ctrl-C or an error: the search resumes after the last whole step
    if exhausted and not config.allow_miss:
        last = stop.checks[-1]
        over = (
            f"over the target {budget.target_ms:.3g} ms"
            if budget.aim_ms >= budget.target_ms
            else f"over {budget.aim_ms:.3g} ms (the target {budget.target_ms:.3g} ms less its margin, --latency-margin)"
        )
        raise SearchMissError(
            f"the device timed the fastest plan this search can reach ({fewest(pruner.fastest_widths())}) "
            f"at {last.measured_ms:.3g} ms, {over}: pick a larger target or a "
            "smaller search.round_to (or pass --allow-miss to keep the result)"
        )
    if not reached and not config.allow_miss:
        what = "a predicted latency ratio" if budget is not None else "a MACs ratio"
        raise SearchMissError(
            f"the search stopped after {step} steps at {what} of {ratio:.4f}, outside "
            f"[{pruner.floor:.4f}, {pruner.target:.4f}]; raise max_steps or lam "
            "(or pass --allow-miss to keep the result)"
        )
    plan = hyper.pruned_plan()
    predicted = budget.predict(plan.widths) if budget is not None else None
    checks = [asdict(c) for c in stop.checks] if stop is not None else []
    return SearchResult(step, cost.ratio(plan.widths), reached, plan, cost.count(plan.widths), cost.full, log,
                        start_step, predicted, budget.aim_ms if budget is not None else None, checks,
                        pruner.floor if pruner.widened else None)  # fmt: skip


def make_adam(params: Iterable[torch.nn.Parameter], lr: float, betas: tuple[float, float]) -> torch.optim.Adam:
    """Adam with the fused kernel: the hypernetwork has ~10x the generator's parameters, and the
    fused step is ~3x faster than the foreach one on them (measured on the CPU here)."""
    return torch.optim.Adam(params, lr=lr, betas=betas, fused=True)


def regression_train_step(
    hyper: HyperGenerator,
    batches: Iterator[tuple[torch.Tensor, torch.Tensor]],
    config: SearchConfig,
) -> tuple[TrainStep, torch.optim.Optimizer]:
    """An L1 image-to-image training step (A → B) with Adam; the GAN losses live elsewhere."""
    optimizer = make_adam(hyper.parameters(), config.lr, (config.beta1, config.beta2))

    def step(_: int) -> dict[str, float]:
        a, b = next(batches)
        loss = (hyper(a) - b).abs().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if not math.isfinite(loss.item()):
            raise TrainingDivergedError("the search loss is not finite; lower lr or lam")
        return {"l1": loss.item()}

    return step, optimizer
