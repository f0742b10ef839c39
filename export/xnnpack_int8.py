"""Rewrites of a quantized TFLite file that let XNNPACK (LiteRT's CPU delegate) take the int8
graph whole. Two things ai-edge-quantizer writes are legal TFLite that XNNPACK refuses (found by
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

What cannot be fixed here is named, not hidden: XNNPACK has no int8 RSQRT, SQRT or DIV, so an
integer InstanceNorm's RSQRT stays outside the delegate (`export.int8_norm = "float"` keeps those
per-channel statistics in float so that XNNPACK takes the whole graph, at the price of full
integer; see `export/integer.py`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# standalone int8 activation -> the fused activation of the ADD that replaces it
CLAMPS = {"RELU": "RELU", "RELU6": "RELU6", "RELU_N1_TO_1": "RELU_N1_TO_1"}
MIN_SCALE_RATIO = 1.0 / 1024.0  # XNNPACK's bound on an ADD / SUB input-to-output scale ratio


@dataclass(frozen=True)
class Requantized:
    clamps: int = 0  # standalone activations written as ADD(x, 0) with the activation fused
    constants: int = 0  # constants below one output quantum stored at the output's scale


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

    def new_constant(name: bytes, values: np.ndarray, scale: float) -> int:
        buf = schema.BufferT()
        buf.data = values.astype(np.int8).view(np.uint8)
        model.buffers.append(buf)
        t = schema.TensorT()
        t.name, t.type, t.buffer = name, schema.TensorType.INT8, len(model.buffers) - 1
        t.shape = np.array(values.shape, dtype=np.int32)
        t.quantization = schema.QuantizationParametersT()
        t.quantization.scale = np.array([scale], dtype=np.float32)
        t.quantization.zeroPoint = np.array([0], dtype=np.int64)
        tensors.append(t)
        return len(tensors) - 1

    def int8_opcode(builtin: int) -> int:
        if builtin not in codes:
            model.operatorCodes.append(schema.OperatorCodeT())
            model.operatorCodes[-1].builtinCode = model.operatorCodes[-1].deprecatedBuiltinCode = builtin
            codes.append(builtin)
        code = model.operatorCodes[codes.index(builtin)]
        code.version = max(code.version, 2)  # the first version with int8
        return codes.index(builtin)

    clamps = constants = 0
    for name, op in zip(op_names(model), graph.operators, strict=True):
        if name in CLAMPS:
            src, dst = int(op.inputs[0]), int(op.outputs[0])
            if per_tensor_int8(src) is None or per_tensor_int8(dst) is None:
                continue
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
    return write_model(model), Requantized(clamps, constants)
