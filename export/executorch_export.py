"""slim generator → ExecuTorch program (`.pte`) with the XNNPACK delegate, PyTorch's own
on-device runtime (the `executorch` extra; imported only here and in the runner).

fp32: the exported program lowered to XNNPACK. int8: post-training quantization with
ExecuTorch's XNNPACK quantizer (int8 activations, symmetric per-channel int8 weights),
calibrated on the run's images, then lowered. The same exact rewrites as for TFLite are applied
first (reflection pads as slices, InstanceNorm as means), so that XNNPACK takes those ops too.

One change to the quantizer's annotation: it gives a mean its input's quantization parameters,
which for InstanceNorm's variance (the mean of squared deviations, ~0.05 on a grid of ~0.1)
rounds small variances to zero: the dense ResNet lost 1.3 dB of PSNR to it. Here a mean has a
grid of its own (XNNPACK's int8 mean requantizes).
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
    """ExecuTorch's XNNPACK quantizer (per-channel weights) with means observed on their own."""
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from torchao.quantization.pt2e.quantizer import QuantizationAnnotation

    class MeansOwnScale(XNNPACKQuantizer):
        def annotate(self, model: torch.fx.GraphModule) -> torch.fx.GraphModule:
            activation = self.global_config.output_activation
            for node in model.graph.nodes:  # annotated first, so the shared-parameter pass leaves them
                if node.op == "call_function" and node.target == torch.ops.aten.mean.dim:
                    node.meta["quantization_annotation"] = QuantizationAnnotation(
                        input_qspec_map={node.args[0]: activation}, output_qspec=activation, _annotated=True
                    )
            return super().annotate(model)

    return MeansOwnScale().set_global(get_symmetric_quantization_config(is_per_channel=True))


def _quantized(program, calibration: list[np.ndarray]) -> nn.Module:
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    if not calibration:
        raise ExportError("int8 export needs calibration images (export.calibration_images > 0)")
    quantizer = _quantizer()
    prepared = prepare_pt2e(program.module(), quantizer)
    for x in calibration:
        prepared(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)))
    return convert_pt2e(prepared)
