"""Structure check on the exported files themselves: every conv has the slim plan's channel
counts, and no output channel's weights are all zero (a pruned channel that was not removed)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from compress.models import build_generator
from compress.plan import ChannelPlan
from export.errors import StructureError
from export.passes import phase_kernels

# (transposed, C_out, C_in, kernel): kernel "3", or "1x2" where it is not square
ConvShape = tuple[bool, int, int, str]


def _kernel(height: int, width: int) -> str:
    return str(height) if height == width else f"{height}x{width}"


@dataclass(frozen=True)
class StructureReport:
    convs: int
    ok: bool

    def to_dict(self) -> dict:
        return {"convs": self.convs, "ok": self.ok}


def expected_convs(plan: ChannelPlan, phases: bool = False) -> Counter:
    """The plan's conv shapes; with `phases`, each transposed conv the TFLite export computes
    as one conv per output phase (export.passes) in that form: s² convs with the phases' kernels."""
    model = build_generator(plan.arch, plan)
    shapes = []
    for m in model.modules():
        if not hasattr(m, "spec"):
            continue
        spec, c_out, c_in = m.spec, plan[m.spec.out_group], plan.in_width(m.spec)
        kernels = phase_kernels(spec.kernel, spec.stride, spec.padding, spec.output_padding)
        if phases and spec.transposed and kernels is not None:
            shapes += [(False, c_out, c_in, _kernel(h, w)) for h, w in kernels]
        else:
            shapes.append((spec.transposed, c_out, c_in, _kernel(spec.kernel, spec.kernel)))
    return Counter(shapes)


def _zero_channels(weight: np.ndarray, out_axis: int) -> list[int]:
    moved = np.moveaxis(weight, out_axis, 0).reshape(weight.shape[out_axis], -1)
    return [int(i) for i in np.flatnonzero(~moved.any(axis=1))]


def onnx_convs(path: str | Path) -> list[tuple[ConvShape, list[int]]]:
    """(shape, zero output channels) of every Conv / ConvTranspose in an ONNX file."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    weights = {init.name: init for init in graph.initializer}
    # int8 (QDQ) files feed convs through DequantizeLinear: read the int8 weights behind it.
    dequantized = {n.output[0]: n.input[0] for n in graph.node if n.op_type == "DequantizeLinear"}
    found = []
    for node in graph.node:
        weight = dequantized.get(node.input[1], node.input[1]) if len(node.input) > 1 else ""
        if node.op_type not in ("Conv", "ConvTranspose") or weight not in weights:
            continue
        w = numpy_helper.to_array(weights[weight])
        transposed = node.op_type == "ConvTranspose"
        c_in, c_out = (w.shape[0], w.shape[1]) if transposed else (w.shape[1], w.shape[0])
        kernel = _kernel(w.shape[2], w.shape[3])
        found.append(((transposed, c_out, c_in, kernel), _zero_channels(w, 1 if transposed else 0)))
    return found


def tflite_convs(path: str | Path) -> list[tuple[ConvShape, list[int]]]:
    """The same for CONV_2D / TRANSPOSE_CONV of a TFLite file (weights are O x kh x kw x I), and
    the DEPTHWISE_CONV_2D the converter makes of a conv with one input channel (weights 1 x kh x
    kw x O: a plan whose group was pruned to one channel)."""
    from export.litert import interpreter

    it = interpreter(path, xnnpack=False)
    ops = it._get_ops_details()
    # fp16 files feed convs through DEQUANTIZE ops: read the fp16 constant behind them.
    dequantized = {int(op["outputs"][0]): int(op["inputs"][0]) for op in ops if op["op_name"] == "DEQUANTIZE"}
    found = []
    for op in ops:
        if op["op_name"] not in ("CONV_2D", "TRANSPOSE_CONV", "DEPTHWISE_CONV_2D"):
            continue
        index = int(op["inputs"][1])
        w = it.get_tensor(dequantized.get(index, index))
        if op["op_name"] == "DEPTHWISE_CONV_2D":
            if it.get_tensor_details()[int(op["inputs"][0])]["shape"][-1] != 1:
                continue  # a real depthwise conv: none of our generators has one
            _, kh, kw, c_out = w.shape
            found.append(((False, c_out, 1, _kernel(kh, kw)), _zero_channels(w, 3)))
            continue
        c_out, kh, kw, c_in = w.shape
        found.append(((op["op_name"] == "TRANSPOSE_CONV", c_out, c_in, _kernel(kh, kw)), _zero_channels(w, 0)))
    return found


def check_structure(path: str | Path, runtime: str, plan: ChannelPlan) -> StructureReport:
    """Raise StructureError unless the file's convs are exactly the plan's, with no zero channel."""
    found = onnx_convs(path) if runtime == "onnx" else tflite_convs(path)
    for shape, zeros in found:
        if zeros:
            raise StructureError(
                f"{Path(path).name}: a conv {shape[2]}->{shape[1]} still has all-zero output channels {zeros[:8]}; "
                "export the slim generator, not the hyper or dense one"
            )
    # Compared without the transposed flag: the converter may lower a transposed conv on a 1x1
    # input (DCGAN's first layer) to a padded CONV_2D with the same channels and kernel. A TFLite
    # file has its transposed convs as one conv per phase (files exported before that: as they are).
    got = Counter(shape[1:] for shape, _ in found)
    forms = (True, False) if runtime == "tflite" else (False,)
    wants = [Counter(shape[1:] for shape in expected_convs(plan, phases).elements()) for phases in forms]
    want = wants[0]
    if got not in wants:
        missing, extra = want - got, got - want
        raise StructureError(
            f"{Path(path).name}: conv shapes differ from the plan (out, in, k): "
            f"missing {sorted(missing.elements())[:4]}, unexpected {sorted(extra.elements())[:4]}"
        )
    return StructureReport(len(found), True)
