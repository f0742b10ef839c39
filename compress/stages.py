"""The compress stages as functions over a run directory: files in, files out.

run_dir/
  checkpoints/hyper.pt   the searched hyper generator        (search)
  search_log.jsonl       step, losses, MACs ratio, widths     (search)
  search.json            the SearchResult                     (search)
  slim.pt                the slim generator                   (slim)
  slim.json              plan, MACs, exactness check          (slim)
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from compress.checkpoint import atomic_write_bytes, load_checkpoint, save_checkpoint
from compress.config import PipelineConfig
from compress.data import builtin_paired, random_batches
from compress.errors import CheckpointError, ConfigError
from compress.hyper import HyperGenerator
from compress.macs import MacCount, PlanCost, count_macs
from compress.models import example_input_shape, full_plan
from compress.plan import ChannelPlan
from compress.search import SearchResult, regression_train_step, run_search
from compress.slim import slim_generator

HYPER_CHECKPOINT = Path("checkpoints/hyper.pt")
SLIM_CHECKPOINT = Path("slim.pt")


def write_json(path: Path, data: dict[str, Any]) -> None:
    atomic_write_bytes(path, lambda f: f.write((json.dumps(data, indent=2) + "\n").encode()))


def _device(config: PipelineConfig) -> torch.device:
    if config.device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {config.device!r} asked for, but CUDA is not available here; use 'cpu'")
    return torch.device(config.device)


def search_stage(config: PipelineConfig, run_dir: Path, progress: bool = True) -> SearchResult:
    """Train the hyper generator on the configured data until the MACs target is reached."""
    if config.model.arch == "dcgan":
        raise ConfigError("the dcgan search needs GAN training, which is not implemented yet; use resnet or unet")
    device = _device(config)
    torch.manual_seed(config.seed)
    plan = full_plan(config.model.arch, **config.model.sizes)
    size = config.data.image_size
    a, b = builtin_paired(config.data.n_train, size, config.data.seed)
    batches = ((x.to(device), y.to(device)) for x, y in random_batches(a, b, config.data.batch_size, config.seed))
    hyper = HyperGenerator(config.model.arch, plan, config.search.embedding_dim).to(device)
    cost = PlanCost(plan, example_input_shape(plan, size))
    step, _ = regression_train_step(hyper, batches, config.search)
    result = run_search(hyper, step, config.search, cost, log_path=run_dir / "search_log.jsonl", progress=progress)
    save_checkpoint(run_dir / HYPER_CHECKPOINT, hyper, config.to_dict())
    write_json(run_dir / "search.json", result.to_dict())
    return result


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
    config = loaded.config
    size = int(config.get("data", {}).get("image_size", 64))
    hyper.eval()
    slim = slim_generator(hyper)
    shape = example_input_shape(hyper.plan, size, batch=2)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    diff = float((slim(x) - hyper(x)).abs().max())
    path = save_checkpoint(run_dir / SLIM_CHECKPOINT, slim, config)
    single = example_input_shape(hyper.plan, size)
    dense_macs = PlanCost(hyper.plan, single).full
    result = SlimResult(path, slim.plan, hyper.plan, count_macs(slim, single), dense_macs, diff)
    write_json(run_dir / "slim.json", result.to_dict())
    return result
