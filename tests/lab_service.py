"""A lab service on a free localhost port for the service's tests, stopped afterwards."""

import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path

from device_bench.service import ServiceConfig, make_server
from device_bench.store import ResultStore


@contextlib.contextmanager
def running_service(
    folder: Path, token: str, with_jobs: bool = False, **settings
) -> Iterator[tuple[int, ServiceConfig]]:
    """(port, config) of a running service; `with_jobs`: queued and leased jobs of a bundle id
    that was never uploaded, for the job routes to meet."""
    config = ServiceConfig(folder / "lab.db", folder / "lab-data", token, **settings)
    server = make_server(config, port=0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    if with_jobs:
        with ResultStore(config.store) as store:
            for _ in range(3):
                store.enqueue({"bundle": "0" * 32, "device": "host"})
            store.lease("agent-1", ["host"], lease_s=600)
    try:
        yield server.server_address[1], config
    finally:
        server.shutdown()
        server.server_close()
