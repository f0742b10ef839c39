"""Tiny generator configurations shared by the tests: every family, small widths, small inputs."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import torch

import compress
from tests.pipeline import TINY_PIPELINE, run_pipeline

TINY = {
    "resnet": ({"ngf": 8, "n_blocks": 2}, (2, 3, 32, 32)),
    "unet": ({"ngf": 8, "num_downs": 5}, (2, 3, 32, 32)),
    "dcgan": ({"ngf": 8, "nz": 16, "image_size": 16}, (2, 16, 1, 1)),
}


@pytest.fixture(params=sorted(TINY))
def tiny(request):
    """(arch, full plan, input shape) of a tiny generator of each family."""
    arch = request.param
    sizes, shape = TINY[arch]
    return arch, compress.full_plan(arch, **sizes), shape


def randomize_norms(model: torch.nn.Module, seed: int = 0) -> None:
    """Give BatchNorms non-trivial statistics and affine parameters, so slicing them matters."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g))
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
                m.weight.copy_(torch.randn(m.weight.shape, generator=g))
                m.bias.copy_(torch.randn(m.bias.shape, generator=g))


@pytest.fixture(scope="session")
def pipeline_run(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """One full run of every stage (search → ... → report) on the tiny config: (folder, process).
    The folder holds tiny.toml and the run directory `run`; tests that change it copy it first."""
    folder = tmp_path_factory.mktemp("pipeline")
    (folder / "tiny.toml").write_text(TINY_PIPELINE)
    proc = run_pipeline("tiny.toml", "--run-dir", "run", "--quiet", cwd=folder)
    assert proc.returncode == 0, proc.stderr
    return folder, proc
