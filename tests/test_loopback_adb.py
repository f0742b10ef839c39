"""The loopback ADB device against the real adb-shell client, over a real TCP socket."""

import hashlib
import os
import time

import pytest
from adb_shell.adb_device import AdbDeviceTcp
from adb_shell.auth.keygen import keygen
from adb_shell.auth.sign_pythonrsa import PythonRSASigner
from adb_shell.exceptions import AdbTimeoutError, InvalidChecksumError, TcpTimeoutException

from device_bench.profiles import clusters_from_policies, identify_soc, parse_getprop, parse_thermal_status
from tests.loopback_device.adb_device import Faults, LoopbackDevice
from tests.loopback_device.personas import build_sandbox


@pytest.fixture(params=["sm8450", "mt6893"])
def phone(request, tmp_path):
    root = tmp_path / "phone"
    banner = build_sandbox(root, request.param)
    with LoopbackDevice(root, banner) as device:
        client = AdbDeviceTcp("127.0.0.1", device.port, default_transport_timeout_s=5)
        client.connect(rsa_keys=None, auth_timeout_s=5, read_timeout_s=5)
        yield device, client, request.param
        client.close()


def test_shell_and_persona(phone):
    _, client, persona = phone
    assert client.shell("echo hello; echo world", read_timeout_s=5).splitlines() == ["hello", "world"]
    props = parse_getprop(client.shell("getprop", read_timeout_s=5))
    assert identify_soc(props) == ({"sm8450": "SM8450", "mt6893": "MT6893"}[persona], True)
    policies = {}
    for policy in client.shell("ls /sys/devices/system/cpu/cpufreq", read_timeout_s=5).split():
        base = f"/sys/devices/system/cpu/cpufreq/{policy}"
        policies[policy] = (
            client.shell(f"cat {base}/related_cpus", read_timeout_s=5),
            client.shell(f"cat {base}/cpuinfo_max_freq", read_timeout_s=5),
        )
    assert [c.mask for c in clusters_from_policies(policies)] == ["f", "70", "80"]
    status, temps = parse_thermal_status(client.shell("dumpsys thermalservice", read_timeout_s=5))
    assert status == 0 and temps["CPU0"] == 41.0


def test_push_pull_stat_list_byte_exact(phone, tmp_path):
    device, client, _ = phone
    data = os.urandom(3 * 1024 * 1024 + 123)  # several sync chunks and WRTE messages
    local = tmp_path / "model.bin"
    local.write_bytes(data)
    client.push(str(local), "/data/local/tmp/bench/model.bin", read_timeout_s=10)
    on_phone = device.root / "data/local/tmp/bench/model.bin"
    assert on_phone.read_bytes() == data
    mode, size, _ = client.stat("/data/local/tmp/bench/model.bin")
    assert size == len(data) and mode & 0o170000 == 0o100000
    names = [f.filename.decode() for f in client.list("/data/local/tmp/bench")]
    assert "model.bin" in names
    back = tmp_path / "back.bin"
    client.pull("/data/local/tmp/bench/model.bin", str(back), read_timeout_s=10)
    assert hashlib.sha256(back.read_bytes()).hexdigest() == hashlib.sha256(data).hexdigest()
    sha = client.shell("sha256sum /data/local/tmp/bench/model.bin", read_timeout_s=10).split()[0]
    assert sha == hashlib.sha256(data).hexdigest()


def test_paths_outside_the_sandbox_are_refused(phone, tmp_path):
    _, client, _ = phone
    local = tmp_path / "x"
    local.write_bytes(b"x")
    from adb_shell.exceptions import PushFailedError

    with pytest.raises(PushFailedError):
        client.push(str(local), "/data/../../escape.txt", read_timeout_s=5)
    assert not (tmp_path / "escape.txt").exists()


def test_auth_with_an_rsa_key(tmp_path):
    root = tmp_path / "phone"
    banner = build_sandbox(root, "sm8450")
    keygen(str(tmp_path / "adbkey"))
    signer = PythonRSASigner((tmp_path / "adbkey.pub").read_text(), (tmp_path / "adbkey").read_text())
    with LoopbackDevice(root, banner, auth=True) as device:
        client = AdbDeviceTcp("127.0.0.1", device.port, default_transport_timeout_s=5)
        client.connect(rsa_keys=[signer], auth_timeout_s=5, read_timeout_s=5)
        assert client.shell("echo authed", read_timeout_s=5).strip() == "authed"
        client.close()


def test_corrupted_checksum_is_detected(tmp_path):
    root = tmp_path / "phone"
    banner = build_sandbox(root, "sm8450")
    with LoopbackDevice(root, banner, faults=Faults(corrupt_checksum=True)) as device:
        client = AdbDeviceTcp("127.0.0.1", device.port, default_transport_timeout_s=5)
        client.connect(rsa_keys=None, auth_timeout_s=5, read_timeout_s=5)
        with pytest.raises(InvalidChecksumError):
            client.shell("echo hi", read_timeout_s=5)
        client.close()


def test_a_stall_times_out_within_the_timeout(tmp_path):
    root = tmp_path / "phone"
    banner = build_sandbox(root, "sm8450")
    with LoopbackDevice(root, banner, faults=Faults(stall_s=30)) as device:
        client = AdbDeviceTcp("127.0.0.1", device.port, default_transport_timeout_s=1)
        client.connect(rsa_keys=None, auth_timeout_s=5, read_timeout_s=5)
        t0 = time.monotonic()
        with pytest.raises((AdbTimeoutError, TcpTimeoutException)):
            client.shell("echo late", read_timeout_s=1, transport_timeout_s=1)
        assert time.monotonic() - t0 < 3
        client.close()
