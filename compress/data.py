"""Data for training. The built-in set is generated (no download) with a known mapping:
domain A is the outline of random shapes, domain B the same shapes filled and shaded (circles
warm, rectangles cool, lit from above), so the ground truth B of every A is known."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from compress.errors import DataError

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


# ---------------------------------------------------------------------------------------------
# Folders on disk, as the reference CycleGAN / pix2pix implementations lay them out.

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")


@dataclass(frozen=True)
class Transform:
    """Resize to `load_size` (bicubic), random crop to `crop_size`, random horizontal flip:
    the reference `resize_and_crop` preprocessing. `train=False` crops the centre, no flip."""

    load_size: int = 286
    crop_size: int = 256
    flip: bool = True
    train: bool = True

    def params(self, rng: np.random.Generator) -> tuple[int, int, bool]:
        span = self.load_size - self.crop_size
        if not self.train:
            return span // 2, span // 2, False
        x, y = (int(v) for v in rng.integers(0, span + 1, size=2))
        return x, y, bool(self.flip and rng.random() < 0.5)

    def apply(self, image: Image.Image, params: tuple[int, int, bool]) -> torch.Tensor:
        x, y, flip = params
        image = image.resize((self.load_size, self.load_size), Image.Resampling.BICUBIC)
        image = image.crop((x, y, x + self.crop_size, y + self.crop_size))
        if flip:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        array = np.asarray(image, dtype=np.float32) / 127.5 - 1.0
        return torch.from_numpy(array.transpose(2, 0, 1).copy())


MAX_DATA_ENTRIES = 2_000_000  # files and folders under a data folder; "/" or a home folder has more


def list_images(folder: Path, what: str) -> list[Path]:
    """Every image under `folder`, sorted. The walk stops with an error after MAX_DATA_ENTRIES
    entries: a data root such as "/" would otherwise walk the whole file system first."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{what} folder {folder} does not exist")
    if folder.resolve() in (Path(folder.resolve().anchor), Path.home().resolve()):
        raise DataError(f"{what} folder {folder} is the file system's root or your home folder, not a dataset; "
                        "point data.root at the dataset's folder")  # fmt: skip
    files, seen = [], 0
    for parent, dirs, names in os.walk(folder):
        seen += len(dirs) + len(names)
        if seen > MAX_DATA_ENTRIES:
            raise DataError(f"{what} folder {folder} holds more than {MAX_DATA_ENTRIES:,} files and folders: "
                            "is it the dataset's folder? point data.root at it")  # fmt: skip
        files += [Path(parent, n) for n in names if Path(n).suffix.lower() in IMAGE_EXTENSIONS]
    files = sorted(p for p in files if p.is_file())
    if not files:
        raise DataError(f"{what} folder {folder} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
    return files


SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


def load_rgb(path: Path) -> Image.Image:
    """An image as 8-bit RGB. 16-bit images (PIL's "I;16" and "I" modes) are scaled to 8 bits,
    not clipped (PIL's own convert would turn nearly every pixel white); float images and
    images past PIL's decompression-bomb limit are refused with the reason."""
    try:
        with Image.open(path) as image:
            image.load()
            if image.mode in SIXTEEN_BIT_MODES:
                pixels = np.asarray(image).astype(np.int64)
                if pixels.size and (pixels.min() < 0 or pixels.max() > 65535):
                    raise DataError(f"{path} has 32-bit integer pixels; save it as an 8- or 16-bit image")
                gray = np.round(pixels / 257.0).astype(np.uint8)
                return Image.fromarray(gray).convert("RGB")
            if image.mode == "F":
                raise DataError(f"{path} has floating-point pixels (mode F); save it as an 8- or 16-bit image")
            return image.convert("RGB")
    except Image.DecompressionBombError as exc:
        raise DataError(f"{path} is too large to decode safely ({exc}); resize it first") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"cannot read image {path} ({exc}); remove or replace it") from None


class UnalignedFolders(Dataset):
    """CycleGAN layout: `root/{phase}A` and `root/{phase}B`; B is drawn at random (unpaired)."""

    def __init__(self, root: str | Path, phase: str = "train", transform: Transform = Transform(), seed: int = 0):
        root = Path(root)
        if not root.is_dir():
            raise DataError(f"dataset folder {root} does not exist; expected {phase}A/ and {phase}B/ inside")
        self.a = list_images(root / f"{phase}A", f"domain A ({phase})")
        self.b = list_images(root / f"{phase}B", f"domain B ({phase})")
        self.transform = transform
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return max(len(self.a), len(self.b))

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        a = load_rgb(self.a[i % len(self.a)])
        b = load_rgb(self.b[int(self.rng.integers(len(self.b)))])
        return self.transform.apply(a, self.transform.params(self.rng)), self.transform.apply(
            b, self.transform.params(self.rng)
        )


class AlignedFolder(Dataset):
    """pix2pix layout: `root/{phase}/*.jpg`, each image A|B side by side; the same crop and flip
    for both halves. `direction="BtoA"` swaps them."""

    def __init__(
        self,
        root: str | Path,
        phase: str = "train",
        direction: str = "AtoB",
        transform: Transform = Transform(),
        seed: int = 0,
    ):
        if direction not in ("AtoB", "BtoA"):
            raise DataError(f"direction must be AtoB or BtoA, got {direction!r}")
        self.files = list_images(Path(root) / phase, f"aligned pairs ({phase})")
        self.direction, self.transform = direction, transform
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = load_rgb(self.files[i])
        w, h = image.size
        if w < 2 or w % 2:
            raise DataError(f"{self.files[i]} is {w}x{h}: an aligned pair is two equal halves side by side")
        a, b = image.crop((0, 0, w // 2, h)), image.crop((w // 2, 0, w, h))
        params = self.transform.params(self.rng)
        a_t, b_t = self.transform.apply(a, params), self.transform.apply(b, params)
        return (a_t, b_t) if self.direction == "AtoB" else (b_t, a_t)


class ImageFolder(Dataset):
    """Plain images (DCGAN): every image under `root`, resized and centre-cropped."""

    def __init__(self, root: str | Path, image_size: int = 64):
        self.files = list_images(Path(root), "image")
        self.transform = Transform(load_size=image_size, crop_size=image_size, flip=False, train=False)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.transform.apply(load_rgb(self.files[i]), (0, 0, False))


def builtin_unpaired(n: int, size: int = 64, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(A, B, B_true): A and B drawn independently (unpaired, for CycleGAN), and the ground
    truth B of every A for measuring quality."""
    a, b_true = builtin_paired(n, size, seed)
    _, b = builtin_paired(n, size, seed + 1_000_003)
    return a, b, b_true
