"""Callables that run an exported file with its runtime: NCHW float32 numpy in and out."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from coronet.errors import ExportError


class OnnxRunner:
    def __init__(self, path: str | Path, threads: int = 1) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self.threads = threads
        meta = self.session.get_modelmeta().custom_metadata_map  # int8 I/O: its scale and zero point
        self.io = {k: (float(v.split()[0]), int(v.split()[1])) for k, v in meta.items() if k.startswith("coronet.")}

    def raw(self, x: np.ndarray) -> np.ndarray:
        """One inference on an input already in the file's layout; an int8 input and output
        (a QDQ file with int8 I/O) are quantized and dequantized with the file's own scales."""
        if "coronet.input_quantization" in self.io and x.dtype != np.int8:
            scale, zero = self.io["coronet.input_quantization"]
            x = np.clip(np.round(x / scale) + zero, -128, 127).astype(np.int8)
        out = self.session.run(None, {self.input_name: x})[0]
        if out.dtype == np.int8 and "coronet.output_quantization" in self.io:
            scale, zero = self.io["coronet.output_quantization"]
            out = (out.astype(np.float32) - zero) * scale
        return out

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.raw(np.ascontiguousarray(x, dtype=np.float32))


class TfliteRunner:
    def __init__(self, path: str | Path, threads: int = 1, layout: str = "NCHW", xnnpack: bool = True) -> None:
        from export.litert import interpreter

        self.interpreter = interpreter(path, num_threads=threads, xnnpack=xnnpack)
        self.input, self.output = self.interpreter.get_input_details()[0], self.interpreter.get_output_details()[0]
        self.input_index, self.output_index = self.input["index"], self.output["index"]
        self.layout = layout
        self.threads = threads

    def raw(self, x: np.ndarray) -> np.ndarray:
        """One inference on an input in the file's layout; an int8 input and output (a full-integer
        file with int8 I/O) are quantized and dequantized with the file's own scales."""
        if self.input["dtype"] == np.int8 and x.dtype != np.int8:
            scale, zero = self.input["quantization"]
            x = np.clip(np.round(x / scale) + zero, -128, 127).astype(np.int8)
        self.interpreter.set_tensor(self.input_index, x)
        self.interpreter.invoke()
        out = self.interpreter.get_tensor(self.output_index)
        if out.dtype == np.int8:
            scale, zero = self.output["quantization"]
            out = (out.astype(np.float32) - zero) * scale
        return out

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if self.layout == "NHWC":
            x = x.transpose(0, 2, 3, 1)
        out = self.raw(np.ascontiguousarray(x, dtype=np.float32))
        return out.transpose(0, 3, 1, 2) if self.layout == "NHWC" and out.ndim == 4 else out


class ExecutorchRunner:
    """An ExecuTorch program (`.pte`) in ExecuTorch's Python runtime (needs torch). `threads`
    sizes ExecuTorch's one thread pool, which every program of the process shares."""

    def __init__(self, path: str | Path, threads: int = 1) -> None:
        from export.litert import quiet_native_output

        try:
            with quiet_native_output():  # importing it probes the CPU, loudly
                from executorch.extension.pybindings.portable_lib import _unsafe_reset_threadpool
                from executorch.runtime import Runtime
        except ImportError:
            raise ExportError("running a .pte needs executorch: pip install 'coronetgan[executorch]'") from None

        with quiet_native_output():  # its C++ logs each thread-pool reset and CPU probe to stderr
            _unsafe_reset_threadpool(threads)
            self.method = Runtime.get().load_program(str(path)).load_method("forward")
        self.threads = threads

    def raw(self, x: np.ndarray) -> np.ndarray:
        import torch

        return self.method.execute([torch.from_numpy(x)])[0].numpy()

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.raw(np.ascontiguousarray(x, dtype=np.float32))


def make_runner(runtime: str, path: str | Path, threads: int = 1, layout: str = "NCHW"):
    if runtime == "onnx":
        return OnnxRunner(path, threads)
    if runtime == "tflite":
        return TfliteRunner(path, threads, layout)
    if runtime == "executorch":
        return ExecutorchRunner(path, threads)
    raise ValueError(f"unknown runtime {runtime!r}; use onnx, tflite or executorch")
