"""The lab service: an HTTP API over the results store and its job queue, so that agents on
other hosts (each with its phones) and the pipeline can share one queue and one store.

Every request carries `Authorization: Bearer TOKEN`. Bundles are uploaded once, file by file,
under an id that is the SHA-256 of their manifest: the model files first, the manifest last,
checked against the files' hashes before it is written, so that a bundle the service holds is
complete and an id always names the same bytes. Routes (JSON in and out unless a file):

    PUT  /v1/bundles/ID/NAME           a bundle file (raw bytes)
    GET  /v1/bundles/ID/NAME           a file of a complete bundle
    POST /v1/jobs                      {"bundle": ID, "device", "runtime", ..., "tag"} -> {"id"}
    GET  /v1/jobs?status=S&tag=T       the jobs
    POST /v1/lease                     {"agent", "devices", "lease_s"} -> {"job": JOB or null}
    POST /v1/jobs/N/renew|release|fail|finish   {"agent", "lease_s" | "reason" | "result"}
    GET  /v1/openapi.json              the API as an OpenAPI document (device_bench/openapi.py)

It runs on uvicorn (Starlette routes). Before a route reads anything of a body, `_Guard`
checks the token, the declared size and the number of requests in flight; `_Protocol` closes
connections that stay idle or send their request head too slowly.

A result or failure from an agent that lost its lease is answered 409. With agent accounts
(`device-bench serve --agents agents.toml`), an agent's own token says who it is: it may only
download bundles, lease jobs of its own devices and act on the leases it holds (403 otherwise),
and the lab token may no longer act for agents.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import hashlib
import hmac
import json
import re
import socket
import sys
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from coronet.bundle import MANIFEST, Bundle, check_manifest, inside, members
from coronet.errors import CoronetError, IncompleteBundleError
from coronet.files import atomic_write_bytes, sha256_file
from device_bench.openapi import OPENAPI
from device_bench.records import BenchJob, BenchResult
from device_bench.store import LeaseLost, ResultStore

CALLER = "coronet.caller"  # where the request's scope keeps who sent it (None: the lab token)
BUNDLE_ID = re.compile(r"^[0-9a-f]{32}$")
FILE_NAME = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,100}$")


class ServiceError(CoronetError):
    """The service refused a request or could not be reached. `retryable`: the service was
    unreachable or failed (5xx), so the same request may succeed later; a refusal (4xx) will not."""

    def __init__(self, message: str, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable


def bundle_id(manifest_bytes: bytes) -> str:
    return hashlib.sha256(manifest_bytes).hexdigest()[:32]


@dataclass(frozen=True)
class AgentAccount:
    """An agent the service knows: its own token, and the devices it may lease jobs for."""

    name: str
    token: str
    devices: tuple[str, ...]


@dataclass(frozen=True)
class ServiceConfig:
    store: Path
    data_dir: Path  # uploaded bundles live in data_dir/bundles/ID/
    token: str  # the lab's token: bundles, jobs, and (without agent accounts) the agents too
    max_upload_bytes: int = 1 << 30
    # A connection whose request head has not arrived this long after it opened (or after its
    # last answer) is closed; so is a request whose body or answer stalls this long.
    idle_timeout_s: float = 30.0
    min_upload_bytes_per_s: float = 1 << 20  # a body slower than this on average is cut off
    max_requests: int = 64  # requests being answered at once; more are answered 503 at once
    max_connections: int = 4096  # open connections (idle ones cost a few KiB each); more are closed
    # With accounts, an agent is who its token says: it leases only its own devices' jobs, and
    # only the holder of a lease renews, finishes, fails or releases it. Without them (one
    # trusted machine), the lab token acts for agents that name themselves.
    agents: tuple[AgentAccount, ...] = ()
    max_lease_s: float = 3600.0

    def bundle_dir(self, bid: str) -> Path:
        return self.data_dir / "bundles" / bid


def _manifest_problem(folder: Path, data: bytes) -> str | None:
    """Why this manifest cannot complete the bundle in `folder` (None: it can): the shape every
    reader checks (`check_manifest`), flat file names (bundles are stored flat), files uploaded."""
    try:
        files = members(check_manifest(json.loads(data), "the manifest"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        return f"not a bundle manifest: {exc}"
    except IncompleteBundleError as exc:
        return str(exc)
    for runtime, entry in files.items():
        name = entry["path"]
        if not FILE_NAME.match(name) or name == MANIFEST:
            return f"the {runtime} file name {name!r} is not a plain file name"
        file = folder / name
        if not file.is_file() or file.stat().st_size != entry["bytes"] or sha256_file(file) != entry["sha256"]:
            return f"{name} is missing or differs from the manifest: upload the model files first"
    return None


class _Refused(Exception):
    def __init__(self, status: HTTPStatus, message: str) -> None:
        super().__init__(message)
        self.status = status


# --- the routes' work: plain functions of (caller, the path's fields, the body), run in worker
# threads (the store and the disk block); a refusal is a `_Refused` ---
class _Lab:
    def __init__(self, config: ServiceConfig) -> None:
        self.config = config

    def _agent(self, caller: AgentAccount | None, p: dict[str, Any]) -> str:
        """The agent a queue request acts for: its account's name (a name in the body must be
        the same), or, with no accounts configured, the name the body gives."""
        named = p.get("agent")
        if caller is None:
            if self.config.agents:
                raise _Refused(HTTPStatus.FORBIDDEN, "agents use their own token (device-bench serve --agents)")
            if not isinstance(named, str) or not named:
                raise _Refused(HTTPStatus.BAD_REQUEST, "agent must be a non-empty name")
            return named
        if named is not None and named != caller.name:
            raise _Refused(HTTPStatus.FORBIDDEN, f"this token is agent {caller.name!r}, not {named!r}")
        return caller.name

    @staticmethod
    def _lab_only(caller: AgentAccount | None) -> None:
        if caller is not None:
            raise _Refused(HTTPStatus.FORBIDDEN, f"agent {caller.name!r} may lease and report jobs only")

    def _bundle_path(self, bid: str, name: str) -> Path:
        if not BUNDLE_ID.match(bid) or not FILE_NAME.match(name):
            raise _Refused(HTTPStatus.BAD_REQUEST, "a bundle id is 32 hex digits and a file name plain [A-Za-z0-9_.-]")
        return self.config.bundle_dir(bid) / name

    def put_bundle_file(self, caller: AgentAccount | None, bid: str, name: str, data: bytes) -> Response:
        self._lab_only(caller)
        path = self._bundle_path(bid, name)
        answer = {"bundle": bid, "file": name, "stored": False}
        if (path.parent / MANIFEST).is_file():  # complete bundles are immutable
            if path.is_file() and path.read_bytes() == data:
                return _json(HTTPStatus.CREATED, answer)
            raise _Refused(HTTPStatus.CONFLICT, f"bundle {bid} is complete and holds other bytes")
        if name == MANIFEST:
            if bundle_id(data) != bid:
                raise _Refused(HTTPStatus.BAD_REQUEST, "the bundle id is not the SHA-256 of this manifest")
            problem = _manifest_problem(path.parent, data)
            if problem:
                raise _Refused(HTTPStatus.BAD_REQUEST, problem)
        atomic_write_bytes(path, lambda f: f.write(data))
        return _json(HTTPStatus.CREATED, {**answer, "stored": True})

    def get_bundle_file(self, caller: AgentAccount | None, bid: str, name: str) -> Response:
        path = self._bundle_path(bid, name)
        if not (path.parent / MANIFEST).is_file() or not path.is_file():
            raise _Refused(HTTPStatus.NOT_FOUND, f"no complete bundle {bid} with {name}")
        return FileResponse(path, media_type="application/octet-stream")  # streamed: memory stays small

    def submit(self, caller: AgentAccount | None, body: bytes) -> Response:
        self._lab_only(caller)
        p = _payload(body)
        tag = p.pop("tag", "")
        job = BenchJob.from_dict(p)  # every setting checked; a bad one is a 400 with the reason
        if not isinstance(tag, str) or len(tag) > 200:
            raise _Refused(HTTPStatus.BAD_REQUEST, "tag must be a string of at most 200 characters")
        if not BUNDLE_ID.match(job.bundle) or not (self.config.bundle_dir(job.bundle) / MANIFEST).is_file():
            raise _Refused(HTTPStatus.BAD_REQUEST, f"no complete bundle {job.bundle}: upload it first")
        bundle = Bundle.open(self.config.bundle_dir(job.bundle), verify=False)
        if job.file_key not in bundle.keys:
            raise _Refused(HTTPStatus.BAD_REQUEST, f"bundle {job.bundle} has no {job.file_key} file; "
                           f"it has {', '.join(bundle.keys)}")  # fmt: skip
        job = dataclasses.replace(job, model=str(bundle.manifest.get("model", {}).get("name", "")))
        with ResultStore(self.config.store) as store:
            return _json(HTTPStatus.CREATED, {"id": store.enqueue(job, tag=tag)})

    def jobs(self, caller: AgentAccount | None, status: str | None, tag: str | None) -> Response:
        self._lab_only(caller)
        with ResultStore(self.config.store) as store:
            return _json(HTTPStatus.OK, {"jobs": store.jobs(status, tag)})

    def job_result(self, caller: AgentAccount | None, job: str) -> Response:
        """One job with its result once it is done (null before; a failed job has its reason)."""
        self._lab_only(caller)
        job_id = _job_id(job)
        with ResultStore(self.config.store) as store:
            found = store.job(job_id)
            if found is None:
                raise _Refused(HTTPStatus.NOT_FOUND, f"no job {job_id}")
            result = store.result_of(job_id)
        return _json(HTTPStatus.OK, {"job": found, "result": result.to_dict() if result is not None else None})

    def lease(self, caller: AgentAccount | None, body: bytes) -> Response:
        p = _payload(body)
        agent, devices = self._agent(caller, p), p.get("devices")
        if not isinstance(devices, list) or not devices or not all(isinstance(d, str) for d in devices):
            raise _Refused(HTTPStatus.BAD_REQUEST, "devices must be a non-empty list of device names")
        if caller is not None and not set(devices) <= set(caller.devices):
            others = sorted(set(devices) - set(caller.devices))
            raise _Refused(HTTPStatus.FORBIDDEN, f"agent {agent!r} does not own {', '.join(others)}")
        with ResultStore(self.config.store) as store:
            job = store.lease(agent, devices, _lease_s(p, self.config.max_lease_s))
        return _json(HTTPStatus.OK, {"job": job})

    def job_action(self, caller: AgentAccount | None, job: str, action: str, body: bytes) -> Response:
        job_id, p = _job_id(job), _payload(body)
        agent = self._agent(caller, p)  # only the lease's holder gets past the store's lease check
        with ResultStore(self.config.store) as store:
            if action == "renew":
                store.renew(job_id, agent, _lease_s(p, self.config.max_lease_s))
            elif action == "release":
                store.release(job_id, agent)
            elif action == "fail":
                if not isinstance(p.get("reason"), str):
                    raise _Refused(HTTPStatus.BAD_REQUEST, "reason must be a string")
                store.fail(job_id, p["reason"], agent=agent)
            else:
                if "result" not in p:
                    raise _Refused(HTTPStatus.BAD_REQUEST, "result is required")
                result = BenchResult.from_dict(p["result"])
                spec = (store.job(job_id) or {}).get("spec", {})
                # results name the bundle by where the service keeps it, so reports find its manifest
                result.bundle = str(self.config.bundle_dir(spec.get("bundle", "")))
                store.finish(job_id, result, agent=agent)
        return _json(HTTPStatus.OK, {"id": job_id, "action": action})


def _job_id(job: str) -> int:
    """A job id from its path segment; anything but a positive integer is a job that is not there."""
    if not job.isdigit() or not 0 < int(job) < 2**63:
        raise _Refused(HTTPStatus.NOT_FOUND, f"no job {job!r}: a job id is a positive integer")
    return int(job)


def _json(status: HTTPStatus, data: Any, close: bool = False) -> Response:
    headers = {"Connection": "close"} if close else None
    return Response((json.dumps(data, default=str) + "\n").encode(), status, headers, "application/json")


def _payload(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body or b"{}")
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise _Refused(HTTPStatus.BAD_REQUEST, f"the body is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise _Refused(HTTPStatus.BAD_REQUEST, "the body must be a JSON object")
    return data


def _lease_s(p: dict[str, Any], most: float) -> float:
    lease_s = p.get("lease_s", 120)
    if isinstance(lease_s, bool) or not isinstance(lease_s, int | float) or not 0 < lease_s <= most:
        raise _Refused(HTTPStatus.BAD_REQUEST, f"lease_s must be a number in (0, {most:g}], got {lease_s!r}")
    return float(lease_s)


async def _answer(request: Request, work: Callable[..., Response], *args: Any) -> Response:
    """`work(caller, *args)` in a worker thread; what it raises becomes the answer's status."""
    try:
        return await run_in_threadpool(work, request.scope[CALLER], *args)
    except _Refused as exc:
        return _json(exc.status, {"error": str(exc)})
    except LeaseLost as exc:
        return _json(HTTPStatus.CONFLICT, {"error": str(exc)})
    except CoronetError as exc:  # a bad job or result, a bundle on disk that no longer opens
        return _json(HTTPStatus.BAD_REQUEST, {"error": str(exc)})
    except Exception as exc:  # the store or the disk: the client may try again
        sys.stderr.write(f"device-bench serve: {request.method} {request.url.path}: {exc!r}\n")
        return _json(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": f"internal error: {exc!r}"})


def _app(config: ServiceConfig) -> ASGIApp:
    lab = _Lab(config)

    async def put_file(request: Request) -> Response:
        body = await request.body()
        return await _answer(request, lab.put_bundle_file, *request.path_params.values(), body)

    async def get_file(request: Request) -> Response:
        return await _answer(request, lab.get_bundle_file, *request.path_params.values())

    async def submit(request: Request) -> Response:
        return await _answer(request, lab.submit, await request.body())

    async def jobs(request: Request) -> Response:
        query = request.query_params
        return await _answer(request, lab.jobs, query.get("status"), query.get("tag"))

    async def lease(request: Request) -> Response:
        return await _answer(request, lab.lease, await request.body())

    async def job_result(request: Request) -> Response:
        return await _answer(request, lab.job_result, request.path_params["job"])

    async def job_action(request: Request) -> Response:
        body = await request.body()
        return await _answer(request, lab.job_action, request.path_params["job"], request.path_params["action"], body)

    async def schema(request: Request) -> Response:
        return _json(HTTPStatus.OK, OPENAPI)

    async def refused(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        if exc.status_code in (HTTPStatus.NOT_FOUND, HTTPStatus.METHOD_NOT_ALLOWED):
            message = f"no route {request.method} {request.url.path}"
        else:
            message = exc.detail
        return _json(HTTPStatus(exc.status_code), {"error": message}, close=exc.status_code >= 408)

    routes = [
        Route("/v1/openapi.json", schema, methods=["GET"]),
        Route("/v1/bundles/{bid}/{name}", put_file, methods=["PUT"]),
        Route("/v1/bundles/{bid}/{name}", get_file, methods=["GET"]),
        Route("/v1/jobs", submit, methods=["POST"]),
        Route("/v1/jobs", jobs, methods=["GET"]),
        Route("/v1/lease", lease, methods=["POST"]),
        Route("/v1/jobs/{job}/result", job_result, methods=["GET"]),
        Route("/v1/jobs/{job}/{action:str}", job_action, methods=["POST"]),
    ]
    app = Starlette(routes=routes, exception_handlers={HTTPException: refused})
    return _Guard(app, config)


class _Guard:
    """What a request meets before its route, in this order: the token (nothing of a body is
    read without it), the body's declared size, the number of requests in flight. Then a
    deadline on reading the body, so that a client that stalls holds its request slot for
    `idle_timeout_s` at most (an answer that stalls is `_Protocol`'s)."""

    def __init__(self, app: ASGIApp, config: ServiceConfig) -> None:
        self.app, self.config, self.in_flight = app, config, 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = Headers(scope=scope)
        try:
            scope[CALLER] = self._who(headers.get("authorization", ""))
            length = self._body_length(scope["method"], headers)
            if self.in_flight >= self.config.max_requests:
                raise _Refused(HTTPStatus.SERVICE_UNAVAILABLE, "the service is busy: try again in a moment")
        except _Refused as exc:
            # The body stays unread: the connection ends after the answer instead.
            return await _json(exc.status, {"error": str(exc)}, close=True)(scope, receive, send)
        self.in_flight += 1
        try:
            await self.app(scope, self._timed_receive(receive, length), send)
        finally:
            self.in_flight -= 1

    def _who(self, given: str) -> AgentAccount | None:
        """The caller: None for the lab token, the agent's account for an agent token."""
        if hmac.compare_digest(given.encode(), f"Bearer {self.config.token}".encode()):
            return None
        for account in self.config.agents:
            if hmac.compare_digest(given.encode(), f"Bearer {account.token}".encode()):
                return account
        raise _Refused(HTTPStatus.UNAUTHORIZED, "missing or wrong token (Authorization: Bearer TOKEN)")

    def _body_length(self, method: str, headers: Headers) -> int:
        length = headers.get("content-length")
        if length is None:
            if method in ("POST", "PUT") or "transfer-encoding" in headers:
                raise _Refused(HTTPStatus.LENGTH_REQUIRED, "Content-Length is required")
            return 0
        limit = self.config.max_upload_bytes
        if int(length) > limit:  # h11 has checked that it is digits
            raise _Refused(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"body over {limit} bytes")
        return int(length)

    def _timed_receive(self, receive: Receive, length: int) -> Receive:
        """The body arrives with no pause over `idle_timeout_s` and at `min_upload_bytes_per_s` at least."""
        loop = asyncio.get_running_loop()
        idle_s = self.config.idle_timeout_s
        deadline = loop.time() + idle_s + length / self.config.min_upload_bytes_per_s
        body_read = length == 0

        async def timed() -> Message:
            nonlocal body_read
            if body_read:  # e.g. waiting for the client to go: no deadline
                return await receive()
            try:
                async with asyncio.timeout(max(0.0, min(idle_s, deadline - loop.time()))):
                    message = await receive()
            except TimeoutError:
                raise HTTPException(HTTPStatus.REQUEST_TIMEOUT, "the request body did not arrive in time") from None
            body_read = message["type"] != "http.request" or not message.get("more_body", False)
            return message

        return timed


class _Protocol(H11Protocol):
    """uvicorn's HTTP/1.1 connection, plus the limits it leaves to a proxy in front:
    - a request head must arrive complete within `head_timeout_s` of the connection opening (or
      of its previous answer), so idle and slow-header ("slowloris") connections end;
    - an answer the client stops reading is given up after `head_timeout_s` without progress
      (the connection is aborted: a close would wait for the unsent bytes for ever, holding
      them in memory and the request's slot);
    - connections beyond `max_connections` are closed at once."""

    def __init__(self, *args: Any, head_timeout_s: float, max_connections: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.head_timeout_s, self.max_connections = head_timeout_s, max_connections
        self.head_deadline: asyncio.TimerHandle | None = None
        self.write_check: asyncio.TimerHandle | None = None
        self.writable_again = 0  # how often the transport became writable again (progress)

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.max_connections:
            transport.close()
            return
        self._wait_for_head()
        self._check_writes(0, 0)

    def _check_writes(self, unsent_before: int, writable_before: int) -> None:
        unsent = self.transport.get_write_buffer_size()
        if unsent and unsent >= unsent_before and self.writable_again == writable_before:
            self.transport.abort()  # nothing of the answer left in a whole period: the reader is gone
            return
        self.write_check = self.loop.call_later(self.head_timeout_s, self._check_writes, unsent, self.writable_again)

    def resume_writing(self) -> None:
        self.writable_again += 1
        super().resume_writing()

    def _wait_for_head(self) -> None:
        self._head_arrived()
        self.head_deadline = self.loop.call_later(self.head_timeout_s, self._head_late)

    def _head_arrived(self) -> None:
        if self.head_deadline is not None:
            self.head_deadline.cancel()
            self.head_deadline = None

    def _head_late(self) -> None:
        if not self.transport.is_closing():
            self.transport.close()

    def _answering(self) -> bool:
        return self.cycle is not None and not self.cycle.response_complete

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._answering():
            self._head_arrived()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and not self._answering():
            self._wait_for_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self._head_arrived()
        if self.write_check is not None:
            self.write_check.cancel()
        super().connection_lost(exc)


class LabServer:
    """The service on uvicorn, bound to host:port at construction (port 0: a free one).
    `serve_forever()` serves until `shutdown()` (from another thread) or Ctrl-C."""

    def __init__(self, config: ServiceConfig, host: str, port: int, verbose: bool) -> None:
        self.socket = socket.create_server((host, port), backlog=2048)
        self.server_address = self.socket.getsockname()
        protocol = functools.partial(
            _Protocol, head_timeout_s=config.idle_timeout_s, max_connections=config.max_connections
        )
        self.server = uvicorn.Server(
            uvicorn.Config(
                _app(config),
                http=protocol,  # type: ignore[arg-type]
                lifespan="off",
                timeout_keep_alive=max(1, round(config.idle_timeout_s)),
                timeout_graceful_shutdown=5,
                log_config=uvicorn.config.LOGGING_CONFIG if verbose else None,
                log_level="info" if verbose else "warning",
                access_log=verbose,
                server_header=False,
            )
        )
        self._serving = threading.Event()
        self._stopped = threading.Event()

    def serve_forever(self) -> None:
        self._serving.set()
        try:
            self.server.run(sockets=[self.socket])
        finally:
            self._stopped.set()

    def shutdown(self) -> None:
        self.server.should_exit = True
        if self._serving.is_set():
            self._stopped.wait()

    def server_close(self) -> None:
        self.socket.close()


def make_server(config: ServiceConfig, host: str = "127.0.0.1", port: int = 8750, verbose: bool = False) -> LabServer:
    """A server bound to host:port (port 0: any free one); call `serve_forever()` on it."""
    if not config.token:
        raise ServiceError("the service needs a token; pass --token-file or set DEVICE_BENCH_TOKEN")
    ResultStore(config.store).close()  # create the store (and its queue columns) up front
    return LabServer(config, host, port, verbose)


class ServiceClient:
    """The service's API for the pipeline and for agents (it is a `JobQueue`)."""

    def __init__(self, url: str, token: str, cache_dir: Path | None = None, timeout_s: float = 60.0) -> None:
        self.url, self.token, self.timeout_s = url.rstrip("/"), token, timeout_s
        self.cache_dir = cache_dir or Path.home() / ".cache" / "coronet" / "bundles"

    def _call(self, method: str, path: str, data: Any = None, raw: bytes | None = None) -> Any:
        body = raw if raw is not None else (json.dumps(data).encode() if data is not None else None)
        request = urllib.request.Request(f"{self.url}{path}", data=body, method=method)
        request.add_header("Authorization", f"Bearer {self.token}")
        request.add_header("Content-Type", "application/octet-stream" if raw is not None else "application/json")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                content = response.read()
                kind = response.headers.get("Content-Type", "")
        except urllib.error.HTTPError as exc:
            try:
                reason = json.loads(exc.read()).get("error", exc.reason)
            except (json.JSONDecodeError, AttributeError):
                reason = exc.reason
            if exc.code == HTTPStatus.CONFLICT and "/jobs/" in path:
                raise LeaseLost(int(path.split("/")[3]), str((data or {}).get("agent"))) from None
            retryable = exc.code >= 500
            raise ServiceError(f"{self.url}: {method} {path} refused ({exc.code}): {reason}", retryable) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ServiceError(f"cannot reach the service at {self.url}: {reason}", retryable=True) from None
        return json.loads(content) if kind.startswith("application/json") else content

    # --- pipeline side ---
    def upload_bundle(self, path: str | Path) -> str:
        """Upload a bundle (verified here first); returns its id. Files already there are kept."""
        bundle = Bundle.open(path, verify=True)
        manifest = (bundle.path / MANIFEST).read_bytes()
        bid = bundle_id(manifest)
        for entry in members(bundle.manifest).values():
            self._call("PUT", f"/v1/bundles/{bid}/{entry['path']}", raw=(bundle.path / entry["path"]).read_bytes())
        self._call("PUT", f"/v1/bundles/{bid}/{MANIFEST}", raw=manifest)
        return bid

    def submit(self, spec: dict[str, Any]) -> int:
        return int(self._call("POST", "/v1/jobs", spec)["id"])

    def jobs(self, status: str | None = None, tag: str | None = None) -> list[dict[str, Any]]:
        query = urllib.parse.urlencode({k: v for k, v in (("status", status), ("tag", tag)) if v})
        return self._call("GET", "/v1/jobs" + (f"?{query}" if query else ""))["jobs"]

    def job_result(self, job_id: int) -> tuple[dict[str, Any], BenchResult | None]:
        """The job (its status, and a failed one's reason) and its result once it is done."""
        answer = self._call("GET", f"/v1/jobs/{job_id}/result")
        result = answer.get("result")
        return answer["job"], BenchResult.from_dict(result) if result is not None else None

    # --- agent side (JobQueue) ---
    def lease(self, agent: str, devices: list[str], lease_s: float) -> dict[str, Any] | None:
        return self._call("POST", "/v1/lease", {"agent": agent, "devices": devices, "lease_s": lease_s})["job"]

    def renew(self, job_id: int, agent: str, lease_s: float) -> None:
        self._call("POST", f"/v1/jobs/{job_id}/renew", {"agent": agent, "lease_s": lease_s})

    def release(self, job_id: int, agent: str) -> None:
        self._call("POST", f"/v1/jobs/{job_id}/release", {"agent": agent})

    def finish(self, job_id: int, agent: str, result: BenchResult) -> None:
        self._call("POST", f"/v1/jobs/{job_id}/finish", {"agent": agent, "result": result.to_dict()})

    def fail(self, job_id: int, agent: str, reason: str) -> None:
        self._call("POST", f"/v1/jobs/{job_id}/fail", {"agent": agent, "reason": reason})

    def bundle(self, ref: str) -> Path:
        """The bundle `ref` in the local cache, downloaded (and verified) when missing."""
        if not BUNDLE_ID.match(ref):
            raise ServiceError(f"{ref!r} is not a bundle id")
        folder = self.cache_dir / ref
        try:
            return Bundle.open(folder, verify=True).path
        except IncompleteBundleError:
            pass
        manifest = self._call("GET", f"/v1/bundles/{ref}/{MANIFEST}")
        if bundle_id(manifest) != ref:
            raise ServiceError(f"the service sent a manifest that is not bundle {ref}")
        try:  # checked before anything is written: a manifest names files inside its bundle only
            files = members(check_manifest(json.loads(manifest), f"bundle {ref}'s {MANIFEST} from {self.url}"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise ServiceError(f"the service sent bundle {ref} with a manifest that is not JSON") from None
        folder.mkdir(parents=True, exist_ok=True)
        for entry in files.values():
            target = inside(folder, entry["path"], f"bundle {ref}'s {MANIFEST} from {self.url}")
            data = self._call("GET", f"/v1/bundles/{ref}/{entry['path']}")
            atomic_write_bytes(target, lambda f, data=data: f.write(data))
        atomic_write_bytes(
            folder / MANIFEST, lambda f: f.write(manifest)
        )  # last: a cached bundle without it is incomplete
        return Bundle.open(folder, verify=True).path
