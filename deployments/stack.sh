#!/usr/bin/env bash
# A local Prefect stack: server (SQLite), process workers for the pools (cpu, gpu), deployments.
#   deployments/stack.sh up        start it (idempotent) and register the deployments
#   deployments/stack.sh workers   start again any worker that is not running
#   deployments/stack.sh down      stop exactly what `up` started (workers first, then the server)
# Settings: PREFECT_PORT (4200), STACK_DIR (.prefect-stack), PYTHON_BIN (.venv/bin),
#   STACK_GPU_WORKERS (1): process workers on the gpu pool, one flow run each;
#   STACK_HEARTBEAT_S (30): flow-run heartbeat period; STACK_ZOMBIE_AFTER_S (120): a run without a
#   heartbeat this long is marked Crashed (deployments/automations.py), and its batch runs again;
#   STACK_PENDING_AFTER_S (300): the same for a run a worker took that never started.
#   PREFECT_DB=postgres   the server on PostgreSQL (deployments/postgres.sh) instead of SQLite
#   STACK_DOCKER=1        also the docker-cpu and docker-gpu pools (deployments/docker_pools.py)
#                         and a Docker worker for each (DOCKER_HOST picks the engine); then
#                         STACK_DOCKER_GPUS (all, none or a count) and DOCKER_WORKER_LIMIT (4)
# The server requires basic auth: PREFECT_API_AUTH_STRING (user:password) from the environment, or
# one generated on first `up` into STACK_DIR/auth.env (mode 600; `source` it to use the CLI).
# Credentials travel in the environment only, never on a command line.
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
export PREFECT_FLOWS_HEARTBEAT_FREQUENCY=${STACK_HEARTBEAT_S:-30}
GPU_WORKERS=${STACK_GPU_WORKERS:-1}
ZOMBIE_AFTER=${STACK_ZOMBIE_AFTER_S:-120}
PENDING_AFTER=${STACK_PENDING_AFTER_S:-300}
PREFECT_DB=${PREFECT_DB:-sqlite}
STACK_DOCKER=${STACK_DOCKER:-0}
case $PREFECT_DB in
  sqlite) ;;
  postgres) source deployments/postgres.sh ;;
  *) echo "PREFECT_DB must be sqlite or postgres, not '$PREFECT_DB'"; exit 2 ;;
esac

credentials() {  # the basic-auth string: the user's, or one made once into DIR/auth.env (mode 600)
  mkdir -p "$DIR"
  if [[ -z "${PREFECT_API_AUTH_STRING:-}" ]]; then
    if [[ ! -s "$DIR/auth.env" ]]; then
      local password  # printf is a shell builtin: the password never appears in a process listing
      password=$("$BIN/python" -c 'import secrets; print(secrets.token_urlsafe(24))')
      (umask 077 && printf 'export PREFECT_API_AUTH_STRING=stablerep:%s\n' "$password" > "$DIR/auth.env")
    fi
    # shellcheck source=/dev/null
    source "$DIR/auth.env"
  fi
  export PREFECT_API_AUTH_STRING PREFECT_SERVER_API_AUTH_STRING="$PREFECT_API_AUTH_STRING"
}

alive() { [[ -f "$DIR/$1.pid" ]] && kill -0 "$(cat "$DIR/$1.pid")" 2>/dev/null; }

start() {  # start NAME CMD...: in its own session, logging to DIR/NAME.log (appended on restarts)
  local name=$1; shift
  if alive "$name"; then echo "$name already running (pid $(cat "$DIR/$name.pid"))"; return; fi
  setsid "$@" >> "$DIR/$name.log" 2>&1 < /dev/null &
  echo $! > "$DIR/$name.pid"
}

tree() {  # tree PID: the processes below PID (a worker's flow runs run in sessions of their own)
  local child
  for child in $(pgrep -P "$1" || true); do echo "$child"; tree "$child"; done
}

stop() {  # stop NAME...: SIGINT to their process groups (what Ctrl-C sends), SIGKILL after 15 s,
  local name pids=() below=()  # and then to any flow-run process that outlived its worker
  for name in "$@"; do
    if alive "$name"; then
      pids+=("$(cat "$DIR/$name.pid")")
      mapfile -t -O "${#below[@]}" below < <(tree "${pids[-1]}")
      kill -INT -- "-${pids[-1]}" 2>/dev/null || true
    fi
  done
  for _ in $(seq 30); do
    local left=0 pid
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && left=1; done
    [[ $left == 0 ]] && break
    sleep 0.5
  done
  for pid in "${pids[@]}"; do kill -KILL -- "-$pid" 2>/dev/null || true; done
  for pid in "${below[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  for name in "$@"; do rm -f "$DIR/$name.pid"; done
  [[ ${#pids[@]} -gt 0 ]] && echo "stopped $*" || true
}

workers() {  # one process worker on the cpu pool, STACK_GPU_WORKERS on the gpu pool
  start worker-cpu "$BIN/prefect" worker start --pool cpu --type process --limit 1 --name worker-cpu
  local i name
  for i in $(seq "$GPU_WORKERS"); do
    name=worker-gpu$([[ $i == 1 ]] || echo "-$i")
    start "$name" "$BIN/prefect" worker start --pool gpu --type process --limit 1 --name "$name"
  done
  if [[ $STACK_DOCKER == 1 ]]; then
    for pool in docker-cpu docker-gpu; do
      start "worker-$pool" "$BIN/prefect" worker start --pool "$pool" --type docker --limit "${DOCKER_WORKER_LIMIT:-4}" \
        --name "worker-$pool"
    done
  fi
}

up() {
  credentials
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
  "$BIN/python" deployments/automations.py --within "$ZOMBIE_AFTER" --pending-within "$PENDING_AFTER" >> "$DIR/deploy.log" 2>&1 \
    || { tail -30 "$DIR/deploy.log"; exit 1; }
  workers
  echo "Prefect UI: http://127.0.0.1:$PORT   (export PREFECT_API_URL=$PREFECT_API_URL)"
  if [[ -f "$DIR/auth.env" ]]; then
    echo "credentials: source $DIR/auth.env   (the UI asks for the same user:password)"
  fi
  echo "deployments registered; try: prefect deployment run 'stablerep-pipeline/offline-demo' --watch"
}

docker_pools() {  # the Docker pools, their S3 environment (credentials as Secret blocks) and GPU request
  "$BIN/python" deployments/docker_pools.py --gpus "${STACK_DOCKER_GPUS:-all}" || exit 1
}

down() {
  local pid names=()
  for pid in "$DIR"/worker-*.pid; do [[ -e $pid ]] && names+=("$(basename "$pid" .pid)"); done
  # workers first: a worker without its server ignores signals for a while
  if [[ ${#names[@]} -gt 0 ]]; then stop "${names[@]}"; fi
  stop server
  [[ $PREFECT_DB == postgres ]] && db_down
  return 0
}

case "${1:-}" in
  up) up ;;
  workers) credentials; workers ;;
  down) down ;;
  *) echo "usage: $0 up|workers|down"; exit 2 ;;
esac
