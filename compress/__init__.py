"""CoroNetGAN compression: hypernetwork generators, proximal pruning, controlled MACs, slimming.

`import compress` pulls in torch only: no ONNX Runtime, LiteRT or adb.
"""

from compress.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from compress.errors import (
    CheckpointError,
    ConfigError,
    CoronetError,
    DataError,
    PlanError,
    SearchMissError,
    TrainingDivergedError,
    UnknownArchError,
)
from compress.formats import ImportedGenerator, import_generator
from compress.hyper import HyperGenerator, proximal_step, soft_threshold
from compress.macs import MacCount, PlanCost, count_macs
from compress.models import build_discriminator, build_generator, example_input_shape, full_plan, validate_plan
from compress.plan import ChannelPlan, ConvSpec
from compress.slim import slim_generator

__all__ = [
    "ChannelPlan",
    "Checkpoint",
    "CheckpointError",
    "ConfigError",
    "ConvSpec",
    "CoronetError",
    "DataError",
    "HyperGenerator",
    "ImportedGenerator",
    "MacCount",
    "PlanCost",
    "PlanError",
    "SearchMissError",
    "TrainingDivergedError",
    "UnknownArchError",
    "build_discriminator",
    "build_generator",
    "count_macs",
    "example_input_shape",
    "full_plan",
    "import_generator",
    "load_checkpoint",
    "proximal_step",
    "save_checkpoint",
    "slim_generator",
    "soft_threshold",
    "validate_plan",
]
