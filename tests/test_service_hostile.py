"""Hostile and broken clients against the lab service, over real sockets on localhost: none of
them holds the service up, uses its threads, or keeps a request slot past the idle timeout."""

import contextlib
import http.client
import json
import resource
import socket
import threading
import time

import pytest

from tests.lab_service import running_service

TOKEN = "hostile-token-0123456789"
AUTH = f"Authorization: Bearer {TOKEN}\r\n".encode()
BUNDLE = "ab" * 16


@pytest.fixture
def serve(tmp_path):
    """start(**settings) -> (port, config) of a service, stopped after the test."""
    with contextlib.ExitStack() as stack:
        yield lambda **settings: stack.enter_context(running_service(tmp_path, TOKEN, **settings))


def _honest(port: int) -> tuple[int, float]:
    """An honest client's GET /v1/jobs: its status and how long it took."""
    started = time.monotonic()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", "/v1/jobs", headers={"Authorization": f"Bearer {TOKEN}"})
        response = connection.getresponse()
        response.read()
        return response.status, time.monotonic() - started
    finally:
        connection.close()


def _closed_within(sock: socket.socket, wait_s: float) -> tuple[bytes, float]:
    """What the service sends until it closes the connection, and when it closed it."""
    started, answer = time.monotonic(), b""
    sock.settimeout(wait_s)
    while True:
        chunk = sock.recv(65536)  # a TimeoutError here: the service never closed it
        if not chunk:
            return answer, time.monotonic() - started
        answer += chunk


def test_a_thousand_idle_connections_cost_no_threads_and_honest_clients_are_served(serve):
    """1000 idle connections used to leave 940 threads and a service that never recovered."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 2 * 1000 + 200  # both ends live in this process
    if soft < wanted and (hard == resource.RLIM_INFINITY or hard >= wanted):
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    count = min(1000, (resource.getrlimit(resource.RLIMIT_NOFILE)[0] - 200) // 2)
    port, _ = serve(idle_timeout_s=3.0)
    threads_before = threading.active_count()
    idle = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(count)]
    try:
        time.sleep(0.5)
        latencies = []
        for _ in range(20):
            status, took = _honest(port)
            assert status == 200
            latencies.append(took)
        assert max(latencies) < 1.0, latencies
        assert threading.active_count() - threads_before < 50  # not a thread per connection
        # and the service closes them all by itself once they have been idle too long
        idle[0].settimeout(10)
        assert idle[0].recv(1) == b""
        open_ones, deadline = idle[1:], time.monotonic() + 10  # the rest within moments of the first
        while open_ones and time.monotonic() < deadline:
            open_ones = [s for s in open_ones if not _is_closed(s)]
            time.sleep(0.2)
        assert not open_ones, f"{len(open_ones)} idle connections still open"
    finally:
        for s in idle:
            s.close()
    assert count >= 500  # a machine with fewer file descriptors than this tests too little


def _is_closed(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        return sock.recv(1) == b""
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return True


def _received_until_closed(sock: socket.socket, wait_s: float) -> int:
    """How many bytes arrive before the service ends the connection (TimeoutError: it did not)."""
    sock.settimeout(wait_s)
    received = 0
    try:
        while chunk := sock.recv(1 << 20):
            received += len(chunk)
    except ConnectionResetError:
        pass
    return received


def test_a_request_head_sent_a_byte_at_a_time_is_cut_off(serve):
    """A slowloris client that keeps sending, one byte at a time, never completes its head: the
    deadline counts from the connection's start, not from the last byte."""
    port, _ = serve(idle_timeout_s=1.0)
    with socket.create_connection(("127.0.0.1", port)) as sock:
        started, head = time.monotonic(), b"GET /v1/jobs HTTP/1.1\r\nHost: x\r\n" + b"X-Slow: " + b"a" * 200
        for byte in head:
            try:
                sock.send(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                break
            if time.monotonic() - started > 5:
                break
            time.sleep(0.05)
        assert time.monotonic() - started < 3  # cut off after about 1 s, not after the whole head
    assert _honest(port)[0] == 200


def test_a_body_that_stops_arriving_is_answered_408(serve):
    port, _ = serve(idle_timeout_s=1.0)
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(b"POST /v1/jobs HTTP/1.1\r\nHost: x\r\n" + AUTH + b'Content-Length: 1000\r\n\r\n{"bund')
        answer, took = _closed_within(sock, wait_s=10)
    assert answer.startswith(b"HTTP/1.1 408") and b"did not arrive in time" in answer
    assert took < 3


def test_a_huge_body_with_the_token_is_refused_before_it_is_read(serve):
    port, _ = serve(max_upload_bytes=1 << 20)
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(f"PUT /v1/bundles/{BUNDLE}/model.onnx HTTP/1.1\r\nHost: x\r\n".encode() + AUTH
                     + b"Content-Length: 1073741824\r\n\r\n")  # fmt: skip
        answer, took = _closed_within(sock, wait_s=10)
    assert answer.startswith(b"HTTP/1.1 413") and took < 3


def test_clients_that_stop_reading_hold_their_slots_for_the_idle_timeout_at_most(serve, tmp_path):
    """Downloads that nobody reads used to hold a thread each, for ever. With two request slots
    taken by them, a third request is told the service is busy at once; once the stalled ones are
    cut off, it is served."""
    port, config = serve(idle_timeout_s=1.5, max_requests=2)
    folder = config.bundle_dir(BUNDLE)
    folder.mkdir(parents=True)
    (folder / "model.onnx").write_bytes(bytes(64 << 20))  # far more than the socket buffers hold
    (folder / "manifest.json").write_text("{}")
    stalled = []
    for _ in range(2):
        sock = socket.create_connection(("127.0.0.1", port))
        sock.sendall(f"GET /v1/bundles/{BUNDLE}/model.onnx HTTP/1.1\r\nHost: x\r\n".encode() + AUTH + b"\r\n")
        stalled.append(sock)
    try:
        time.sleep(0.5)  # both are being answered (and stuck) now
        status, took = _honest(port)
        assert status == 503 and took < 1.0
        given_up = time.monotonic() + 2 * 1.5 + 1  # two checks without progress, and a margin
        while _honest(port)[0] != 200:
            assert time.monotonic() < given_up, "the stalled downloads still hold their slots"
            time.sleep(0.2)
        for sock in stalled:  # aborted by the service: the rest of the file is not waiting to be sent
            assert _received_until_closed(sock, wait_s=5) < 64 << 20
    finally:
        for sock in stalled:
            sock.close()


def test_a_busy_answer_says_to_try_again(serve):
    port, _ = serve(max_requests=0)
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    connection.request("GET", "/v1/jobs", headers={"Authorization": f"Bearer {TOKEN}"})
    response = connection.getresponse()
    assert response.status == 503 and "try again" in json.loads(response.read())["error"]
