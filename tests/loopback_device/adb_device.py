"""A loopback "phone": a TCP server that speaks the ADB wire protocol (shared/reference/
adb_protocol.md) over a sandbox folder standing for the phone's filesystem.

Services: `shell:<cmd>` and `exec:<cmd>` (run with /bin/sh in the sandbox; absolute device paths
under /data, /sys and /system are mapped into it), `sync:` (SEND/RECV/STAT/LIST/QUIT). Messages
carry correct checksums and accept 0 from the peer; one unacknowledged WRTE per stream and
direction. Optional AUTH (any RSA public key is accepted). Fault knobs for the tests.
"""

from __future__ import annotations

import contextlib
import os
import queue
import socket
import stat
import struct
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

A_SYNC, A_CNXN, A_AUTH = 0x434E5953, 0x4E584E43, 0x48545541
A_OPEN, A_OKAY, A_CLSE, A_WRTE = 0x4E45504F, 0x59414B4F, 0x45534C43, 0x45545257
VERSION_SKIP_CHECKSUM = 0x01000001
MAX_PAYLOAD = 1 << 20
HEADER = struct.Struct("<6I")
MAPPED_PREFIXES = ("/data/", "/sys/", "/system/", "/sdcard/")


def _byte_sum(payload: bytes) -> int:
    """The ADB data_check: the unsigned byte sum mod 2^32 (numpy: Python's sum() of a 1 MiB
    payload would make this device, not the client under test, the bottleneck)."""
    return int(np.frombuffer(payload, dtype=np.uint8).sum(dtype=np.uint64)) & 0xFFFFFFFF


@dataclass
class Faults:
    drop_after_sync_bytes: int | None = None  # close the connection once a push got this far
    stall_s: float = 0.0  # sleep before running any shell command
    corrupt_checksum: bool = False  # send shell output with a wrong data_check
    offline: bool = False  # the phone is gone: new connections are closed at once (see `unplug`)


class _Stream:
    def __init__(self, device_id: int, host_id: int) -> None:
        self.device_id, self.host_id = device_id, host_id
        self.inbox: queue.Queue[bytes | None] = queue.Queue()
        self.acked = threading.Event()
        self.acked.set()
        self.closed = threading.Event()


class _Connection:
    def __init__(self, device: LoopbackDevice, sock: socket.socket) -> None:
        self.device, self.sock = device, sock
        self.send_lock = threading.Lock()
        self.streams: dict[int, _Stream] = {}
        self.next_id = 1
        self.maxdata = MAX_PAYLOAD
        self.sync_bytes = 0

    # --- framing ---------------------------------------------------------------------------
    def _recv_exact(self, n: int) -> bytes:
        data = bytearray()
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                raise ConnectionError("peer closed")
            data += chunk
        return bytes(data)

    def read(self) -> tuple[int, int, int, bytes]:
        command, arg0, arg1, length, check, magic = HEADER.unpack(self._recv_exact(HEADER.size))
        if magic != command ^ 0xFFFFFFFF or length > MAX_PAYLOAD:
            raise ConnectionError("bad message header")
        payload = self._recv_exact(length) if length else b""
        if check and check != _byte_sum(payload):
            raise ConnectionError("bad checksum from the host")
        return command, arg0, arg1, payload

    def send(self, command: int, arg0: int, arg1: int, payload: bytes = b"", corrupt: bool = False) -> None:
        check = (_byte_sum(payload) + (1 if corrupt else 0)) & 0xFFFFFFFF
        with self.send_lock:
            self.sock.sendall(HEADER.pack(command, arg0, arg1, len(payload), check, command ^ 0xFFFFFFFF) + payload)

    def write(self, stream: _Stream, data: bytes, corrupt: bool = False) -> None:
        """WRTE in chunks of maxdata, each waiting for the host's OKAY (flow control)."""
        for i in range(0, len(data), self.maxdata):
            if not stream.acked.wait(timeout=30) or stream.closed.is_set():
                raise ConnectionError("stream closed or host stopped acknowledging")
            stream.acked.clear()
            self.send(A_WRTE, stream.device_id, stream.host_id, data[i : i + self.maxdata], corrupt)

    def close_stream(self, stream: _Stream) -> None:
        if not stream.closed.is_set():
            stream.closed.set()
            with contextlib.suppress(OSError):
                self.send(A_CLSE, stream.device_id, stream.host_id)

    # --- the session -------------------------------------------------------------------------
    def serve(self) -> None:
        try:
            self._serve()
        except (ConnectionError, OSError):
            pass
        finally:
            for s in self.streams.values():
                s.closed.set()
                s.inbox.put(None)
            with contextlib.suppress(OSError):
                self.sock.close()

    def _banner(self) -> bytes:
        p = self.device.persona
        return (
            f"device::ro.product.name={p['name']};ro.product.model={p['model']};"
            f"ro.product.device={p['device']};features="
        ).encode()

    def _serve(self) -> None:
        while True:
            command, arg0, arg1, payload = self.read()
            if command == A_CNXN:
                self.maxdata = min(arg1 or MAX_PAYLOAD, MAX_PAYLOAD)
                if self.device.auth:
                    self.send(A_AUTH, 1, 0, os.urandom(20))
                else:
                    self.send(A_CNXN, min(arg0, VERSION_SKIP_CHECKSUM), self.maxdata, self._banner())
            elif command == A_AUTH:
                if arg0 == 3:  # RSAPUBLICKEY: accepted (a lab would check it against a list)
                    self.send(A_CNXN, VERSION_SKIP_CHECKSUM, self.maxdata, self._banner())
                else:  # a signature of a key we do not know: ask again (the host then sends its key)
                    self.send(A_AUTH, 1, 0, os.urandom(20))
            elif command == A_OPEN:
                self._open(arg0, payload.rstrip(b"\0").decode())
            elif command == A_OKAY:
                stream = self.streams.get(arg1)
                if stream is not None:
                    stream.acked.set()
            elif command == A_WRTE:
                stream = self.streams.get(arg1)
                if stream is None:
                    self.send(A_CLSE, 0, arg0)
                    continue
                # Ack first: a reply written by the stream's worker must not overtake this OKAY.
                self.send(A_OKAY, stream.device_id, stream.host_id)
                stream.inbox.put(payload)
            elif command == A_CLSE:
                stream = self.streams.pop(arg1, None)
                if stream is not None:
                    self.close_stream(stream)  # adbd answers a host's CLSE with its own
                    stream.inbox.put(None)

    def _open(self, host_id: int, destination: str) -> None:
        service, _, argument = destination.partition(":")
        if service not in ("shell", "exec", "sync"):
            self.send(A_CLSE, 0, host_id)
            return
        stream = _Stream(self.next_id, host_id)
        self.next_id += 1
        self.streams[stream.device_id] = stream
        self.send(A_OKAY, stream.device_id, host_id)
        target = self._sync if service == "sync" else self._shell
        threading.Thread(target=self._run_service, args=(target, stream, argument), daemon=True).start()

    def _run_service(self, target, stream: _Stream, argument: str) -> None:
        try:
            target(stream, argument)
        except (ConnectionError, OSError):
            if not stream.closed.is_set():  # a fault or a broken peer: drop the connection
                with contextlib.suppress(OSError):
                    self.sock.shutdown(socket.SHUT_RDWR)
        finally:
            self.close_stream(stream)

    # --- shell / exec ----------------------------------------------------------------------
    def _shell(self, stream: _Stream, command: str) -> None:
        faults = self.device.faults
        if faults.stall_s:
            stream.closed.wait(faults.stall_s)
        root = str(self.device.root)
        for prefix in MAPPED_PREFIXES:
            command = command.replace(f" {prefix}", f" {root}{prefix}").replace(f"'{prefix}", f"'{root}{prefix}")
            command = command.replace(f'"{prefix}', f'"{root}{prefix}')
            if command.startswith(prefix):
                command = root + command
        env = {**os.environ, "PATH": f"{root}/system/bin:/usr/bin:/bin", "ANDROID_ROOT_PREFIX": root}
        proc = subprocess.run(
            ["/bin/sh", "-c", command], cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, check=False
        )
        self.write(stream, proc.stdout, corrupt=faults.corrupt_checksum)

    # --- sync ------------------------------------------------------------------------------
    def _local(self, device_path: str) -> Path:
        root = self.device.root.resolve()
        path = (root / device_path.lstrip("/")).resolve()
        if path != root and root not in path.parents:
            raise PermissionError(device_path)
        return path

    def _sync(self, stream: _Stream, _: str) -> None:
        buffer = bytearray()

        def take(n: int) -> bytes:
            while len(buffer) < n:
                chunk = stream.inbox.get()
                if chunk is None:
                    raise ConnectionError("sync stream closed")
                buffer.extend(chunk)
            out = bytes(buffer[:n])
            del buffer[:n]
            return out

        def frame() -> tuple[bytes, int]:
            ident, value = struct.unpack("<4sI", take(8))
            return ident, value

        def reply(ident: bytes, *values: int, data: bytes = b"") -> None:
            self.write(stream, struct.pack("<4s" + "I" * len(values), ident, *values) + data)

        while True:
            ident, n = frame()
            if ident == b"QUIT":
                return
            arg = take(n).decode()
            if ident == b"SEND":
                path_text, _, mode = arg.rpartition(",")
                self._receive_file(take, frame, reply, path_text, int(mode or "644"))
            elif ident == b"RECV":
                try:
                    data = self._local(arg).read_bytes()
                except OSError as exc:
                    message = f"{arg}: {exc.strerror or exc}".encode()
                    reply(b"FAIL", len(message), data=message)
                    continue
                for i in range(0, len(data), 64 * 1024):
                    chunk = data[i : i + 64 * 1024]
                    reply(b"DATA", len(chunk), data=chunk)
                reply(b"DONE", 0)
            elif ident == b"STAT":
                try:
                    st = self._local(arg).stat()
                    reply(b"STAT", st.st_mode & 0xFFFFFFFF, st.st_size & 0xFFFFFFFF, int(st.st_mtime))
                except OSError:
                    reply(b"STAT", 0, 0, 0)
            elif ident == b"LIST":
                with contextlib.suppress(OSError):
                    for entry in sorted(self._local(arg).iterdir()):
                        st, name = entry.stat(), entry.name.encode()
                        reply(b"DENT", st.st_mode, st.st_size & 0xFFFFFFFF, int(st.st_mtime), len(name), data=name)
                reply(b"DONE", 0, 0, 0, 0)
            else:
                message = f"unknown sync request {ident!r}".encode()
                reply(b"FAIL", len(message), data=message)

    def _receive_file(self, take, frame, reply, device_path: str, mode: int) -> None:
        faults = self.device.faults
        try:
            path = self._local(device_path)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.partial")
            out = open(tmp, "wb")  # noqa: SIM115 - closed below on every path
        except OSError as exc:
            path, out = None, None
            error = f"{device_path}: {exc.strerror or exc}"
        with contextlib.ExitStack() as stack:
            if out is not None:
                stack.callback(out.close)
            while True:
                ident, n = frame()
                if ident == b"DATA":
                    data = take(n)
                    self.sync_bytes += len(data)
                    if faults.drop_after_sync_bytes is not None and self.sync_bytes >= faults.drop_after_sync_bytes:
                        faults.drop_after_sync_bytes = None  # once: the retry must succeed
                        raise ConnectionError("fault: dropped mid-push")
                    if out is not None:
                        out.write(data)
                elif ident == b"DONE":
                    if out is None:
                        message = error.encode()
                        reply(b"FAIL", len(message), data=message)
                        return
                    out.close()
                    os.chmod(tmp, stat.S_IMODE(mode) or 0o644)
                    os.utime(tmp, (n, n))
                    os.replace(tmp, path)
                    reply(b"OKAY", 0)
                    return
                else:
                    raise ConnectionError(f"unexpected {ident!r} during SEND")


class LoopbackDevice:
    """`with LoopbackDevice(root, persona) as dev: dev.port` — a phone on 127.0.0.1:port."""

    def __init__(self, root: Path, persona: dict[str, str], auth: bool = False, faults: Faults | None = None) -> None:
        self.root, self.persona, self.auth = Path(root), persona, auth
        self.faults = faults or Faults()
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.connections: list[_Connection] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)

    @property
    def serial(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self.server.accept()
            except OSError:
                return
            if self.faults.offline:
                with contextlib.suppress(OSError):
                    sock.close()
                continue
            connection = _Connection(self, sock)
            self.connections.append(connection)
            threading.Thread(target=connection.serve, daemon=True).start()

    def unplug(self) -> None:
        """The phone goes away: open connections die and new ones are refused until
        `faults.offline` is False again (plugged back in)."""
        self.faults.offline = True
        for connection in self.connections:
            with contextlib.suppress(OSError):
                connection.sock.shutdown(socket.SHUT_RDWR)

    def __enter__(self) -> LoopbackDevice:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.close()
        for connection in self.connections:
            with contextlib.suppress(OSError):
                connection.sock.shutdown(socket.SHUT_RDWR)
