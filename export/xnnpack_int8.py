"""Rewrites of a quantized TFLite file that let XNNPACK (LiteRT's CPU delegate) take the int8
graph whole. Three things ai-edge-quantizer writes are legal TFLite that XNNPACK refuses (found by
offering each op alone to the delegate: `export.litert.xnnpack_refused`), and each refused op
splits the graph into one more delegate partition with a CPU kernel between them:

- A standalone int8 RELU (one not fused into the conv before it: after a concatenation, or one
  whose input is read elsewhere too): XNNPACK has no int8 RELU kernel, fused activations only.
  It becomes ADD(x, 0) with the RELU fused, which XNNPACK runs: the same arithmetic (TFLite's
  int8 RELU requantizes from the input's parameters to the output's, and so does the ADD), the
  zero stored at the output's scale. RELU6 and RELU_N1_TO_1 likewise.
- An ADD / SUB of a constant far below one quantum of the output (InstanceNorm's epsilon is
  1e-5 against a variance quantum of ~5e-4): XNNPACK refuses an input-to-output scale ratio
  below 2^-10. Such a constant rounds to zero quanta of the output in any int8 kernel, so it is
  stored at the output's scale, where it reads as what the arithmetic already did with it.
- An int8 RSQRT or SQRT (an integer InstanceNorm's 1/sqrt of the variance): XNNPACK has no int8
  kernel for either. An int8 unary op is a function of 256 input values: its table, read from
  LiteRT's reference kernel, becomes a sum of hinges, table[0] + sum_k a_k * relu(i - k) over the
  input's index i = q + 128, that is two int8 FULLY_CONNECTED ops (the first with the RELU fused,
  every weight a small integer at a scale that makes the requantization an identity) and a
  RESHAPE. All integer arithmetic, so exact: the same int8 output as the op, bit for bit, in a
  form XNNPACK (and any NPU) runs.
"""

from __future__ import annotations

import copy
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# standalone int8 activation -> the fused activation of the ADD that replaces it
CLAMPS = {"RELU": "RELU", "RELU6": "RELU6", "RELU_N1_TO_1": "RELU_N1_TO_1"}
MIN_SCALE_RATIO = 1.0 / 1024.0  # XNNPACK's bound on an ADD / SUB input-to-output scale ratio
TABULATED = ("RSQRT", "SQRT")  # int8 unary ops XNNPACK has no kernel for: written as their table
INT8_WEIGHT = 127  # the largest hinge slope one int8 weight carries at scale one


@dataclass(frozen=True)
class Requantized:
    clamps: int = 0  # standalone activations written as ADD(x, 0) with the activation fused
    constants: int = 0  # constants below one output quantum stored at the output's scale
    tables: int = 0  # int8 unary ops written as a sum of hinges (two FULLY_CONNECTED and a RESHAPE)


def int8_table(model, op) -> np.ndarray:
    """What LiteRT's reference kernel gives the int8 unary `op` of `model` (a ModelT) for each of
    the 256 input values, in quanta, indexed by input q + 128."""
    from ai_edge_litert import schema_py_generated as schema

    from export.litert import interpreter, write_model

    graph = model.subgraphs[0]
    alone = schema.ModelT()
    alone.version, alone.buffers = 3, [schema.BufferT()]
    alone.operatorCodes = [model.operatorCodes[op.opcodeIndex]]
    sub = schema.SubGraphT()
    sub.tensors = [copy.copy(graph.tensors[i]) for i in (op.inputs[0], op.outputs[0])]
    for t in sub.tensors:
        t.shape, t.shapeSignature, t.buffer = np.array([256], dtype=np.int32), None, 0
    sub.inputs, sub.outputs = np.array([0], dtype=np.int32), np.array([1], dtype=np.int32)
    one = copy.copy(op)
    one.opcodeIndex, one.inputs, one.outputs = 0, sub.inputs, sub.outputs
    sub.operators, alone.subgraphs = [one], [sub]
    with tempfile.TemporaryDirectory(prefix="coronet-table-") as tmp:
        path = Path(tmp) / "op.tflite"
        path.write_bytes(write_model(alone))
        it = interpreter(path, xnnpack=False)
        it.set_tensor(it.get_input_details()[0]["index"], np.arange(-128, 128, dtype=np.int8))
        it.invoke()
        return it.get_tensor(it.get_output_details()[0]["index"]).astype(np.int64)


def hinges(table: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Thresholds k and slopes a with table[i] == table[0] + sum(a * relu(i - k)) for every index
    i: a_k is the change of the table's step at k, split so that every |a| <= 127 (an int8 weight)."""
    steps = np.diff(table)  # steps[j] = table[j + 1] - table[j]
    change = np.diff(steps, prepend=0)  # the slope from index k on grows by change[k]
    thresholds, slopes = [], []
    for k in np.flatnonzero(change):
        left = int(change[k])
        while left:
            part = max(-INT8_WEIGHT, min(INT8_WEIGHT, left))
            thresholds.append(int(k))
            slopes.append(part)
            left -= part
    return np.array(thresholds, dtype=np.int64), np.array(slopes, dtype=np.int64)


def for_xnnpack(data: bytes) -> tuple[bytes, Requantized]:
    """The quantized TFLite file `data` with the rewrites above; how many of each."""
    from ai_edge_litert import schema_py_generated as schema

    from export.litert import is_constant, op_names, read_model, write_model

    model = read_model(data)
    ops = schema.BuiltinOperator
    codes = [max(c.builtinCode, c.deprecatedBuiltinCode) for c in model.operatorCodes]
    graph = model.subgraphs[0]
    tensors = graph.tensors

    def per_tensor_int8(i: int) -> tuple[float, int] | None:
        q = tensors[i].quantization
        if tensors[i].type != schema.TensorType.INT8 or q is None or q.scale is None or len(q.scale) != 1:
            return None
        return float(q.scale[0]), int(q.zeroPoint[0])

    def new_tensor(name: bytes, shape: tuple[int, ...], kind: int, scale: float | None, zero: int = 0,
                   values: np.ndarray | None = None) -> int:  # fmt: skip
        t = schema.TensorT()
        t.name, t.type, t.buffer = name, kind, 0
        t.shape = np.array(shape, dtype=np.int32)
        if values is not None:
            buf = schema.BufferT()
            buf.data = np.ascontiguousarray(values).view(np.uint8).reshape(-1)
            model.buffers.append(buf)
            t.buffer = len(model.buffers) - 1
        if scale is not None:
            t.quantization = schema.QuantizationParametersT()
            t.quantization.scale = np.array([scale], dtype=np.float32)
            t.quantization.zeroPoint = np.array([zero], dtype=np.int64)
        tensors.append(t)
        return len(tensors) - 1

    def new_constant(name: bytes, values: np.ndarray, scale: float) -> int:
        return new_tensor(name, values.shape, schema.TensorType.INT8, scale, values=values.astype(np.int8))

    def int8_opcode(builtin: int, version: int = 2) -> int:  # 2: the first version with int8 for most ops
        if builtin not in codes:
            model.operatorCodes.append(schema.OperatorCodeT())
            model.operatorCodes[-1].builtinCode = model.operatorCodes[-1].deprecatedBuiltinCode = builtin
            codes.append(builtin)
        code = model.operatorCodes[codes.index(builtin)]
        code.version = max(code.version, version)
        return codes.index(builtin)

    def new_op(builtin: int, inputs: list[int], output: int, options_type: int, options, version: int = 2):
        op = schema.OperatorT()
        op.opcodeIndex = int8_opcode(builtin, version)
        op.inputs, op.outputs = np.array(inputs, dtype=np.int32), np.array([output], dtype=np.int32)
        op.builtinOptionsType, op.builtinOptions = options_type, options
        return op

    def as_hinges(op) -> list:
        """The int8 unary `op` as FULLY_CONNECTED(relu) -> FULLY_CONNECTED -> RESHAPE (see above)."""
        src, dst = int(op.inputs[0]), int(op.outputs[0])
        (in_scale, in_zero), (out_scale, out_zero) = per_tensor_int8(src), per_tensor_int8(dst)
        table = int8_table(model, op)
        thresholds, slopes = hinges(table)
        n, units, name = int(np.prod(tensors[src].shape)), len(slopes), tensors[dst].name
        int8, int32 = schema.TensorType.INT8, schema.TensorType.INT32
        # relu(i - k) in the input's quanta: weight 1 at scale 1, so the requantization is an identity
        w1 = new_tensor(name + b"/hinge_w", (units, 1), int8, 1.0, values=np.ones((units, 1), dtype=np.int8))
        b1 = new_tensor(name + b"/hinge_b", (units,), int32, in_scale,
                        values=(in_zero + 128 - thresholds).astype(np.int32))  # fmt: skip
        hidden = new_tensor(name + b"/hinges", (n, units), int8, in_scale, -128)
        w2_scale = float(np.float32(out_scale / in_scale))  # slopes in output quanta per input quantum
        w2 = new_tensor(name + b"/slope_w", (1, units), int8, w2_scale, values=slopes.astype(np.int8)[None])
        b2 = new_tensor(name + b"/slope_b", (1,), int32, float(np.float32(in_scale) * np.float32(w2_scale)),
                        values=np.array([table[0] - out_zero], dtype=np.int32))  # fmt: skip
        flat = new_tensor(name + b"/flat", (n, 1), int8, out_scale, out_zero)
        shape = new_tensor(name + b"/shape", (len(tensors[dst].shape),), int32, None,
                           values=np.array(tensors[dst].shape, dtype=np.int32))  # fmt: skip
        relu, none = schema.ActivationFunctionType.RELU, schema.ActivationFunctionType.NONE
        fc_options = []
        for activation in (relu, none):
            options = schema.FullyConnectedOptionsT()
            options.fusedActivationFunction = activation
            fc_options.append(options)
        reshape = schema.ReshapeOptionsT()
        reshape.newShape = np.array(tensors[dst].shape, dtype=np.int32)
        fc = schema.BuiltinOptions.FullyConnectedOptions
        return [
            new_op(ops.FULLY_CONNECTED, [src, w1, b1], hidden, fc, fc_options[0], version=4),
            new_op(ops.FULLY_CONNECTED, [hidden, w2, b2], flat, fc, fc_options[1], version=4),
            new_op(ops.RESHAPE, [flat, shape], dst, schema.BuiltinOptions.ReshapeOptions, reshape, version=1),
        ]

    clamps = constants = tables = 0
    rewritten = []
    for name, op in zip(op_names(model), graph.operators, strict=True):
        if name in CLAMPS:
            src, dst = int(op.inputs[0]), int(op.outputs[0])
            if per_tensor_int8(src) is not None and per_tensor_int8(dst) is not None:
                zero = new_constant(tensors[dst].name + b"/zero", np.zeros(1), per_tensor_int8(dst)[0])
                options = schema.AddOptionsT()
                options.fusedActivationFunction = getattr(schema.ActivationFunctionType, CLAMPS[name])
                op.opcodeIndex = int8_opcode(ops.ADD)
                op.inputs = np.array([src, zero], dtype=np.int32)
                op.builtinOptionsType, op.builtinOptions = schema.BuiltinOptions.AddOptions, options
                clamps += 1
        elif name in ("ADD", "SUB") and per_tensor_int8(int(op.outputs[0])) is not None:
            out_scale = per_tensor_int8(int(op.outputs[0]))[0]
            inputs = [int(x) for x in op.inputs]
            for k, i in enumerate(inputs):
                params = per_tensor_int8(i)
                if not is_constant(model, i) or params is None or params[0] / out_scale >= MIN_SCALE_RATIO:
                    continue
                real = (model.buffers[tensors[i].buffer].data.view(np.int8).astype(np.float64) - params[1]) * params[0]
                values = np.clip(np.round(real / out_scale), -128, 127).reshape(tuple(tensors[i].shape))
                inputs[k] = new_constant(tensors[i].name + b"/requantized", values, out_scale)  # it may be shared
                constants += 1
            op.inputs = np.array(inputs, dtype=np.int32)
        elif name in TABULATED and all(per_tensor_int8(int(i)) is not None for i in (*op.inputs, *op.outputs)):
            rewritten.extend(as_hinges(op))
            tables += 1
            continue
        rewritten.append(op)
    graph.operators = rewritten
    return write_model(model), Requantized(clamps, constants, tables)
