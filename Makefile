# chanload: `make install && make bench` sets up and runs the main job; `make test` runs the tests.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: install test lint bench perf-sink perf-engine clean

install: $(BIN)/chanload

$(BIN)/chanload: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@touch $@

test: install
	$(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check .

# The main job: a short self-benchmark of chansink driven by chanload.
bench: install
	$(BIN)/python -m tests.perf.selfbench

# chansink vs nginx under wrk (needs wrk and nginx: apt-get install -y wrk nginx-light).
perf-sink: install
	$(BIN)/python -m tests.perf.perf_sink

# chanload vs wrk, h11 throughput, 1 MiB bodies, a 10-minute RSS check (needs wrk, nginx).
perf-engine: install
	$(BIN)/python -m tests.perf.perf_engine

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis *.egg-info
