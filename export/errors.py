"""Export errors: one line for the user; parity failures carry their table of errors."""

from __future__ import annotations

from compress.errors import CoronetError


class ExportError(CoronetError):
    """An export that cannot be done as asked (bad input, unsupported option, converter failure)."""


class ParityError(ExportError):
    """An exported file whose outputs differ from PyTorch's by more than the tolerance."""

    def __init__(self, message: str, table: list[dict]) -> None:
        super().__init__(message)
        self.table = table


class StructureError(ExportError):
    """An exported file whose convolutions do not match the slim plan, or still hold a zero channel."""


class IncompleteBundleError(ExportError):
    """A bundle folder without a manifest, or whose files do not match their manifest."""
