"""Two CPU processes with the gloo backend: the proximal step keeps the latents identical."""

import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import compress
from compress.data import builtin_paired, random_batches
from compress.distributed import DistInfo, wrap
from compress.search import ControlledPruner, SearchConfig, make_adam


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, out_dir: str, use_ddp: bool) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.manual_seed(0)  # the same initial model on every rank
    plan = compress.full_plan("resnet", ngf=8, n_blocks=1)
    hyper = compress.HyperGenerator("resnet", plan, embedding_dim=2)
    model = wrap(hyper, DistInfo(rank, world), torch.device("cpu")) if use_ddp else hyper
    config = SearchConfig(target_macs=0.3, lam=20.0, lr=1e-3)
    optimizer = make_adam(hyper.parameters(), config.lr, (config.beta1, config.beta2))
    pruner = ControlledPruner(hyper, compress.PlanCost(plan, (1, 3, 32, 32)), config)
    a, b = builtin_paired(8, 32, seed=rank)  # different data on each rank
    batches = random_batches(a, b, 2, seed=rank)
    for _ in range(15):
        x, y = next(batches)
        loss = (model(x) - y).abs().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        pruner.step(config.lr)
    torch.save({g: z.detach() for g, z in hyper.latents.items()}, os.path.join(out_dir, f"{rank}.pt"))
    dist.destroy_process_group()


def _run(tmp_path, use_ddp):
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path), use_ddp), nprocs=2, join=True)
    return [torch.load(tmp_path / f"{r}.pt", weights_only=True) for r in (0, 1)]


def test_ddp_keeps_latents_identical_on_both_ranks(tmp_path):
    z0, z1 = _run(tmp_path, use_ddp=True)
    assert all(torch.equal(z0[g], z1[g]) for g in z0)
    assert any((z0[g] == 0).any() for g in z0)  # the proximal step did prune


def test_without_ddp_the_ranks_drift_apart(tmp_path):
    """The control: the same run without gradient averaging diverges, so the test above can fail."""
    z0, z1 = _run(tmp_path, use_ddp=False)
    assert not all(torch.equal(z0[g], z1[g]) for g in z0)
