"""The pipeline command as the tests run it: a tiny config and a subprocess helper."""

import os
import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# The whole pipeline at toy size: a 1-block ResNet at 32², a few steps of each training stage,
# a dense reference trained for 6 steps, 3 timed runs per file on the host.
TINY_PIPELINE = """
seed = 1
[model]
arch = "resnet"
ngf = 8
n_blocks = 1
[data]
image_size = 32
n_train = 8
batch_size = 2
[search]
target_macs = 0.5
lam = 50.0
lr = 1e-3
max_steps = 300
[train]
ndf = 8
n_layers_d = 2
converge_steps = 4
decay_steps = 2
dense_steps = 6
[bench]
runs = 3
warmup_s = 0.05
"""


def run_pipeline(*args: str, cwd: Path, home: Path | None = None) -> subprocess.CompletedProcess:
    """`compress-and-ship ARGS` as a real subprocess in `cwd` (with HOME=`home`, for the adb key)."""
    env = {**os.environ, "HOME": str(home)} if home is not None else None
    return subprocess.run(
        [sys.executable, str(ROOT / "compress_and_ship.py"), *args],
        cwd=cwd, capture_output=True, text=True, timeout=600, env=env,
    )  # fmt: skip


def interruptible() -> None:
    """preexec_fn for a child the test will Ctrl-C: a launcher that ran the tests in the
    background (bash `&`) leaves SIGINT ignored, and children inherit that; Python then never
    raises KeyboardInterrupt. The default disposition makes the child take SIGINT as a terminal would."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
