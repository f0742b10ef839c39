"""Progress for long loops: a tqdm bar on a terminal, and elsewhere (CI logs, pipes, `nohup`,
a lab service's journal) one plain line every few seconds, so that a long search is never
silent for minutes. `CORONET_PROGRESS_EVERY_S` sets the interval (default 10 s; 0: no lines)."""

from __future__ import annotations

import os
import sys
import time
from typing import IO, Any

EVERY_ENV = "CORONET_PROGRESS_EVERY_S"
DEFAULT_EVERY_S = 10.0


def _every_s() -> float:
    try:
        return max(0.0, float(os.environ.get(EVERY_ENV, DEFAULT_EVERY_S)))
    except ValueError:
        return DEFAULT_EVERY_S


def _format(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


class Progress:
    """`update(n)` after each step, `show(**fields)` for what the line or the bar's postfix
    says besides the step count (losses, the MACs ratio, ...)."""

    def __init__(self, desc: str, total: int, initial: int = 0, enabled: bool = True,
                 stream: IO[str] | None = None, every_s: float | None = None) -> None:  # fmt: skip
        self.desc, self.total, self.n = desc, total, initial
        self.stream = stream or sys.stdout
        self.fields: dict[str, Any] = {}
        self.bar = None
        self.every_s = 0.0
        if not enabled:
            return
        if self.stream.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=initial, desc=desc, leave=False, file=self.stream)
        else:
            self.every_s = _every_s() if every_s is None else every_s
        self.started = self.last = time.monotonic()
        self.first = initial

    def show(self, **fields: Any) -> None:
        self.fields.update(fields)
        if self.bar is not None:
            self.bar.set_postfix({k: _format(v) for k, v in self.fields.items()}, refresh=False)

    def grow(self, total: int) -> None:
        """More steps than planned (work added as it went)."""
        self.total = total
        if self.bar is not None:
            self.bar.total = total
            self.bar.refresh()

    def update(self, n: int = 1) -> None:
        self.n += n
        if self.bar is not None:
            self.bar.update(n)
        elif self.every_s and time.monotonic() - self.last >= self.every_s:
            self.line()

    def line(self) -> None:
        """One progress line: step, share done, speed, time left, and the fields."""
        now = time.monotonic()
        self.last = now
        rate = (self.n - self.first) / max(now - self.started, 1e-9)
        left = (self.total - self.n) / rate if rate > 0 else float("inf")
        eta = f", {left / 60:.1f} min left" if left != float("inf") else ""
        fields = "".join(f", {k} {_format(v)}" for k, v in self.fields.items())
        share = 100 * self.n / self.total if self.total else 100.0
        self.stream.write(f"{self.desc}: step {self.n}/{self.total} ({share:.0f} %), {rate:.2f} steps/s{eta}{fields}\n")
        self.stream.flush()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
