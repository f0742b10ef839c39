from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from compress import data as data_module
from compress.data import (
    BACKGROUND_B,
    AlignedFolder,
    ImageFolder,
    Transform,
    UnalignedFolders,
    builtin_paired,
    builtin_unpaired,
    load_rgb,
)
from compress.errors import DataError
from tests.pipeline import TINY_PIPELINE, run_pipeline


def test_builtin_data_is_deterministic_by_seed():
    a1, b1 = builtin_paired(6, 32, seed=3)
    a2, b2 = builtin_paired(6, 32, seed=3)
    a3, _ = builtin_paired(6, 32, seed=4)
    assert torch.equal(a1, a2) and torch.equal(b1, b2) and not torch.equal(a1, a3)
    assert a1.shape == b1.shape == (6, 3, 32, 32) and a1.min() >= -1 and b1.max() <= 1


def test_builtin_ground_truth_is_what_it_claims():
    """A holds white outlines only; B is the background except inside shapes; every outline
    pixel of A is filled in B, with a warm (circle) or cool (rectangle) colour."""
    a, b = builtin_paired(8, 64, seed=0)
    assert set(torch.unique(a).tolist()) == {-1.0, 1.0}
    background = torch.tensor(BACKGROUND_B * 2 - 1, dtype=torch.float32).view(3, 1, 1)
    for a_i, b_i in zip(a, b, strict=True):
        outline = a_i[0] > 0
        filled = (b_i - background).abs().amax(0) > 1e-6
        assert outline.any()
        assert filled[outline].all()
        red, blue = b_i[0][filled], b_i[2][filled]
        assert ((red > blue) | (blue > red)).all()
        assert filled.sum() > outline.sum()  # filled, not just outlined


def test_builtin_unpaired_keeps_the_truth_of_a():
    a, b, b_true = builtin_unpaired(4, 32, seed=1)
    a_p, b_p = builtin_paired(4, 32, seed=1)
    assert torch.equal(a, a_p) and torch.equal(b_true, b_p) and not torch.equal(b, b_true)


def _write(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array.astype(np.uint8)).save(path)


def _gradient(h, w, seed):
    rng = np.random.default_rng(seed)
    base = np.linspace(60, 190, w)[None, :, None] + np.linspace(0, 20, h)[:, None, None]
    return np.clip(base + rng.uniform(-5, 5, (1, 1, 3)), 0, 255)


def test_unaligned_folders(tmp_path):
    for i in range(3):
        _write(tmp_path / "trainA" / f"{i}.png", _gradient(40, 40, i))
    for i in range(2):
        _write(tmp_path / "trainB" / f"{i}.jpg", _gradient(50, 30, 10 + i))
    data = UnalignedFolders(tmp_path, "train", Transform(load_size=36, crop_size=32))
    assert len(data) == 3
    a, b = data[0]
    assert a.shape == b.shape == (3, 32, 32) and a.min() >= -1 and a.max() <= 1


def test_folder_errors_are_clear(tmp_path):
    with pytest.raises(DataError, match="does not exist; expected trainA/ and trainB/"):
        UnalignedFolders(tmp_path / "nope")
    (tmp_path / "trainA").mkdir()
    with pytest.raises(DataError, match=r"domain A \(train\) folder .* holds no images"):
        UnalignedFolders(tmp_path)
    _write(tmp_path / "trainA" / "ok.png", _gradient(8, 8, 0))
    with pytest.raises(DataError, match=r"domain B \(train\) folder .* does not exist"):
        UnalignedFolders(tmp_path)
    (tmp_path / "trainB").mkdir()
    (tmp_path / "trainB" / "broken.png").write_bytes(b"not a png")
    data = UnalignedFolders(tmp_path, transform=Transform(load_size=8, crop_size=8))
    with pytest.raises(DataError, match=r"cannot read image .*broken\.png"):
        data[0]


@pytest.mark.parametrize("direction", ["AtoB", "BtoA"])
def test_aligned_pairs_share_crop_and_flip(tmp_path, direction):
    for i in range(4):
        left = _gradient(40, 40, i)
        _write(tmp_path / "train" / f"{i}.png", np.concatenate([left, 255 - left], axis=1))
    data = AlignedFolder(tmp_path, "train", direction, Transform(load_size=36, crop_size=28), seed=1)
    for i in range(4):
        x, y = data[i]
        assert x.shape == y.shape == (3, 28, 28)
        assert (x + y).abs().max() < 0.03  # the halves are inverses: same crop, same flip
    a, _ = data[0]
    if direction == "AtoB":
        assert a.mean() < 0.5  # the left half (darker) is A


def test_aligned_rejects_odd_widths_and_bad_direction(tmp_path):
    _write(tmp_path / "train" / "odd.png", _gradient(8, 9, 0))
    with pytest.raises(DataError, match="two equal halves"):
        AlignedFolder(tmp_path, transform=Transform(load_size=8, crop_size=8))[0]
    with pytest.raises(DataError, match="AtoB or BtoA"):
        AlignedFolder(tmp_path, direction="sideways")


def test_image_folder(tmp_path):
    _write(tmp_path / "sub" / "x.png", _gradient(20, 30, 0))
    data = ImageFolder(tmp_path, image_size=16)
    assert len(data) == 1 and data[0].shape == (3, 16, 16)


def test_sixteen_bit_images_are_scaled_not_clipped(tmp_path):
    """PIL's convert("RGB") clips 16-bit pixels to 255: a 16-bit scan would train as white."""
    ramp = (np.arange(256, dtype=np.uint32).reshape(16, 16) * 257).astype(np.uint16)  # 0 .. 65535
    Image.fromarray(ramp).save(tmp_path / "scan16.png")
    assert Image.open(tmp_path / "scan16.png").mode.startswith("I")
    rgb = np.asarray(load_rgb(tmp_path / "scan16.png"))
    assert rgb.shape == (16, 16, 3) and (rgb[..., 0] == np.arange(256).reshape(16, 16)).all()


def test_float_images_and_decompression_bombs_are_refused(tmp_path, monkeypatch):
    Image.fromarray(np.zeros((8, 8), np.float32)).save(tmp_path / "depth.tiff")
    with pytest.raises(DataError, match="floating-point pixels"):
        load_rgb(tmp_path / "depth.tiff")
    Image.new("RGB", (64, 64)).save(tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 64² is past twice the limit: PIL's bomb error
    with pytest.raises(DataError, match="too large to decode safely"):
        load_rgb(tmp_path / "big.png")


def test_a_data_root_that_is_not_a_dataset_is_refused_before_walking_it(tmp_path, monkeypatch):
    """`data.root = "/"` used to walk the whole file system (and then train on its PNGs)."""
    for root in ("/", str(Path.home())):
        with pytest.raises(DataError, match="is the file system's root or your home folder"):
            ImageFolder(root, image_size=16)
    for i in range(6):
        _write(tmp_path / f"d{i}" / "x.png", _gradient(8, 8, i))
    monkeypatch.setattr(data_module, "MAX_DATA_ENTRIES", 10)  # 6 folders + 6 files
    with pytest.raises(DataError, match="holds more than 10 files and folders: is it the dataset's folder"):
        ImageFolder(tmp_path, image_size=16)
    monkeypatch.setattr(data_module, "MAX_DATA_ENTRIES", 12)
    assert len(ImageFolder(tmp_path, image_size=16)) == 6


def test_the_pipeline_refuses_the_file_system_as_its_data_in_one_line(tmp_path):
    config = TINY_PIPELINE.replace("image_size = 32", 'image_size = 32\nkind = "images"\nroot = "/"')
    (tmp_path / "tiny.toml").write_text(config)
    proc = run_pipeline("tiny.toml", "--run-dir", "run", "--quiet", cwd=tmp_path)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        "compress-and-ship: error: image folder / is the file system's root or your home folder, not a dataset; "
        "point data.root at the dataset's folder"
    ]
