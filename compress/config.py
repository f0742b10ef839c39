"""Pipeline configuration: frozen dataclasses loaded from TOML; unknown keys are errors."""

from __future__ import annotations

import dataclasses
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from compress.errors import ConfigError
from compress.models import get_architecture
from compress.search import SearchConfig
from compress.train import TrainConfig
from coronet.bundle import PRECISIONS


@dataclass(frozen=True)
class ModelConfig:
    """`arch` plus the architecture's sizes (e.g. ngf, n_blocks); unset sizes take defaults.
    `read_from`: the generator file they were read from, when the config has no [model] and
    starts from a pretrained generator (search.init_from)."""

    arch: str = "resnet"
    sizes: dict[str, int] = field(default_factory=lambda: {"ngf": 16, "n_blocks": 3})
    read_from: str = ""


DATA_KINDS = ("builtin", "aligned", "unaligned", "images")


@dataclass(frozen=True)
class DataConfig:
    """`builtin`: generated shapes (paired for pix2pix, unpaired for CycleGAN). `aligned`:
    pix2pix folders (root/train/*.jpg, A|B); `unaligned`: CycleGAN folders (root/trainA, trainB);
    `images`: a folder of images (DCGAN)."""

    kind: str = "builtin"
    root: str = ""
    direction: str = "AtoB"
    image_size: int = 64
    load_size: int = 0  # 0: image_size * 286 / 256, as the reference implementations
    n_train: int = 64
    n_test: int = 16
    batch_size: int = 4
    seed: int = 0

    def __post_init__(self) -> None:
        if self.kind not in DATA_KINDS:
            raise ConfigError(f"data.kind must be one of {', '.join(DATA_KINDS)}, got {self.kind!r}")
        if self.kind != "builtin" and not self.root:
            raise ConfigError(f"data.kind {self.kind!r} needs data.root, the dataset folder")
        for name in ("image_size", "n_train", "n_test", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"data.{name} must be >= 1, got {getattr(self, name)}")


EXPORT_PRECISIONS = PRECISIONS  # a bundle's file precisions
RUNTIMES = ("tflite", "onnx", "executorch")
DEFAULT_RUNTIMES = ["tflite", "onnx"]  # executorch needs its extra: asked for by name


@dataclass(frozen=True)
class ExportConfig:
    """What the export stage writes: fp32 files, plus one file per runtime in `precision` when
    that is fp16 or int8 (full integer, calibrated on `calibration_images` training images;
    float input and output unless `int8_io`; `int8_norm = "float"` keeps InstanceNorm's
    1/sqrt in float, finer for channels of small variance, and the TFLite file is then not full
    integer); the TFLite layout; the input size (0: the training
    size). Each file's quality on the held-out task is measured in its own runtime, and a
    precision losing more than `quality_budget_db` of PSNR against fp32 is flagged. The dense
    reference is exported beside the compressed model. `targets` unset: tflite, onnx and any
    other runtime bench.runtimes times."""

    image_size: int = 0
    precision: str = "fp32"
    layout: str = "NCHW"
    dense_reference: bool = True
    calibration_images: int = 32
    sample_images: int = 8  # held-out images shown in the report's grids, every file's output (0: none)
    quality_budget_db: float = 0.5
    int8_io: bool = False
    int8_norm: str = "integer"
    targets: list[str] = field(default_factory=lambda: list(DEFAULT_RUNTIMES))

    def __post_init__(self) -> None:
        bad = [t for t in self.targets if t not in RUNTIMES]
        if bad or not self.targets:
            raise ConfigError(f"export.targets must be a list of {', '.join(RUNTIMES)}, got {self.targets!r}")
        if not 0 <= self.sample_images <= 64:
            raise ConfigError(f"export.sample_images must be in [0, 64], got {self.sample_images}")
        if not 1 <= self.calibration_images <= 10_000:
            raise ConfigError(f"export.calibration_images must be in [1, 10000], got {self.calibration_images}")
        if not 0 <= self.quality_budget_db <= 100:
            raise ConfigError(f"export.quality_budget_db must be in [0, 100] dB, got {self.quality_budget_db}")
        if self.precision not in EXPORT_PRECISIONS:
            raise ConfigError(f"export.precision must be one of {', '.join(EXPORT_PRECISIONS)}, got {self.precision!r}")
        if self.int8_norm not in ("integer", "float"):
            raise ConfigError(f"export.int8_norm must be integer or float, got {self.int8_norm!r}")
        if self.layout not in ("NCHW", "NHWC"):
            raise ConfigError(f"export.layout must be NCHW or NHWC, got {self.layout!r}")
        if self.image_size < 0:
            raise ConfigError(f"export.image_size must be >= 0 (0: the training size), got {self.image_size}")


@dataclass(frozen=True)
class BenchConfig:
    """Where and how the exported files are timed. `devices`: "host" (this CPU) and/or ADB
    devices as HOST:PORT (TCP) or SERIAL (USB); `binaries`: the folder of arm64-v8a lab tools pushed to phones."""

    devices: list[str] = field(default_factory=lambda: ["host"])
    runtimes: list[str] = field(default_factory=lambda: list(DEFAULT_RUNTIMES))
    threads: int = 1
    runs: int = 20
    warmup_s: float = 1.0  # host: warm up for this long
    warmup: int = 5  # phones: warm-up runs of the lab tool
    cluster: str = "big"
    binaries: str = "bench-binaries"
    # also record each op's time for the report's per-layer page: on the host after the timed
    # runs; on a phone in one more run of each file (the profiler slows the run it is in)
    profile: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.profile, bool):
            raise ConfigError(f"bench.profile must be true or false, got {self.profile!r}")
        if not self.devices or not all(isinstance(d, str) and d for d in self.devices):
            raise ConfigError("bench.devices must list 'host' and/or ADB devices (HOST:PORT or SERIAL), e.g. ['host']")
        bad = [r for r in self.runtimes if r not in RUNTIMES]
        if bad or not self.runtimes:
            raise ConfigError(f"bench.runtimes must be a list of {', '.join(RUNTIMES)}, got {self.runtimes!r}")
        if self.threads < 1 or self.runs < 1:
            raise ConfigError("bench.threads and bench.runs must be >= 1")
        if self.cluster not in ("little", "big", "prime"):
            raise ConfigError(f"bench.cluster must be little, big or prime, got {self.cluster!r}")


@dataclass(frozen=True)
class EvalConfig:
    """`fid_weights`: pytorch-fid's pt_inception-2015-12-05-6726825d.pth (default: the torch hub
    cache). Without it FID/KID are reported as unavailable, with the reason."""

    fid_weights: str = ""


@dataclass(frozen=True)
class PipelineConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    bench: BenchConfig = field(default_factory=BenchConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self) -> None:
        unexported = [r for r in self.bench.runtimes if r not in self.export.targets]
        if unexported:
            raise ConfigError(
                f"bench.runtimes has {', '.join(unexported)}, which export.targets "
                f"({', '.join(self.export.targets)}) does not write; add it to export.targets"
            )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _check_type(where: str, value: Any, default: Any) -> Any:
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
        value = float(value) if ok else value
        if not ok:
            raise ConfigError(f"{where} must be a finite number, got {value!r}")
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
        if ok and not -(2**62) <= value < 2**62:
            raise ConfigError(f"{where} = {value} is out of range; use a number below 2**62")
    elif isinstance(default, list):
        ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
    else:
        ok = isinstance(value, type(default))
    if not ok:
        raise ConfigError(f"{where} must be a {type(default).__name__}, got {value!r}")
    return value


def _section(cls: type, name: str, values: dict[str, Any]) -> Any:
    if not isinstance(values, dict):
        raise ConfigError(f"[{name}] must be a table of keys")
    defaults = cls()
    allowed = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in values.items():
        if key not in allowed:
            raise ConfigError(f"unknown key {key!r} in [{name}]; allowed: {', '.join(allowed)}")
        kwargs[key] = _check_type(f"{name}.{key}", value, getattr(defaults, key))
    return cls(**kwargs)


def _model_section(values: dict[str, Any]) -> ModelConfig:
    if not isinstance(values, dict):
        raise ConfigError("[model] must be a table of keys")
    values = dict(values)
    arch = values.pop("arch", ModelConfig.arch)
    defaults = get_architecture(str(arch)).default_sizes
    for key, value in values.items():
        if key not in defaults:
            raise ConfigError(f"unknown key {key!r} in [model] for arch {arch!r}; allowed: arch, {', '.join(defaults)}")
        _check_type(f"model.{key}", value, 0)
    return ModelConfig(arch=str(arch), sizes=dict(values))


def model_of_file(path: str) -> dict[str, Any]:
    """The [model] section that describes the generator in `path` (any format import_generator reads)."""
    from compress.formats import import_generator

    plan = import_generator(path).plan
    return {"arch": plan.arch, **plan.sizes}


def parse_config(data: dict[str, Any]) -> PipelineConfig:
    sections = {"model", "data", "search", "train", "export", "bench", "eval"}
    top = {"seed": 0, "device": "cpu"}
    for key in data:
        if key not in sections and key not in top:
            raise ConfigError(f"unknown key {key!r} in the config; allowed: {', '.join(sorted(sections | set(top)))}")
    kwargs: dict[str, Any] = {k: _check_type(k, data[k], top[k]) for k in top if k in data}
    if not 0 <= kwargs.get("seed", 0) < 2**62:
        raise ConfigError(f"seed must be in [0, 2**62), got {kwargs['seed']}")
    if kwargs.get("device", "cpu") not in ("cpu", "cuda") and not str(kwargs["device"]).startswith("cuda:"):
        raise ConfigError(f"device must be 'cpu' or 'cuda[:N]', got {kwargs['device']!r}")
    init_from = data.get("search", {}).get("init_from") if isinstance(data.get("search"), dict) else None
    if "model" not in data and isinstance(init_from, str) and init_from:
        model = dataclasses.replace(_model_section(model_of_file(init_from)), read_from=init_from)
    else:
        model = _model_section(data.get("model", {"arch": "resnet", "ngf": 16, "n_blocks": 3}))
    bench = _section(BenchConfig, "bench", data.get("bench", {}))
    export = data.get("export", {})
    if isinstance(export, dict) and "targets" not in export:  # unset: the default ones and every runtime timed
        export = {**export, "targets": DEFAULT_RUNTIMES + [r for r in bench.runtimes if r not in DEFAULT_RUNTIMES]}
    return PipelineConfig(
        model=model,
        data=_section(DataConfig, "data", data.get("data", {})),
        search=_section(SearchConfig, "search", data.get("search", {})),
        train=_section(TrainConfig, "train", data.get("train", {})),
        export=_section(ExportConfig, "export", export),
        bench=bench,
        eval=_section(EvalConfig, "eval", data.get("eval", {})),
        **kwargs,
    )


def load_config(path: str | Path | None, overrides: dict[str, dict[str, Any]] | None = None) -> PipelineConfig:
    """Read a TOML config (None: all defaults) and apply `{section: {key: value}}` overrides."""
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist; see configs/ for examples")
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path} is not valid TOML: {exc}") from None
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{path} is not UTF-8 text (byte {exc.start}); save it as UTF-8") from None
        except OSError as exc:
            raise ConfigError(f"cannot read the config {path}: {exc.strerror}") from None
    for section, values in (overrides or {}).items():
        data.setdefault(section, {}).update(values)
    return parse_config(data)


def config_from_dict(data: dict[str, Any]) -> PipelineConfig:
    """The inverse of `PipelineConfig.to_dict` (as stored in checkpoints)."""
    data = {**data, "model": {"arch": data["model"]["arch"], **data["model"].get("sizes", {})}}
    return parse_config(data)
