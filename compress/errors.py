"""User-facing errors, kept in `coronet.errors` (torch-free) and re-exported here."""

from coronet.errors import (
    CheckpointError,
    ConfigError,
    CoronetError,
    DataError,
    PlanError,
    SearchMissError,
    TrainingDivergedError,
    UnknownArchError,
)

__all__ = [
    "CheckpointError",
    "ConfigError",
    "CoronetError",
    "DataError",
    "PlanError",
    "SearchMissError",
    "TrainingDivergedError",
    "UnknownArchError",
]
