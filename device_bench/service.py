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

A result or failure from an agent that lost its lease is answered 409. With agent accounts
(`device-bench serve --agents agents.toml`), an agent's own token says who it is: it may only
download bundles, lease jobs of its own devices and act on the leases it holds (403 otherwise),
and the lab token may no longer act for agents.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import re
import sys
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from coronet.bundle import MANIFEST, Bundle, check_manifest, inside
from coronet.errors import CoronetError, IncompleteBundleError
from coronet.files import atomic_write_bytes, sha256_file
from device_bench.records import BenchJob, BenchResult
from device_bench.store import LeaseLost, ResultStore

UNAUTHENTICATED_BODY_BYTES = 64 * 1024  # the most a request without the token gets read
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
    idle_timeout_s: float = 30.0  # a connection that sends nothing this long (idle, a stalled client) is closed
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
        files = check_manifest(json.loads(data), "the manifest")["files"]
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


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    caller: AgentAccount | None = None  # who sent the request being handled (None: the lab token)

    def setup(self) -> None:
        self.timeout = self.server.config.idle_timeout_s  # a connection silent this long is closed
        super().setup()

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.verbose:
            super().log_message(format, *args)

    # --- plumbing ---
    def _send(self, status: HTTPStatus, body: bytes, kind: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: HTTPStatus, data: Any) -> None:
        self._send(status, (json.dumps(data, default=str) + "\n").encode())

    def _body(self) -> bytes:
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            raise _Refused(HTTPStatus.LENGTH_REQUIRED, "Content-Length is required")
        limit = self.server.config.max_upload_bytes
        if int(length) > limit:
            raise _Refused(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"body over {limit} bytes")
        return self.rfile.read(int(length))

    def _payload(self) -> dict[str, Any]:
        try:
            data = json.loads(self._body() or b"{}")
        except json.JSONDecodeError as exc:
            raise _Refused(HTTPStatus.BAD_REQUEST, f"the body is not JSON: {exc}") from None
        if not isinstance(data, dict):
            raise _Refused(HTTPStatus.BAD_REQUEST, "the body must be a JSON object")
        return data

    def _who(self) -> AgentAccount | None:
        """The caller: None for the lab token, the agent's account for an agent token."""
        given = (self.headers.get("Authorization") or "").encode()
        config = self.server.config
        if hmac.compare_digest(given, f"Bearer {config.token}".encode()):
            return None
        for account in config.agents:
            if hmac.compare_digest(given, f"Bearer {account.token}".encode()):
                return account
        self._body_discard()
        raise _Refused(HTTPStatus.UNAUTHORIZED, "missing or wrong token (Authorization: Bearer TOKEN)")

    def _agent(self, p: dict[str, Any]) -> str:
        """The agent a queue request acts for: its account's name (a name in the body must be
        the same), or, with no accounts configured, the name the body gives."""
        named = p.get("agent")
        if self.caller is None:
            if self.server.config.agents:
                raise _Refused(HTTPStatus.FORBIDDEN, "agents use their own token (device-bench serve --agents)")
            if not isinstance(named, str) or not named:
                raise _Refused(HTTPStatus.BAD_REQUEST, "agent must be a non-empty name")
            return named
        if named is not None and named != self.caller.name:
            raise _Refused(HTTPStatus.FORBIDDEN, f"this token is agent {self.caller.name!r}, not {named!r}")
        return self.caller.name

    def _lab_only(self) -> None:
        if self.caller is not None:
            raise _Refused(HTTPStatus.FORBIDDEN, f"agent {self.caller.name!r} may lease and report jobs only")

    def _handle(self, method: str) -> None:
        try:
            self.caller = self._who()
            url = urllib.parse.urlsplit(self.path)
            parts = [p for p in url.path.split("/") if p]
            self._route(method, parts, urllib.parse.parse_qs(url.query))
        except _Refused as exc:
            self._error(exc.status, str(exc))
        except LeaseLost as exc:
            self._error(HTTPStatus.CONFLICT, str(exc))
        except CoronetError as exc:  # e.g. a bundle on disk that no longer opens
            self._error(HTTPStatus.BAD_REQUEST, str(exc))
        except (KeyError, TypeError, ValueError) as exc:
            self._error(HTTPStatus.BAD_REQUEST, f"bad request: {exc!r}")
        except Exception as exc:  # the store or the disk: the client may try again
            sys.stderr.write(f"device-bench serve: {self.command} {self.path}: {exc!r}\n")
            self._error(HTTPStatus.INTERNAL_SERVER_ERROR, f"internal error: {exc!r}")

    def _error(self, status: HTTPStatus, message: str) -> None:
        # A refused request's body may be unread: end the connection rather than parse it as the next request.
        self.close_connection = True
        self._json(status, {"error": message})

    def _body_discard(self) -> None:
        """A refused request's body: a small one is read (so that the client reads the answer),
        anything larger is never read, not even into memory: the connection ends instead."""
        length = self.headers.get("Content-Length")
        if length and length.isdigit() and int(length) <= UNAUTHENTICATED_BODY_BYTES:
            self.rfile.read(int(length))
        else:
            self.close_connection = True

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_PUT(self) -> None:
        self._handle("PUT")

    # --- routes ---
    def _route(self, method: str, parts: list[str], query: dict[str, list[str]]) -> None:
        config = self.server.config
        match method, parts:
            case "PUT", ["v1", "bundles", bid, name]:
                self._lab_only()
                self._json(HTTPStatus.CREATED, self._put_bundle_file(self._bundle_path(bid, name), self._body()))
            case "GET", ["v1", "bundles", bid, name]:
                path = self._bundle_path(bid, name)
                if not (path.parent / MANIFEST).is_file() or not path.is_file():
                    raise _Refused(HTTPStatus.NOT_FOUND, f"no complete bundle {bid} with {name}")
                self._send(HTTPStatus.OK, path.read_bytes(), "application/octet-stream")
            case "POST", ["v1", "jobs"]:
                self._lab_only()
                self._json(HTTPStatus.CREATED, {"id": self._submit(self._payload())})
            case "GET", ["v1", "jobs"]:
                self._lab_only()
                status, tag = (query.get(k, [None])[0] for k in ("status", "tag"))
                with ResultStore(config.store) as store:
                    self._json(HTTPStatus.OK, {"jobs": store.jobs(status, tag)})
            case "POST", ["v1", "lease"]:
                p = self._payload()
                agent, devices = self._agent(p), p.get("devices")
                if not isinstance(devices, list) or not devices or not all(isinstance(d, str) for d in devices):
                    raise _Refused(HTTPStatus.BAD_REQUEST, "devices must be a non-empty list of device names")
                if self.caller is not None and not set(devices) <= set(self.caller.devices):
                    others = sorted(set(devices) - set(self.caller.devices))
                    raise _Refused(HTTPStatus.FORBIDDEN, f"agent {agent!r} does not own {', '.join(others)}")
                with ResultStore(config.store) as store:
                    job = store.lease(agent, devices, _lease_s(p, config.max_lease_s))
                self._json(HTTPStatus.OK, {"job": job})
            case "POST", ["v1", "jobs", job_id, action] if action in ("renew", "release", "fail", "finish"):
                self._job_action(int(job_id), action, self._payload())
            case _:
                raise _Refused(HTTPStatus.NOT_FOUND, f"no route {method} {self.path}")

    def _bundle_path(self, bid: str, name: str) -> Path:
        if not BUNDLE_ID.match(bid) or not FILE_NAME.match(name):
            raise _Refused(HTTPStatus.BAD_REQUEST, "a bundle id is 32 hex digits and a file name plain [A-Za-z0-9_.-]")
        return self.server.config.bundle_dir(bid) / name

    def _put_bundle_file(self, path: Path, data: bytes) -> dict[str, Any]:
        if (path.parent / MANIFEST).is_file():  # complete bundles are immutable
            if path.is_file() and path.read_bytes() == data:
                return {"bundle": path.parent.name, "file": path.name, "stored": False}
            raise _Refused(HTTPStatus.CONFLICT, f"bundle {path.parent.name} is complete and holds other bytes")
        if path.name == MANIFEST:
            if bundle_id(data) != path.parent.name:
                raise _Refused(HTTPStatus.BAD_REQUEST, "the bundle id is not the SHA-256 of this manifest")
            problem = _manifest_problem(path.parent, data)
            if problem:
                raise _Refused(HTTPStatus.BAD_REQUEST, problem)
        atomic_write_bytes(path, lambda f: f.write(data))
        return {"bundle": path.parent.name, "file": path.name, "stored": True}

    def _submit(self, p: dict[str, Any]) -> int:
        tag = p.pop("tag", "")
        job = BenchJob.from_dict(p)  # every setting checked; a bad one is a 400 with the reason
        if not isinstance(tag, str) or len(tag) > 200:
            raise _Refused(HTTPStatus.BAD_REQUEST, "tag must be a string of at most 200 characters")
        if not BUNDLE_ID.match(job.bundle) or not (self.server.config.bundle_dir(job.bundle) / MANIFEST).is_file():
            raise _Refused(HTTPStatus.BAD_REQUEST, f"no complete bundle {job.bundle}: upload it first")
        bundle = Bundle.open(self.server.config.bundle_dir(job.bundle), verify=False)
        if job.runtime not in bundle.runtimes:
            raise _Refused(HTTPStatus.BAD_REQUEST, f"bundle {job.bundle} has no {job.runtime} file; "
                           f"it has {bundle.runtimes}")  # fmt: skip
        job = dataclasses.replace(job, model=str(bundle.manifest.get("model", {}).get("name", "")))
        with ResultStore(self.server.config.store) as store:
            return store.enqueue(job, tag=tag)

    def _job_action(self, job_id: int, action: str, p: dict[str, Any]) -> None:
        agent = self._agent(p)  # only the lease's holder gets past the store's lease check
        with ResultStore(self.server.config.store) as store:
            if action == "renew":
                store.renew(job_id, agent, _lease_s(p, self.server.config.max_lease_s))
            elif action == "release":
                store.release(job_id, agent)
            elif action == "fail":
                store.fail(job_id, str(p["reason"]), agent=agent)
            else:
                result = BenchResult.from_dict(p["result"])
                spec = (store.job(job_id) or {}).get("spec", {})
                # results name the bundle by where the service keeps it, so reports find its manifest
                result.bundle = str(self.server.config.bundle_dir(spec.get("bundle", "")))
                store.finish(job_id, result, agent=agent)
        self._json(HTTPStatus.OK, {"id": job_id, "action": action})


def _lease_s(p: dict[str, Any], most: float) -> float:
    lease_s = p.get("lease_s", 120)
    if isinstance(lease_s, bool) or not isinstance(lease_s, int | float) or not 0 < lease_s <= most:
        raise _Refused(HTTPStatus.BAD_REQUEST, f"lease_s must be a number in (0, {most:g}], got {lease_s!r}")
    return float(lease_s)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], config: ServiceConfig, verbose: bool) -> None:
        super().__init__(address, _Handler)
        self.config, self.verbose = config, verbose


def make_server(config: ServiceConfig, host: str = "127.0.0.1", port: int = 8750, verbose: bool = False) -> _Server:
    """A server bound to host:port (port 0: any free one); call `serve_forever()` on it."""
    if not config.token:
        raise ServiceError("the service needs a token; pass --token-file or set DEVICE_BENCH_TOKEN")
    ResultStore(config.store).close()  # create the store (and its queue columns) up front
    return _Server((host, port), config, verbose)


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
        for entry in bundle.manifest["files"].values():
            self._call("PUT", f"/v1/bundles/{bid}/{entry['path']}", raw=(bundle.path / entry["path"]).read_bytes())
        self._call("PUT", f"/v1/bundles/{bid}/{MANIFEST}", raw=manifest)
        return bid

    def submit(self, spec: dict[str, Any]) -> int:
        return int(self._call("POST", "/v1/jobs", spec)["id"])

    def jobs(self, status: str | None = None, tag: str | None = None) -> list[dict[str, Any]]:
        query = urllib.parse.urlencode({k: v for k, v in (("status", status), ("tag", tag)) if v})
        return self._call("GET", "/v1/jobs" + (f"?{query}" if query else ""))["jobs"]

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
            files = check_manifest(json.loads(manifest), f"bundle {ref}'s {MANIFEST} from {self.url}")["files"]
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
