"""The transport to a phone, on adb-shell: explicit timeouts on every call (adb-shell's default
read timeout is 10 s), shell commands that return their exit status, pushes verified on the
device by size and SHA-256, retries with backoff for transient errors, and typed errors that
name the device and the step."""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import os
import shlex
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from coronet.errors import CoronetError

T = TypeVar("T")
RC_MARKER = "__CORONET_RC__="


class DeviceError(CoronetError):
    """A step on a device failed; the message names the device and the step."""

    def __init__(self, device: str, step: str, reason: str) -> None:
        super().__init__(f"{device}: {step} failed: {reason}")
        self.device, self.step, self.reason = device, step, reason


@dataclass(frozen=True)
class Timeouts:
    connect_s: float = 10.0
    transport_s: float = 10.0  # one socket read or write
    read_s: float = 30.0  # one ADB message
    command_s: float = 120.0  # a whole shell command


def default_key_path() -> Path:
    return Path(os.environ.get("ADB_VENDOR_KEYS_HOME", Path.home() / ".android")) / "adbkey"


def load_or_create_key(path: Path | None = None):
    """The RSA key in the standard adb location, created when missing: made in a private (0700)
    folder beside it, set to 0600 and moved into place, so it is never readable by others, not
    even for a moment, and never half-written."""
    from adb_shell.auth.keygen import keygen
    from adb_shell.auth.sign_pythonrsa import PythonRSASigner

    path = path or default_key_path()
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        private = Path(tempfile.mkdtemp(prefix=".adbkey.", dir=path.parent))
        try:
            keygen(str(private / "adbkey"))
            os.chmod(private / "adbkey", 0o600)
            os.replace(private / "adbkey.pub", f"{path}.pub")
            os.replace(private / "adbkey", path)  # last: a key without its .pub is never left
        finally:
            shutil.rmtree(private, ignore_errors=True)
    return PythonRSASigner(Path(f"{path}.pub").read_text(), path.read_text())


def _transient_errors() -> tuple[type[BaseException], ...]:
    from adb_shell import exceptions as e

    return (ConnectionError, OSError, e.TcpTimeoutException, e.AdbTimeoutError, e.InvalidChecksumError,
            e.InvalidResponseError, e.AdbConnectionError)  # fmt: skip


USB_PREFIX = "usb"


def _usb_module(device: str = USB_PREFIX, step: str = "connect"):
    """adb-shell's USB transport, or a DeviceError saying what to install."""
    try:
        usb_transport = importlib.import_module("adb_shell.transport.usb_transport")
    except (ImportError, OSError):  # no libusb1 package, or no libusb-1.0 library
        raise DeviceError(
            device,
            step,
            "USB unavailable: USB phones need the usb extra (pip install 'coronetgan[usb]') and libusb-1.0",
        ) from None
    return usb_transport


def list_usb_devices() -> list[str]:
    """The serials (as `usb:SERIAL`) of the phones attached over USB with ADB enabled."""
    usb = _usb_module(step="discover")
    try:
        return [f"{USB_PREFIX}:{d.serial_number}" for d in usb.UsbTransport.find_all_adb_devices()]
    except Exception as exc:  # libusb without a USB bus (containers) or without permissions
        raise DeviceError("usb", "discover", f"{type(exc).__name__}: {exc}") from None


class AdbTransport:
    """One phone over TCP (`HOST:PORT`) or USB (`SERIAL` or `usb:SERIAL`, or `usb` for the only
    one attached); use `with AdbTransport(...) as t:`."""

    def __init__(
        self,
        serial: str,
        key_path: Path | None = None,
        timeouts: Timeouts = Timeouts(),
        retries: int = 3,
        backoff_s: float = 0.5,
    ) -> None:
        self.serial, self.usb_serial = serial, None
        if serial == USB_PREFIX or serial.startswith(f"{USB_PREFIX}:"):
            self.usb, self.usb_serial, self.host, self.port = True, serial[len(USB_PREFIX) + 1 :] or None, "", 0
        elif serial and ":" not in serial:  # a bare serial, as `adb devices` lists USB phones
            self.usb, self.usb_serial, self.host, self.port = True, serial, "", 0
        else:
            host, _, port = serial.rpartition(":")
            if not host or not port.isdigit():
                raise DeviceError(serial, "connect", "expected HOST:PORT (adb over TCP) or SERIAL (a USB phone)")
            self.usb, self.host, self.port = False, host, int(port)
        self.key_path, self.timeouts, self.retries, self.backoff_s = key_path, timeouts, retries, backoff_s
        self._device = None

    # --- connection ------------------------------------------------------------------------
    # A connection that failed is closed and forgotten (`_device` None); the next call opens a
    # new one. So a phone that drops and comes back is used again, however often it dropped.
    def connect(self) -> None:
        self._retry("connect", self._open)

    def _open(self) -> None:
        from adb_shell.adb_device import AdbDeviceTcp

        signer = load_or_create_key(self.key_path)
        self.close()
        device = (
            self._usb_device()
            if self.usb
            else AdbDeviceTcp(self.host, self.port, default_transport_timeout_s=self.timeouts.transport_s)
        )
        try:
            device.connect(rsa_keys=[signer], auth_timeout_s=self.timeouts.connect_s,
                           read_timeout_s=self.timeouts.read_s)  # fmt: skip
        except BaseException:
            with contextlib.suppress(Exception):
                device.close()
            raise
        self._device = device

    def _live(self):
        """The open connection, opened first when there is none (one attempt)."""
        if self._device is None:
            self._open()
        return self._device

    def _usb_device(self):
        from adb_shell.adb_device import AdbDeviceUsb
        from adb_shell.exceptions import UsbDeviceNotFoundError

        _usb_module(self.serial)
        try:
            return AdbDeviceUsb(serial=self.usb_serial, default_transport_timeout_s=self.timeouts.transport_s)
        except UsbDeviceNotFoundError:
            which = f"with serial {self.usb_serial}" if self.usb_serial else "at all"
            raise DeviceError(
                self.serial, "connect", f"no USB phone {which} (is it plugged in, with USB debugging allowed?)"
            ) from None
        except Exception as exc:  # libusb cannot see a bus here, or lacks permission
            raise DeviceError(self.serial, "connect", f"USB unavailable: {type(exc).__name__}: {exc}") from None

    def close(self) -> None:
        if self._device is not None:
            with contextlib.suppress(Exception):  # closing a broken connection: nothing left to do
                self._device.close()
            self._device = None

    def __enter__(self) -> AdbTransport:
        self.connect()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _retry(self, step: str, action: Callable[[], T], retries: int | None = None) -> T:
        """`action()` with up to `retries` tries; after a transient error the connection is
        dropped, so the next try (and, if all fail, the next call) connects afresh."""
        transient = _transient_errors()
        delay, tries = self.backoff_s, retries or self.retries
        for attempt in range(1, tries + 1):
            try:
                return action()
            except transient as exc:
                self.close()
                if attempt == tries:
                    raise DeviceError(self.serial, step, f"{type(exc).__name__}: {exc}") from None
                time.sleep(delay)
                delay *= 2
        raise AssertionError("unreachable")

    # --- commands --------------------------------------------------------------------------
    def shell(self, command: str, timeout_s: float | None = None, retries: int | None = None) -> tuple[int, str]:
        """Run `command` with sh; (exit status, output). v1 shells merge stderr and lose the
        status, so the status is printed after a marker and parsed back. `retries` (default the
        transport's) bounds the tries, so that a caller can bound the time a dead phone costs."""
        wrapped = f"{command}; echo {RC_MARKER}$?"
        timeout = timeout_s or self.timeouts.command_s

        def run() -> str:
            # A benchmark may print nothing for a long time (cool-down, long runs): every read
            # may wait as long as the whole command is allowed to take.
            return self._live().shell(wrapped, transport_timeout_s=timeout, read_timeout_s=timeout, timeout_s=timeout)

        output = self._retry("shell", run, retries)
        body, marker, rc = output.rpartition(RC_MARKER)
        if not marker:
            raise DeviceError(self.serial, "shell", f"no exit status in the output of {command!r}")
        return int(rc.strip() or "255"), body

    def check(self, command: str, step: str, timeout_s: float | None = None) -> str:
        rc, output = self.shell(command, timeout_s)
        if rc != 0:
            raise DeviceError(self.serial, step, f"exit status {rc}: {output.strip()[-300:]}")
        return output

    def run_detached(
        self, command: str, work_dir: str, timeout_s: float, poll_s: float = 2.0, unreachable_s: float = 30.0
    ) -> tuple[int, str]:
        """Run a long command in the background on the device and poll for its end, so that no
        single ADB read has to outlast a silent benchmark. The phone may drop and come back in
        between (the finished result is collected then); it fails the job when it stays
        unreachable for `unreachable_s`, when the command's process is gone without a result
        (the phone restarted), or after `timeout_s`. Earlier jobs' leftovers in `work_dir`, which
        a phone that died mid-run kept, are removed first."""
        tag = f"job_{os.getpid()}_{time.monotonic_ns()}"
        out, rc_file, pid_file = (f"{work_dir}/{tag}.{ext}" for ext in ("out", "rc", "pid"))
        q = shlex.quote
        inner = f"{command} > {q(out)} 2>&1; echo $? > {q(rc_file)}.tmp; mv {q(rc_file)}.tmp {q(rc_file)}"
        launch = f"nohup sh -c {q(inner)} > /dev/null 2>&1 & echo $! > {q(pid_file)}"
        self.check(f"mkdir -p {q(work_dir)} && rm -f {q(work_dir)}/job_* && ({launch})", "start")
        # one line per poll: the exit status once written, else whether the job's process still runs
        done = f"then echo rc=$(cat {q(rc_file)})"
        probe = (f"if [ -f {q(rc_file)} ]; {done}; elif kill -0 $(cat {q(pid_file)}) 2>/dev/null; then echo running; "
                 f"elif [ -f {q(rc_file)} ]; {done}; else echo gone; fi")  # fmt: skip
        deadline, lost_since = time.monotonic() + timeout_s, None
        while True:
            try:
                _, text = self.shell(probe, timeout_s=min(self.timeouts.command_s, 10.0), retries=1)
                lost_since = None
            except DeviceError as exc:  # away (unplugged, rebooting, a dropped link): it may come back
                lost_since = lost_since or time.monotonic()
                if time.monotonic() - lost_since >= unreachable_s:
                    raise DeviceError(self.serial, "run", f"unreachable for {unreachable_s:.0f} s while the job ran "
                                      f"({exc.reason})") from None  # fmt: skip
                time.sleep(poll_s)
                continue
            state = text.strip()
            if state.startswith("rc=") and state[3:].strip().lstrip("-").isdigit():
                break
            if state == "gone":
                raise DeviceError(self.serial, "run", "the job ended without a result (did the phone restart?)")
            if time.monotonic() > deadline:
                raise DeviceError(self.serial, "run", f"no result after {timeout_s:.0f} s (the job keeps {out})")
            time.sleep(poll_s)
        output = self.check(f"cat {q(out)}", "collect")
        self.shell(f"rm -f {q(out)} {q(rc_file)} {q(pid_file)}")
        return int(state[3:].strip()), output

    def remote_sha256(self, path: str) -> str | None:
        rc, output = self.shell(f"sha256sum {shlex.quote(path)} 2>/dev/null")
        return output.split()[0] if rc == 0 and output.strip() else None

    def push(self, local: Path, remote: str, skip_if_same: bool = True) -> bool:
        """Push and verify (size and SHA-256 on the device). Returns False when the device
        already held the same bytes (nothing sent)."""
        data_hash = hashlib.sha256(Path(local).read_bytes()).hexdigest()
        if skip_if_same and self.remote_sha256(remote) == data_hash:
            return False
        self.check(f"mkdir -p {shlex.quote(str(Path(remote).parent))}", "push")

        def send() -> None:
            self._live().push(str(local), remote, transport_timeout_s=self.timeouts.transport_s,
                              read_timeout_s=self.timeouts.read_s)  # fmt: skip

        self._retry("push", send)
        size = Path(local).stat().st_size
        _, remote_size, _ = self._retry("push", lambda: self._live().stat(remote))
        if remote_size != size % (1 << 32) or self.remote_sha256(remote) != data_hash:
            raise DeviceError(self.serial, "push", f"{remote} on the device does not match {local} (size or SHA-256)")
        return True

    def pull(self, remote: str, local: Path) -> None:
        self._retry("pull", lambda: self._live().pull(remote, str(local), read_timeout_s=self.timeouts.read_s))
