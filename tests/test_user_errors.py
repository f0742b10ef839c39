"""User errors end in one line that says what is wrong and how to fix it, exit non-zero, and
cost no training: each case here used to end in a traceback (or trained for nothing)."""

import os
import resource
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

import compress_and_ship
from device_bench import cli as device_bench_cli
from tests.pipeline import ROOT, TINY_PIPELINE


def _one_line(capsys, code: int) -> str:
    out = capsys.readouterr()
    assert code != 0
    lines = out.err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in out.err, out.err
    return lines[0]


CASES = {
    "an image size the ResNet cannot keep": (("image_size = 32", "image_size = 30"), "maps 30² images to 32²"),
    "images too small for the discriminator": (("image_size = 32", "image_size = 8"), "too small for the discrim"),
    "a seed past 64 bits": (("seed = 1", "seed = 18446744073709551616"), "seed = 18446744073709551616 is out of"),
    "an infinite lam": (("lam = 50.0", "lam = inf"), "search.lam must be a finite number, got inf"),
    "a NaN learning rate": (("ndf = 8", "ndf = 8\nlr = nan"), "train.lr must be a finite number, got nan"),
    "a rounding wider than the model": (("lam = 50.0", "lam = 50.0\nround_to = 64"), "leaves nothing to prune"),
    "a FID weights file that is not there": (("[bench]", '[eval]\nfid_weights = "nope.pth"\n[bench]'), "nope.pth"),
    "a runtime timed but not exported": (
        ("[bench]", '[export]\ntargets = ["tflite", "onnx"]\n[bench]\nruntimes = ["onnx", "executorch"]'),
        "bench.runtimes has executorch, which export.targets (tflite, onnx) does not write; add it to export.targets",
    ),
}


def test_runtimes_on_the_command_line_are_exported_and_timed():
    from compress.config import load_config

    args = compress_and_ship._parser().parse_args(["--runtimes", "onnx, executorch"])
    config = load_config(None, compress_and_ship._overrides(args))
    assert config.bench.runtimes == ["onnx", "executorch"]
    assert config.export.targets == ["tflite", "onnx", "executorch"]  # unset: the defaults and what is timed


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_bad_config_is_one_line_before_any_training(tmp_path, capsys, case):
    (old, new), expected = CASES[case]
    assert old in TINY_PIPELINE
    (tmp_path / "bad.toml").write_text(TINY_PIPELINE.replace(old, new, 1))
    code = compress_and_ship.main([str(tmp_path / "bad.toml"), "--run-dir", str(tmp_path / "run"), "--quiet"])
    assert expected in _one_line(capsys, code)
    assert not (tmp_path / "run").exists()  # nothing trained, nothing written


def test_wrong_fid_weights_are_refused_before_training_not_after(tmp_path, capsys):
    (tmp_path / "inception.pth").write_bytes(b"some other network")
    config = TINY_PIPELINE.replace("[bench]", f'[eval]\nfid_weights = "{tmp_path / "inception.pth"}"\n[bench]')
    (tmp_path / "bad.toml").write_text(config)
    code = compress_and_ship.main([str(tmp_path / "bad.toml"), "--run-dir", str(tmp_path / "run"), "--quiet"])
    assert "is not pytorch-fid's Inception weights" in _one_line(capsys, code)
    assert not (tmp_path / "run").exists()


def test_a_config_that_is_not_utf8_and_a_run_dir_that_is_a_file(tmp_path, capsys):
    (tmp_path / "latin1.toml").write_bytes("# réglages\nseed = 1\n".encode("latin-1"))
    code = compress_and_ship.main([str(tmp_path / "latin1.toml"), "--run-dir", str(tmp_path / "run")])
    assert "is not UTF-8 text" in _one_line(capsys, code)
    (tmp_path / "tiny.toml").write_text(TINY_PIPELINE)
    (tmp_path / "a-file").write_text("")
    code = compress_and_ship.main([str(tmp_path / "tiny.toml"), "--run-dir", str(tmp_path / "a-file")])
    assert "is a file; pass a folder" in _one_line(capsys, code)


@pytest.mark.parametrize("kind", ["not SQLite", "someone else's SQLite"])
def test_a_store_that_is_not_ours_is_one_line_and_left_alone(tmp_path, capsys, kind):
    store = tmp_path / "store.sqlite"
    if kind == "not SQLite":
        store.write_text("a spreadsheet, really")
    else:
        db = sqlite3.connect(store)
        db.execute("CREATE TABLE jobs (name TEXT)")
        db.commit()
        db.close()
    before = store.read_bytes()
    code = device_bench_cli.main(["report", "--store", str(store), "--out", str(tmp_path / "site")])
    assert "is not a results store" in _one_line(capsys, code)
    assert store.read_bytes() == before


def _limit_file_size() -> None:
    resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, 64 * 1024))
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG), as on a full disk


def test_a_disk_that_fills_up_is_one_line_and_leaves_no_half_file(tmp_path):
    """Writes past a file-size limit fail like writes to a full disk; torch.save used to report
    that as "unexpected pos" from its zip writer, in a traceback."""
    (tmp_path / "tiny.toml").write_text(TINY_PIPELINE.replace("ngf = 8", "ngf = 32"))  # dense.pt > 64 KiB
    proc = subprocess.run([sys.executable, str(ROOT / "compress_and_ship.py"), "tiny.toml", "--run-dir", "run",
                           "--quiet", "--to", "dense"], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          preexec_fn=_limit_file_size)  # fmt: skip
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        "compress-and-ship: error: File too large (run/dense.pt); the file system or a ulimit caps file sizes "
        "(finished stages are kept)"
    ]
    assert not (tmp_path / "run" / "dense.pt").exists() and not list((tmp_path / "run").glob(".dense.pt.*"))


def _read_only_run(config: Path, run_dir: Path) -> subprocess.CompletedProcess:
    """The pipeline with `run_dir` read-only: as root (who may write anywhere), on a read-only
    bind mount in a mount namespace of its own; otherwise a folder without write permission."""
    command = [sys.executable, str(ROOT / "compress_and_ship.py"), str(config), "--run-dir", str(run_dir), "--quiet"]
    if os.getuid() != 0:
        run_dir.chmod(0o555)
        return subprocess.run(command, capture_output=True, text=True, timeout=300)
    mount = f'mount --bind -o ro "{run_dir}" "{run_dir}" && exec "$@"'
    proc = subprocess.run(["unshare", "-m", "sh", "-c", mount, "sh", *command], capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert "compress-and-ship" in proc.stderr, f"no read-only mount could be made here: {proc.stderr}"
    return proc


def test_a_read_only_run_dir_is_one_line(tmp_path):
    (tmp_path / "tiny.toml").write_text(TINY_PIPELINE)
    (tmp_path / "run").mkdir()
    proc = _read_only_run(tmp_path / "tiny.toml", tmp_path / "run")
    (tmp_path / "run").chmod(0o755)
    assert proc.returncode == 1, proc.stderr
    [line] = proc.stderr.strip().splitlines()
    assert line.startswith("compress-and-ship: error: ") and str(tmp_path / "run" / "dense.pt") in line
    assert line.endswith(("the run directory is read-only: pick a writable --run-dir",
                          "you may not write there: pick a --run-dir of your own"))  # fmt: skip
