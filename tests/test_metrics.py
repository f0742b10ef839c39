import numpy as np
import pytest
import torch
from scipy import linalg

from compress import metrics


def _direct_fid(f1, f2):
    """An independent computation: Tr((S1 S2)^1/2) from the eigenvalues of S1 S2."""
    mu1, mu2 = f1.mean(0), f2.mean(0)
    s1, s2 = np.cov(f1, rowvar=False), np.cov(f2, rowvar=False)
    eig = linalg.eigvals(s1 @ s2)
    tr_sqrt = np.sqrt(np.clip(eig.real, 0, None)).sum()
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * tr_sqrt)


def test_frechet_distance_matches_a_direct_computation():
    rng = np.random.default_rng(0)
    f1 = rng.normal(size=(400, 16))
    f2 = rng.normal(0.3, 1.2, size=(300, 16)) @ rng.normal(size=(16, 16)) * 0.5
    got = metrics.frechet_distance(*metrics.feature_stats(f1), *metrics.feature_stats(f2))
    assert got == pytest.approx(_direct_fid(f1, f2), rel=1e-6)
    same = metrics.frechet_distance(*metrics.feature_stats(f1), *metrics.feature_stats(f1))
    assert abs(same) < 1e-6


def test_kid_is_near_zero_for_one_distribution_and_positive_for_two():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(200, 8)), rng.normal(size=(200, 8))
    c = rng.normal(1.0, 1.0, size=(200, 8))
    same, _ = metrics.kernel_inception_distance(a, b, subsets=20, subset_size=100)
    diff, _ = metrics.kernel_inception_distance(a, c, subsets=20, subset_size=100)
    assert abs(same) < 0.05 < diff


def test_inception_layout_matches_the_fid_weights_file():
    """fid.md: 94 conv+BN units named like torchvision's Inception v3, no conv biases,
    fc [1008, 2048], 23.9 M values in all."""
    model = metrics.FIDInceptionV3()
    state = {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    convs = [k for k in state if k.endswith(".conv.weight")]
    assert len(convs) == 94
    assert not any(k.endswith(".conv.bias") for k in state)
    for unit in (k[: -len(".conv.weight")] for k in convs):
        for part in ("weight", "bias", "running_mean", "running_var"):
            assert f"{unit}.bn.{part}" in state
    assert state["fc.weight"].shape == (1008, 2048) and state["fc.bias"].shape == (1008,)
    assert state["Conv2d_1a_3x3.conv.weight"].shape == (32, 3, 3, 3)
    assert state["Mixed_7c.branch_pool.conv.weight"].shape == (192, 2048, 1, 1)
    assert "Mixed_6e.branch7x7dbl_5.conv.weight" in state
    assert sum(v.numel() for v in state.values()) / 1e6 == pytest.approx(23.9, abs=0.05)
    assert model.Conv2d_1a_3x3.bn.eps == 1e-3
    with torch.no_grad():
        assert model.eval()(torch.rand(2, 3, 64, 64)).shape == (2, 2048)


def test_fid_is_unavailable_without_the_weights(tmp_path):
    fake, real = torch.rand(4, 3, 32, 32) * 2 - 1, torch.rand(4, 3, 32, 32) * 2 - 1
    result = metrics.fid_kid(fake, real, weights=tmp_path / metrics.FID_WEIGHTS)
    assert not result.available and result.fid is None and result.kid is None
    assert metrics.FID_WEIGHTS in result.reason


def test_wrong_weights_file_is_refused(tmp_path):
    path = tmp_path / metrics.FID_WEIGHTS
    torch.save(metrics.FIDInceptionV3().state_dict(), path)  # random weights under the right name
    with pytest.raises(ValueError, match="not the FID Inception weights"):
        metrics.fid_kid(torch.zeros(2, 3, 8, 8), torch.zeros(2, 3, 8, 8), weights=path)


def test_paired_metrics():
    truth = torch.rand(3, 3, 8, 8) * 2 - 1
    assert metrics.paired_metrics(truth, truth)["psnr"] > 100
    noisy = truth + 0.1
    m = metrics.paired_metrics(noisy, truth)
    assert m["l1"] == pytest.approx(0.1, abs=1e-6)
    assert m["psnr"] == pytest.approx(10 * np.log10(4 / 0.01), abs=1e-3)
