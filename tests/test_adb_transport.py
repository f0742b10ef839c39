"""device_bench.adb against the loopback device: statuses, verified pushes, retries, timeouts."""

import os
import stat
import time
from pathlib import Path

import pytest

from device_bench.adb import AdbTransport, DeviceError, Timeouts, list_usb_devices
from tests.loopback_device.adb_device import Faults, LoopbackDevice
from tests.loopback_device.personas import build_sandbox

FAST = Timeouts(connect_s=5, transport_s=2, read_s=5, command_s=10)


@pytest.fixture
def phone(tmp_path):
    root = tmp_path / "phone"
    banner = build_sandbox(root, "sm8450")
    faults = Faults()
    with LoopbackDevice(root, banner, auth=True, faults=faults) as device:
        yield device, faults, tmp_path / "keys" / "adbkey"


def test_key_is_created_private_and_reused(phone):
    device, _, key = phone
    with AdbTransport(device.serial, key_path=key, timeouts=FAST) as t:
        assert t.shell("echo hi") == (0, "hi\n")
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    first = key.read_bytes()
    with AdbTransport(device.serial, key_path=key, timeouts=FAST):
        pass
    assert key.read_bytes() == first


def test_shell_returns_the_exit_status(phone):
    device, _, key = phone
    with AdbTransport(device.serial, key_path=key, timeouts=FAST) as t:
        assert t.shell("false")[0] == 1
        assert t.shell("sh -c 'exit 7'")[0] == 7
        with pytest.raises(DeviceError, match=r"127\.0\.0\.1:\d+: probe failed: exit status 3"):
            t.check("echo oops; sh -c 'exit 3'", "probe")


def test_verified_push_and_skip_when_unchanged(phone, tmp_path):
    device, _, key = phone
    local = tmp_path / "model.tflite"
    local.write_bytes(os.urandom(10 * 1024 * 1024))
    with AdbTransport(device.serial, key_path=key, timeouts=FAST) as t:
        assert t.push(local, "/data/local/tmp/coronet/model.tflite") is True
        assert (device.root / "data/local/tmp/coronet/model.tflite").read_bytes() == local.read_bytes()
        assert t.push(local, "/data/local/tmp/coronet/model.tflite") is False  # same bytes: not sent again


def test_a_dropped_push_is_retried(phone, tmp_path):
    device, faults, key = phone
    local = tmp_path / "big.bin"
    local.write_bytes(os.urandom(3 * 1024 * 1024))
    faults.drop_after_sync_bytes = 1024 * 1024  # the connection dies once, a third of the way in
    with AdbTransport(device.serial, key_path=key, timeouts=FAST, backoff_s=0.05) as t:
        assert t.push(local, "/data/local/tmp/coronet/big.bin") is True
    assert (device.root / "data/local/tmp/coronet/big.bin").read_bytes() == local.read_bytes()
    assert faults.drop_after_sync_bytes is None  # the fault did fire


def test_a_stall_fails_within_its_timeout(phone):
    device, faults, key = phone
    with AdbTransport(device.serial, key_path=key, timeouts=FAST, retries=1) as t:
        faults.stall_s = 60
        t0 = time.monotonic()
        with pytest.raises(DeviceError, match="shell failed"):
            t.shell("echo late", timeout_s=1)
        assert time.monotonic() - t0 < 1 + 3


def test_hostile_names_stay_inside_the_bench_folder(phone, tmp_path):
    device, _, key = phone
    name = "it's a $(touch pwned); rm -rf x `id` model.tflite"
    local = tmp_path / "m.bin"
    local.write_bytes(b"weights")
    remote = f"/data/local/tmp/coronet/{name}"
    with AdbTransport(device.serial, key_path=key, timeouts=FAST) as t:
        assert t.push(local, remote) is True
        assert t.remote_sha256(remote) is not None
    assert (device.root / "data/local/tmp/coronet" / name).read_bytes() == b"weights"
    assert not list(device.root.rglob("pwned")) and not (tmp_path / "pwned").exists()


def test_bad_serial_is_one_clear_error():
    with pytest.raises(DeviceError, match=r"^phone:abc: connect failed: expected HOST:PORT \(adb over TCP\) or SERIAL"):
        AdbTransport("phone:abc")


def test_usb_serials_go_to_the_usb_transport_and_a_missing_phone_is_one_clear_error(tmp_path):
    """No phone is attached here: libusb (the usb extra) enumerates the real bus and finds none."""
    assert AdbTransport("usb").usb and AdbTransport("usb").usb_serial is None
    assert AdbTransport("R5CT1234567").usb_serial == "R5CT1234567"  # bare, as `adb devices` lists it
    transport = AdbTransport("usb:R5CT1234567", key_path=tmp_path / "adbkey")
    assert transport.usb and transport.usb_serial == "R5CT1234567"
    try:
        assert "usb:R5CT1234567" not in list_usb_devices()
    except DeviceError as exc:  # a machine without a USB bus at all: discovery says so, by step
        assert exc.step == "discover"
    with pytest.raises(
        DeviceError, match=r"^usb:R5CT1234567: connect failed: (no USB phone with serial R5CT1234567|USB unavailable)"
    ):
        transport.connect()


def test_usb_without_the_usb_extra_says_what_to_install(monkeypatch, tmp_path):
    import sys

    monkeypatch.setitem(sys.modules, "adb_shell.transport.usb_transport", None)  # as if libusb1 were absent
    with pytest.raises(DeviceError, match=r"^R5CT1234567: connect failed: USB unavailable: .*coronetgan\[usb\]"):
        AdbTransport("R5CT1234567", key_path=tmp_path / "adbkey").connect()
    with pytest.raises(DeviceError, match=r"^usb: discover failed: USB unavailable"):
        list_usb_devices()


def test_a_phone_that_drops_and_comes_back_is_used_again(phone):
    """A failed reconnect used to leave no connection at all: every later command failed with
    "'NoneType' object has no attribute 'shell'" although the phone was back."""
    device, faults, key = phone
    with AdbTransport(device.serial, key_path=key, timeouts=FAST, backoff_s=0.05) as t:
        assert t.shell("echo before") == (0, "before\n")
        device.unplug()
        for _ in range(2):  # each call fails cleanly, however often
            with pytest.raises(DeviceError, match=r"127\.0\.0\.1:\d+: shell failed: "):
                t.shell("echo gone")
        faults.offline = False  # plugged back in
        assert t.shell("echo back") == (0, "back\n")
        assert t.push(Path(__file__), "/data/local/tmp/coronet/again.py") is True


def test_a_new_key_is_never_readable_by_others(tmp_path, monkeypatch):
    """keygen writes with the process umask; the key is made where only its owner can reach it."""
    import adb_shell.auth.keygen as keygen_module

    from device_bench.adb import load_or_create_key

    folder_modes = []
    real_keygen = keygen_module.keygen

    def watched_keygen(filepath):
        real_keygen(filepath)
        folder_modes.append(stat.S_IMODE(Path(filepath).parent.stat().st_mode))

    monkeypatch.setattr(keygen_module, "keygen", watched_keygen)
    key = tmp_path / "home" / ".android" / "adbkey"
    load_or_create_key(key)
    assert folder_modes and folder_modes[0] & 0o077 == 0
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert sorted(p.name for p in key.parent.iterdir()) == ["adbkey", "adbkey.pub"]
