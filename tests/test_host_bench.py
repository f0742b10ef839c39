import json

import pytest
import torch

import compress
import export
from device_bench.host import run_host_benchmark
from device_bench.records import BenchResult, LatencyStats


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    plan = compress.full_plan("resnet", ngf=4, n_blocks=1)
    torch.manual_seed(0)
    model = compress.build_generator("resnet", plan).eval()
    return export.export_bundle(model, tmp_path_factory.mktemp("b"), image_size=32)


@pytest.mark.parametrize("runtime", ["onnx", "tflite"])
def test_host_benchmark_keeps_raw_samples(bundle, runtime):
    result = run_host_benchmark(bundle, runtime, threads=1, runs=7, warmup_s=0.05)
    assert len(result.samples_ms) == 7 and all(s > 0 for s in result.samples_ms)
    assert result.stats.min_ms <= result.stats.median_ms <= result.stats.p90_ms <= result.stats.p95_ms
    assert result.warmup_runs >= 1 and result.threads == 1
    assert result.delegate == ("xnnpack" if runtime == "tflite" else "cpu")
    assert result.model_sha256 == bundle.manifest["files"][runtime]["sha256"]
    again = BenchResult.from_dict(json.loads(json.dumps(result.to_dict())))
    assert again == result


def test_latency_stats():
    stats = LatencyStats.from_samples([5.0, 1.0, 3.0, 2.0, 4.0])
    assert (stats.n, stats.median_ms, stats.min_ms, stats.mean_ms) == (5, 3.0, 1.0, 3.0)
    assert stats.p90_ms == pytest.approx(4.6)
    with pytest.raises(ValueError):
        LatencyStats.from_samples([])
