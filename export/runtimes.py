"""Callables that run an exported file with its runtime: NCHW float32 numpy in and out."""

from __future__ import annotations

from pathlib import Path

import numpy as np


class OnnxRunner:
    def __init__(self, path: str | Path, threads: int = 1) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self.threads = threads

    def raw(self, x: np.ndarray) -> np.ndarray:
        """One inference on an input already in the file's layout."""
        return self.session.run(None, {self.input_name: x})[0]

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.raw(np.ascontiguousarray(x, dtype=np.float32))


class TfliteRunner:
    def __init__(self, path: str | Path, threads: int = 1, layout: str = "NCHW", xnnpack: bool = True) -> None:
        from export.litert import interpreter

        self.interpreter = interpreter(path, num_threads=threads, xnnpack=xnnpack)
        self.input_index = self.interpreter.get_input_details()[0]["index"]
        self.output_index = self.interpreter.get_output_details()[0]["index"]
        self.layout = layout
        self.threads = threads

    def raw(self, x: np.ndarray) -> np.ndarray:
        self.interpreter.set_tensor(self.input_index, x)
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self.output_index)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if self.layout == "NHWC":
            x = x.transpose(0, 2, 3, 1)
        out = self.raw(np.ascontiguousarray(x, dtype=np.float32))
        return out.transpose(0, 3, 1, 2) if self.layout == "NHWC" and out.ndim == 4 else out


def make_runner(runtime: str, path: str | Path, threads: int = 1, layout: str = "NCHW"):
    if runtime == "onnx":
        return OnnxRunner(path, threads)
    if runtime == "tflite":
        return TfliteRunner(path, threads, layout)
    raise ValueError(f"unknown runtime {runtime!r}; use onnx or tflite")
