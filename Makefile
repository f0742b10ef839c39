# `make test` and `make demo` set up .venv on their own: torch==2.13.0 (the CPU build) first,
# so that nothing pulls a multi-GB CUDA build, then this project with its compress, dev, tflite, usb
# and executorch extras (a lab host with phones needs none of them: pip install coronetgan).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test demo lint install tools clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install torch==2.13.0
	$(BIN)/python -m pip install -e '.[compress,dev,tflite,usb,executorch]'
	touch $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# System tools some tests need: Debian's adb client and shellcheck (device bench), chromium
# (the report in a real browser) and g++ (torch.compile's CPU backend). Installed when missing and we are root (as in CI); otherwise
# those tests skip, or fail under CI=true.
tools:
	@missing=""; for t in adb shellcheck chromium g++; do command -v $$t >/dev/null 2>&1 || missing="$$missing $$t"; done; \
	if [ -n "$$missing" ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing$$missing with apt-get"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

# Two workers, a test file each at a time (module fixtures stay in one process): the suite waits
# on subprocesses, phones and sockets as much as it computes, so this halves its time on 2 cores.
test: lint tools
	$(BIN)/python -m pytest -q -n 2 --dist loadfile

demo: $(STAMP)
	$(BIN)/compress-and-ship configs/demo.toml --run-dir runs/demo

clean:
	rm -rf runs .pytest_cache
