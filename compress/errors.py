"""User-facing errors: each message is one line that says what is wrong and how to fix it."""


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
