#!/usr/bin/env bash
# A local Prefect stack: server (SQLite), one process worker per pool (cpu, gpu), deployments.
#   deployments/stack.sh up     start it (idempotent) and register the deployments
#   deployments/stack.sh down   stop exactly what `up` started (workers first, then the server)
# Settings: PREFECT_PORT (4200), STACK_DIR (.prefect-stack), PYTHON_BIN (.venv/bin).
#   PREFECT_DB=postgres   the server on PostgreSQL (deployments/postgres.sh) instead of SQLite
#   STACK_DOCKER=1        also the docker-cpu and docker-gpu pools (deployments/docker_pools.py)
#                         and a Docker worker for each (DOCKER_HOST picks the engine); then
#                         STACK_DOCKER_GPUS (all, none or a count) and DOCKER_WORKER_LIMIT (4)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PORT=${PREFECT_PORT:-4200}
DIR=$(realpath -m "${STACK_DIR:-.prefect-stack}")
BIN=${PYTHON_BIN:-$ROOT/.venv/bin}
export PREFECT_HOME="$DIR/home" PREFECT_API_URL="http://127.0.0.1:$PORT/api"
export PREFECT_SERVER_ANALYTICS_ENABLED=false PREFECT_SERVER_API_HOST=127.0.0.1 PREFECT_SERVER_API_PORT=$PORT
export PREFECT_UI_API_URL="$PREFECT_API_URL" STABLEREP_ROOT="$ROOT" HF_HUB_OFFLINE=1
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
PREFECT_DB=${PREFECT_DB:-sqlite}
STACK_DOCKER=${STACK_DOCKER:-0}
case $PREFECT_DB in
  sqlite) ;;
  postgres) source deployments/postgres.sh ;;
  *) echo "PREFECT_DB must be sqlite or postgres, not '$PREFECT_DB'"; exit 2 ;;
esac

alive() { [[ -f "$DIR/$1.pid" ]] && kill -0 "$(cat "$DIR/$1.pid")" 2>/dev/null; }

start() {  # start NAME CMD...: in its own session, logging to DIR/NAME.log
  local name=$1; shift
  if alive "$name"; then echo "$name already running (pid $(cat "$DIR/$name.pid"))"; return; fi
  setsid "$@" > "$DIR/$name.log" 2>&1 < /dev/null &
  echo $! > "$DIR/$name.pid"
}

stop() {  # stop NAME...: SIGINT to their process groups (what Ctrl-C sends), SIGKILL after 15 s
  local name pids=()
  for name in "$@"; do
    if alive "$name"; then pids+=("$(cat "$DIR/$name.pid")"); kill -INT -- "-${pids[-1]}" 2>/dev/null || true; fi
  done
  for _ in $(seq 30); do
    local left=0 pid
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && left=1; done
    [[ $left == 0 ]] && break
    sleep 0.5
  done
  for pid in "${pids[@]}"; do kill -KILL -- "-$pid" 2>/dev/null || true; done
  for name in "$@"; do rm -f "$DIR/$name.pid"; done
  [[ ${#pids[@]} -gt 0 ]] && echo "stopped $*" || true
}

up() {
  mkdir -p "$DIR"
  [[ $PREFECT_DB == postgres ]] && db_up
  start server "$BIN/prefect" server start --host 127.0.0.1 --port "$PORT"
  for _ in $(seq 120); do
    curl -sf "http://127.0.0.1:$PORT/api/health" > /dev/null && break
    alive server || { echo "server failed to start:"; tail -20 "$DIR/server.log"; exit 1; }
    sleep 0.5
  done
  curl -sf "http://127.0.0.1:$PORT/api/health" > /dev/null || { echo "server not ready"; exit 1; }
  for pool in cpu gpu; do
    "$BIN/prefect" work-pool inspect "$pool" > /dev/null 2>&1 || "$BIN/prefect" work-pool create "$pool" --type process > /dev/null
  done
  [[ $STACK_DOCKER == 1 ]] && docker_pools
  # the deployments of the pools this stack serves (docker-* only with STACK_DOCKER=1)
  local names
  names=$("$BIN/python" -c 'import sys, yaml
for d in yaml.safe_load(open("deployments/prefect.yaml"))["deployments"]:
    if sys.argv[1] == "1" or not d["work_pool"]["name"].startswith("docker-"): print("-n", d["name"])' "$STACK_DOCKER")
  # shellcheck disable=SC2086 # one word per name
  "$BIN/prefect" --no-prompt deploy $names --prefect-file deployments/prefect.yaml > "$DIR/deploy.log" 2>&1 \
    || { tail -30 "$DIR/deploy.log"; exit 1; }
  for pool in cpu gpu; do
    start "worker-$pool" "$BIN/prefect" worker start --pool "$pool" --type process --limit 1
  done
  if [[ $STACK_DOCKER == 1 ]]; then
    for pool in docker-cpu docker-gpu; do
      start "worker-$pool" "$BIN/prefect" worker start --pool "$pool" --type docker --limit "${DOCKER_WORKER_LIMIT:-4}"
    done
  fi
  echo "Prefect UI: http://127.0.0.1:$PORT   (export PREFECT_API_URL=$PREFECT_API_URL)"
  echo "deployments registered; try: prefect deployment run 'stablerep-pipeline/offline-demo' --watch"
}

docker_pools() {  # the Docker pools, their S3 environment (credentials as Secret blocks) and GPU request
  "$BIN/python" deployments/docker_pools.py --gpus "${STACK_DOCKER_GPUS:-all}" || exit 1
}

down() {
  # workers first: a worker without its server ignores signals for a while
  stop worker-cpu worker-gpu worker-docker-cpu worker-docker-gpu
  stop server
  [[ $PREFECT_DB == postgres ]] && db_down
  return 0
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  *) echo "usage: $0 up|down"; exit 2 ;;
esac
