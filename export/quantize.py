"""Lower-precision files from the fp32 ones: fp16 and full-integer int8 (post-training, calibrated
on the run's own training images). Full integer means int8 weights (per-channel scales) *and*
int8 activations, which is what phone NPUs run; the model keeps float input and output (a
QUANTIZE at the input, a DEQUANTIZE at the output) unless int8 I/O is asked for.

- ONNX int8: ONNX Runtime's static quantizer in QDQ form (QuantizeLinear/DequantizeLinear around
  every op, the form QNN and NNAPI take), int8 activations, symmetric per-channel int8 weights,
  min/max calibration.
- ONNX fp16: every float tensor fp16, float32 input and output.
- TFLite int8: ai-edge-quantizer's static recipe (int8 activations, per-channel int8 weights),
  min/max calibration; the graph input and output stay float32 unless `int8_io`; then the
  rewrites XNNPACK needs to take the graph whole (`export/xnnpack_int8.py`).
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from coronet.files import atomic_write_bytes
from export.errors import ExportError
from export.litert import quiet_native_output
from export.xnnpack_int8 import for_xnnpack


def onnx_fp16(src: str | Path, dst: str | Path) -> Path:
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = convert_float_to_float16(onnx.load(str(src)), keep_io_types=True, disable_shape_infer=False)
    _sort_nodes(model.graph)  # the converter appends the input casts at the end of the node list
    onnx.checker.check_model(model)
    atomic_write_bytes(dst, lambda f: f.write(model.SerializeToString()))
    return Path(dst)


def _sort_nodes(graph) -> None:
    """Put a graph's nodes in topological order (the order ONNX requires), in place."""
    ready = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        placed = [n for n in pending if all(i in ready for i in n.input)]
        if not placed:
            raise ExportError("the fp16 ONNX graph has a cycle or a missing input")
        for node in placed:
            ordered.append(node)
            ready.update(node.output)
        pending = [n for n in pending if all(n is not p for p in placed)]
    del graph.node[:]
    graph.node.extend(ordered)


def onnx_int8(src: str | Path, dst: str | Path, calibration: Sequence[np.ndarray], int8_io: bool = False) -> Path:
    """Full-integer QDQ int8 of an fp32 ONNX file, calibrated on `calibration` (NCHW float32
    batches of one); with `int8_io`, the graph takes and gives int8 (see `_int8_io`)."""
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if not calibration:
        raise ExportError("int8 export needs calibration images (export.calibration_images > 0)")
    input_name = onnx.load(str(src)).graph.input[0].name

    class Images(CalibrationDataReader):
        def __init__(self) -> None:
            self.images = iter(calibration)

        def get_next(self) -> dict[str, np.ndarray] | None:
            x = next(self.images, None)
            return None if x is None else {input_name: np.ascontiguousarray(x, dtype=np.float32)}

    dst = Path(dst)
    with tempfile.TemporaryDirectory(dir=dst.parent) as tmp:
        prepared, quantized = Path(tmp) / "prepared.onnx", Path(tmp) / "int8.onnx"
        quant_pre_process(str(src), str(prepared), skip_symbolic_shape=True)
        root = logging.getLogger()
        level = root.level
        root.setLevel(logging.ERROR)  # it warns about per-channel axes on every 1-D bias, once per conv
        try:
            quantize_static(
                str(prepared),
                str(quantized),
                Images(),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                activation_type=QuantType.QInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=CalibrationMethod.MinMax,
                extra_options={"WeightSymmetric": True, "ActivationSymmetric": False},
            )
        finally:
            root.setLevel(level)
        model = onnx.load(str(quantized))
        if int8_io:
            _int8_io(model)
        data = model.SerializeToString()
    atomic_write_bytes(dst, lambda f: f.write(data))
    return dst


INPUT_SCALE, OUTPUT_SCALE = "coronet.input_quantization", "coronet.output_quantization"


def _int8_io(model) -> None:
    """The QDQ graph without its first QuantizeLinear and last DequantizeLinear: the input and
    output are int8, their scale and zero point in the metadata ("scale zero_point" under
    coronet.input_quantization / coronet.output_quantization), as a camera pipeline with int8
    buffers wants it."""
    import onnx
    from onnx import numpy_helper

    graph = model.graph
    (x,), (y,) = graph.input, graph.output
    writer = next((n for n in graph.node if y.name in n.output), None)
    if writer is not None and writer.op_type == "Tanh":
        # ORT's QDQ quantizer leaves the final tanh unquantized; its range is [-1, 1], so its
        # output takes TFLite's fixed tanh quantization (scale 1/128, zero point 0)
        scale = numpy_helper.from_array(np.array(1 / 128, dtype=np.float32), f"{y.name}_scale")
        zero = numpy_helper.from_array(np.array(0, dtype=np.int8), f"{y.name}_zero_point")
        graph.initializer.extend([scale, zero])
        writer.output[0] = f"{y.name}_float"
        graph.node.append(onnx.helper.make_node("QuantizeLinear", [writer.output[0], scale.name, zero.name],
                                                [f"{y.name}_quantized"]))  # fmt: skip
        graph.node.append(onnx.helper.make_node("DequantizeLinear", [f"{y.name}_quantized", scale.name, zero.name],
                                                [y.name]))  # fmt: skip
        writer = graph.node[-1]
    values = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    readers = [n for n in graph.node if x.name in n.input]
    quantized_in = len(readers) == 1 and readers[0].op_type == "QuantizeLinear"
    if not quantized_in or writer is None or writer.op_type != "DequantizeLinear":
        raise ExportError("int8 I/O: the quantized ONNX graph does not begin with one QuantizeLinear and end with a "
                          "DequantizeLinear; export with export.int8_io = false")  # fmt: skip
    for node, tensor, key in ((readers[0], x, INPUT_SCALE), (writer, y, OUTPUT_SCALE)):
        scale, zero = values[node.input[1]], values[node.input[2]]
        entry = model.metadata_props.add()
        entry.key, entry.value = key, f"{float(scale)!r} {int(zero)}"
        inner = node.output[0] if node is readers[0] else node.input[0]
        tensor.name = inner
        tensor.type.tensor_type.elem_type = onnx.TensorProto.INT8
        graph.node.remove(node)


def tflite_int8(
    src: str | Path,
    calibration: Sequence[np.ndarray],
    int8_io: bool = False,
    float_ops: Sequence[str] = (),
    xnnpack: bool = True,
) -> bytes:
    """int8 of an fp32 TFLite file (its input in the file's own layout): full integer, except the
    ops named in `float_ops` (TFLite op names, e.g. RSQRT), which stay float between a DEQUANTIZE
    and a QUANTIZE; with the parameters XNNPACK needs unless `xnnpack` is False."""
    from ai_edge_quantizer import qtyping, quantizer, recipe_manager
    from ai_edge_quantizer.algorithm_manager import AlgorithmName

    from export.litert import interpreter

    if not calibration:
        raise ExportError("int8 export needs calibration images (export.calibration_images > 0)")
    recipe = recipe_manager.RecipeManager()
    recipe.add_static_config(
        regex=".*",
        operation_name=qtyping.TFLOperationName.ALL_SUPPORTED,
        activation_num_bits=8,
        weight_num_bits=8,
        weight_granularity=qtyping.QuantGranularity.CHANNELWISE,
    )
    if not int8_io:  # the graph's input and output stay float: QUANTIZE / DEQUANTIZE at the ends
        for io in (qtyping.TFLOperationName.INPUT, qtyping.TFLOperationName.OUTPUT):
            recipe.add_quantization_config(regex=".*", operation_name=io, algorithm_key=AlgorithmName.NO_QUANTIZE)
    for op in float_ops:
        recipe.add_quantization_config(
            regex=".*", operation_name=getattr(qtyping.TFLOperationName, op), algorithm_key=AlgorithmName.NO_QUANTIZE
        )
    signatures = interpreter(src, xnnpack=False).get_signature_list()
    signature = next(iter(signatures))
    input_name = signatures[signature]["inputs"][0]
    with quiet_native_output():
        q = quantizer.Quantizer(str(src))
        q.load_quantization_recipe(recipe.get_quantization_recipe())
        samples = [{input_name: np.ascontiguousarray(x, dtype=np.float32)} for x in calibration]
        result = q.calibrate({signature: samples})
        quantized = q.quantize(result, enable_progress_bar=False, enable_progress_report=False)
    data = bytes(quantized.quantized_model)
    return for_xnnpack(data)[0] if xnnpack else data
