"""The compress stages as functions over a run directory: files in, files out.

run_dir/
  checkpoints/hyper.pt   the searched hyper generator           (search)
  checkpoints/gan.pt     discriminators (and CycleGAN's B → A)  (search, converge)
  checkpoints/search_state.pt  a resumable search in progress     (search)
  checkpoints/converge_state.pt  a resumable converge in progress (converge)
  search_log.jsonl       step, losses, MACs ratio, widths        (search)
  search.json            the SearchResult                        (search)
  slim.pt, slim.json     the slim generator; plan, MACs, check   (slim)
  converged.pt           the fine-tuned slim generator           (converge)
  converge.json          losses, quality on held-out data         (converge)
  dense.pt, dense.json   the dense reference and its quality      (dense)
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, TensorDataset

from compress.checkpoint import load_checkpoint, save_checkpoint
from compress.config import PipelineConfig, config_from_dict
from compress.data import (
    AlignedFolder,
    ImageFolder,
    Transform,
    UnalignedFolders,
    builtin_paired,
    builtin_unpaired,
)
from compress.distributed import DistInfo, init_from_env, lr_factor, rank_device, spread, wrap
from compress.errors import CheckpointError, ConfigError, TrainingDivergedError
from compress.formats import ImportedGenerator, import_generator
from compress.hyper import HyperGenerator, init_from_dense
from compress.macs import MacCount, PlanCost, count_macs
from compress.metrics import FID_WEIGHTS, FID_WEIGHTS_SHA256_PREFIX, fid_kid, paired_metrics
from compress.models import build_discriminator, build_generator, example_input_shape, full_plan
from compress.plan import ChannelPlan
from compress.saliency import channel_saliency, latents_from_saliency
from compress.search import SearchResult, fastest_widths, fewest, group_steps, run_search
from compress.slim import slim_generator
from compress.train import GanTrainer, TrainConfig, converge
from coronet.bundle import GRAPH_FORM_KEY, GRAPH_FORMS
from coronet.files import atomic_write_bytes, sha256_file

HYPER_CHECKPOINT = Path("checkpoints/hyper.pt")
GAN_STATE = Path("checkpoints/gan.pt")
SLIM_CHECKPOINT = Path("slim.pt")
CONVERGED_CHECKPOINT = Path("converged.pt")
DENSE_CHECKPOINT = Path("dense.pt")
SEARCH_STATE = Path("checkpoints/search_state.pt")
CONVERGE_STATE = Path("checkpoints/converge_state.pt")


# Train keys the search does not read: changing them leaves a search (and its resume state) valid.
CONVERGE_ONLY_TRAIN_KEYS = ("converge_steps", "decay_steps", "teacher", "distill_weight", "dense_steps")


def search_inputs(config: PipelineConfig) -> dict[str, Any]:
    """The config values the search stage reads."""
    c = config.to_dict()
    train = {k: v for k, v in c["train"].items() if k not in CONVERGE_ONLY_TRAIN_KEYS}
    search = {k: v for k, v in c["search"].items() if k != "compile"}  # how fast, not what
    model = Path(search["latency_model"]).expanduser() if search.get("latency_model") else None
    if model is not None and model.is_file():  # a recalibrated model is another search
        search["latency_model_sha256"] = sha256_file(model)
    return {k: c[k] for k in ("model", "data", "seed", "device")} | {"search": search, "train": train}


def converge_inputs(config: PipelineConfig) -> dict[str, Any]:
    """The config values the converge stage reads."""
    c = config.to_dict()
    return {k: c[k] for k in ("model", "data", "train", "eval", "seed", "device")}


def write_json(path: Path, data: dict[str, Any]) -> None:
    atomic_write_bytes(path, lambda f: f.write((json.dumps(data, indent=2) + "\n").encode()))


def training_device(config: PipelineConfig) -> torch.device:
    """The device the training stages run on (under torchrun, a bare 'cuda' is this rank's GPU)."""
    if config.device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {config.device!r} asked for, but CUDA is not available here; use 'cpu'")
    return rank_device(torch.device(config.device))


def _reseed_rank(config: PipelineConfig, info: DistInfo) -> None:
    """Once the models are built (the same on every rank), each rank draws its own noise and
    dropout masks; rank 0 keeps the single-process stream."""
    if info.rank:
        torch.manual_seed(config.seed + 1_000_003 * info.rank)


def _scaled_train(config: PipelineConfig) -> TrainConfig:
    """train with its lr under the ranks' lr rule (train.lr_scaling)."""
    return dataclasses.replace(config.train, lr=config.train.lr * lr_factor(config.train.lr_scaling))


def _datasets(config: PipelineConfig) -> tuple[Dataset, tuple[torch.Tensor, torch.Tensor] | None]:
    """(training set, held-out (A, true B) pairs for paired metrics, when the data has them)."""
    d, setup = config.data, config.train.setup
    if d.kind == "builtin":
        held_out = builtin_paired(d.n_test, d.image_size, d.seed + 1)
        if setup == "cyclegan" and config.train.direction == "BtoA":
            held_out = (held_out[1], held_out[0])  # the outlines of filled shapes are known too
        if setup == "cyclegan":
            a, b, _ = builtin_unpaired(d.n_train, d.image_size, d.seed)
            return TensorDataset(a, b), held_out
        a, b = builtin_paired(d.n_train, d.image_size, d.seed)
        return (TensorDataset(b), None) if setup == "dcgan" else (TensorDataset(a, b), held_out)
    load = d.load_size or d.image_size * 286 // 256
    transform = Transform(load_size=load, crop_size=d.image_size)
    if d.kind == "aligned":
        return AlignedFolder(d.root, "train", d.direction, transform, d.seed), None
    if d.kind == "unaligned":
        return UnalignedFolders(d.root, "train", transform, d.seed), None
    return ImageFolder(d.root, d.image_size), None


def training_batches(dataset: Dataset, config: PipelineConfig, info: DistInfo | None = None) -> Iterator[Any]:
    """Shuffled batches of data.batch_size, forever; under torchrun each rank reads its own shard
    (a new split every epoch, the same on every rank)."""
    size, info = config.data.batch_size, info or DistInfo()
    if info.world_size == 1:
        generator = torch.Generator().manual_seed(config.seed)
        loader = DataLoader(dataset, batch_size=size, shuffle=True, drop_last=True, generator=generator)
        sampler = None
    else:
        sampler = DistributedSampler(dataset, info.world_size, info.rank, seed=config.seed, drop_last=True)
        loader = DataLoader(dataset, batch_size=size, sampler=sampler, drop_last=True)
    if len(loader) == 0 and info.world_size > 1:
        raise ConfigError(f"data.batch_size {size} is larger than a rank's shard of the data ({len(dataset)} images "
                          f"on {info.world_size} ranks); lower data.batch_size or use fewer ranks")  # fmt: skip
    if len(loader) == 0:
        raise ConfigError(f"data.batch_size {size} is larger than the dataset ({len(dataset)})")
    epoch = 0
    while True:
        if sampler is not None:
            sampler.set_epoch(epoch)
        yield from loader
        epoch += 1


def preflight(config: PipelineConfig) -> None:
    """What can be checked before anything trains, so that a bad setting costs a second, not a
    training run: the image size against the generator and the discriminator (shapes only, on
    the meta device), a rounding no group can take, a FID weights file that is not there."""
    plan = full_plan(config.model.arch, **config.model.sizes)
    size, arch, t = config.data.image_size, plan.arch, config.train
    nc = plan.sizes.get("output_nc", 3)
    factor = {"resnet": 4, "unet": 2 ** plan.sizes.get("num_downs", 0)}.get(arch)
    hint = f"use a multiple of {factor}" if factor else f"the dcgan model makes {plan.sizes.get('image_size')}² images"
    with torch.device("meta"), torch.no_grad():
        x = torch.zeros(example_input_shape(plan, size, batch=2))
        try:
            fake = build_generator(arch, plan)(x)
        except (RuntimeError, ValueError) as exc:
            raise ConfigError(f"data.image_size {size} does not fit the {arch} generator "
                              f"({str(exc).splitlines()[0][:100]}); {hint}") from None  # fmt: skip
        if arch != "dcgan" and fake.shape[-2:] != x.shape[-2:]:
            raise ConfigError(f"the {arch} generator maps {size}² images to {fake.shape[-1]}²: data.image_size: {hint}")
        if arch == "dcgan" and size != fake.shape[-1]:
            raise ConfigError(f"data.image_size {size}: {hint}; set data.image_size = {fake.shape[-1]}")
        if t.setup == "pix2pix":
            d = build_discriminator(arch, input_nc=x.shape[1] + nc, ndf=t.ndf, n_layers=t.n_layers_d)
            seen = torch.cat([x, fake], 1)
        elif t.setup == "cyclegan":
            d, seen = build_discriminator(arch, input_nc=nc, ndf=t.ndf, n_layers=t.n_layers_d), fake
        else:
            d, seen = build_discriminator("dcgan", input_nc=nc, ndf=t.ndf, image_size=plan.sizes["image_size"]), fake
        try:
            d(seen)
        except (RuntimeError, ValueError):
            raise ConfigError(f"data.image_size {size} is too small for the discriminator (train.n_layers_d "
                              f"{t.n_layers_d}); use larger images or fewer layers") from None  # fmt: skip
    widest = max((plan.widths[g] for g in plan.prunable), default=0)
    latency_budget(config)  # a latency model for another device, runtime or generator: one line now
    if config.search.round_to >= widest:
        raise ConfigError(f"search.round_to {config.search.round_to} leaves nothing to prune: the widest prunable "
                          f"channel group has {widest} channels; use a smaller round_to")  # fmt: skip
    weights = config.eval.fid_weights
    if weights and not Path(weights).expanduser().is_file():
        raise ConfigError(f"eval.fid_weights {weights} does not exist; give pytorch-fid's "
                          f"{FID_WEIGHTS} or leave it empty")  # fmt: skip
    if weights and not (digest := sha256_file(Path(weights).expanduser())).startswith(FID_WEIGHTS_SHA256_PREFIX):
        raise ConfigError(f"eval.fid_weights {weights} is not pytorch-fid's Inception weights (SHA-256 "
                          f"{digest[:12]}…, expected {FID_WEIGHTS_SHA256_PREFIX}…); give {FID_WEIGHTS}")  # fmt: skip


def latency_budget(config: PipelineConfig):
    """The search's latency budget (compress.latency.LatencyBudget) when it has a latency
    target, else None. The model must be of this generator at the export size, and of a device,
    runtime and thread count this run benches (so its prediction is measured); on the host, of
    the runtime version installed here. Anything else is one line."""
    s, b = config.search, config.bench
    if not s.latency_model:
        return None
    from compress.latency import LatencyBudget, LatencyModel, LatencyModelError, search_margin

    model = LatencyModel.load(Path(s.latency_model).expanduser())
    model.check(model.key, plan=full_plan(config.model.arch, **config.model.sizes), input_shape=export_shape(config))
    k = model.key
    if k.device not in b.devices or k.runtime not in b.runtimes or k.threads != b.threads:
        raise LatencyModelError(f"the latency model was measured on {k.describe()}, but this run benches "
                                f"{', '.join(b.runtimes)} on {', '.join(b.devices)} with {b.threads} thread(s): "
                                "calibrate for one of those, or bench where the model was measured")  # fmt: skip
    if k.precision not in ("fp32", config.export.precision):
        raise LatencyModelError(f"the latency model is for {k.precision} files; this run exports "
                                f"{config.export.precision}")  # fmt: skip
    if k.device == "host":  # a newer runtime here makes the model stale
        from device_bench.calibrate import measured_tools

        model.check(k, measured_tools("host", k.runtime, Path(b.binaries)))
    else:  # and anywhere, files of another export graph than the one it was measured on
        model.check(k, {GRAPH_FORM_KEY: GRAPH_FORMS[k.runtime]})
    if not 0 < s.target_latency_ms < model.dense_ms:
        raise LatencyModelError(f"search.target_latency_ms {s.target_latency_ms:g} must be below the dense model's "
                                f"predicted {model.dense_ms:.3g} ms on {k.describe()}")  # fmt: skip
    budget = LatencyBudget(model, s.target_latency_ms, search_margin(model, s.latency_margin))
    steps = group_steps(s, model.plan.prunable, budget)
    least = fastest_widths(model.plan.widths, steps, s.min_channels)
    fastest = model.predict(least)
    if s.target_latency_ms < fastest:
        coarse = max(steps.values(), default=1) > 1
        raise LatencyModelError(f"search.target_latency_ms {s.target_latency_ms:g} is below the fastest plan's "
                                f"predicted {fastest:.3g} ms on {k.describe()} ({fewest(least)}: min_channels in "
                                f"the multiples the search rounds to): pick a larger target"
                                + (" or a smaller search.round_to" if coarse else ""))  # fmt: skip
    budget.aim_no_lower_than(fastest)
    return budget


def latency_stop(config: PipelineConfig, budget, dist_info: DistInfo, resources: contextlib.ExitStack):
    """The search's measured stop (compress.latency.MeasuredStop) when it has a latency target
    and search.latency_timings > 0, else None: each plan it stops at is exported (random weights:
    timing only) and timed as an ordinary bench job on the latency model's device, with the bench
    stage's warm-up and runs (more where they would take under CHECK_MIN_S); the bundles (the
    reference plans exported once each) and a phone's connection live in `resources`, the search's length.
    Under torchrun rank 0 times it and every rank gets its timing."""
    if budget is None or config.search.latency_timings <= 0:
        return None
    from compress.distributed import from_main
    from compress.latency import MeasuredStop, check_runs
    from device_bench.calibrate import plan_timer
    from device_bench.records import JobError

    key, b = budget.model.key, config.bench
    size = config.export.image_size or config.data.image_size
    calibration = None
    if key.precision == "int8":  # quantized on images of the right size; values matter little for timing
        rng = np.random.default_rng(config.seed)
        calibration = [rng.uniform(-1, 1, budget.model.input_shape).astype(np.float32) for _ in range(4)]
    timers: dict[int, Any] = {}  # by run count: each keeps the bundles it exported
    transport = None

    def time_on_device(widths) -> float:
        nonlocal transport
        if key.device != "host" and transport is None:  # reconnects by itself after a drop
            from device_bench.adb import AdbTransport

            transport = AdbTransport(key.device)
            resources.callback(transport.close)
            transport.connect()
        runs = check_runs(budget.predict(widths), b.runs)
        if runs not in timers:
            scratch = Path(resources.enter_context(tempfile.TemporaryDirectory(prefix="coronet-search-timing-")))
            timers[runs] = plan_timer(key, size, scratch, runs, b.warmup_s, Path(b.binaries), transport, calibration)
        return timers[runs](budget.model.plan.with_widths(widths), profile=False).median_ms

    def measure(widths) -> float:
        outcome: tuple[float | None, str | None] = (None, None)
        if dist_info.is_main:
            try:
                outcome = (time_on_device(widths), None)
            except Exception as e:  # every rank stops with rank 0's error, none waits for it
                outcome = (None, f"{type(e).__name__}: {e}")
        ms, error = from_main(outcome)
        if error is not None:  # the search's state is saved on the way out: the same command resumes it
            raise JobError(f"timing the search's plan on {key.describe()} failed ({error}); run again to resume, "
                           "or --latency-timings 0 to stop on the prediction alone")  # fmt: skip
        return ms

    return MeasuredStop(budget, measure, config.search.latency_timings)


def export_shape(config: PipelineConfig) -> tuple[int, ...]:
    """The exported files' input shape (batch 1): `export.image_size`, or the training size."""
    plan = full_plan(config.model.arch, **config.model.sizes)
    return example_input_shape(plan, config.export.image_size or config.data.image_size)


def export_images(
    config: PipelineConfig, shape: tuple[int, ...]
) -> tuple[list[np.ndarray], tuple[list[np.ndarray], list[np.ndarray] | None] | None]:
    """What the export stage checks lower precisions on: `export.calibration_images` training
    inputs (noise vectors for DCGAN) to calibrate int8, and the held-out inputs with their true
    outputs (None where the task has none) to measure each file's quality, all at the export's
    input `shape` (resized when it is not the training size), as NCHW batches of one."""
    n = config.export.calibration_images

    def sized(x: torch.Tensor) -> list[np.ndarray]:
        if x.dim() == 4 and x.shape[-2:] != tuple(shape[-2:]):
            x = torch.nn.functional.interpolate(x, size=tuple(shape[-2:]), mode="bilinear", align_corners=False)
        return [x[i : i + 1].float().numpy() for i in range(len(x))]

    if config.train.setup == "dcgan":
        generator = torch.Generator().manual_seed(config.seed)
        return sized(torch.randn((n, *shape[1:]), generator=generator)), None
    train, _ = _datasets(config)
    side = 1 if config.train.setup == "cyclegan" and config.train.direction == "BtoA" else 0  # the generator's input
    calibration = torch.stack([train[i][side] for i in range(min(n, len(train)))])
    held = held_out_images(config)
    held_out = (sized(held[0]), sized(held[1]) if held[2] else None) if held is not None else None
    return sized(calibration), held_out


def held_out_images(config: PipelineConfig) -> tuple[torch.Tensor, torch.Tensor, bool] | None:
    """(inputs, real targets, whether they are pairs) for judging a generator: the built-in
    held-out pairs, or the dataset's test split when it has one (up to data.n_test images)."""
    d, setup = config.data, config.train.setup
    if setup == "dcgan":
        return None
    if d.kind == "builtin":
        _, held_out = _datasets(config)
        return (held_out[0], held_out[1], True) if held_out is not None else None
    transform = Transform(load_size=d.image_size, crop_size=d.image_size, train=False)
    root = Path(d.root)
    if d.kind == "aligned" and (root / "test").is_dir():
        dataset: Dataset = AlignedFolder(root, "test", d.direction, transform, d.seed)
    elif d.kind == "unaligned" and (root / "testA").is_dir() and (root / "testB").is_dir():
        dataset = UnalignedFolders(root, "test", transform, d.seed)
    else:
        return None
    n = min(len(dataset), d.n_test)
    pairs = [dataset[i] for i in range(n)]
    a, b = torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs])
    if d.kind == "unaligned" and config.train.direction == "BtoA":
        a, b = b, a
    return a, b, d.kind == "aligned"


@torch.no_grad()
def evaluate_generator(model: torch.nn.Module, config: PipelineConfig) -> dict[str, Any]:
    """Quality of a generator on held-out data: FID/KID (or why they are unavailable) and, where
    the data has ground truth, paired L1 and PSNR."""
    images = held_out_images(config)
    if images is None:
        reason = "no held-out images (DCGAN, or no test split in data.root)"
        return {"paired": None, "fid": {"fid": None, "kid": None, "reason": reason}, "n": 0}
    a, b, paired = images
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    fake = torch.cat([model(a[i : i + 16].to(device)).cpu() for i in range(0, len(a), 16)])
    model.train(was_training)
    fid = fid_kid(fake, b, config.eval.fid_weights or None)
    return {
        "paired": paired_metrics(fake, b) if paired else None,
        "fid": {"fid": fid.fid, "kid": fid.kid, "kid_std": fid.kid_std, "reason": fid.reason},
        "n": len(a),
    }


def dense_inputs(config: PipelineConfig) -> dict[str, Any]:
    """The config values the dense stage reads (the source files are fingerprinted apart): a
    new converge budget or distillation weight does not train the dense reference again."""
    c = config.to_dict()
    train = {k: v for k, v in c["train"].items() if k not in ("converge_steps", "distill_weight")}
    return {k: c[k] for k in ("model", "data", "eval", "seed", "device")} | {
        "train": train,
        "init_from": c["search"]["init_from"],
    }


def dense_source(config: PipelineConfig) -> str:
    """The file the dense reference is imported from ('' when it is trained here or untrained)."""
    return config.search.init_from or config.train.teacher


def dense_stage(config: PipelineConfig, run_dir: Path, progress: bool = True) -> dict[str, Any] | None:
    """The dense generator the compressed one is compared with, made once per run directory:
    imported from the pretrained generator of the config (search.init_from, else train.teacher;
    any format `import_generator` reads); else trained here for train.dense_steps with the same
    GAN losses; else the dense architecture at its initial weights, which is right for MACs and
    latency but says nothing about quality. Writes dense.pt and dense.json. Under torchrun
    every rank trains; rank 0 writes and returns the record, the others return None."""
    plan = full_plan(config.model.arch, **config.model.sizes)
    source = dense_source(config)
    trained = True
    if source:
        imported = import_dense(source, plan)
        model, source = imported.model, f"{source}: {imported.describe()}"
    elif config.train.dense_steps > 0:
        device = training_device(config)
        info = init_from_env(device)
        torch.manual_seed(config.seed)
        model = build_generator(config.model.arch, plan).to(device).train()
        budget = dataclasses.replace(
            _scaled_train(config), converge_steps=config.train.dense_steps,
            decay_steps=min(config.train.decay_steps, config.train.dense_steps), distill_weight=0.0,
        )  # fmt: skip
        dataset, _ = _datasets(config)
        ddp = partial(wrap, info=info, device=device)
        trainer = GanTrainer(ddp(model), plan, budget, device, wrap=ddp)
        _reseed_rank(config, info)
        converge(trainer, training_batches(dataset, config, info), budget, progress and info.is_main, desc="dense")
        if not info.is_main:
            return None
        source = f"trained here for {config.train.dense_steps} steps"
    else:
        torch.manual_seed(config.seed)
        model, trained = build_generator(config.model.arch, plan), False
    if trained:
        quality = evaluate_generator(model, config)
    else:
        why = "untrained dense reference (set search.init_from or train.dense_steps to compare quality)"
        quality = {"paired": None, "fid": {"fid": None, "kid": None, "reason": why}, "n": 0, "untrained": True}
    save_checkpoint(run_dir / DENSE_CHECKPOINT, model.cpu().eval(), config.to_dict())
    record = {"source": source or None, "trained": trained, "quality": quality}
    write_json(run_dir / "dense.json", record)
    return record


def import_dense(path: str, plan: ChannelPlan) -> ImportedGenerator:
    """A trained dense generator of `plan` from any supported file (to start from, distill from
    or compare with); a file of another architecture or size is refused with one line."""
    imported = import_generator(path, plan.arch, **plan.sizes)
    if imported.plan != plan:
        raise CheckpointError(
            f"{path} is not a dense generator of the configured model ({plan.arch}, {dict(plan.sizes)}): "
            "it holds a pruned plan"
        )
    return imported


def search_stage(config: PipelineConfig, run_dir: Path, progress: bool = True) -> SearchResult:
    """Train the GAN with the hyper generator until the MACs target is reached."""
    device = training_device(config)
    torch.manual_seed(config.seed)
    plan = full_plan(config.model.arch, **config.model.sizes)
    dist_info = init_from_env(device)
    dataset, _ = _datasets(config)
    batches = training_batches(dataset, config, dist_info)
    hyper = HyperGenerator(config.model.arch, plan, config.search.embedding_dim)
    if config.search.init_from:
        dense = import_dense(config.search.init_from, plan).model
        measure = config.search.saliency
        latents = None if measure == "none" else latents_from_saliency(channel_saliency(dense, measure))
        init_from_dense(hyper, dense, latents, fit=config.search.fit)
    hyper.to(device)
    if config.search.compile:
        hyper.hypernet.use_compiled()
    ddp = partial(wrap, info=dist_info, device=device)
    trainer = GanTrainer(ddp(hyper), plan, _scaled_train(config), device, wrap=ddp)
    # The generators learn at search.lr while searching (the proximal step shrinks by lam times
    # it); the discriminators at train.lr, as in the converge stage.
    for group in trainer.opt_g.param_groups:
        group["lr"] = config.search.lr * lr_factor(config.train.lr_scaling)
    cost = PlanCost(plan, example_input_shape(plan, config.data.image_size))
    budget = latency_budget(config)
    search_config = config.search  # with a latency budget, round_to 1 rounds each group as it says (group_steps)
    state_path = run_dir / SEARCH_STATE
    # A search resumes when everything it reads but its step budget is unchanged.
    inputs = search_inputs(config)
    key = json.dumps({**inputs, "search": {**inputs["search"], "max_steps": 0, "allow_miss": 0}}, sort_keys=True)
    start = 0
    state = _load_state(state_path, device)
    if state.get("key") == key:
        hyper.load_state_dict(state["hyper"])
        trainer.load_state_dict(state["trainer"])
        trainer.opt_g.load_state_dict(state["opt_g"])
        trainer.opt_d.load_state_dict(state["opt_d"])
        start = int(state["step"])
    _reseed_rank(config, dist_info)

    def check_ranks() -> dict[str, Any]:
        """Under torchrun: the ranks' latents (so their plans) must be the same at every check."""
        gap = spread(list(hyper.latents.values()))
        if gap > 0:
            raise TrainingDivergedError(
                f"the ranks' latents differ by {gap:.3g} (DDP did not keep them equal); run the search in one process"
            )
        return {"ranks": dist_info.world_size, "latent_spread": gap}

    def save_state(step: int) -> None:
        state = {
            "key": key,
            "step": step,
            "hyper": hyper.state_dict(),
            "trainer": trainer.state_dict(),
            "opt_g": trainer.opt_g.state_dict(),
            "opt_d": trainer.opt_d.state_dict(),
        }
        atomic_write_bytes(state_path, lambda f: torch.save(state, f))

    writer = _tensorboard(run_dir / "tensorboard") if dist_info.is_main else None
    resources = contextlib.ExitStack()
    try:
        result = run_search(
            hyper,
            lambda _: trainer.step(next(batches)),
            search_config,
            cost,
            current_lr=lambda: trainer.opt_g.param_groups[0]["lr"],
            log_path=run_dir / "search_log.jsonl" if dist_info.is_main else None,
            progress=progress and dist_info.is_main,
            start_step=start,
            save_state=save_state if dist_info.is_main else None,
            writer=writer,
            on_check=check_ranks if dist_info.world_size > 1 else None,
            budget=budget,
            stop=latency_stop(config, budget, dist_info, resources),
        )
    finally:
        resources.close()
        if writer is not None:
            writer.close()
    if not dist_info.is_main:  # every rank holds the same latents; one writes
        return result
    atomic_write_bytes(run_dir / GAN_STATE, lambda f: torch.save(trainer.state_dict(), f))
    save_checkpoint(run_dir / HYPER_CHECKPOINT, hyper, config.to_dict())
    write_json(run_dir / "search.json", result.to_dict())
    state_path.unlink(missing_ok=True)  # finished: a new run starts a new search
    return result


def _load_state(path: Path, device: torch.device) -> dict[str, Any]:
    """A saved training state, or {} when there is none or it is damaged (that only costs the
    progress it held)."""
    if not path.is_file():
        return {}
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except Exception:
        return {}


def _tensorboard(log_dir: Path):
    """A TensorBoard writer when the tensorboard package is installed, else None."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(log_dir))


@dataclass(frozen=True)
class SlimResult:
    path: Path
    plan: ChannelPlan
    full_plan: ChannelPlan
    macs: MacCount
    full_macs: MacCount
    max_abs_diff: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "plan": self.plan.to_dict(),
            "macs": self.macs.to_dict(),
            "full_macs": self.full_macs.to_dict(),
            "ratio": self.macs.macs / self.full_macs.macs,
            "max_abs_diff_vs_hyper": self.max_abs_diff,
        }


@torch.no_grad()
def slim_stage(run_dir: Path) -> SlimResult:
    """Remove the pruned channels of the searched hyper generator; check both agree."""
    loaded = load_checkpoint(run_dir / HYPER_CHECKPOINT)
    hyper = loaded.model
    if not isinstance(hyper, HyperGenerator):
        raise CheckpointError(f"{run_dir / HYPER_CHECKPOINT} holds a {loaded.kind}, not a hyper generator")
    size = int(loaded.config.get("data", {}).get("image_size", 64))
    hyper.eval()
    slim = slim_generator(hyper)
    shape = example_input_shape(hyper.plan, size, batch=2)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    diff = float((slim(x) - hyper(x)).abs().max())
    path = save_checkpoint(run_dir / SLIM_CHECKPOINT, slim, loaded.config)
    single = example_input_shape(hyper.plan, size)
    result = SlimResult(path, slim.plan, hyper.plan, count_macs(slim, single), PlanCost(hyper.plan, single).full, diff)
    write_json(run_dir / "slim.json", result.to_dict())
    return result


@dataclass(frozen=True)
class ConvergeResult:
    path: Path
    steps: int
    final_losses: dict[str, float]
    quality: dict[str, Any]  # evaluate_generator's record

    @property
    def paired(self) -> dict[str, float] | None:
        return self.quality["paired"]

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "steps": self.steps,
            "final_losses": self.final_losses,
            "paired": self.paired,
            "quality": self.quality,
        }


def converge_stage(run_dir: Path, progress: bool = True, config: PipelineConfig | None = None) -> ConvergeResult | None:
    """Fine-tune the slim generator (fresh generator optimizer, the search's discriminators).
    `config` (default: the one the search ran with) sets the training and evaluation. Under
    torchrun every rank trains; rank 0 writes and returns the result, the others return None."""
    loaded = load_checkpoint(run_dir / SLIM_CHECKPOINT)
    config = config or config_from_dict(loaded.config)
    device = training_device(config)
    info = init_from_env(device)
    torch.manual_seed(config.seed + 1)
    slim = loaded.model.to(device).train()
    trainer_plan = full_plan(loaded.arch, **loaded.plan.sizes)
    ddp = partial(wrap, info=info, device=device)
    train_config = _scaled_train(config)
    trainer = GanTrainer(ddp(slim), trainer_plan, train_config, device, wrap=ddp)
    if (run_dir / GAN_STATE).is_file():
        try:
            trainer.load_state_dict(torch.load(run_dir / GAN_STATE, map_location=device, weights_only=True))
        except Exception as exc:  # truncated, corrupt, or of other discriminators
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
            raise CheckpointError(f"{run_dir / GAN_STATE} is damaged or does not fit this config ({reason}); "
                                  "delete it, or run the search again (--from search)") from None  # fmt: skip
    if config.train.distill_weight > 0:
        trainer.teacher = import_dense(config.train.teacher, trainer_plan).model.to(device).eval()
    dataset, _ = _datasets(config)
    # Converging resumes when the slim generator and the training config are unchanged.
    key = json.dumps({"slim": sha256_file(run_dir / SLIM_CHECKPOINT), **converge_inputs(config)}, sort_keys=True)
    state_path, start, opt_g_state, earlier = run_dir / CONVERGE_STATE, 0, None, []
    state = _load_state(state_path, device)
    if state.get("key") == key:
        slim.load_state_dict(state["generator"])
        trainer.load_state_dict(state["trainer"])
        trainer.opt_d.load_state_dict(state["opt_d"])
        start, opt_g_state, earlier = int(state["step"]), state["opt_g"], state["log"]
    _reseed_rank(config, info)

    def save_state(step: int, log: list[dict[str, float]]) -> None:
        state = {"key": key, "step": step, "generator": slim.state_dict(), "trainer": trainer.state_dict(),
                 "opt_g": trainer.opt_g.state_dict(), "opt_d": trainer.opt_d.state_dict(),
                 "log": earlier + log}  # fmt: skip
        atomic_write_bytes(state_path, lambda f: torch.save(state, f))

    log = converge(trainer, training_batches(dataset, config, info), train_config, progress=progress and info.is_main,
                   start_step=start, opt_g_state=opt_g_state, save_state=save_state if info.is_main else None,
                   checkpoint_every=config.search.checkpoint_every)  # fmt: skip
    if not info.is_main:
        return None
    log = earlier + log
    with open(run_dir / "converge_log.jsonl", "w") as f:
        f.writelines(json.dumps(record) + "\n" for record in log)
    quality = evaluate_generator(slim, config)
    path = save_checkpoint(run_dir / CONVERGED_CHECKPOINT, slim.cpu(), config.to_dict())
    final = {k: v for k, v in (log[-1] if log else {}).items() if k != "step"}
    result = ConvergeResult(path, len(log), final, quality)
    write_json(run_dir / "converge.json", result.to_dict())
    state_path.unlink(missing_ok=True)  # finished: a new run starts a new converge
    return result
