#!/usr/bin/env bash
# The CPU test images of tests/test_docker.py: docker/Dockerfile.<framework> built by `algoperf
# docker build` on the local Debian base (cpu-test-base.sh), with --network none from a wheelhouse
# of the locked versions: the image's default extras (<framework>,data) with the CPU builds (no
# jax[cuda12] plugin), and no .pyc files but those a run imports (compiling them all takes most
# of the build's time).
#
#   docker/cpu-test-image.sh [pytorch|jax]               builds it (layers cached), prints its tag
#   docker/cpu-test-image.sh --background [pytorch|jax]  the same in the background, for `make
#                                                        test`: ready when the Docker tests run
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cache=${ALGOPERF_DOCKER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/algoperf/docker}
python=${PYTHON:-$root/.venv/bin/python}
mkdir -p "$cache"

if [ "${1:-}" = --background ]; then
    shift
    if [ -e "$cache/daemon-unavailable.txt" ]; then
        exit 0
    fi
    nohup bash "$0" "$@" >"$cache/cpu-test-image.log" 2>&1 &
    echo "docker: building the CPU test image in the background (log: $cache/cpu-test-image.log)"
    exit 0
fi
framework=${1:-pytorch}
case "$framework" in
    pytorch) build_args=() ;;
    jax) build_args=(--build-arg JAX_CUDA=false) ;;
    *) echo "cpu-test-image: unknown framework $framework (pytorch or jax)" >&2; exit 2 ;;
esac
tag=algoperf:${framework}-cpu-test
extras=${framework},data

# One build at a time: the tests wait here for the one `make test` started.
exec 9>"$cache/cpu-test-image.lock"
flock -w 3600 9

start=$(date +%s)
base=$(bash "$root/docker/cpu-test-base.sh")
base_done=$(date +%s)
wheels="$cache/wheels-${framework}-data"
stamp=$(sha256sum "$root/docker/constraints.txt" | cut -d' ' -f1)
if [ "$(cat "$wheels/.constraints-sha256" 2>/dev/null)" != "$stamp" ]; then
    "$python" -m algoperf.cli docker wheelhouse "$wheels" --extras "$extras" 2>"$cache/wheelhouse.log" >&2 \
        || { tail -n 20 "$cache/wheelhouse.log" >&2; exit 1; }
    echo "$stamp" >"$wheels/.constraints-sha256"
fi
wheels_done=$(date +%s)
"$python" -m algoperf.cli docker build --framework "$framework" --base-image "$base" --tag "$tag" \
    --extras "$extras" --wheelhouse "$wheels" --offline --network none \
    --build-arg COMPILE_BYTECODE=false "${build_args[@]}" >&2
# The images this replaced (a rebuilt layer leaves the old image untagged).
docker image prune --force --filter label=algoperf.framework >/dev/null
end=$(date +%s)
echo "cpu-test-image: $tag ready in $((end - start)) s (base $((base_done - start)) s," \
     "wheelhouse $((wheels_done - base_done)) s, build $((end - wheels_done)) s)" >&2
echo "$tag"
