"""Export: slim generator → ONNX and TFLite files that are checked (parity, structure) and
described by a manifest. `import export` does not import litert-torch, ONNX Runtime or onnx:
each is imported inside the function that needs it."""

from export.bundle import Bundle, export_bundle
from export.errors import ExportError, IncompleteBundleError, ParityError, StructureError
from export.onnx_export import to_onnx
from export.tflite_export import to_tflite

__all__ = [
    "Bundle",
    "ExportError",
    "IncompleteBundleError",
    "ParityError",
    "StructureError",
    "export_bundle",
    "to_onnx",
    "to_tflite",
]
