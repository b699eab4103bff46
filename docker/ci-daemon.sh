#!/usr/bin/env bash
# Makes a Docker daemon answer for the Docker tests of `make test`: installs Debian's docker.io
# and debootstrap when missing, and starts dockerd when no daemon answers, never with Docker's
# default bridge network (these machines have no network to bridge to; the tests build and run
# with --network none). Never fails: when the daemon cannot start (no root, no privileges), it
# says why, writes the reason where the tests read it, and the Docker tests skip with it.
set -uo pipefail

cache=${ALGOPERF_DOCKER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/algoperf/docker}
mkdir -p "$cache"
reason_file="$cache/daemon-unavailable.txt"
rm -f "$reason_file"

unavailable() {
    echo "docker: $1" >&2
    echo "$1" >"$reason_file"
    exit 0
}

answers() { timeout 10 docker info >/dev/null 2>&1; }

if command -v docker >/dev/null 2>&1 && answers; then
    echo "docker: a daemon answers"
    exit 0
fi
if ! command -v dockerd >/dev/null 2>&1 || ! command -v debootstrap >/dev/null 2>&1; then
    [ "$(id -u)" = 0 ] || unavailable "dockerd/debootstrap are not installed and installing them needs root"
    echo "docker: installing Debian's docker.io and debootstrap" >&2
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
        docker.io debootstrap; } >"$cache/apt.log" 2>&1 \
        || unavailable "apt-get install docker.io debootstrap failed (see $cache/apt.log)"
fi
[ "$(id -u)" = 0 ] || unavailable "no daemon answers and starting dockerd needs root"
nohup dockerd --bridge=none --iptables=false --ip6tables=false >"$cache/dockerd.log" 2>&1 &
for _ in $(seq 60); do
    if answers; then
        echo "docker: dockerd started (log: $cache/dockerd.log)"
        exit 0
    fi
    sleep 0.5
done
unavailable "dockerd did not answer within 30 s: $(tail -n 3 "$cache/dockerd.log" | tr '\n' ' ')"
