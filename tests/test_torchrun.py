"""`torchrun --standalone --nproc_per_node 2 compress-and-ship` end to end on the CPU (gloo): every
training stage on both ranks, one writer, one line per stage, Ctrl-C and resume, one-line errors."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.pipeline import TINY_PIPELINE, interruptible

BIN = Path(sys.executable).parent
STAGES = ("dense", "search", "slim", "converge", "export", "bench", "report")


def _torchrun(*args: str) -> list[str]:
    return [str(BIN / "torchrun"), "--standalone", "--nproc_per_node", "2", str(BIN / "compress-and-ship"), *args]


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_ctrl_c_under_torchrun_then_the_rest_of_the_pipeline(tmp_path):
    """Run 1 is interrupted in the search (after the dense reference trained on both ranks); run 2
    keeps the dense stage, resumes the search and goes on through slim, converge, export, bench and
    report. At every check of the search both ranks held the same latents."""
    config = TINY_PIPELINE.replace("lam = 50.0", "lam = 4.0\ncheckpoint_every = 5").replace(
        "max_steps = 300", "max_steps = 3000"
    )
    (tmp_path / "slow.toml").write_text(config)
    run = tmp_path / "run"
    proc = subprocess.Popen(_torchrun("slow.toml", "--run-dir", "run", "--quiet"), cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=interruptible)  # fmt: skip
    state = run / "checkpoints" / "search_state.pt"
    deadline = time.monotonic() + 240
    while not state.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, proc.communicate()
    proc.send_signal(signal.SIGINT)  # torchrun passes it on to both ranks
    out, err = proc.communicate(timeout=120)
    assert proc.returncode != 0
    assert err.count("compress-and-ship: interrupted; finished stages are kept in the run directory") == 1, err
    assert "compress-and-ship: error" not in err and "Error" not in out, err
    assert out.count("[dense] ") == 1 and "[search]" not in out  # rank 0 alone prints
    assert (run / "stages" / "dense.json").is_file() and json.loads((run / "dense.json").read_text())["trained"]
    interrupted_at = len(_lines(run / "search_log.jsonl"))
    assert state.exists() and interrupted_at >= 5

    again = subprocess.run(_torchrun("slow.toml", "--run-dir", "run", "--quiet"), cwd=tmp_path,
                           capture_output=True, text=True, timeout=600)  # fmt: skip
    assert again.returncode == 0, again.stderr[-3000:]
    assert "[dense] up to date" in again.stdout
    for stage in STAGES[1:]:
        assert again.stdout.count(f"[{stage}] ") == 1, again.stdout
    search = json.loads((run / "search.json").read_text())
    assert f"resumed from step {search['resumed_from']}" in again.stdout and search["resumed_from"] >= 5
    log = _lines(run / "search_log.jsonl")
    assert [r["step"] for r in log] == list(range(1, search["steps"] + 1)) and search["steps"] > interrupted_at
    # both ranks' latents compared at every check of both runs: identical each time
    assert all(r["ranks"] == 2 and r["latent_spread"] == 0.0 for r in log)
    assert search["reached"] and 0.48 <= search["ratio"] <= 0.5
    manifest = json.loads((run / "export" / "manifest.json").read_text())
    dense = json.loads((run / "export_dense" / "manifest.json").read_text())
    assert manifest["model"]["plan"] == search["plan"]
    assert abs(manifest["cost"]["macs"] / dense["cost"]["macs"] - search["ratio"]) < 1e-9
    assert json.loads((run / "converge.json").read_text())["steps"] == 4
    assert (run / "site" / "index.html").is_file() and "summary (latency: median ms):" in again.stdout


def test_an_error_on_the_ranks_is_one_line(tmp_path):
    """Each rank's shard is half the data: a batch that fits the data but not a shard stops both
    ranks in the dense stage with one line (no rank's traceback, no hang)."""
    config = TINY_PIPELINE.replace("batch_size = 2", "batch_size = 5")  # 8 images: shards of 4
    (tmp_path / "big.toml").write_text(config)
    proc = subprocess.run(_torchrun("big.toml", "--run-dir", "run", "--quiet"), cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode != 0
    ours = [line for line in proc.stderr.splitlines() if line.startswith("compress-and-ship: error:")]
    assert ours == [
        "compress-and-ship: error: data.batch_size 5 is larger than a rank's shard of the data "
        "(8 images on 2 ranks); lower data.batch_size or use fewer ranks"
    ], proc.stderr
    assert "compress_and_ship.py" not in proc.stderr  # no traceback through our code
    assert not (tmp_path / "run" / "stages" / "dense.json").exists()


def test_each_rank_reads_its_own_shard_every_epoch():
    """Two ranks' batches of one epoch are disjoint and cover the data; the next epoch splits anew."""
    import torch
    from torch.utils.data import TensorDataset

    from compress.config import parse_config
    from compress.distributed import DistInfo
    from compress.stages import training_batches

    config = parse_config({"data": {"batch_size": 2}})
    dataset = TensorDataset(torch.arange(8))
    epochs = {}
    for rank in (0, 1):
        batches = training_batches(dataset, config, DistInfo(rank, 2))
        seen = [int(i) for _ in range(4) for i in next(batches)[0]]  # 2 epochs of 2 batches
        epochs[rank] = (seen[:4], seen[4:])
    for epoch in (0, 1):
        assert sorted(epochs[0][epoch] + epochs[1][epoch]) == list(range(8))
    assert epochs[0][0] != epochs[0][1]
