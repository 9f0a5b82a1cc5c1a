#!/usr/bin/env bash
# What the image does at run time, checked without a Docker engine (docs/deployment.md):
#  1. replays the Dockerfile's two `uv sync` steps (same uv, same flags, the same build
#     context as .dockerignore lets through) into /opt/qp-check/venv;
#  2. starts the gateway from that venv under tini as PID 1, on a read-only root filesystem
#     with only /tmp and DAGSTER_HOME writable (bubblewrap), with deploy/dagster.yaml as its
#     instance, against PostgreSQL and Redis on loopback;
#  3. waits for /health/startup, runs the image's HEALTHCHECK command, sends SIGTERM to tini
#     and shows that the gateway shut down cleanly.
# Needs: apt-get install tini bubblewrap; PostgreSQL on 127.0.0.1:5432 (trust), Redis on
# 127.0.0.1:6379. Run as root from the repository root: bash tools/check_image_runtime.sh
set -euo pipefail
cd "$(dirname "$0")/.."
UV=$(command -v uv || echo .tools/bin/uv)
CHECK=/opt/qp-check
rm -rf "$CHECK" && mkdir -p "$CHECK/context"
cp -r pyproject.toml uv.lock README.md queue_pipelines resources sensors "$CHECK/context/"
find "$CHECK/context" -name __pycache__ -prune -exec rm -rf {} +
(
  cd "$CHECK/context"
  export UV_PROJECT_ENVIRONMENT=$CHECK/venv UV_PYTHON=python3.11 UV_PYTHON_DOWNLOADS=never \
    UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy
  "$OLDPWD/$UV" sync --frozen --no-dev --no-install-project
  "$OLDPWD/$UV" sync --frozen --no-dev --no-editable
)
for tool in pytest ruff hadolint; do
  if [ -e "$CHECK/venv/bin/$tool" ]; then echo "dev tool $tool in the production venv" >&2; exit 1; fi
done

DB=qp_image_check_$RANDOM
psql -h 127.0.0.1 -U postgres -qc "CREATE DATABASE $DB"
HOME_DIR=$CHECK/dagster_home
mkdir -p "$HOME_DIR"
cp deploy/dagster.yaml "$HOME_DIR/dagster.yaml"
PORT=3911
export DAGSTER_HOME=$HOME_DIR DAGSTER_POSTGRES_URL=postgresql://postgres@127.0.0.1:5432/$DB \
  DAGSTER_K8S_PIPELINE_RUN_NAMESPACE=queue-pipelines REDIS_URL=redis://127.0.0.1:6379/0 \
  GATEWAY_JWT_SECRET=image-check-secret-0123456789abcdef QUEUE_KEY_PREFIX=qp-image-check
READ_ONLY_ROOT=(bwrap --ro-bind / / --dev /dev --proc /proc --tmpfs /tmp
  --bind "$HOME_DIR" "$HOME_DIR" --unshare-pid --as-pid-1)
"${READ_ONLY_ROOT[@]}" sh -c 'touch /usr/probe 2>/dev/null && echo "root is writable" && exit 1; echo "root: read-only"'

START=$(date +%s.%N)
"${READ_ONLY_ROOT[@]}" /usr/bin/tini -- "$CHECK/venv/bin/queue-pipelines" gateway --port $PORT \
  > "$CHECK/gateway.log" 2>&1 &
BWRAP=$!
code=000
for _ in $(seq 1 1200); do
  code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT/health/startup" || true)
  [ "$code" = 200 ] && break
  sleep 0.1
done
echo "/health/startup: $code after $(echo "$(date +%s.%N) - $START" | bc) s (load: $(cut -d' ' -f1 /proc/loadavg))"
python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$PORT/health/live', timeout=4)" \
  && echo "HEALTHCHECK command: passed"
echo "metric families: $(curl -s "http://127.0.0.1:$PORT/metrics" | grep -c '^# TYPE')"
TINI=$(pgrep -f "^/usr/bin/tini -- $CHECK/venv" | head -1)
ps -o pid,ppid,args --forest -g "$(ps -o sid= -p $BWRAP | tr -d ' ')" | grep -E "tini|gateway" | grep -v grep || true
kill -TERM "$TINI"
status=0; wait "$BWRAP" || status=$?
echo "after SIGTERM to tini: exit status $status (143 = uvicorn re-raised SIGTERM after a clean shutdown)"
tail -5 "$CHECK/gateway.log"
echo "written under DAGSTER_HOME: $(find "$HOME_DIR" -mindepth 1 ! -name dagster.yaml | wc -l) files"
psql -h 127.0.0.1 -U postgres -qc "DROP DATABASE $DB WITH (FORCE)"
[ "$code" = 200 ] && grep -q "Application shutdown complete" "$CHECK/gateway.log"
