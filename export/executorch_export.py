"""slim generator → ExecuTorch program (`.pte`) with the XNNPACK delegate, PyTorch's own
on-device runtime (the `executorch` extra; imported only here and in the runner).

fp32: the exported program lowered to XNNPACK. int8: post-training quantization with
ExecuTorch's XNNPACK quantizer (int8 activations, symmetric per-channel int8 weights),
calibrated on the run's images, then lowered. The same exact rewrites as for TFLite are applied
first (reflection pads as slices, InstanceNorm as means), so that XNNPACK takes those ops too.

Two changes to the quantizer's annotation, both for InstanceNorm's variance, found by undoing
one quantization at a time and measuring the PSNR it cost:
- it gives a mean its input's quantization parameters: the variance (the mean of squared
  deviations, ~0.05 on a grid of ~0.1) rounded small variances to zero (the dense ResNet lost
  1.3 dB to it). Here a mean has a grid of its own (XNNPACK's int8 mean requantizes).
- an int8 square loses what lies below half its quantum, and squares spread a tensor's range
  (0.25 per quantum in the demo's last norm: 0.3 dB). The squared deviations and their mean stay
  float inside the XNNPACK delegate (one op each per norm), the mean's output int8 again.
  Measured on the built-in task: demo model 0.56 -> 0.09 dB lost; benchmarks/precision.py's
  dense ResNet 0.15 -> 0.10.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from coronet.files import atomic_write_bytes
from export.errors import ExportError
from export.litert import quiet_native_output
from export.passes import EXECUTORCH_INT8_PASSES, EXECUTORCH_PASSES, apply_passes

PRECISIONS = ("fp32", "int8")


@dataclass(frozen=True)
class PteFile:
    path: Path
    precision: str
    delegated: int  # calls into the XNNPACK delegate in the lowered program
    left_out: int  # ops that run in ExecuTorch's portable kernels instead


def to_executorch(
    model: nn.Module,
    out_dir: str | Path,
    input_shape: tuple[int, ...],
    precision: str = "fp32",
    filename: str = "model.pte",
    calibration: list[np.ndarray] | None = None,
) -> PteFile:
    if precision not in PRECISIONS:
        raise ExportError(f"ExecuTorch export takes {', '.join(PRECISIONS)}, not {precision!r}")
    try:
        with quiet_native_output():
            from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
            from executorch.exir import to_edge_transform_and_lower
    except ImportError:
        raise ExportError("ExecuTorch export needs executorch: pip install 'coronetgan[executorch]'") from None
    model = apply_passes(model, EXECUTORCH_INT8_PASSES if precision == "int8" else EXECUTORCH_PASSES)
    sample = torch.zeros(input_shape)
    try:
        with torch.no_grad():
            program = torch.export.export(model, (sample,))
            if precision == "int8":
                program = torch.export.export(_quantized(program, calibration or []), (sample,))
            lowered = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()])
            graph = lowered.exported_program().graph_module.graph
            data = lowered.to_executorch().buffer
    except ExportError:
        raise
    except Exception as exc:
        raise ExportError(f"ExecuTorch export failed: {str(exc).splitlines()[0][:200]}") from None
    calls = [n for n in graph.nodes if n.op == "call_function"]
    delegated = sum("executorch_call_delegate" in str(n.target) for n in calls)
    left_out = sum("executorch_call_delegate" not in str(n.target) and "getitem" not in str(n.target) for n in calls)
    path = Path(out_dir) / filename
    atomic_write_bytes(path, lambda f: f.write(data))
    return PteFile(path, precision, delegated, left_out)


def _quantizer():
    """ExecuTorch's XNNPACK quantizer (per-channel weights) with InstanceNorm's statistics as above."""
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from torchao.quantization.pt2e.quantizer import QuantizationAnnotation

    def calls(graph: torch.fx.Graph, target) -> list[torch.fx.Node]:
        return [n for n in graph.nodes if n.op == "call_function" and n.target == target]

    class NormStatistics(XNNPACKQuantizer):
        """Annotated before the quantizer's own passes, which leave annotated nodes alone."""

        def annotate(self, model: torch.fx.GraphModule) -> torch.fx.GraphModule:
            activation = self.global_config.output_activation
            squares = {n for n in calls(model.graph, torch.ops.aten.mul.Tensor) if n.args[0] is n.args[1]}
            for node in squares:  # float: nothing quantized in or out
                node.meta["quantization_annotation"] = QuantizationAnnotation(_annotated=True)
            for node in calls(model.graph, torch.ops.aten.mean.dim):
                source = node.args[0]
                node.meta["quantization_annotation"] = QuantizationAnnotation(
                    input_qspec_map={} if source in squares else {source: activation},
                    output_qspec=activation,
                    _annotated=True,
                )
            return super().annotate(model)

    return NormStatistics().set_global(get_symmetric_quantization_config(is_per_channel=True))


def _quantized(program, calibration: list[np.ndarray]) -> nn.Module:
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    if not calibration:
        raise ExportError("int8 export needs calibration images (export.calibration_images > 0)")
    quantizer = _quantizer()
    prepared = prepare_pt2e(program.module(), quantizer)
    for x in calibration:
        prepared(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)))
    return convert_pt2e(prepared)
