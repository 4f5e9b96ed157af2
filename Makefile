# The two commands: `make run` (the services, the pipeline on the embedded default,
# then the closed loop on a simulated fleet) and `make test` (the whole suite). Both
# set up .venv from the lock first.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup run loop test test-fast lint up down status clean bench-serving agent-wheel bench-agent docs

setup: $(STAMP)

# The lock is installed by uv (at the version the lock pins) from wheels only
# (wheels/ holds the one pinned dependency PyPI ships as source only, see
# docs/contributing/dependencies.md), bytecode compiled up front: about a minute where pip took four.
# uv does not read pip's configuration, so pip's find-links (where this machine
# keeps torch's CPU wheel) are passed on to it. --no-deps: the lock is the whole set
# (lock-overrides.txt drops what it must not install: a second TensorFlow build).
FIND_LINKS := $(sort $(PIP_FIND_LINKS) $(shell $(PY) -m pip config get global.find-links 2>/dev/null))

$(STAMP): requirements.lock pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --only-binary=:all: "$$(grep '^uv==' requirements.lock)"
	$(BIN)/uv pip install --quiet --python $(BIN)/python --compile-bytecode \
		--only-binary :all: --no-deps --find-links wheels $(addprefix --find-links ,$(FIND_LINKS)) \
		-r requirements.lock
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

# DATA=kws: keyword spotting instead of the digits (its preset merged into
# params.yaml, espeak-ng installed from Debian's packages when missing; `git checkout
# params.yaml` goes back to the digits).
run: $(STAMP)
	$(if $(DATA),$(if $(filter kws,$(DATA)),bash tests/system_packages.sh espeak-ng &&) $(BIN)/edgeloop data use $(DATA))
	$(BIN)/edgeloop up
	$(BIN)/edgeloop run
	$(BIN)/edgeloop loop

# The closed loop alone, on running services with a champion: fleet, drift,
# retraining, rollout (docs/concepts/drift.md, "The loop, end to end").
loop: $(STAMP)
	$(BIN)/edgeloop loop

# The whole suite, as CI runs it. tests/system_packages.sh installs Debian's
# PostgreSQL and Chromium when missing: the backend tests and the browser test use
# them for real, and fail (not skip) here. Every test has pytest-timeout's limit
# (pyproject.toml): a hung test fails with its name. TEST_WORKERS pytest-xdist
# workers (one per core here) take a module each at a time (tests/conftest.py);
# most of a test's time is a server starting or a device polling, not the CPU.
# One OpenMP thread per worker: two workers of two threads each on two cores spin
# against each other (three unit modules: 159 s with the default, 73 s with one).
TEST_WORKERS ?= 2
TEST_ENV = OMP_NUM_THREADS=1
test: $(STAMP)
	$(BIN)/lint-imports --no-cache
	bash tests/system_packages.sh
	$(TEST_ENV) EDGELOOP_REQUIRE_POSTGRES=1 EDGELOOP_REQUIRE_CHROMIUM=1 $(BIN)/pytest -q -rs \
		--durations=25 -n $(TEST_WORKERS) --dist loadgroup --no-loadscope-reorder

# The unit tier, for the inner loop: no servers, no training beyond tiny in-memory
# fixtures (tests marked neither `integration` nor `slow`).
test-fast: $(STAMP)
	$(TEST_ENV) $(BIN)/pytest -q -rs -m "not integration and not slow" --timeout=120 --durations=10 \
		-n $(TEST_WORKERS) --dist loadgroup --no-loadscope-reorder

# Serving against a hand-written FastAPI endpoint, measured by wrk (docs/measurements.md,
# "Serving throughput"); needs the stack's MLflow with a champion (`make run` first).
bench-serving: $(STAMP)
	bash tests/system_packages.sh
	$(BIN)/python -m bench.serving_throughput

# The device agent as its own wheel (edge_fleet/device/pyproject.toml): dist/.
agent-wheel: $(STAMP)
	$(BIN)/python -m stack.agent_dist --out dist

# The agent's footprint: installed size per runtime, memory idle and answering,
# cold start, time to answer with a new version (docs/tutorials/gateway-agent.md).
bench-agent: $(STAMP)
	$(BIN)/python -m bench.agent_footprint

# ruff, and the layers of DESIGN.md as import-linter contracts (pyproject.toml).
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports --no-cache

up: $(STAMP)
	$(BIN)/edgeloop up

down: $(STAMP)
	$(BIN)/edgeloop down

status: $(STAMP)
	$(BIN)/edgeloop status

clean:
	-$(BIN)/edgeloop down
	rm -rf $(VENV) .edgeloop models reports

# The documentation site (docs/, mkdocs.yml) on 127.0.0.1:8001; `mkdocs build
# --strict` is what tests/test_docs.py runs in `make test`.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs serve --dev-addr 127.0.0.1:8001
