"""The Docker images, built and run for real on a local daemon (issue 14).

No image can be pulled here: the CPU test image is docker/Dockerfile.pytorch on a debootstrap'ed
Debian (docker/cpu-test-base.sh), built with --network none from a wheelhouse of the locked
versions (docker/cpu-test-image.sh; `make test` starts it in the background). Without a daemon
(no privileges to start one), the tests that need it skip with the reason.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from algoperf import docker as docker_cli
from algoperf import metadata

from conftest import REPO, read_eval_rows, read_summary, run_cli, trial_path

DOCKERFILES = [REPO / "docker" / "Dockerfile.pytorch", REPO / "docker" / "Dockerfile.jax"]
CACHE = Path(os.environ.get("ALGOPERF_DOCKER_CACHE",
                            Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "algoperf" / "docker"))


# ---- without a daemon -------------------------------------------------------------------------
def test_dockerfiles_pass_hadolint():
    hadolint = Path(sys.executable).parent / "hadolint"
    result = subprocess.run([str(hadolint), *map(str, DOCKERFILES)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_lock_is_the_closure_installed_here():
    """docker/constraints.txt pins what co-installs in the tests' environment (`algoperf docker lock`)."""
    locked = docker_cli.read_lock()
    installed = docker_cli.pinned_closure(docker_cli.LOCK_EXTRAS)
    assert locked == installed, (
        "the installed closure differs from docker/constraints.txt: `make install` installs under the "
        "lock; after a deliberate upgrade (or a new dependency) rewrite it with `algoperf docker lock`")
    assert locked["torch"] == "2.13.0"  # the public version: admits the CPU and CUDA builds


def test_requirements_script_lists_dependencies_and_the_extras_asked_for():
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    out = subprocess.run(
        [sys.executable, str(REPO / "docker" / "requirements.py"), str(REPO / "pyproject.toml"), "pytorch"],
        capture_output=True, text=True, check=True,
    ).stdout.splitlines()
    assert out == project["dependencies"] + project["optional-dependencies"]["pytorch"]


def test_build_context_has_the_sources_and_the_wheelhouse_but_not_the_work_trees_clutter(tmp_path):
    wheelhouse = tmp_path / "wheels"
    wheelhouse.mkdir()
    (wheelhouse / "demo-1.0-py3-none-any.whl").write_bytes(b"not really a wheel")
    buffer = docker_cli.build_context(REPO, wheelhouse, io.BytesIO())
    names = set(tarfile.open(fileobj=buffer).getnames())
    assert {"algoperf/cli.py", "pyproject.toml", "docker/Dockerfile.pytorch",
            "docker/constraints.txt", "docker/wheels/demo-1.0-py3-none-any.whl"} <= names
    assert not [n for n in names if n.startswith((".venv", ".git/", "tests/")) or "__pycache__" in n]


def test_container_command_mounts_host_dirs_and_rewrites_the_flags(tmp_path):
    data, exp = tmp_path / "data", tmp_path / "exp"
    argv, mounts = docker_cli.container_command(
        ["run", "-w", "mnist1d", f"--data-dir={data}", "--experiment-dir", str(exp)], 8, tmp_path / "cache")
    assert argv == ["run", "-w", "mnist1d", "--data-dir", "/data", "--experiment-dir", "/experiments",
                    "--devices", "8"]
    assert mounts == {str(data): "/data", str(exp): "/experiments"}
    assert data.is_dir() and exp.is_dir()


def test_gpus_become_device_requests_for_the_nvidia_runtime():
    assert docker_cli.device_requests("none") == []
    (every,) = docker_cli.device_requests("all")
    assert every["Count"] == -1 and every["Capabilities"] == [["gpu"]]
    (two,) = docker_cli.device_requests("2")
    assert two["Count"] == 2


def test_a_run_outside_docker_says_so(monkeypatch):
    for name in ("ALGOPERF_IMAGE", "ALGOPERF_IMAGE_ID", "ALGOPERF_IMAGE_DIGEST"):
        monkeypatch.delenv(name, raising=False)
    assert metadata.run_metadata()["container"] == {
        "in_docker": False, "image": None, "image_id": None, "image_digest": None}


def test_run_without_a_daemon_says_how_to_start_one(tmp_path):
    result = subprocess.run(
        [str(Path(sys.executable).parent / "algoperf"), "docker", "run", "--image", "nothing", "--", "run"],
        capture_output=True, text=True, env={**os.environ, "DOCKER_HOST": f"unix://{tmp_path}/no.sock"})
    assert result.returncode == 2
    assert "No Docker daemon answers" in result.stderr and "dockerd" in result.stderr


# ---- with a daemon: the CPU test image, built and run -------------------------------------------
def _daemon_or_skip() -> None:
    import docker
    from docker.errors import DockerException

    try:
        docker.from_env(timeout=10).ping()
    except DockerException as e:
        reason_file = CACHE / "daemon-unavailable.txt"
        reason = reason_file.read_text().strip() if reason_file.exists() else str(e)
        print(f"Docker tests skipped: {reason}", file=sys.stderr)
        pytest.skip(f"no Docker daemon: {reason}")


def cpu_test_image(framework: str) -> str:
    """A CPU test image's tag: built by `algoperf docker build` (or found up to date)."""
    _daemon_or_skip()
    result = subprocess.run(["bash", str(REPO / "docker" / "cpu-test-image.sh"), framework],
                            capture_output=True, text=True, cwd=REPO,
                            env={**os.environ, "PYTHON": sys.executable})
    assert result.returncode == 0, result.stderr[-4000:]
    return result.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def image() -> str:
    return cpu_test_image("pytorch")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    """A data dir holding MNIST-1D (copied from this machine's cache: no 6 s generation in the container)."""
    import numpy as np

    from workloads.mnist1d import workload as mnist1d

    folder = tmp_path_factory.mktemp("data")
    data = mnist1d.load()
    target = folder / "mnist1d"
    target.mkdir()
    np.savez(target / f"mnist1d_{mnist1d.NUM_EXAMPLES}_seed{mnist1d.DATA_SEED}.npz", **data)
    return folder


@pytest.mark.slow
def test_image_runs_mnist1d_and_the_logs_appear_on_the_host_with_the_image_id(image, data_dir, tmp_path):
    import docker

    experiments = tmp_path / "experiments"
    result = run_cli("docker", "run", "--image", image, "--network", "none", "--",
                     "run", "-w", "mnist1d", "--max-steps", "50", "--data-dir", str(data_dir),
                     "--experiment-dir", str(experiments), "--name", "in_docker", "--quiet")
    assert result.returncode == 0, result.stdout + result.stderr
    trial = trial_path(experiments, "in_docker")
    summary = read_summary(trial)
    assert summary["status"] in ("max_steps", "reached") and summary["global_step"] == 50
    assert read_eval_rows(trial)[-1]["global_step"] == "50"
    meta = json.loads((trial / "meta_data_0.json").read_text())
    image_id = docker.from_env().images.get(image).id
    assert meta["container"] == {"in_docker": True, "image": image, "image_id": image_id,
                                 "image_digest": None}
    # Written as the caller, not as root or the image's user.
    assert (trial / "summary.json").stat().st_uid == os.getuid()


@pytest.mark.slow
def test_sigterm_to_docker_run_checkpoints_the_trial_in_the_container(image, data_dir, tmp_path):
    """A scheduler's preemption signal reaches the trial: it checkpoints and exits interrupted (3)."""
    experiments = tmp_path / "experiments"
    trial = trial_path(experiments, "preempted")
    process = subprocess.Popen(
        [sys.executable, "-m", "algoperf.cli", "docker", "run", "--image", image, "--network", "none",
         "--", "run", "-w", "mnist1d", "--max-steps", "100000", "--eval-every", "20",
         "--data-dir", str(data_dir), "--experiment-dir", str(experiments), "--name", "preempted",
         "--quiet"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    deadline = time.monotonic() + 120
    while not (trial / "eval_measurements.csv").exists() or len(read_eval_rows(trial)) < 2:
        assert process.poll() is None and time.monotonic() < deadline, process.stdout.read()
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 3, output
    summary = read_summary(trial)
    assert summary["status"] == "interrupted"
    assert list((trial / "checkpoints").iterdir()), "no checkpoint written on SIGTERM"


@pytest.mark.heavy
def test_jax_image_runs_mnist1d(data_dir, tmp_path):
    """docker/Dockerfile.jax, built for the CPU (JAX_CUDA=false): a JAX trial runs in it."""
    image = cpu_test_image("jax")
    experiments = tmp_path / "experiments"
    result = run_cli("docker", "run", "--image", image, "--network", "none", "--",
                     "run", "-w", "mnist1d", "--framework", "jax", "--max-steps", "20",
                     "--data-dir", str(data_dir), "--experiment-dir", str(experiments),
                     "--name", "jax_in_docker", "--quiet")
    assert result.returncode == 0, result.stdout + result.stderr
    trial = experiments / "jax_in_docker" / "study_0" / "mnist1d_jax" / "trial_1"
    assert read_summary(trial)["global_step"] == 20
    meta = json.loads((trial / "meta_data_0.json").read_text())
    assert meta["container"]["image"] == image and meta["container"]["in_docker"]
