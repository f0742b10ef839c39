"""Long loops outside a terminal print a progress line every few seconds instead of a bar (a
search in a CI log or behind a pipe used to print nothing for minutes)."""

import io
import re

import torch

import compress
from compress.data import builtin_paired, random_batches
from compress.search import SearchConfig, regression_train_step, run_search
from coronet.progress import EVERY_ENV, Progress


def test_lines_every_interval_with_the_fields(monkeypatch):
    out = io.StringIO()  # not a terminal
    bar = Progress("search", 100, initial=10, stream=out, every_s=1e-9)
    bar.show(G=1.25, macs_ratio=0.4123)
    bar.update(5)
    bar.close()
    [line] = out.getvalue().splitlines()
    assert re.fullmatch(r"search: step 15/100 \(15 %\), [\d.]+ steps/s, [\d.]+ min left, G 1\.25, macs_ratio 0\.4123",
                        line), line  # fmt: skip
    quiet = io.StringIO()
    for bar in (Progress("x", 10, stream=quiet, enabled=False), Progress("x", 10, stream=quiet, every_s=3600)):
        bar.update(3)
    assert quiet.getvalue() == ""  # off, or not yet due
    monkeypatch.setenv(EVERY_ENV, "0")
    bar = Progress("x", 10, stream=quiet)
    bar.update(3)
    assert quiet.getvalue() == ""  # 0: no lines


def test_a_search_outside_a_terminal_says_how_it_goes(capsys, monkeypatch):
    monkeypatch.setenv(EVERY_ENV, "0.000001")
    torch.manual_seed(0)
    plan = compress.full_plan("resnet", ngf=8, n_blocks=1)
    hyper = compress.HyperGenerator("resnet", plan)
    config = SearchConfig(target_macs=0.5, lam=50.0, lr=1e-3, max_steps=200, check_every=2)
    a, b = builtin_paired(4, 32)
    step, _ = regression_train_step(hyper, random_batches(a, b, 2), config)
    result = run_search(hyper, step, config, compress.PlanCost(plan, (1, 3, 32, 32)), progress=True)
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("search: step ")]
    assert len(lines) >= result.steps - 1 and "\r" not in "".join(lines)  # lines, never a redrawn bar
    assert re.search(r"macs_ratio 0\.\d+, target 0\.5$", lines[-1]), lines[-1]
