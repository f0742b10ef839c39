"""The lab's code runs on a host without torch: importing it pulls no torch and no litert-torch."""

import subprocess
import sys

LAB_MODULES = (
    "coronet.bundle",
    "device_bench.cli",
    "device_bench.service",
    "device_bench.agent",
    "device_bench.run",
    "device_bench.host",
    "device_bench.lab",
    "device_bench.parsers",
    "export",
    "export.runtimes",
    "reports",
)


def test_the_lab_imports_no_torch():
    code = (
        f"import sys, importlib; [importlib.import_module(m) for m in {LAB_MODULES!r}]; "
        "print(sorted(m for m in ('torch', 'litert_torch', 'onnx', 'jax') if m in sys.modules))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
