"""Device profiles detected from what the phone reports (getprop, cpufreq, thermal), never from
hard-coded core masks: logical CPU numbering differs between phones of the same chip."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

# Known chipsets of the lab (shared/reference/socs.md); others still work from their topology.
KNOWN_SOCS = {
    "SM8450": {"name": "Snapdragon 8 Gen 1", "gpu": "Adreno 730", "npu": "Hexagon HTP v69 (QNN)"},
    "MT6893": {"name": "Dimensity 1200", "gpu": "Mali-G77 MC9", "npu": "APU 3.0 (NNAPI)"},
}
# Platform names that identify the same chips when ro.soc.model is missing.
PLATFORM_ALIASES = {"taro": "SM8450", "mt6893": "MT6893"}


@dataclass(frozen=True)
class Cluster:
    cpus: tuple[int, ...]
    max_khz: int

    @property
    def mask(self) -> str:
        """The hex CPU mask for toybox `taskset` (e.g. cpus 4-6 → '70')."""
        return format(sum(1 << c for c in self.cpus), "x")


@dataclass(frozen=True)
class DeviceProfile:
    serial: str
    model: str
    soc: str  # "SM8450", "MT6893", or what the phone reported
    clusters: tuple[Cluster, ...]  # slowest first
    known: bool = False
    details: dict[str, str] = field(default_factory=dict)

    def cluster(self, name: str) -> Cluster:
        """'little' (slowest), 'big' (the middle one, or the fastest of two), 'prime' (fastest)."""
        if not self.clusters:
            raise ValueError(f"{self.serial}: no CPU clusters were detected")
        if name == "little":
            return self.clusters[0]
        if name == "prime":
            return self.clusters[-1]
        if name == "big":
            return self.clusters[1] if len(self.clusters) >= 3 else self.clusters[-1]
        raise ValueError(f"unknown cluster {name!r}; use little, big or prime")


def parse_getprop(text: str) -> dict[str, str]:
    """`getprop` output: lines like `[ro.soc.model]: [SM8450]`."""
    return dict(re.findall(r"^\[([^\]]+)\]: \[([^\]]*)\]", text, re.MULTILINE))


def identify_soc(props: dict[str, str]) -> tuple[str, bool]:
    """(chip name, known to the lab) from ro.soc.model, then ro.board.platform, then ro.hardware."""
    for key in ("ro.soc.model", "ro.board.platform", "ro.hardware"):
        value = props.get(key, "").strip()
        if not value:
            continue
        upper = value.upper()
        if upper in KNOWN_SOCS:
            return upper, True
        if value.lower() in PLATFORM_ALIASES:
            return PLATFORM_ALIASES[value.lower()], True
        return value, False
    return "unknown", False


def parse_cpu_list(text: str) -> tuple[int, ...]:
    """`related_cpus` ('4 5 6') or a range list ('0-3,7')."""
    cpus: list[int] = []
    for part in re.split(r"[\s,]+", text.strip()):
        if not part:
            continue
        if "-" in part:
            lo, hi = part.split("-")
            cpus.extend(range(int(lo), int(hi) + 1))
        else:
            cpus.append(int(part))
    return tuple(sorted(set(cpus)))


def clusters_from_policies(policies: dict[str, tuple[str, str]]) -> tuple[Cluster, ...]:
    """policy name → (related_cpus, cpuinfo_max_freq) to clusters, slowest first."""
    clusters = [Cluster(parse_cpu_list(cpus), int(freq.strip())) for cpus, freq in policies.values()]
    return tuple(sorted(clusters, key=lambda c: (c.max_khz, c.cpus)))


def parse_thermal_status(dumpsys: str) -> tuple[int | None, dict[str, float]]:
    """`dumpsys thermalservice`: (Thermal Status, temperatures by name from the HAL block only;
    the 'Cached temperatures' block is stale)."""
    status = re.search(r"Thermal Status: (\d+)", dumpsys)
    temps: dict[str, float] = {}
    in_hal = False
    for line in dumpsys.splitlines():
        if "Current temperatures from HAL:" in line:
            in_hal = True
            continue
        if in_hal and (m := re.search(r"Temperature\{mValue=([-\d.]+), mType=\d+, mName=([^,]+),", line)):
            temps[m.group(2)] = float(m.group(1))
        elif in_hal and line.strip() and not line.startswith((" ", "\t")):
            in_hal = False
    return (int(status.group(1)) if status else None), temps
