#!/usr/bin/env bash
# The base of the CPU test image: a minimal Debian (debootstrap, the suite and mirror this
# machine's apt uses) with python3 and its venv module, made an image by `docker import`.
# No image can be pulled on the test machines, and the Dockerfiles need only a python3 >= 3.11.
#
#   docker/cpu-test-base.sh [TAG]        prints the tag; default algoperf-test-base:<suite>
#
# The root file system's tarball is cached (ALGOPERF_DOCKER_CACHE, default
# ~/.cache/algoperf/docker): debootstrap takes about 80 s, the import of the tarball 3 s.
set -euo pipefail

suite=${DEBIAN_SUITE:-$(. /etc/os-release && echo "${VERSION_CODENAME:-}")}
tag=${1:-algoperf-test-base:${suite}}
cache=${ALGOPERF_DOCKER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/algoperf/docker}

if docker image inspect "$tag" >/dev/null 2>&1; then
    echo "$tag"
    exit 0
fi

# The first mirror apt's sources name for this suite (deb822 .sources or one-line lists).
apt_mirror() {
    local f
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -e "$f" ] || continue
        awk -v suite="$suite" '
            /^URIs:/ { uri = $2 }
            /^Suites:/ { for (i = 2; i <= NF; i++) if ($i == suite && uri != "") { print uri; exit } }
            /^$/ { uri = "" }' "$f"
    done
    cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null \
        | awk -v suite="$suite" '$1 == "deb" && $3 == suite { print $2 }' || true
}

tarball="$cache/debian-${suite}-python3.tar"
if [ ! -s "$tarball" ]; then
    mirror=${DEBIAN_MIRROR:-$(apt_mirror | head -n 1 || true)}
    if [ -z "$suite" ] || [ -z "$mirror" ]; then
        echo "cpu-test-base: no Debian suite/mirror found in /etc/os-release and apt's sources;" \
             "set DEBIAN_SUITE and DEBIAN_MIRROR." >&2
        exit 2
    fi
    mkdir -p "$cache"
    rootfs=$(mktemp -d "$cache/rootfs.XXXXXX")
    trap 'rm -rf "$rootfs"' EXIT
    echo "cpu-test-base: debootstrap $suite from $mirror (log: $cache/debootstrap.log)" >&2
    if ! debootstrap --variant=minbase --include=python3,python3-venv \
            "$suite" "$rootfs" "$mirror" >"$cache/debootstrap.log" 2>&1; then
        tail -n 20 "$cache/debootstrap.log" >&2
        exit 1
    fi
    # What an image never reads: downloaded packages, package lists, documentation.
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* \
        "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/locale/*
    tar -C "$rootfs" -cf "$tarball.tmp" .
    mv "$tarball.tmp" "$tarball"
fi
docker import --message "debootstrap --variant=minbase $suite + python3" "$tarball" "$tag" >/dev/null
echo "$tag"
