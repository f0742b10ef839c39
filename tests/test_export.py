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
from compress.data import builtin_paired
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


def test_a_group_pruned_to_one_channel_exports_and_checks(tmp_path):
    """The converter makes a DEPTHWISE_CONV_2D of a conv that reads one channel (found when a
    latency-targeted search pruned a block's inner group to 1); the structure check reads it."""
    plan = compress.full_plan("resnet", ngf=8, n_blocks=2)
    plan = plan.with_widths({"block0": 1, "block1": 1})
    torch.manual_seed(0)
    model = compress.build_generator("resnet", plan).eval()
    bundle = export.export_bundle(model, tmp_path, ("tflite",), image_size=32, sample_images=0)
    # 10 layers; the two transposed ones are four phase convs each in TFLite (export.passes)
    assert bundle.manifest["structure"]["tflite"] == {"convs": 16, "ok": True}
    assert sum(layer["phases"] for layer in bundle.manifest["layers"]) == 16
    assert bundle.manifest["parity"]["tflite"]["max_abs"] < 1e-4


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


def _calibration(n=8, size=32):
    """Images like the built-in task's (the inputs int8 is calibrated and judged on)."""
    a, _ = builtin_paired(n, size, seed=3)
    return [a[i : i + 1].numpy() for i in range(n)]


def test_nhwc_and_int8_tflite(tmp_path):
    model = _slim("resnet")
    bundle = export.export_bundle(model, tmp_path / "b", ("tflite",), image_size=32, precision="int8", layout="NHWC",
                                  calibration=_calibration())  # fmt: skip
    assert bundle.keys == ["tflite", "tflite-int8"] and bundle.precisions("tflite") == ["fp32", "int8"]
    entry = bundle.manifest["files"]["tflite-int8"]
    assert entry["layout"] == "NHWC" and entry["precision"] == "int8" and entry["path"] == "model-int8.tflite"
    runner = bundle.runner("tflite-int8")
    assert tuple(runner.interpreter.get_input_details()[0]["shape"]) == (1, 32, 32, 3)
    assert runner.interpreter.get_input_details()[0]["dtype"] == np.float32  # float I/O by default
    parity = bundle.manifest["parity"]["tflite-int8"]
    assert parity["judged_by"] == "mean_abs" and 0 < parity["mean_abs"] <= parity["tolerance"]
    assert (
        entry["bytes"] < bundle.manifest["files"]["tflite"]["bytes"]
    )  # int8 weights (the graph is most of a tiny file)
    assert entry["integer"]["fully_integer"], entry["integer"]


def test_int8_io_on_request_for_onnx_and_tflite(tmp_path):
    """export.int8_io: the int8 files take and give int8 (a camera pipeline's buffers), their
    scales in the file; the runners quantize with them, parity and full integer hold."""
    import onnxruntime as ort

    bundle = export.export_bundle(_slim("unet"), tmp_path / "b", image_size=32, precision="int8",
                                  calibration=_calibration(), int8_io=True)  # fmt: skip
    session = ort.InferenceSession(str(bundle.file("onnx-int8")), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].type == session.get_outputs()[0].type == "tensor(int8)"
    meta = session.get_modelmeta().custom_metadata_map
    assert float(meta["coronet.input_quantization"].split()[0]) > 0  # "scale zero_point"
    tflite = bundle.runner("tflite-int8").interpreter
    assert tflite.get_input_details()[0]["dtype"] == tflite.get_output_details()[0]["dtype"] == np.int8
    for key in ("onnx-int8", "tflite-int8"):
        parity = bundle.manifest["parity"][key]
        assert parity["mean_abs"] <= parity["tolerance"], (key, parity)
        assert bundle.manifest["files"][key]["integer"]["fully_integer"], key
    assert bundle.manifest["files"]["tflite-int8"]["xnnpack_partitions"] == 1
    x = _calibration(1)[0]
    assert np.abs(bundle.run(x, "onnx-int8") - bundle.run(x, "onnx")).mean() < 0.2  # float in, float out


def test_fp16_tflite_has_half_weights_and_stays_delegated(tmp_path):
    model = _slim("unet")
    bundle = export.export_bundle(model, tmp_path / "b", ("tflite",), image_size=32, precision="fp16")
    entry, parity = bundle.manifest["files"]["tflite-fp16"], bundle.manifest["parity"]["tflite-fp16"]
    assert entry["precision"] == "fp16" and entry["xnnpack_partitions"] == 1
    assert 0 < parity["max_abs"] <= parity["tolerance"] == 1e-2
    plain = export.tflite_export.interpreter(bundle.file("tflite-fp16"), xnnpack=False)
    ops = plain._get_ops_details()
    halves = [plain.get_tensor(int(op["inputs"][0])) for op in ops if op["op_name"] == "DEQUANTIZE"]
    # every conv weight: 10 layers, the 5 transposed ones four phase convs each
    assert len(halves) == 25 and all(w.dtype == np.float16 for w in halves)
    assert bundle.manifest["structure"]["tflite-fp16"]["convs"] == 25


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
    assert check_structure(out.path, "tflite", model.plan).convs == 25  # 5 transposed convs: 4 phases each
    from export.litert import op_counts

    ops = op_counts(out.path)
    assert "TRANSPOSE_CONV" not in ops  # the up convs are one conv per phase (export.passes)
    # and nothing moves between layouts inside: the input's and the output's transposes and one
    # interleave per up conv but the innermost (a 1x1 input: a reshape). The converter's default
    # layout had a transpose out of NHWC and back per level besides.
    assert ops["TRANSPOSE"] == 2 + 4
    with pytest.raises(export.StructureError):
        check_structure(out.path, "tflite", compress.full_plan("unet", **TINY["unet"][0]))


@pytest.mark.parametrize("arch", sorted(TINY))
def test_tflite_files_keep_one_layout(tmp_path, arch):
    """NHWC in and out, no TRANSPOSE inside moves a tensor between layouts (the phase convs, pads
    and norms written on NCHW tensors made the converter transpose around each); what remains
    interleaves the phase convs of the up convs: rank-6 transposes of (n, h, w, a_h, a_w, c)."""
    from export.litert import op_names, read_model

    model = _slim(arch)
    shape = compress.models.example_input_shape(model.plan, 32)
    out = export.to_tflite(model, tmp_path, shape, layout="NHWC")
    tflite = read_model(out.path.read_bytes())
    graph = tflite.subgraphs[0]
    ranks = [len(graph.tensors[op.inputs[0]].shape) for name, op in zip(op_names(tflite), graph.operators, strict=True)
             if name == "TRANSPOSE"]  # fmt: skip
    assert ranks and set(ranks) == {6}, ranks


def test_tflite_norms_at_256_stay_as_near_exact_as_pytorchs(tmp_path):
    """XNNPACK's MEAN over 256x256 positions in one reduction sat ~10x further from the exact
    (float64) output than PyTorch (4.9e-6 of the range here, 1.09e-4 in a searched ResNet, over the
    fp32 tolerance); the row-by-row means of the float passes sit with PyTorch's (4.9e-7)."""
    from torch import nn

    from export.runtimes import make_runner
    from export.tflite_export import to_tflite

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.InstanceNorm2d(16), nn.Conv2d(16, 3, 3, padding=1))
    x = torch.rand(1, 3, 256, 256, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        exact = model.double()(x.double()).numpy()
        torch_error = np.abs(model.float()(x).numpy() - exact).max()
    got = make_runner("tflite", to_tflite(model, tmp_path, tuple(x.shape)).path)(x.numpy())
    error = np.abs(got - exact).max()
    assert error < 3 * max(torch_error, 1e-7 * np.abs(exact).max()), (error, torch_error)


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


@pytest.mark.parametrize("arch", sorted(TINY))
def test_int8_files_are_fully_integer_and_keep_the_task_quality(tmp_path, arch):
    """Full-integer int8 (what phone NPUs run), read from the files: every conv int8 with one scale
    per output channel and no op computing in float between the float input and output."""
    model = _slim(arch)
    noise = arch == "dcgan"
    size = 32
    if noise:
        nz = model.plan.sizes["nz"]
        g = torch.Generator().manual_seed(1)
        calibration = [torch.randn((1, nz, 1, 1), generator=g).numpy() for _ in range(8)]
        held_out = (calibration[:4], None)
    else:
        calibration = _calibration(8, size)
        a, b = builtin_paired(4, size, seed=9)
        held_out = ([a[i : i + 1].numpy() for i in range(4)], [b[i : i + 1].numpy() for i in range(4)])
    bundle = export.export_bundle(model, tmp_path / "b", image_size=size, precision="int8", calibration=calibration,
                                  held_out=held_out)  # fmt: skip
    assert bundle.keys == ["onnx", "onnx-int8", "tflite", "tflite-int8"]
    for key in ("onnx-int8", "tflite-int8"):
        integer = bundle.manifest["files"][key]["integer"]
        assert integer["fully_integer"] and integer["islands"] == {}, (key, integer)
    tflite = bundle.manifest["files"]["tflite-int8"]
    # the whole graph in one XNNPACK partition, the ResNet's InstanceNorms (int8 RSQRT) included
    assert tflite["xnnpack_partitions"] == 1 and "xnnpack_refused" not in tflite
    assert integer["convs"] == integer["per_channel_convs"] == bundle.manifest["structure"][key]["convs"]
    quality = bundle.manifest["quality"]["files"][key]
    assert quality["psnr_vs_fp32"] > 15  # the same images as the fp32 file, up to quantization noise
    if not noise:
        assert quality["psnr_loss_db"] == pytest.approx(
            bundle.manifest["quality"]["files"][key.split("-")[0]]["psnr"] - quality["psnr"]
        )
    for key in ("onnx", "tflite"):  # and the check sees that an fp32 file is not integer
        assert not export.integer.check_integer(bundle.file(key), key).fully_integer
    # the report's samples: every file's outputs on the held-out inputs, as PNGs in the bundle
    samples = bundle.manifest["samples"]
    expected = ([] if noise else ["input", "truth"]) + bundle.keys
    assert samples["images"] == 4 and list(samples["columns"]) == expected
    for paths in samples["columns"].values():
        assert len(paths) == 4 and all((bundle.path / p).read_bytes()[:4] == b"\x89PNG" for p in paths)


def test_int8_norm_in_float_keeps_the_resnet_in_one_partition(tmp_path):
    """export.int8_norm = "float": InstanceNorm's 1/sqrt stays float, inside the one partition;
    the file says it is not full integer, and which op keeps it from being so."""
    model = _slim("resnet")
    norms = sum(isinstance(m, torch.nn.InstanceNorm2d) for m in model.modules())
    bundle = export.export_bundle(model, tmp_path / "b", ("tflite",), image_size=32, precision="int8",
                                  calibration=_calibration(), int8_norm="float")  # fmt: skip
    entry = bundle.manifest["files"]["tflite-int8"]
    assert entry["xnnpack_partitions"] == 1
    assert entry["integer"]["islands"] == {"RSQRT": norms} and not entry["integer"]["fully_integer"]
    parity = bundle.manifest["parity"]["tflite-int8"]
    assert parity["mean_abs"] <= parity["tolerance"]


def test_xnnpack_rewrites_keep_the_int8_arithmetic(tmp_path):
    """A RELU after a concatenation (XNNPACK has no int8 RELU kernel), an epsilon far below one
    quantum of its ADD's output (XNNPACK refuses the scale ratio) and InstanceNorm's int8 RSQRT
    (XNNPACK has none) split the graph as ai-edge-quantizer writes it; rewritten, the graph is one
    partition and LiteRT's reference kernels give the same int8 output, bit for bit."""
    import litert_torch

    from export.litert import interpreter, op_counts, xnnpack_partitions, xnnpack_refused
    from export.passes import TFLITE_INT8_PASSES, apply_passes
    from export.quantize import tflite_int8
    from export.xnnpack_int8 import for_xnnpack

    class Block(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
            self.norm = torch.nn.InstanceNorm2d(8)
            self.up = torch.nn.ConvTranspose2d(11, 4, 4, stride=2, padding=1)

        def forward(self, x):
            return self.up(torch.relu(torch.cat([x, self.norm(self.conv(x))], 1)))

    model = apply_passes(Block().eval(), TFLITE_INT8_PASSES)
    litert_torch.convert(model, (torch.zeros(1, 3, 16, 16),)).export(str(tmp_path / "f.tflite"))
    cal = [np.random.default_rng(i).uniform(-1, 1, (1, 3, 16, 16)).astype(np.float32) for i in range(4)]
    raw = tflite_int8(tmp_path / "f.tflite", cal, xnnpack=False)
    (tmp_path / "raw.tflite").write_bytes(raw)
    assert xnnpack_refused(tmp_path / "raw.tflite") == {"RELU": 1, "ADD": 1, "RSQRT": 1}
    fixed, done = for_xnnpack(raw)
    (tmp_path / "fixed.tflite").write_bytes(fixed)
    assert (done.clamps, done.constants, done.tables) == (1, 1, 1)
    assert "RSQRT" not in op_counts(tmp_path / "fixed.tflite")
    assert xnnpack_partitions(tmp_path / "fixed.tflite") == 1 and xnnpack_refused(tmp_path / "fixed.tflite") == {}
    for x in (cal[0], 2 * cal[1]):  # one outside the calibrated range too: saturation is the same
        outputs = []
        for name in ("raw", "fixed"):
            it = interpreter(tmp_path / f"{name}.tflite", xnnpack=False)
            it.set_tensor(it.get_input_details()[0]["index"], x)
            it.invoke()
            outputs.append(it.get_tensor(it.get_output_details()[0]["index"]))
        np.testing.assert_array_equal(outputs[0], outputs[1])


def test_hinges_rebuild_any_int8_table():
    """Every table of 256 int8 values, steep ones too (1/sqrt near zero jumps by the whole range),
    is table[0] plus a sum of hinges with int8 slopes."""
    from export.xnnpack_int8 import hinges

    rng = np.random.default_rng(0)
    index = np.arange(256)
    tables = [rng.integers(-128, 128, 256), np.full(256, 5), np.where(index == 0, 127, -128),
              np.clip(np.round(3 / np.sqrt(index * 0.001 + 1e-5)) - 128, -128, 127)]  # fmt: skip
    for table in tables:
        thresholds, slopes = hinges(table.astype(np.int64))
        assert np.abs(slopes).max(initial=0) <= 127
        rebuilt = table[0] + (slopes * np.maximum(index[:, None] - thresholds, 0)).sum(1)
        np.testing.assert_array_equal(rebuilt, table)


def test_a_float_island_is_named(tmp_path):
    """ai-edge-quantizer has no int8 LEAKY_RELU: without the export pass that rewrites it, each
    one stays a float island, and the check names it."""
    from export.integer import tflite_integer
    from export.quantize import tflite_int8

    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.LeakyReLU(0.2),
                                torch.nn.Conv2d(8, 8, 3, padding=1)).eval()  # fmt: skip
    with torch.no_grad():
        import litert_torch

        litert_torch.convert(model, (torch.zeros(1, 3, 16, 16),)).export(str(tmp_path / "leaky.tflite"))
    cal = [np.random.default_rng(i).uniform(-1, 1, (1, 3, 16, 16)).astype(np.float32) for i in range(4)]
    (tmp_path / "leaky-int8.tflite").write_bytes(tflite_int8(tmp_path / "leaky.tflite", cal))
    report = tflite_integer(tmp_path / "leaky-int8.tflite")
    assert not report.fully_integer and report.islands.get("LEAKY_RELU") == 1
    assert "1 LEAKY_RELU" in report.describe()


def test_int8_without_calibration_images_is_one_clear_error(tmp_path):
    with pytest.raises(export.ExportError, match="int8 export needs calibration images"):
        export.export_bundle(_slim("resnet"), tmp_path / "b", ("onnx",), image_size=32, precision="int8")


def test_fp16_onnx_takes_and_gives_float32(tmp_path):
    bundle = export.export_bundle(_slim("unet"), tmp_path / "b", ("onnx",), image_size=32, precision="fp16")
    assert bundle.keys == ["onnx", "onnx-fp16"] and bundle.manifest["files"]["onnx-fp16"]["path"] == "model-fp16.onnx"
    parity = bundle.manifest["parity"]["onnx-fp16"]
    assert 0 < parity["max_abs"] <= parity["tolerance"] == 1e-2
    weights = [w for w in onnx.load(str(bundle.file("onnx-fp16"))).graph.initializer if len(w.dims) == 4]
    assert weights and all(w.data_type == onnx.TensorProto.FLOAT16 for w in weights)
    x = np.zeros((1, 3, 32, 32), np.float32)
    assert bundle.run(x, "onnx-fp16").dtype == np.float32


def test_executorch_program_matches_pytorch_and_is_timed_on_the_host(tmp_path):
    """A .pte with the XNNPACK delegate: parity with ExecuTorch's own runtime, every op in the
    delegate (the TFLite rewrites apply), an int8 program from the same calibration, and the
    host benchmark times it like the other runtimes."""
    from device_bench.records import BenchJob
    from device_bench.run import execute

    model = _slim("unet")
    bundle = export.export_bundle(model, tmp_path / "b", ("executorch",), image_size=32, precision="int8",
                                  calibration=_calibration())  # fmt: skip
    assert bundle.keys == ["executorch", "executorch-int8"] and bundle.file("executorch").suffix == ".pte"
    assert bundle.manifest["parity"]["executorch"]["max_abs"] <= 1e-4
    int8 = bundle.manifest["parity"]["executorch-int8"]
    assert int8["judged_by"] == "mean_abs" and int8["mean_abs"] <= int8["tolerance"]
    for key in bundle.keys:
        entry = bundle.manifest["files"][key]
        assert entry["xnnpack_calls"] >= 1 and entry["portable_ops"] == 0, (key, entry)
    result = execute(BenchJob(str(bundle.path), "host", "executorch", runs=3, warmup_s=0.0, precision="int8"))
    assert result.runtime == "executorch" and result.precision == "int8" and result.delegate == "xnnpack"
    assert result.stats.n == 3 and result.model_sha256 == bundle.manifest["files"]["executorch-int8"]["sha256"]


def test_executorch_int8_keeps_instance_norms_of_small_variance(tmp_path):
    """ExecuTorch's XNNPACK quantizer gives a mean its input's quantization grid; for the
    variance (a mean of squared deviations) that rounds small variances to zero, and the norm
    blows those channels up; an int8 square loses what lies below half its quantum. The export
    gives each mean its own grid and keeps the squares float: channels whose variances are 400x
    apart keep the fp32 program's output (measured: 30 dB; 21 with the means' grids alone, 15.5
    with the quantizer as it comes)."""
    from compress.metrics import paired_metrics
    from export.executorch_export import to_executorch
    from export.runtimes import ExecutorchRunner

    class Block(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
            self.norm = torch.nn.InstanceNorm2d(8)
            self.out = torch.nn.Conv2d(8, 3, 3, padding=1)
            with torch.no_grad():  # each channel's spread from 0.1 to 4
                self.conv.weight.mul_(torch.logspace(-1, 0.6, 8).view(8, 1, 1, 1))

        def forward(self, x):
            return torch.tanh(self.out(torch.relu(self.norm(self.conv(x)))))

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    cal = [rng.uniform(-1, 1, (1, 3, 16, 16)).astype(np.float32) for _ in range(8)]
    model = Block().eval()
    runners = [
        ExecutorchRunner(to_executorch(model, tmp_path, (1, 3, 16, 16), precision, f"{precision}.pte", cal).path)
        for precision in ("fp32", "int8")
    ]
    x = [rng.uniform(-1, 1, (1, 3, 16, 16)).astype(np.float32) for _ in range(4)]
    fp32, int8 = (torch.from_numpy(np.concatenate([run(i) for i in x])) for run in runners)
    assert paired_metrics(int8, fp32)["psnr"] > 26


def test_a_precision_a_runtime_cannot_write_is_said_in_the_manifest(tmp_path):
    bundle = export.export_bundle(_slim("resnet"), tmp_path / "b", ("executorch",), image_size=32, precision="fp16")
    assert bundle.keys == ["executorch"] and "executorch-fp16" in bundle.manifest["not_exported"]


def test_a_pte_without_executorch_installed_is_one_clear_error(tmp_path):
    code = ("import sys; sys.modules['executorch'] = None\n"
            "from export.runtimes import make_runner\n"
            "make_runner('executorch', sys.argv[1])")  # fmt: skip
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path / "model.pte")], capture_output=True, text=True,
                          cwd=Path(__file__).parents[1])  # fmt: skip
    assert "running a .pte needs executorch: pip install 'coronetgan[executorch]'" in proc.stderr
