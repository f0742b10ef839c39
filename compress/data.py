"""Data for training. The built-in set is generated (no download) with a known mapping:
domain A is the outline of random shapes, domain B the same shapes filled and shaded (circles
warm, rectangles cool, lit from above), so the ground truth B of every A is known."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

BACKGROUND_B = np.array([0.95, 0.95, 0.90])
FILL = {"circle": np.array([0.90, 0.35, 0.20]), "rect": np.array([0.20, 0.45, 0.90])}


def _shape_masks(kind: str, cx: float, cy: float, r: float, yy: np.ndarray, xx: np.ndarray):
    """(inside, outline) boolean masks of one shape; the outline is ~1.5 px thick."""
    if kind == "circle":
        d2 = (xx - cx) ** 2 + (yy - cy) ** 2
        inside = d2 <= r * r
        core = d2 <= (r - 1.5) ** 2
    else:
        dx, dy = np.abs(xx - cx), np.abs(yy - cy)
        inside = (dx <= r) & (dy <= r * 0.7)
        core = (dx <= r - 1.5) & (dy <= r * 0.7 - 1.5)
    return inside, inside & ~core


def render_pair(size: int, rng: np.random.Generator, max_shapes: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """One (A, B) pair as HxWx3 float arrays in [0, 1]; shapes do not overlap."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    a = np.zeros((size, size, 3))
    b = np.broadcast_to(BACKGROUND_B, (size, size, 3)).copy()
    placed: list[tuple[float, float, float]] = []
    for _ in range(int(rng.integers(1, max_shapes + 1))):
        for _attempt in range(20):
            r = float(rng.uniform(size * 0.12, size * 0.25))
            cx, cy = rng.uniform(r + 1, size - r - 1, size=2)
            if all(np.hypot(cx - px, cy - py) > r + pr + 2 for px, py, pr in placed):
                break
        else:
            continue
        placed.append((cx, cy, r))
        kind = "circle" if rng.random() < 0.5 else "rect"
        inside, outline = _shape_masks(kind, cx, cy, r, yy, xx)
        a[outline] = 1.0
        shade = 1.0 - 0.45 * (yy - (cy - r)) / (2 * r)  # lit from the top of the shape
        b[inside] = FILL[kind] * np.clip(shade[inside], 0.5, 1.0)[:, None]
    return a, b


def builtin_paired(n: int, size: int = 64, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """`n` aligned (A, B) pairs as float tensors (n, 3, size, size) in [-1, 1]; deterministic."""
    rng = np.random.default_rng(seed)
    pairs = [render_pair(size, rng) for _ in range(n)]
    a = np.stack([p[0] for p in pairs]).transpose(0, 3, 1, 2)
    b = np.stack([p[1] for p in pairs]).transpose(0, 3, 1, 2)
    to_tensor = lambda x: torch.from_numpy(x * 2 - 1).float()  # noqa: E731
    return to_tensor(a), to_tensor(b)


def random_batches(
    a: torch.Tensor, b: torch.Tensor, batch_size: int, seed: int = 0
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """An endless stream of random aligned batches, reproducible by `seed`."""
    g = torch.Generator().manual_seed(seed)
    while True:
        idx = torch.randint(len(a), (batch_size,), generator=g)
        yield a[idx], b[idx]
