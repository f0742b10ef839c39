"""Bundles of real ONNX and TFLite files, checked with ONNX Runtime and LiteRT."""

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

import compress
import export
from export.structure import check_structure
from tests.conftest import TINY, randomize_norms


def _slim(arch, seed=0):
    sizes, _ = TINY[arch]
    plan = compress.full_plan(arch, **sizes)
    torch.manual_seed(seed)
    hyper = compress.HyperGenerator(arch, plan, threshold=0.5)
    with torch.no_grad():
        for g in plan.prunable:
            hyper.latents[g][0] = 2.0
    randomize_norms(hyper, seed)
    return compress.slim_generator(hyper.eval()).eval()


@pytest.mark.parametrize("arch", sorted(TINY))
@pytest.mark.parametrize("variant", ["dense", "slim"])
def test_bundle_for_each_generator(tmp_path, arch, variant):
    if variant == "slim":
        model = _slim(arch)
    else:
        model = compress.build_generator(arch, compress.full_plan(arch, **TINY[arch][0]))
        randomize_norms(model)
    bundle = export.export_bundle(model.eval(), tmp_path / "b", image_size=32)
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert set(manifest["files"]) == {"onnx", "tflite"}
    for runtime, entry in manifest["files"].items():
        data = (tmp_path / "b" / entry["path"]).read_bytes()
        assert entry["bytes"] == len(data)
        import hashlib

        assert entry["sha256"] == hashlib.sha256(data).hexdigest()
        assert manifest["parity"][runtime]["max_abs"] <= 1e-4
        assert manifest["structure"][runtime]["ok"]
    assert manifest["model"]["plan"] == model.plan.to_dict()
    assert manifest["cost"] == compress.count_macs(model, bundle.input_shape).to_dict()
    assert manifest["files"]["tflite"]["xnnpack_partitions"] == 1
    assert manifest["tools"]["onnxruntime"] and manifest["tools"]["litert-torch"]
    reopened = export.Bundle.open(tmp_path / "b")
    x = np.random.default_rng(0).uniform(-1, 1, bundle.input_shape).astype(np.float32)
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    for runtime in ("onnx", "tflite"):
        assert np.abs(reopened.run(x, runtime) - ref).max() < 1e-4


def test_bundle_from_a_checkpoint_records_its_source(tmp_path):
    model = _slim("resnet")
    ckpt = compress.save_checkpoint(tmp_path / "slim.pt", model, {"data": {"image_size": 32}})
    bundle = export.export_bundle(ckpt, tmp_path / "b", targets=("onnx",))
    assert bundle.input_shape == (1, 3, 32, 32)
    assert bundle.manifest["source"]["format"] == "a CoroNet generator checkpoint"
    assert len(bundle.manifest["source"]["sha256"]) == 64


def test_bundle_from_an_official_generator_file(tmp_path):
    from tests.official_layouts import OfficialResnet, randomize

    original = randomize(OfficialResnet(8, 6))
    torch.save(original.state_dict(), tmp_path / "latest_net_G_A.pth")
    bundle = export.export_bundle(tmp_path / "latest_net_G_A.pth", tmp_path / "b", targets=("onnx",), image_size=32)
    assert "resnet_6blocks" in bundle.manifest["source"]["format"]
    x = np.random.default_rng(0).uniform(-1, 1, (1, 3, 32, 32)).astype(np.float32)
    with torch.no_grad():
        want = original(torch.from_numpy(x)).numpy()
    assert np.abs(bundle.run(x, "onnx") - want).max() < 1e-4


def test_nhwc_and_int8_tflite(tmp_path):
    model = _slim("resnet")
    bundle = export.export_bundle(model, tmp_path / "b", ("tflite",), image_size=32, precision="int8", layout="NHWC")
    entry = bundle.manifest["files"]["tflite"]
    assert entry["layout"] == "NHWC" and entry["precision"] == "int8"
    runner = bundle.runner("tflite")
    assert tuple(runner.interpreter.get_input_details()[0]["shape"]) == (1, 32, 32, 3)
    parity = bundle.manifest["parity"]["tflite"]
    assert 0 < parity["max_abs"] <= parity["tolerance"] == 0.1
    fp32 = export.export_bundle(model, tmp_path / "f", ("tflite",), image_size=32)
    assert entry["bytes"] < fp32.manifest["files"]["tflite"]["bytes"]
    plain = export.tflite_export.interpreter(bundle.file("tflite"), xnnpack=False)
    convs = [op for op in plain._get_ops_details() if op["op_name"] == "CONV_2D"]
    assert convs and all(plain.get_tensor(int(op["inputs"][1])).dtype == np.int8 for op in convs)


def test_fp16_tflite_has_half_weights_and_stays_delegated(tmp_path):
    model = _slim("unet")
    bundle = export.export_bundle(model, tmp_path / "b", ("tflite",), image_size=32, precision="fp16")
    entry, parity = bundle.manifest["files"]["tflite"], bundle.manifest["parity"]["tflite"]
    assert entry["precision"] == "fp16" and entry["xnnpack_partitions"] == 1
    assert 0 < parity["max_abs"] <= parity["tolerance"] == 1e-2
    plain = export.tflite_export.interpreter(bundle.file("tflite"), xnnpack=False)
    ops = plain._get_ops_details()
    halves = [plain.get_tensor(int(op["inputs"][0])) for op in ops if op["op_name"] == "DEQUANTIZE"]
    assert len(halves) == 10 and all(w.dtype == np.float16 for w in halves)  # every conv weight
    assert bundle.manifest["structure"]["tflite"]["convs"] == 10


def test_structure_check_rejects_a_zero_channel(tmp_path):
    model = _slim("resnet")
    out = export.to_onnx(model, tmp_path, (1, 3, 32, 32))
    check_structure(out.path, "onnx", model.plan)  # the real export passes
    proto = onnx.load(str(out.path))
    conv = next(n for n in proto.graph.node if n.op_type == "Conv")
    init = next(i for i in proto.graph.initializer if i.name == conv.input[1])
    weight = numpy_helper.to_array(init).copy()
    weight[0] = 0.0  # a pruned channel that was not removed
    init.CopyFrom(numpy_helper.from_array(weight, init.name))
    onnx.save(proto, str(tmp_path / "zero.onnx"))
    with pytest.raises(export.StructureError, match="all-zero output channels \\[0\\]"):
        check_structure(tmp_path / "zero.onnx", "onnx", model.plan)
    dense_plan = compress.full_plan("resnet", **TINY["resnet"][0])
    with pytest.raises(export.StructureError, match="conv shapes differ from the plan"):
        check_structure(out.path, "onnx", dense_plan)


def test_tflite_structure_check_reads_the_file(tmp_path):
    model = _slim("unet")
    out = export.to_tflite(model, tmp_path, (1, 3, 32, 32))
    assert check_structure(out.path, "tflite", model.plan).convs == 10
    with pytest.raises(export.StructureError):
        check_structure(out.path, "tflite", compress.full_plan("unet", **TINY["unet"][0]))


def test_interrupted_export_is_incomplete(tmp_path):
    """Kill a real export once its first file exists: the folder must not pass as a bundle."""
    ckpt = compress.save_checkpoint(tmp_path / "slim.pt", _slim("resnet"))
    out = tmp_path / "b"
    code = (
        "import export, sys; export.export_bundle(sys.argv[1], sys.argv[2], image_size=64)"
    )  # fmt: skip
    proc = subprocess.Popen([sys.executable, "-c", code, str(ckpt), str(out)], cwd=Path(__file__).parents[1])
    deadline = time.monotonic() + 120
    while not (out / "model.onnx").exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    assert (out / "model.onnx").exists()
    assert not (out / "manifest.json").exists()
    with pytest.raises(export.IncompleteBundleError, match=r"no manifest\.json"):
        export.Bundle.open(out)


def test_tampered_file_is_detected(tmp_path):
    export.export_bundle(_slim("dcgan"), tmp_path / "b", ("onnx",))
    with open(tmp_path / "b" / "model.onnx", "ab") as f:
        f.write(b"\0")
    with pytest.raises(export.IncompleteBundleError, match=r"does not match manifest\.json"):
        export.Bundle.open(tmp_path / "b")


def test_bad_inputs_are_one_clear_error(tmp_path):
    model = _slim("resnet")
    with pytest.raises(compress.CheckpointError, match="does not exist"):
        export.export_bundle(tmp_path / "missing.pt", tmp_path / "b")
    with pytest.raises(export.ExportError, match="multiple of 4"):
        export.export_bundle(model, tmp_path / "b", image_size=30)
    with pytest.raises(export.ExportError, match="cannot take an input"):
        export.export_bundle(_slim("unet"), tmp_path / "b", image_size=8)
    with pytest.raises(export.ExportError, match="unknown precision 'fp8'"):
        export.export_bundle(model, tmp_path / "b", precision="fp8")
    with pytest.raises(export.ExportError, match="unknown export targets \\['coreml'\\]"):
        export.export_bundle(model, tmp_path / "b", targets=("coreml",))
    assert not (tmp_path / "b" / "manifest.json").exists()


def test_import_export_stays_light():
    code = "import sys, export; print([m for m in ('litert_torch', 'onnxruntime', 'jax') if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    heavy = "('onnx', 'onnxruntime', 'ai_edge_litert', 'adb_shell')"
    code = f"import sys, compress; print([m for m in {heavy} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_parity_error_carries_the_table(tmp_path):
    """A real file of other weights than the module's must fail parity, with one row per input."""
    from export.parity import check_parity, random_inputs
    from export.runtimes import OnnxRunner

    model = _slim("resnet", seed=0)
    other = _slim("resnet", seed=0)
    with torch.no_grad():
        next(other.parameters()).add_(0.5)
    out = export.to_onnx(other, tmp_path, (1, 3, 32, 32))
    with pytest.raises(export.ParityError, match=r"onnx \(fp32\) differs from PyTorch") as info:
        check_parity(model, OnnxRunner(out.path), random_inputs((1, 3, 32, 32), 3), "onnx")
    assert [row["input"] for row in info.value.table] == [0, 1, 2]
    assert all(row["max_abs"] > 1e-4 for row in info.value.table)


def test_onnxsim_failure_falls_back_with_a_recorded_warning(tmp_path, monkeypatch):
    """When onnxsim breaks (it raises from C++ on some graphs), the unsimplified graph is kept
    and the manifest says so."""
    import onnxsim

    def broken(*args, **kwargs):
        raise RuntimeError("simulated onnxsim crash")

    monkeypatch.setattr(onnxsim, "simplify", broken)
    with pytest.warns(UserWarning, match="onnxsim failed"):
        bundle = export.export_bundle(_slim("dcgan"), tmp_path / "b", ("onnx",))
    entry = bundle.manifest["files"]["onnx"]
    assert entry["simplified"] is False and "simulated onnxsim crash" in entry["warnings"][0]
    assert bundle.manifest["parity"]["onnx"]["max_abs"] <= 1e-4


def test_ctrl_c_during_a_conversion_is_taken_after_it():
    """A KeyboardInterrupt raised inside the converter's native passes used to kill the process
    (SIGSEGV/SIGABRT, no message): the conversion finishes, then the interrupt is raised."""
    import os
    import signal
    import time

    from export.tflite_export import _interrupt_after

    finished, before = [], signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt), _interrupt_after("the work"):
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.2)  # the handler runs here; the work goes on
        finished.append(True)
    assert finished == [True]
    assert signal.getsignal(signal.SIGINT) is before
