"""Export errors (kept in the torch-free `coronet.errors`): one line for the user; parity
failures carry their table of errors."""

from coronet.errors import ExportError, IncompleteBundleError, ParityError, StructureError

__all__ = ["ExportError", "IncompleteBundleError", "ParityError", "StructureError"]
