"""Which stages of a run directory are complete and up to date.

A finished stage writes `stages/<stage>.json`, last and atomically: a fingerprint of its inputs
(the config keys it reads and the digests of the files it reads) and the digest of every file
it wrote. A stage is up to date when its fingerprint is unchanged and its outputs are still
the files it wrote. Downstream fingerprints include the upstream outputs' digests, so a stage
that re-runs and writes different files makes the stages after it re-run too. A stage that
fails or is interrupted keeps its old stamp: the fingerprint or the output digests no longer
match, so it runs again, while a run that goes back to the old inputs finds it still done.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from coronet.files import atomic_write_bytes, sha256_file

STAMPS = Path("stages")


def fingerprint(inputs: dict[str, Any], files: dict[str, Path]) -> str:
    """Digest of the config values a stage reads and of the files it reads (missing: None)."""
    digests = {name: sha256_file(p) if p.is_file() else None for name, p in sorted(files.items())}
    text = json.dumps({"inputs": inputs, "files": digests}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass
class StageStamp:
    stage: str
    fingerprint: str
    outputs: dict[str, str]  # path relative to the run directory -> sha256
    summary: str = ""  # the line the stage printed when it ran


def _stamp_path(run_dir: Path, stage: str) -> Path:
    return run_dir / STAMPS / f"{stage}.json"


def read_stamp(run_dir: Path, stage: str) -> StageStamp | None:
    try:
        return StageStamp(**json.loads(_stamp_path(run_dir, stage).read_text()))
    except (OSError, ValueError, TypeError):
        return None  # missing or damaged: the stage simply runs again


def up_to_date(run_dir: Path, stage: str, print_: str) -> StageStamp | None:
    """The stage's stamp when it matches `print_` (the current fingerprint) and every output is
    still the file the stage wrote; else None."""
    stamp = read_stamp(run_dir, stage)
    if stamp is None or stamp.fingerprint != print_:
        return None
    for rel, digest in stamp.outputs.items():
        path = run_dir / rel
        if not path.is_file() or sha256_file(path) != digest:
            return None
    return stamp


def write_stamp(run_dir: Path, stage: str, print_: str, outputs: list[Path], summary: str = "") -> StageStamp:
    """Record a finished stage. `outputs` are paths inside `run_dir`."""
    stamp = StageStamp(
        stage=stage,
        fingerprint=print_,
        outputs={str(p.relative_to(run_dir)): sha256_file(p) for p in outputs},
        summary=summary,
    )
    text = json.dumps(stamp.__dict__, indent=2) + "\n"
    atomic_write_bytes(_stamp_path(run_dir, stage), lambda f: f.write(text.encode()))
    return stamp
