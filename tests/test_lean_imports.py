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


def test_a_host_without_torch_benchmarks_and_reports(pipeline_run, tmp_path):
    """torch made unimportable in the child: the host benchmark of both files and the report work."""
    folder, _ = pipeline_run
    code = (
        "import sys; sys.modules['torch'] = None; sys.modules['litert_torch'] = None\n"
        "from device_bench.cli import main\n"
        f"bundle, store = {str(folder / 'run' / 'export')!r}, {str(tmp_path / 'lab.sqlite')!r}\n"
        "for runtime in ('onnx', 'tflite'):\n"
        "    assert main(['run', '--bundle', bundle, '--device', 'host', '--runtime', runtime, '--runs', '3',\n"
        "                 '--store', store]) == 0\n"
        f"assert main(['report', '--store', store, '--out', {str(tmp_path / 'site')!r}]) == 0\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "host onnx/cpu x1" in proc.stdout and "host tflite/xnnpack x1" in proc.stdout
    assert (tmp_path / "site" / "index.html").is_file()
