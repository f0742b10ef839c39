"""Debian's real `adb` client against the loopback device: connect, shell, 10 MB push, pull."""

import os
import subprocess

import pytest

from tests.loopback_device.adb_device import LoopbackDevice
from tests.loopback_device.personas import build_sandbox
from tests.tools import require


@pytest.fixture
def adb(tmp_path):
    binary = require("adb")
    port = 15000 + os.getpid() % 1000  # a private adb server, never the user's
    env = {**os.environ, "ADB_SERVER_SOCKET": f"tcp:localhost:{port}", "HOME": str(tmp_path / "home")}
    (tmp_path / "home").mkdir()

    def run(*args, timeout=60):
        return subprocess.run([binary, *args], env=env, capture_output=True, text=True, timeout=timeout)

    run("start-server")
    yield run
    run("kill-server")


def test_real_adb_client(adb, tmp_path):
    root = tmp_path / "phone"
    with LoopbackDevice(root, build_sandbox(root, "mt6893")) as phone:
        connected = adb("connect", phone.serial)
        assert "connected to" in connected.stdout, connected.stdout + connected.stderr
        devices = adb("devices", "-l").stdout
        assert phone.serial in devices and "device product:lemonade" in devices
        shell = adb("-s", phone.serial, "shell", "echo", "hello", "from", "the", "phone")
        assert shell.returncode == 0 and shell.stdout.strip() == "hello from the phone"
        data = os.urandom(10 * 1024 * 1024)
        (tmp_path / "ten.bin").write_bytes(data)
        push = adb("-s", phone.serial, "push", str(tmp_path / "ten.bin"), "/data/local/tmp/ten.bin")
        assert push.returncode == 0, push.stderr
        assert (root / "data/local/tmp/ten.bin").read_bytes() == data
        pull = adb("-s", phone.serial, "pull", "/data/local/tmp/ten.bin", str(tmp_path / "back.bin"))
        assert pull.returncode == 0 and (tmp_path / "back.bin").read_bytes() == data
