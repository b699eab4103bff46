"""`algoperf docker build|run|lock|wheelhouse`: one image per framework, driven by the Docker SDK.

The images (`docker/Dockerfile.pytorch`, `docker/Dockerfile.jax`) hold one framework each and have
`algoperf` as their entrypoint (DESIGN.md, Scale). `run` mounts the data and experiment
directories, runs as the caller's uid (so the logs on the host are the caller's), requests GPUs,
and hands the container the image's name, id and digest (ALGOPERF_IMAGE, ALGOPERF_IMAGE_ID,
ALGOPERF_IMAGE_DIGEST), which the trial writes into its `meta_data_<p>.json`: a result names the
exact image it ran in.

Builds without a network (air-gapped clusters, and the tests here) take their wheels from a
wheelhouse (`algoperf docker wheelhouse DIR`, then `build --wheelhouse DIR --offline`); the
versions are the lock measured here (`docker/constraints.txt`, written by `algoperf docker lock`).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import platform
import signal
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
FRAMEWORKS = ("pytorch", "jax")
LOCK_FILE = REPO_ROOT / "docker" / "constraints.txt"
# The extras the lock covers: every framework and the data readers (what the images install).
LOCK_EXTRAS = ("pytorch", "jax", "data")
# Build tools the images need beside the project's dependencies (the project is built in place).
BUILD_TOOLS = ("setuptools",)
WHEELS_IN_CONTEXT = "docker/wheels"
CONTAINER_DATA_DIR = "/data"
CONTAINER_EXPERIMENT_DIR = "/experiments"
# The environment a container's trial reads to record where it ran (algoperf.metadata).
ENV_IMAGE, ENV_IMAGE_ID, ENV_IMAGE_DIGEST = "ALGOPERF_IMAGE", "ALGOPERF_IMAGE_ID", "ALGOPERF_IMAGE_DIGEST"
# Host variables a trial reads, handed on to the container unchanged.
PASSED_ENV = ("ALGOPERF_DATASET_MIRROR",)


def default_tag(framework: str) -> str:
    return f"algoperf:{framework}"


def dockerfile(framework: str) -> str:
    return f"docker/Dockerfile.{framework}"


# ---- the lock: versions measured to co-install here -----------------------------------------
def _requirement_closure(name: str, extras: Iterable[str]) -> dict[str, str]:
    """{distribution: installed version} of `name[extras]` and everything it needs, recursively.

    Reads the installed distributions' own metadata, so the result is what co-installs in this
    environment (the tests' environment), not what a resolver might pick elsewhere.
    """
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    seen: set[tuple[str, frozenset[str]]] = set()
    versions: dict[str, str] = {}
    stack = [(name, frozenset(extras))]
    while stack:
        dist_name, dist_extras = stack.pop()
        key = (str(canonicalize_name(dist_name)), dist_extras)
        if key in seen:
            continue
        seen.add(key)
        try:
            dist = importlib.metadata.distribution(dist_name)
        except importlib.metadata.PackageNotFoundError:
            raise RuntimeError(
                f"{dist_name} (needed by {name}[{','.join(extras)}]) is not installed in {sys.prefix}. "
                "Run `make install` first: the lock is read off an environment that has every extra."
            ) from None
        versions[key[0]] = dist.version
        for line in dist.requires or []:
            req = Requirement(line)
            wanted = dist_extras | {""}
            if req.marker is None or any(req.marker.evaluate({"extra": e}) for e in wanted):
                stack.append((req.name, frozenset(req.extras)))
    return versions


def _public(version: str) -> str:
    """`2.13.0+cpu` -> `2.13.0`: `==2.13.0` then admits the CPU and the CUDA builds alike (PEP 440)."""
    return version.split("+", 1)[0]


def pinned_closure(extras: Iterable[str]) -> dict[str, str]:
    """{distribution: public version} the project's `extras` need, with the build tools."""
    versions = _requirement_closure("algoperf", extras)
    versions.pop("algoperf", None)
    for tool in BUILD_TOOLS:
        versions[tool] = importlib.metadata.version(tool)
    return {name: _public(v) for name, v in sorted(versions.items())}


def lock_text() -> str:
    pins = pinned_closure(LOCK_EXTRAS)
    header = [
        "# Versions measured to co-install here: the installed closure of",
        f"# algoperf[{','.join(LOCK_EXTRAS)}] and {', '.join(BUILD_TOOLS)} on Python "
        f"{platform.python_version()}.",
        "# Written by `algoperf docker lock`; the Dockerfiles install under these constraints.",
    ]
    return "\n".join(header + [f"{n}=={v}" for n, v in pins.items()]) + "\n"


def read_lock(path: Path = LOCK_FILE) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            pins[name.strip()] = version.strip()
    return pins


def cmd_lock(args: argparse.Namespace) -> int:
    path = Path(args.out)
    path.write_text(lock_text())
    print(f"wrote {path} ({len(read_lock(path))} pins)")
    return 0


# ---- the wheelhouse: every wheel an offline build needs ---------------------------------------
def cmd_wheelhouse(args: argparse.Namespace) -> int:
    """The wheels of the locked closure: downloaded (pip's configuration says from where) or built."""
    extras = [e for e in args.extras.split(",") if e]
    pins = pinned_closure(extras)
    lock = read_lock()
    stale = {n: v for n, v in pins.items() if lock.get(n) not in (None, v)}
    if stale:
        from algoperf.cli import UsageError

        raise UsageError(
            f"{LOCK_FILE} disagrees with this environment on {', '.join(sorted(stale))}. "
            "Run `algoperf docker lock` to record the versions installed here."
        )
    dest = Path(args.dest)
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
        f.write("\n".join(f"{n}=={v}" for n, v in pins.items()) + "\n")
        requirements = f.name
    try:
        # `pip wheel`, not `pip download`: a few locked packages (promise) exist only as sources.
        command = [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                   "--wheel-dir", str(dest), "--requirement", requirements]
        code = subprocess.run(command).returncode
    finally:
        os.unlink(requirements)
    if code == 0:
        print(f"{dest}: wheels of {len(pins)} distributions for algoperf[{args.extras}]")
    return code


# ---- build --------------------------------------------------------------------------------------
def client() -> Any:
    """A Docker SDK client whose daemon answers, or a usage error that says how to start one."""
    import docker
    from docker.errors import DockerException

    from algoperf.cli import UsageError

    try:
        c = docker.from_env(timeout=600)
        c.ping()
    except DockerException as e:
        host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
        raise UsageError(
            f"No Docker daemon answers at {host} ({e}). Start one (e.g. `dockerd`, or `make "
            "docker-prereqs` in a checkout), or set DOCKER_HOST to the daemon's address."
        ) from None
    return c


def _dockerignore(root: Path) -> list[str]:
    path = root / ".dockerignore"
    if not path.exists():
        return []
    return [line.strip() for line in path.read_text().splitlines()
            if line.strip() and not line.startswith("#")]


def build_context(root: Path, wheelhouse: Path | None, out: Any) -> Any:
    """The build context as a tar: the project (less .dockerignore's paths) + the wheelhouse's wheels.

    The wheels go to `docker/wheels/` inside the tar only, so an offline build needs no copy of
    hundreds of MB in the work tree.
    """
    from docker.utils.build import exclude_paths

    with tarfile.open(fileobj=out, mode="w") as tar:
        for rel in sorted(exclude_paths(str(root), _dockerignore(root), dockerfile="docker/Dockerfile")):
            tar.add(root / rel, arcname=rel, recursive=False)
        if wheelhouse is not None:
            for wheel in sorted(wheelhouse.glob("*.whl")):
                tar.add(wheel, arcname=f"{WHEELS_IN_CONTEXT}/{wheel.name}", recursive=False)
    out.seek(0)
    return out


def _build_args(args: argparse.Namespace) -> dict[str, str]:
    build_args = dict(_key_values(args.build_arg, "--build-arg"))
    if args.base_image:
        build_args["BASE_IMAGE"] = args.base_image
    if args.extras:
        build_args["EXTRAS"] = args.extras
    if args.offline:
        build_args["OFFLINE"] = "true"
    return build_args


def _key_values(items: Iterable[str] | None, flag: str) -> Iterator[tuple[str, str]]:
    from algoperf.cli import UsageError

    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"{flag} {item!r} is not KEY=VALUE. Write e.g. {flag} EXTRAS=pytorch.")
        yield key, value


def cmd_build(args: argparse.Namespace) -> int:
    from algoperf import metadata
    from algoperf.cli import UsageError

    wheelhouse = Path(args.wheelhouse) if args.wheelhouse else None
    if wheelhouse is not None and not any(wheelhouse.glob("*.whl")):
        raise UsageError(f"--wheelhouse {wheelhouse} holds no .whl files. Fill it with "
                         f"`algoperf docker wheelhouse {wheelhouse}` first.")
    if args.offline and wheelhouse is None:
        raise UsageError("--offline installs only from a wheelhouse: give --wheelhouse DIR too.")
    tag = args.tag or default_tag(args.framework)
    build_args = {"IMAGE_NAME": tag, **_build_args(args)}
    git = metadata.git_revision()
    labels = {"org.opencontainers.image.title": f"algoperf ({args.framework})",
              "org.opencontainers.image.revision": str(git.get("git_hash") or "unknown"),
              "algoperf.framework": args.framework}
    docker_client = client()
    print(f"algoperf docker build: {dockerfile(args.framework)} -> {tag} "
          f"({', '.join(f'{k}={v}' for k, v in build_args.items()) or 'default build args'})",
          file=sys.stderr)
    with tempfile.TemporaryFile() as context:
        build_context(REPO_ROOT, wheelhouse, context)
        stream = docker_client.api.build(
            fileobj=context, custom_context=True, dockerfile=dockerfile(args.framework), tag=tag,
            buildargs=build_args, network_mode=args.network, labels=labels, rm=True, forcerm=True,
            pull=False, decode=True,
        )
        image_id = None
        for chunk in stream:
            if "stream" in chunk and not args.quiet:
                sys.stderr.write(chunk["stream"])
            if "error" in chunk:
                print(f"algoperf docker build: error: {chunk['error'].strip()}", file=sys.stderr)
                return 1
            if "aux" in chunk and "ID" in chunk["aux"]:
                image_id = chunk["aux"]["ID"]
    image = docker_client.images.get(image_id or tag)
    print(f"{tag} {image.id}")
    return 0


# ---- run ----------------------------------------------------------------------------------------
PATH_FLAGS = {"--data-dir": CONTAINER_DATA_DIR, "--experiment-dir": CONTAINER_EXPERIMENT_DIR}
TRIAL_COMMANDS = ("run", "tune")


def _flag_value(argv: list[str], flag: str) -> tuple[str | None, list[str]]:
    """The value of `flag` in argv (`--flag V` or `--flag=V`) and argv without it."""
    rest, value, i = [], None, 0
    while i < len(argv):
        a = argv[i]
        if a == flag and i + 1 < len(argv):
            value, i = argv[i + 1], i + 2
            continue
        if a.startswith(flag + "="):
            value, i = a.split("=", 1)[1], i + 1
            continue
        rest.append(a)
        i += 1
    return value, rest


def container_command(
    argv: list[str], devices: int | None, default_data_dir: Path
) -> tuple[list[str], dict[str, str]]:
    """The algoperf arguments inside the container and the host directories to mount.

    `--data-dir` and `--experiment-dir` name host directories: they are mounted at /data and
    /experiments and the arguments rewritten to those. A trial command without them gets the
    host's data cache and `./experiments`, as `algoperf run` would use outside Docker.
    """
    from algoperf.cli import UsageError

    if not argv:
        raise UsageError("Nothing to run: give the algoperf arguments after `--`, e.g. "
                         "`algoperf docker run -- run -w mnist1d --max-steps 50`.")
    trial_command = argv[0] in TRIAL_COMMANDS
    mounts: dict[str, str] = {}
    for flag, inside in PATH_FLAGS.items():
        value, argv = _flag_value(argv, flag)
        if value is None and trial_command:
            value = str(default_data_dir) if flag == "--data-dir" else "experiments"
        if value is not None:
            host = Path(value).expanduser().resolve()
            host.mkdir(parents=True, exist_ok=True)
            mounts[str(host)] = inside
            argv = [*argv, flag, inside]
    if devices is not None:
        if not trial_command:
            raise UsageError(f"--devices applies to `run` and `tune`, not to `{argv[0]}`.")
        _, argv = _flag_value(argv, "--devices")
        argv = [*argv, "--devices", str(devices)]
    return argv, mounts


def device_requests(gpus: str) -> list[Any]:
    """`--gpus all|N|none` as the SDK's device requests (the NVIDIA container runtime's)."""
    from docker.types import DeviceRequest

    from algoperf.cli import UsageError

    if gpus == "none":
        return []
    if gpus == "all":
        return [DeviceRequest(count=-1, capabilities=[["gpu"]])]
    if gpus.isdigit() and int(gpus) > 0:
        return [DeviceRequest(count=int(gpus), capabilities=[["gpu"]])]
    raise UsageError(f"--gpus {gpus!r}: expected all, none or a number of GPUs.")


def image_environment(image: Any, name: str) -> dict[str, str]:
    """What the trial records about its image: the name run, the local id, the registry digest.

    The digest exists only for an image pulled from or pushed to a registry; a local build has
    none, and its id (the hash of its config) is then what names it.
    """
    digests = image.attrs.get("RepoDigests") or []
    return {ENV_IMAGE: name, ENV_IMAGE_ID: image.id, ENV_IMAGE_DIGEST: digests[0] if digests else ""}


def default_data_dir() -> Path:
    return Path(os.environ.get("ALGOPERF_DATA_DIR", Path.home() / ".cache" / "algoperf"))


def cmd_run(args: argparse.Namespace) -> int:
    from docker.errors import ImageNotFound

    from algoperf.cli import UsageError

    inner = list(args.algoperf_args)
    if inner and inner[0] == "--":
        inner = inner[1:]
    command, mounts = container_command(inner, args.devices, default_data_dir())
    for volume in args.volume or ():
        host, sep, inside = volume.partition(":")
        if not sep:
            raise UsageError(f"--volume {volume!r} is not HOST:CONTAINER[:ro].")
        mounts[str(Path(host).expanduser().resolve())] = inside
    name = args.image or default_tag(args.framework)
    docker_client = client()
    try:
        image = docker_client.images.get(name)
    except ImageNotFound:
        raise UsageError(f"No image {name!r} on this Docker daemon. Build it with `algoperf docker "
                         f"build --framework {args.framework}` or name another with --image.") from None
    environment = {
        **{k: os.environ[k] for k in PASSED_ENV if k in os.environ},
        **image_environment(image, name),
        "HOME": "/tmp",  # the caller's uid has no home in the image
        **dict(_key_values(args.env, "--env")),
    }
    volumes = {}
    for host, inside in mounts.items():
        inside, _, mode = inside.partition(":")
        volumes[host] = {"bind": inside, "mode": mode or "rw"}
    user = None if args.as_image_user else f"{os.getuid()}:{os.getgid()}"
    print(f"algoperf docker run: {name} ({image.short_id}) algoperf {' '.join(command)}",
          file=sys.stderr)
    container = docker_client.containers.run(
        image.id, command=command, detach=True, environment=environment, volumes=volumes,
        user=user, network_mode=args.network, shm_size=args.shm_size, ipc_mode=args.ipc,
        device_requests=device_requests(args.gpus), labels={"algoperf.image": name},
    )
    return _follow(container)


def _follow(container: Any) -> int:
    """Streams the container's output until it exits; SIGTERM/SIGINT/SIGUSR1 reach the trial.

    A scheduler's preemption signal becomes the container's SIGTERM, on which the trial
    checkpoints and exits `interrupted` (3) within the stop timeout.
    """
    interrupts = {"count": 0}

    def forward(signum: int, frame: Any) -> None:
        # A scheduler may send several (USR1, then TERM): each is a SIGTERM to the trial. Only a
        # third Ctrl-C kills the container outright.
        if signum == signal.SIGINT:
            interrupts["count"] += 1
        try:
            container.kill(signal="SIGKILL" if interrupts["count"] >= 3 else "SIGTERM")
        except Exception:  # the container may be gone already
            pass

    handled = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)
    old = {s: signal.signal(s, forward) for s in handled}
    try:
        for chunk in container.logs(stream=True, follow=True):
            sys.stdout.buffer.write(chunk)
            sys.stdout.flush()
        result = container.wait()
        return int(result.get("StatusCode", 1))
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
        try:
            container.remove(force=True)
        except Exception:
            pass


def register(sub: Any) -> None:
    p = sub.add_parser("docker", help="build the Docker images and run algoperf in them")
    verbs = p.add_subparsers(dest="docker_command", metavar="VERB", required=True)

    b = verbs.add_parser("build", help="build docker/Dockerfile.<framework> through the Docker SDK")
    b.add_argument("--framework", choices=FRAMEWORKS, default="pytorch")
    b.add_argument("--base-image", help="FROM image (default: the Dockerfile's CUDA base)")
    b.add_argument("--tag", help="image name (default: algoperf:<framework>)")
    b.add_argument("--extras", help="pyproject extras to install (default: <framework>,data)")
    b.add_argument("--wheelhouse", help="a folder of wheels the build installs from first")
    b.add_argument("--offline", action="store_true",
                   help="install only from --wheelhouse (no package index): builds with no network")
    b.add_argument("--network", help="network of the build's RUN steps (e.g. none, host)")
    b.add_argument("--build-arg", action="append", metavar="KEY=VALUE", help="another build arg")
    b.add_argument("--quiet", action="store_true", help="do not print the build's output")
    b.set_defaults(func=cmd_build)

    r = verbs.add_parser(
        "run", help="run `algoperf ARGS` in an image: data and experiment dirs mounted",
        description="Runs `algoperf ARGS` (after --) in a container. --data-dir and "
                    "--experiment-dir among ARGS are host folders, mounted at /data and "
                    "/experiments; the trial records the image's name, id and digest.",
    )
    r.add_argument("--framework", choices=FRAMEWORKS, default="pytorch",
                   help="picks the image algoperf:<framework> when --image is not given")
    r.add_argument("--image", help="image name or id (default: algoperf:<framework>)")
    r.add_argument("--gpus", default="none", help="all, none (default) or a number of GPUs")
    r.add_argument("--devices", type=int, help="passed to `run`/`tune`: processes per node")
    r.add_argument("--network", default="host",
                   help="container network (default host, for NCCL and multi-node rendezvous; "
                        "none for a run that needs no network)")
    r.add_argument("--shm-size", default="16g", help="/dev/shm size (PyTorch's data-parallel "
                   "processes share tensors there); default 16g")
    r.add_argument("--ipc", help="IPC mode, e.g. host")
    r.add_argument("--volume", action="append", metavar="HOST:CONTAINER[:ro]", help="another mount")
    r.add_argument("--env", action="append", metavar="KEY=VALUE", help="another environment variable")
    r.add_argument("--as-image-user", action="store_true",
                   help="run as the image's user (uid 10001) instead of the caller's uid")
    r.add_argument("algoperf_args", nargs=argparse.REMAINDER, help="-- then the algoperf arguments")
    r.set_defaults(func=cmd_run)

    lk = verbs.add_parser("lock", help="write docker/constraints.txt from this environment")
    lk.add_argument("--out", default=str(LOCK_FILE))
    lk.set_defaults(func=cmd_lock)

    w = verbs.add_parser("wheelhouse", help="download the wheels an offline build needs")
    w.add_argument("dest", help="folder to put the wheels in")
    w.add_argument("--extras", default="pytorch,data", help="pyproject extras (default: pytorch,data)")
    w.set_defaults(func=cmd_wheelhouse)

