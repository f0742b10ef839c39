"""A manifest names files inside its bundle only: readers refuse anything else before they read,
push, serve or write a file (crafted manifests whose sizes and digests match the outside file)."""

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from coronet.bundle import Bundle
from coronet.errors import CoronetError, IncompleteBundleError
from device_bench.service import ServiceClient, bundle_id


def _entry(path: str, data: bytes) -> dict:
    return {"path": path, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def _bundle(folder, path: str, data: bytes) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    manifest = {"schema_version": 1, "files": {"onnx": _entry(path, data)}}
    (folder / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize("kind", ["dotdot", "absolute", "nested-dotdot", "symlink", "the bundle itself"])
def test_a_bundle_that_names_a_file_outside_it_is_refused(tmp_path, kind):
    secret = tmp_path / "secret.bin"
    secret.write_bytes(b"someone else's file")
    folder = tmp_path / "bundle"
    name = {"dotdot": "../secret.bin", "absolute": str(secret), "nested-dotdot": "sub/../../secret.bin",
            "symlink": "model.onnx", "the bundle itself": "."}[kind]  # fmt: skip
    _bundle(folder, name, secret.read_bytes())
    if kind == "symlink":
        (folder / "model.onnx").symlink_to(secret)
    with pytest.raises(IncompleteBundleError, match="outside its bundle"):
        Bundle.open(folder)


def test_a_manifest_without_files_is_one_line(tmp_path):
    (tmp_path / "manifest.json").write_text(json.dumps({"schema_version": 1}))
    with pytest.raises(IncompleteBundleError, match="lists no files"):
        Bundle.open(tmp_path)


def test_an_agent_writes_nothing_outside_its_cache_for_a_hostile_service(tmp_path):
    """The service (or someone who holds its address) sends a manifest naming an absolute path:
    the agent refuses it before it writes anything."""
    planted = tmp_path / "planted.sh"
    payload = b"#!/bin/sh\necho owned\n"
    manifest = json.dumps({"schema_version": 1, "files": {"onnx": _entry(str(planted), payload)}}).encode()
    ref = bundle_id(manifest)

    class Hostile(BaseHTTPRequestHandler):
        def do_GET(self):
            body = manifest if self.path.endswith("/manifest.json") else payload
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Hostile)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        client = ServiceClient(f"http://127.0.0.1:{server.server_address[1]}", "t", cache_dir=tmp_path / "cache")
        with pytest.raises(CoronetError, match="outside its bundle"):
            client.bundle(ref)
    finally:
        server.shutdown()
        server.server_close()
    assert not planted.exists()
