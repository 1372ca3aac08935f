#!/usr/bin/env bash
# A Docker engine and the image on a machine where no image registry is reachable and containers
# may only use the host's network (as on our development and CI machines):
#   docker/local.sh start    start dockerd with no bridge network (prints the DOCKER_HOST to export)
#   docker/local.sh base     local/debian:bookworm from Debian's packages (debootstrap), once
#   docker/local.sh build    stablerep:latest from docker/Dockerfile on that base (host network)
#   docker/local.sh services stand-ins for compose's postgres and SeaweedFS images (compose.local.yaml)
#   docker/local.sh stop     stop the dockerd that `start` started
# Needs root and `apt-get install docker.io debootstrap`. Images and the build cache live in
# DOCKER_DATA (/var/lib/stablerep-docker) and survive `stop`, so a rebuild redoes only the layers
# whose inputs changed. Settings: DOCKER_RUN (/tmp/stablerep-docker: socket, pid, log),
# IMAGE (stablerep:latest), BASE_IMAGE (local/debian:bookworm), DEBIAN_MIRROR (what apt uses).
set -euo pipefail
cd "$(dirname "$0")/.."
RUN_DIR=${DOCKER_RUN:-/tmp/stablerep-docker}
DATA=${DOCKER_DATA:-/var/lib/stablerep-docker}
SOCK=$RUN_DIR/docker.sock
IMAGE=${IMAGE:-stablerep:latest}
BASE_IMAGE=${BASE_IMAGE:-local/debian:bookworm}
# the client of the docker.io package: it builds with BuildKit by itself (newer clients need buildx)
DOCKER=${DOCKER:-$( [[ -x /usr/bin/docker ]] && echo /usr/bin/docker || command -v docker || echo docker)}
export DOCKER_HOST=${DOCKER_HOST:-unix://$SOCK}

engine_up() { "$DOCKER" version > /dev/null 2>&1; }

start() {  # exit 3: no engine can run here (no dockerd, not root); 1: it failed to start
  if engine_up; then echo "export DOCKER_HOST=$DOCKER_HOST  # already running"; return; fi
  command -v dockerd > /dev/null || { echo "no dockerd: apt-get install docker.io"; exit 3; }
  [[ $(id -u) == 0 ]] || { echo "dockerd needs root"; exit 3; }
  mkdir -p "$RUN_DIR" "$DATA"
  # No bridge: containers get no private-range addresses; every container and build uses
  # --network host (compose: network_mode: host).
  setsid dockerd --bridge=none --iptables=false --ip-masq=false --data-root "$DATA" \
    --exec-root "$RUN_DIR/exec" --pidfile "$RUN_DIR/dockerd.pid" -H "unix://$SOCK" \
    > "$RUN_DIR/dockerd.log" 2>&1 < /dev/null &
  for _ in $(seq 120); do
    engine_up && { echo "export DOCKER_HOST=unix://$SOCK  # started dockerd $(cat "$RUN_DIR/dockerd.pid")"; return; }
    kill -0 $! 2> /dev/null || break
    sleep 0.5
  done
  echo "dockerd did not start:"; tail -15 "$RUN_DIR/dockerd.log"; exit 1
}

stop() {
  local pid
  [[ -f $RUN_DIR/dockerd.pid ]] || { echo "no dockerd started by $0"; return; }
  pid=$(cat "$RUN_DIR/dockerd.pid")
  kill -TERM "$pid" 2> /dev/null || true
  for _ in $(seq 60); do kill -0 "$pid" 2> /dev/null || break; sleep 0.5; done
  kill -KILL "$pid" 2> /dev/null || true
  # dockerd leaves its default network namespace mounted under its exec root
  if grep -qs " $RUN_DIR/exec/netns/default " /proc/mounts; then umount "$RUN_DIR/exec/netns/default" || true; fi
  rm -f "$RUN_DIR/dockerd.pid"
  echo "stopped dockerd ($pid)"
}

debian_mirror() {  # the Debian mirror apt uses here
  local uri
  uri=$(grep -hsE '^(URIs:|deb )' /etc/apt/sources.list.d/*.sources /etc/apt/sources.list \
        | grep -v security | head -1 | sed -E 's/^URIs: *//; s/^deb (\[[^]]*\] )?//; s/ .*//')
  echo "${DEBIAN_MIRROR:-${uri:-http://deb.debian.org/debian}}"
}

base() {
  if "$DOCKER" image inspect "$BASE_IMAGE" > /dev/null 2>&1; then echo "$BASE_IMAGE present"; return; fi
  command -v debootstrap > /dev/null || { echo "no debootstrap: apt-get install debootstrap"; exit 3; }
  local rootfs
  rootfs=$(mktemp -d /tmp/stablerep-rootfs.XXXXXX)
  debootstrap --variant=minbase bookworm "$rootfs" "$(debian_mirror)" > "$RUN_DIR/debootstrap.log" 2>&1 \
    || { rm -rf "$rootfs"; tail -15 "$RUN_DIR/debootstrap.log"; exit 1; }
  tar -C "$rootfs" -c . | "$DOCKER" import - "$BASE_IMAGE" > /dev/null
  rm -rf "$rootfs"
  echo "$BASE_IMAGE imported"
}

build_image() {  # build_image TAG DOCKERFILE [docker build options]
  local tag=$1 file=$2; shift 2
  local args=(-f "$file" --build-arg "BASE=$BASE_IMAGE" --network host -t "$tag" "$@")
  # behind a TLS-intercepting proxy pip needs this machine's CA bundle: a build secret, in no layer
  local ca=${PIP_CERT:-/etc/ssl/certs/ca-certificates.crt}
  [[ -f $ca ]] && args+=(--secret "id=pip-ca,src=$ca")
  DOCKER_BUILDKIT=1 "$DOCKER" build --progress plain "${args[@]}" . > "$RUN_DIR/build.log" 2>&1 \
    || { tail -30 "$RUN_DIR/build.log"; exit 1; }
  "$DOCKER" image inspect "$tag" --format "$tag {{.Id}} {{.Size}} bytes"
}

build() { build_image "$IMAGE" docker/Dockerfile; }

services() {
  build_image stablerep-postgres:local docker/services.Dockerfile --target postgres
  build_image stablerep-seaweedfs:local docker/services.Dockerfile --target seaweedfs
}

mkdir -p "$RUN_DIR"
case "${1:-}" in
  start) start ;;
  stop) stop ;;
  base) base ;;
  build) build ;;
  services) services ;;
  *) echo "usage: $0 start|base|build|services|stop"; exit 2 ;;
esac
