"""Sandbox filesystems of the lab's phones: getprop, cpufreq policies and thermal status with
the chips' real cluster layouts (shared/reference/socs.md)."""

from __future__ import annotations

import os
from pathlib import Path

PERSONAS = {
    "sm8450": {
        "name": "r0sxxx",
        "model": "SM-S901B",
        "device": "r0s",
        "props": {"ro.soc.model": "SM8450", "ro.board.platform": "taro", "ro.product.model": "SM-S901B"},
        "policies": {"policy0": ("0 1 2 3", 1785600), "policy4": ("4 5 6", 2496000), "policy7": ("7", 2995200)},
    },
    "mt6893": {
        "name": "lemonade",
        "model": "Dimensity 1200 reference",
        "device": "mt6893",
        "props": {"ro.soc.model": "MT6893", "ro.board.platform": "mt6893", "ro.product.model": "MT6893"},
        "policies": {"policy0": ("0 1 2 3", 2000000), "policy4": ("4 5 6", 2600000), "policy7": ("7", 3000000)},
        # its GPU delegate runs the whole graph and corrupts the output's green channel
        "gpu": "corrupts",
    },
}


def _script(path: Path, body: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n" + body)
    os.chmod(path, 0o755)


def build_sandbox(root: Path, persona: str, thermal_status: int = 0, cpu_temp_c: float = 41.0) -> dict[str, str]:
    """Lay out the phone's files under `root`; return the banner fields for the ADB server."""
    p = PERSONAS[persona]
    (root / "data" / "local" / "tmp").mkdir(parents=True, exist_ok=True)
    props = "".join(f"echo '[{k}]: [{v}]'\n" for k, v in p["props"].items())
    _script(root / "system" / "bin" / "getprop", 'if [ -n "$1" ]; then\n  case "$1" in\n'
            + "".join(f"    {k}) echo '{v}' ;;\n" for k, v in p["props"].items())
            + "  esac\n  exit 0\nfi\n" + props)  # fmt: skip
    _script(
        root / "system" / "bin" / "dumpsys",
        'if [ "$1" = thermalservice ]; then\n'
        f"  echo 'Thermal Status: {thermal_status}'\n"
        "  echo 'Current temperatures from HAL:'\n"
        f"  echo '\tTemperature{{mValue={cpu_temp_c}, mType=0, mName=CPU0, mStatus=0}}'\n"
        "fi\n",
    )
    # This host has none of the phone's CPUs 4-7: the stand-in taskset checks and records the
    # mask, then runs the command unpinned.
    _script(
        root / "system" / "bin" / "taskset",
        'case "$1" in *[!0-9a-fA-F]*|"") echo "taskset: bad mask $1" >&2; exit 1 ;; esac\n'
        'echo "$1" >> "${ANDROID_ROOT_PREFIX}/taskset.log"\nshift\nexec "$@"\n',
    )
    cpu = root / "sys" / "devices" / "system" / "cpu"
    for policy, (cpus, max_khz) in p["policies"].items():
        folder = cpu / "cpufreq" / policy
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "related_cpus").write_text(cpus + "\n")
        (folder / "cpuinfo_max_freq").write_text(f"{max_khz}\n")
        (folder / "scaling_max_freq").write_text(f"{max_khz}\n")
        (folder / "scaling_cur_freq").write_text(f"{max_khz * 3 // 4}\n")
    if p.get("gpu"):  # read by the benchmark_model stand-in
        (root / "vendor" / "etc").mkdir(parents=True, exist_ok=True)
        (root / "vendor" / "etc" / "coronet_gpu").write_text(p["gpu"] + "\n")
    zone = root / "sys" / "class" / "thermal" / "thermal_zone0"
    zone.mkdir(parents=True, exist_ok=True)
    (zone / "type").write_text("cpu-0-0\n")
    (zone / "temp").write_text(f"{int(cpu_temp_c * 1000)}\n")
    return {"name": p["name"], "model": p["model"], "device": p["device"]}
