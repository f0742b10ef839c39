"""Export: slim generator → ONNX and TFLite files that are checked (parity, structure) and
described by a manifest. `import export` imports nothing heavy: each name below is imported
when first used (torch comes with `export_bundle`, `to_onnx` and `to_tflite`; `Bundle`, the
reader, and `export.runtimes` need no torch), and litert-torch, ONNX Runtime and onnx only
inside the functions that need them."""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "Bundle": "coronet.bundle",
    "ExportError": "coronet.errors",
    "IncompleteBundleError": "coronet.errors",
    "ParityError": "coronet.errors",
    "StructureError": "coronet.errors",
    "export_bundle": "export.bundle",
    "to_onnx": "export.onnx_export",
    "to_tflite": "export.tflite_export",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'export' has no attribute {name!r}")
    return getattr(importlib.import_module(_WHERE[name]), name)
