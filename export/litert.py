"""LiteRT on this host: the interpreter and what it says about a file (op counts, XNNPACK
partitions and the ops XNNPACK refuses), and the file's flatbuffer as objects to rewrite. No
torch and no litert-torch, so the host benchmark runs on a lab host without them."""

from __future__ import annotations

import contextlib
import copy
import os
import tempfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@contextlib.contextmanager
def quiet_native_output():
    """The converter's C++ code prints progress straight to fds 1 and 2; keep it off the console."""
    saved = [os.dup(1), os.dup(2)]
    with open(os.devnull, "wb") as devnull:
        try:
            os.dup2(devnull.fileno(), 1)
            os.dup2(devnull.fileno(), 2)
            yield
        finally:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)


def interpreter(path: str | Path, num_threads: int = 1, xnnpack: bool = True):
    """A LiteRT interpreter (XNNPACK applied by default), tensors allocated."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    kind = OpResolverType.AUTO if xnnpack else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    with quiet_native_output():
        it = Interpreter(model_path=str(path), num_threads=num_threads, experimental_op_resolver_type=kind)
        it.allocate_tensors()
    return it


def op_counts(path: str | Path) -> Counter:
    """Builtin op names of the file's main graph and how often each occurs."""
    return Counter(op["op_name"] for op in interpreter(path, xnnpack=False)._get_ops_details())


def xnnpack_partitions(path: str | Path, num_threads: int = 1) -> int:
    """How many delegate nodes XNNPACK made of the graph (1 = the whole graph in one partition)."""
    ops = interpreter(path, num_threads=num_threads)._get_ops_details()
    return sum(op["op_name"] == "DELEGATE" for op in ops)


def read_model(data: bytes):
    """A .tflite file as the schema's object tree (`ModelT`), every constant inside it (writers
    may store large ones after the flatbuffer, by offset)."""
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(data, 0))
    for buf in model.buffers:
        if buf.offset and buf.offset > 1:
            buf.data = np.frombuffer(data[buf.offset : buf.offset + buf.size], dtype=np.uint8).copy()
            buf.offset = buf.size = 0
    return model


def write_model(model) -> bytes:
    import flatbuffers

    builder = flatbuffers.Builder(1 << 16)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def is_constant(model, tensor: int) -> bool:
    data = model.buffers[model.subgraphs[0].tensors[tensor].buffer].data
    return data is not None and len(data) > 0


def op_names(model) -> list[str]:
    """The builtin op name of each operator of the main graph, in order."""
    from ai_edge_litert import schema_py_generated as schema

    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    codes = [max(c.builtinCode, c.deprecatedBuiltinCode) for c in model.operatorCodes]
    return [names[codes[op.opcodeIndex]] for op in model.subgraphs[0].operators]


@dataclass(frozen=True)
class SingleOp:
    """One op of a file alone in a model of its own (its inputs the model's inputs)."""

    kind: str  # the builtin op name: CONV_2D, ...
    output: str  # its (first) output tensor's name, what benchmark_model calls the node
    path: Path


def single_ops(path: str | Path) -> Iterator[SingleOp]:
    """Each op of the file's main graph in order, written alone into a one-op model (with only
    its own constants) in a scratch folder that the next op's model replaces."""
    from ai_edge_litert import schema_py_generated as schema

    model = read_model(Path(path).read_bytes())
    graph = model.subgraphs[0]
    empty = schema.BufferT()
    with tempfile.TemporaryDirectory(prefix="coronet-op-") as tmp:
        single = Path(tmp) / "op.tflite"
        for kind, op in zip(op_names(model), graph.operators, strict=True):
            alone = copy.copy(graph)
            alone.operators = [op]
            alone.inputs = [i for i in op.inputs if i >= 0 and not is_constant(model, i)]
            alone.outputs = list(op.outputs)
            one = copy.copy(model)
            one.subgraphs, one.signatureDefs = [alone], []
            used = {graph.tensors[i].buffer for i in op.inputs if i >= 0}  # only this op's constants: fast
            one.buffers = [buf if k in used else empty for k, buf in enumerate(model.buffers)]
            single.write_bytes(write_model(one))
            name = graph.tensors[op.outputs[0]].name
            yield SingleOp(kind, name.decode() if isinstance(name, bytes) else str(name), single)


def xnnpack_refused(path: str | Path) -> dict[str, int]:
    """The ops XNNPACK does not take, by type: each op alone in a one-op model, offered to the
    delegate. (The interpreter tells how many partitions, not which ops split them.)"""
    refused = Counter(op.kind for op in single_ops(path) if xnnpack_partitions(op.path) == 0)
    return dict(refused)
