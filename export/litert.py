"""LiteRT on this host: the interpreter and what it says about a file (op counts, XNNPACK
partitions). No torch and no litert-torch, so the host benchmark runs on a lab host without them."""

from __future__ import annotations

import contextlib
import os
from collections import Counter
from pathlib import Path


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
