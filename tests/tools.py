"""System tools that some tests need: `make test` installs them (apt-get, as root). Elsewhere a
missing tool skips its test with the reason, but under CI=true it is a failure."""

import os
import shutil

import pytest


def require(tool: str) -> str:
    path = shutil.which(tool)
    if path:
        return path
    message = f"{tool} is not installed (make test installs it with apt-get when run as root)"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)
