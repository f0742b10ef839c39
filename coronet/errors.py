"""User-facing errors: each message is one line that says what is wrong and how to fix it. Every
layer raises these (compress, export, device_bench, reports); `compress.errors` and
`export.errors` re-export them."""


class CoronetError(Exception):
    """Base class of every error a user can cause; the CLIs print its message and exit 1."""


class UnknownArchError(CoronetError, ValueError):
    """An architecture name that the project does not know."""


class PlanError(CoronetError, ValueError):
    """A channel plan that does not fit its architecture."""


class ConfigError(CoronetError, ValueError):
    """A configuration file or value that cannot be used."""


class CheckpointError(CoronetError):
    """A checkpoint that is missing, corrupt, truncated or of the wrong kind."""


class SearchMissError(CoronetError):
    """The search ended without reaching the requested MACs ratio."""


class DataError(CoronetError):
    """A dataset folder or image that cannot be used."""


class TrainingDivergedError(CoronetError):
    """A loss became NaN or infinite."""


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


class ReportError(CoronetError):
    """A report that cannot be written as asked (an output folder holding someone else's files)."""
