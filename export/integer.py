"""Is an int8 file fully integer, read from the file itself? What a phone NPU (Hexagon, the
Dimensity APU) needs: every conv with int8 weights and per-channel scales, and no float island
(an op computing in float between a dequantize and a quantize) anywhere but the graph's two ends.
An island is named with its op type and count, so a user sees what keeps the model off the NPU.

ONNX in QDQ form: every compute node takes its activations from DequantizeLinear and hands its
outputs to QuantizeLinear (the graph output excepted); a conv's weight comes from a
DequantizeLinear over an int8 initializer with one scale per output channel.
TFLite: every tensor of every op is int8 (int32 for biases and shapes); QUANTIZE and DEQUANTIZE
are the borders (the float input's, the float output's, or an island's), not islands."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

QDQ = ("QuantizeLinear", "DequantizeLinear")


@dataclass(frozen=True)
class IntegerReport:
    convs: int
    per_channel_convs: int  # convs whose int8 weights have one scale per output channel
    islands: dict[str, int] = field(default_factory=dict)  # op type -> how many compute in float

    @property
    def fully_integer(self) -> bool:
        return not self.islands and self.per_channel_convs == self.convs > 0

    def to_dict(self) -> dict:
        return {**asdict(self), "fully_integer": self.fully_integer}

    def describe(self) -> str:
        if self.fully_integer:
            return f"fully integer ({self.convs} convs, per-channel int8 weights)"
        parts = [f"{n} {op}" for op, n in sorted(self.islands.items())]
        if self.per_channel_convs != self.convs:
            missing = self.convs - self.per_channel_convs
            parts.append(f"{missing} of {self.convs} convs without per-channel int8 weights")
        return "float islands: " + ", ".join(parts)


def onnx_integer(path: str | Path) -> IntegerReport:
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    initializers = {i.name: i for i in graph.initializer}
    producer = {out: node for node in graph.node for out in node.output}
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    outputs = {o.name for o in graph.output}

    def dequantized(name: str) -> bool:
        return name in producer and producer[name].op_type == "DequantizeLinear"

    def requantized(name: str) -> bool:
        return all(c.op_type == "QuantizeLinear" for c in consumers.get(name, []))

    islands: Counter = Counter()
    convs = per_channel = 0
    for node in graph.node:
        if node.op_type in QDQ:
            continue
        float_in = [n for n in node.input if n and n not in initializers and not dequantized(n)]
        float_out = [o for o in node.output if o not in outputs and not requantized(o)]
        if float_in or float_out:
            islands[node.op_type] += 1
        if node.op_type in ("Conv", "ConvTranspose"):
            convs += 1
            dq = producer.get(node.input[1])
            if dq is None or dq.op_type != "DequantizeLinear" or dq.input[0] not in initializers:
                continue
            weight = numpy_helper.to_array(initializers[dq.input[0]])
            scale = numpy_helper.to_array(initializers[dq.input[1]]) if dq.input[1] in initializers else np.ones(1)
            out_axis = 1 if node.op_type == "ConvTranspose" else 0
            if weight.dtype == np.int8 and scale.size == weight.shape[out_axis] > 1:
                per_channel += 1
    return IntegerReport(convs, per_channel, dict(islands))


def tflite_integer(path: str | Path) -> IntegerReport:
    from export.litert import interpreter

    it = interpreter(path, xnnpack=False)
    tensors = it.get_tensor_details()
    islands: Counter = Counter()
    convs = per_channel = 0
    for op in it._get_ops_details():
        ins, outs = [i for i in op["inputs"] if i >= 0], [o for o in op["outputs"] if o >= 0]
        name = op["op_name"]
        if name not in ("QUANTIZE", "DEQUANTIZE") and any(
            tensors[i]["dtype"] in (np.float32, np.float16) for i in ins + outs
        ):  # the conversions are an island's borders; the ops between them compute in float
            islands[name] += 1
        if name in ("CONV_2D", "TRANSPOSE_CONV", "DEPTHWISE_CONV_2D"):
            convs += 1
            weight = tensors[ins[1]]
            scales = weight["quantization_parameters"]["scales"]
            out_channels = weight["shape"][0] if name != "DEPTHWISE_CONV_2D" else weight["shape"][-1]
            if weight["dtype"] == np.int8 and len(scales) == out_channels > 1:
                per_channel += 1
    return IntegerReport(convs, per_channel, dict(islands))


def check_integer(path: str | Path, runtime: str) -> IntegerReport:
    return onnx_integer(path) if runtime == "onnx" else tflite_integer(path)
