# Two commands do everything on a fresh Debian machine with Python 3.11:
#   make demo   simulate -> train -> export -> agent -> MQTT alerts
#   make test   the whole test suite
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export TF_CPP_MIN_LOG_LEVEL := 2
export PYTHONUNBUFFERED := 1

.PHONY: setup test demo bench lint clean mosquitto pi-emulated

setup: $(STAMP) mosquitto

$(STAMP): pyproject.toml
	@test -x $(BIN)/python -a -x $(BIN)/pip || $(PYTHON) -m venv --clear $(VENV) || { \
		echo "$(PYTHON) -m venv failed (Debian keeps ensurepip in python3-venv): installing it"; \
		SUDO=""; [ "$$(id -u)" = "0" ] || SUDO="sudo"; \
		$$SUDO apt-get update -qq && \
		$$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv && \
		$(PYTHON) -m venv --clear $(VENV); }
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[train,sim,dev]"
	@touch $(STAMP)

# The tests and the demo start their own broker; they need the binary only.
mosquitto:
	@if ! command -v mosquitto >/dev/null 2>&1 && ! test -x /usr/sbin/mosquitto; then \
		echo "Installing Mosquitto with apt-get"; \
		SUDO=""; [ "$$(id -u)" = "0" ] || SUDO="sudo"; \
		$$SUDO apt-get update -qq && \
		$$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto mosquitto-clients; \
	fi

# The benchmarks' extras (the tests check the bench's metric wrapper too, so `make test`
# installs them); tsb-ad (TSB-AD's metric code) without its dependencies: it pins
# numpy<2 and pulls torch and transformers, which its evaluation code never imports.
BENCH_STAMP := $(VENV)/.bench-installed
$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e ".[train,sim,dev,bench]"
	$(BIN)/python -m pip install --quiet --no-deps "tsb-ad==1.5"
	@touch $(BENCH_STAMP)

test: setup $(BENCH_STAMP)
	$(BIN)/python -m pytest -q tests

demo: setup
	$(BIN)/python -m firmware_sim.demo

bench: setup $(BENCH_STAMP)
	$(BIN)/python -m tests.bench.run_all

# The device install and replays on the Pi's architectures (Debian bookworm arm64 and armhf
# roots under qemu-user), compared with x86; as root, an hour or more, not part of `make test`.
pi-emulated: setup
	bash tests/pi_emulated/check.sh

lint: setup
	$(BIN)/ruff check .
	$(BIN)/mypy

clean:
	rm -rf $(VENV) build dist *.egg-info out demo-out .pytest_cache .mypy_cache .ruff_cache
