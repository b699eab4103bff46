"""`algoperf doctor`: is this environment ready to run the benchmark? (issue 16)

Runs are lost to environments that half work: a CUDA build of torch that does not see the GPU, the
GPU stacks of torch and JAX that will not load in one process, a data directory missing a dataset,
a disk that fills up at the first checkpoint. The doctor looks at each and prints one line per
fact; a problem that would break a run gets a line with its fix and makes the exit code 1.
Nothing here runs at import time, and torch / jax are imported only inside the checks.

The checks, in order: Python; framework versions and builds; CUDA, cuDNN and NCCL; the devices
each framework sees; torch and JAX loaded side by side (in a subprocess: a clash can crash it);
the threads a run will use; the data directory's prepared datasets; free disk; free memory
against each workload's need; Docker and its daemon.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import os
import platform
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

OK, INFO, WARN, PROBLEM = "ok", "info", "warn", "problem"
MIN_PYTHON = (3, 11)
# Parameters, gradients and two optimizer moments in float32: a lower bound of a workload's
# memory (activations come on top), enough to tell a machine that cannot hold a model at all.
BYTES_PER_PARAM = 16
MIN_FREE_DISK_GIB = 1.0  # logs and a few checkpoints of a small workload
LOW_FREE_DISK_GIB = 20.0  # a checkpoint of the largest model (Criteo, ~2 GiB of float32 weights) x KEEP
SIDE_BY_SIDE_TIMEOUT_S = 300
DOCKER_TIMEOUT_S = 10


@dataclass
class Line:
    section: str
    item: str
    status: str
    detail: str
    fix: str = ""


# ---- helpers -----------------------------------------------------------------------------------


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def default_data_dir() -> Path:
    """Where the workloads look when no --data-dir is given (ALGOPERF_DATA_DIR or the user cache)."""
    return Path(os.environ.get("ALGOPERF_DATA_DIR", Path.home() / ".cache" / "algoperf"))


def memory_need_bytes(info: Any, framework: str) -> int:
    """A workload's memory lower bound from its reference parameter count (BYTES_PER_PARAM)."""
    n = info.n_params.get(framework) or max(info.n_params.values(), default=0)
    return int(n * BYTES_PER_PARAM)


def available_memory_bytes() -> int | None:
    """MemAvailable from /proc/meminfo (what can be allocated without swapping), or None."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _show(path: str | Path) -> str:
    """A path as a person reads it: relative under the working directory, `~` under home."""
    path = Path(path).absolute()
    for base, prefix in ((Path.cwd(), ""), (Path.home(), "~/")):
        try:
            rel = path.relative_to(base)
        except ValueError:
            continue
        return f"{prefix}{rel}" if str(rel) != "." else (prefix.rstrip("/") or ".")
    return str(path)


def _gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB"


def _gpus_on_machine() -> list[str]:
    """GPUs the driver reports, independent of any framework (nvidia-smi), or []."""
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in out.stdout.splitlines() if line.strip()] if out.returncode == 0 else []


# ---- the checks ------------------------------------------------------------------------------


def check_python() -> list[Line]:
    version = platform.python_version()
    if sys.version_info[:2] < MIN_PYTHON:
        return [Line("python", "Python", PROBLEM, f"{version} at {_show(sys.executable)}",
                     f"use Python {'.'.join(map(str, MIN_PYTHON))} or newer (`make install` builds .venv)")]
    return [Line("python", "Python", OK, f"{version} ({platform.python_implementation()}) at {_show(sys.executable)}")]


def check_packages() -> list[Line]:
    lines = []
    for package in ("numpy", "torch", "jax", "jaxlib", "flax", "optax"):
        v = _version(package)
        lines.append(Line("packages", package, OK if v else INFO, v or "not installed"))
    if not _installed("torch") and not _installed("jax"):
        lines.append(Line("packages", "frameworks", PROBLEM, "neither torch nor jax is installed",
                          "pip install -e '.[pytorch]' or '.[jax]' (`make install` installs both)"))
    return lines


def check_torch(gpus: list[str]) -> list[Line]:
    if not _installed("torch"):
        return [Line("pytorch", "torch", INFO, "not installed: PyTorch submissions cannot run")]
    try:
        import torch
    except Exception as e:  # noqa: BLE001 - a broken install is the finding
        return [Line("pytorch", "import torch", PROBLEM, f"{type(e).__name__}: {e}",
                     "reinstall torch (`pip install --force-reinstall torch==<version>`)")]
    build = f"CUDA {torch.version.cuda}" if torch.version.cuda else (
        f"ROCm {torch.version.hip}" if getattr(torch.version, "hip", None) else "CPU-only build")
    lines = [Line("pytorch", "build", OK, f"torch {torch.__version__}, {build}")]
    if torch.cuda.is_available():
        names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        lines.append(Line("pytorch", "devices", OK, f"{len(names)} GPU(s): {', '.join(names)}"))
        cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
        lines.append(Line("pytorch", "cuDNN", OK if cudnn else PROBLEM, str(cudnn) if cudnn else "not loadable",
                          "" if cudnn else "install the cuDNN that matches torch's CUDA build"))
        try:
            nccl = ".".join(map(str, torch.cuda.nccl.version()))
            lines.append(Line("pytorch", "NCCL", OK, nccl))
        except Exception as e:  # noqa: BLE001
            lines.append(Line("pytorch", "NCCL", WARN, f"not available ({e})",
                              "multi-GPU runs need NCCL: install torch's CUDA wheel"))
    else:
        lines.append(Line("pytorch", "devices", OK, "CPU only (no CUDA device visible): runs use the CPU"))
        lines.append(Line("pytorch", "CUDA/cuDNN/NCCL", INFO, "not used: no GPU visible to torch"))
        if gpus and torch.version.cuda:
            lines.append(Line("pytorch", "GPU visibility", PROBLEM,
                              f"the driver reports {len(gpus)} GPU(s) but torch (CUDA {torch.version.cuda}) sees none",
                              "check CUDA_VISIBLE_DEVICES and that the driver supports this CUDA version "
                              "(nvidia-smi shows the highest)"))
        elif gpus:
            lines.append(Line("pytorch", "GPU visibility", WARN,
                              f"the driver reports {len(gpus)} GPU(s) but torch is a CPU-only build",
                              "install a CUDA build of torch (see pytorch.org for the index URL)"))
    from algoperf.runner import default_threads

    lines.append(Line("pytorch", "threads", OK,
                      f"{default_threads()} intra-op threads per process (what a run sets; "
                      "--threads N changes it)"))
    return lines


def check_jax(gpus: list[str]) -> list[Line]:
    if not _installed("jax"):
        return [Line("jax", "jax", INFO, "not installed: JAX submissions cannot run")]
    try:
        import jax
    except Exception as e:  # noqa: BLE001
        return [Line("jax", "import jax", PROBLEM, f"{type(e).__name__}: {e}",
                     "reinstall jax and jaxlib at the same version (`pip install -e '.[jax]'`)")]
    plugins = [p for p in ("jax-cuda12-plugin", "jax-cuda13-plugin", "jax-cuda12-pjrt", "jax-cuda13-pjrt") if _version(p)]
    build = f"CUDA plugins: {', '.join(f'{p} {_version(p)}' for p in plugins)}" if plugins else "CPU-only build"
    lines = [Line("jax", "build", OK, f"jax {jax.__version__}, jaxlib {_version('jaxlib')}, {build}")]
    try:
        devices = jax.devices()
    except Exception as e:  # noqa: BLE001
        return [*lines, Line("jax", "devices", PROBLEM, f"jax.devices() failed: {e}",
                             "reinstall jax; set JAX_PLATFORMS=cpu to force the CPU")]
    kinds = sorted({d.platform for d in devices})
    detail = f"{len(devices)} device(s), platform {', '.join(kinds)} (default backend {jax.default_backend()})"
    if "gpu" in kinds or "cuda" in kinds:
        lines.append(Line("jax", "devices", OK, detail))
        versions = [f"{p} {_version(p)}" for p in ("nvidia-cudnn-cu12", "nvidia-nccl-cu12", "nvidia-cuda-runtime-cu12")
                    if _version(p)]
        lines.append(Line("jax", "CUDA/cuDNN/NCCL", OK, ", ".join(versions) or "system libraries"))
    else:
        lines.append(Line("jax", "devices", OK, f"CPU only: {detail}"))
        lines.append(Line("jax", "CUDA/cuDNN/NCCL", INFO, "not used: no GPU visible to jax"))
        if gpus:
            lines.append(Line("jax", "GPU visibility", WARN if not plugins else PROBLEM,
                              f"the driver reports {len(gpus)} GPU(s) but jax sees none",
                              "pip install 'jax[cuda12]' at jax's version" if not plugins else
                              "the CUDA plugin does not load: check the driver version and LD_LIBRARY_PATH"))
    xla = os.environ.get("XLA_FLAGS")
    if xla:
        lines.append(Line("jax", "XLA_FLAGS", INFO, xla))
    return lines


SIDE_BY_SIDE = """
import json, torch, jax
out = {"torch_cuda": torch.cuda.is_available(), "jax_backend": jax.default_backend()}
if torch.cuda.is_available():
    torch.zeros(1, device="cuda").sum().item()
    out["torch_cudnn"] = torch.backends.cudnn.version()
import jax.numpy as jnp
float(jnp.ones(2).sum())
print(json.dumps(out))
"""


def check_side_by_side() -> list[Line]:
    """Both frameworks, and their GPU libraries when there is a GPU, loaded in one process. Run in
    a subprocess: two CUDA stacks that clash can abort the process, which must not be this one."""
    if not (_installed("torch") and _installed("jax")):
        return [Line("side by side", "torch + jax", INFO, "only one framework installed: nothing to clash")]
    try:
        proc = subprocess.run([sys.executable, "-c", SIDE_BY_SIDE], capture_output=True, text=True,
                              timeout=SIDE_BY_SIDE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return [Line("side by side", "torch + jax", WARN, f"no answer in {SIDE_BY_SIDE_TIMEOUT_S} s",
                     "run `python -c 'import torch, jax'` by hand to see where it hangs")]
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or [f"exit code {proc.returncode}"])[-1]
        return [Line("side by side", "torch + jax", PROBLEM, f"loading both in one process failed: {tail}",
                     "use one environment (or Docker image) per framework: `algoperf docker` builds them")]
    facts = json.loads(proc.stdout.strip().splitlines()[-1])
    on_gpu = facts["torch_cuda"] or facts["jax_backend"] in ("gpu", "cuda")
    detail = ("both GPU stacks loaded and ran an op in one process" if on_gpu else
              "both import and run an op in one process (CPU: no GPU libraries to load)")
    return [Line("side by side", "torch + jax", OK, detail)]


def check_threads() -> list[Line]:
    cpus = os.cpu_count() or 1
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = cpus
    lines = [Line("threads", "CPUs", OK, f"{usable} usable of {cpus}")]
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        value = os.environ.get(var)
        if value is None:
            continue
        if value.isdigit() and int(value) > usable:
            lines.append(Line("threads", var, WARN, f"{value} > {usable} usable CPUs: threads will oversubscribe",
                              f"export {var}={usable} (or unset it)"))
        else:
            lines.append(Line("threads", var, OK, value))
    return lines


def dataset_folders() -> dict[str, list[str]]:
    """Base workload -> folder names under the data directory its pipeline reads (the
    `datasets prepare` layout: `<data-dir>/<dataset>`), from the registry."""
    from workloads import registry

    try:
        from algoperf.datasets import dataset_name
    except ImportError:
        dataset_name = None  # type: ignore[assignment]

    folders: dict[str, list[str]] = {}
    for info in registry.all_workloads().values():
        if info.is_variant:
            continue
        package = next(iter(info.implementations.values()), ":").split(":")[0].split(".")
        names = [info.name]
        if len(package) > 1 and package[1] != info.name:
            names.append(package[1])
        if info.name.startswith("librispeech"):
            names.append("librispeech")
        if info.name.startswith("imagenet"):
            names.append("imagenet")
        if info.name == "ogbg":
            names.append("ogbg_molpcba")
        if dataset_name is not None:
            try:
                names.append(dataset_name(info.name))
            except Exception:  # noqa: BLE001 - a workload without a dataset recipe
                pass
        folders[info.name] = list(dict.fromkeys(names))
    return folders


def check_data(data_dir: Path | None) -> list[Line]:
    explicit = data_dir is not None
    root = data_dir or default_data_dir()
    section = "data"
    if not root.exists():
        if explicit:
            return [Line(section, "data directory", PROBLEM, f"{_show(root)} does not exist",
                         f"create it and prepare datasets: algoperf datasets prepare <name> --data-dir {_show(root)}")]
        return [Line(section, "data directory", INFO, f"{_show(root)} does not exist yet: no dataset prepared "
                     "(runs with --data synthetic need none)")]
    if not os.access(root, os.R_OK | os.X_OK):
        return [Line(section, "data directory", PROBLEM, f"{_show(root)} is not readable", f"chmod u+rx {_show(root)}")]
    verified = _verified_datasets(root)
    lines = [Line(section, "data directory", OK, _show(root))]
    checked: list[str] = []
    present: list[str] = []
    missing: list[str] = []
    for workload, names in sorted(dataset_folders().items()):
        if verified is not None and workload in verified:
            ok, detail = verified[workload]
            if ok:
                checked.append(workload)
            else:
                lines.append(Line(section, workload, WARN, f"does not match its manifest: {detail}",
                                  f"algoperf datasets prepare {workload} --data-dir {_show(root)}"))
            continue
        found = any((root / n).is_dir() and any((root / n).iterdir()) for n in names)
        (present if found else missing).append(workload)
    if checked:
        lines.append(Line(section, "prepared", OK, f"{', '.join(checked)} (files match the manifests)"))
    if present:
        lines.append(Line(section, "present", OK if not checked else INFO,
                          f"{', '.join(present)} (a folder, no manifest to check it against)"))
    if missing:
        lines.append(Line(section, "not prepared", INFO, ", ".join(missing),
                          f"algoperf datasets prepare <name> --data-dir {_show(root)} (or run with --data synthetic)"))
    return lines


def _verified_datasets(root: Path) -> dict[str, tuple[bool, str]] | None:
    """Per prepared workload (files ok, detail) from the manifests `algoperf datasets prepare`
    writes, through `algoperf.datasets.verify_all(data_dir)`; None when there is no such reader
    (the folders are then only looked at)."""
    try:
        from algoperf import datasets
    except ImportError:
        return None
    reader = getattr(datasets, "verify_all", None)
    if not callable(reader):
        return None
    try:
        return dict(reader(root))
    except Exception:  # noqa: BLE001 - a manifest reader's failure must not stop the doctor
        return None


def check_disk(data_dir: Path | None, experiment_dir: Path) -> list[Line]:
    lines = []
    places = {"experiment directory": experiment_dir, "data directory": data_dir or default_data_dir()}
    for label, path in places.items():
        probe = path.absolute()
        while not probe.exists() and probe.parent != probe:
            probe = probe.parent
        try:
            free = shutil.disk_usage(probe).free
        except OSError as e:
            lines.append(Line("disk", label, WARN, f"cannot measure free space at {probe}: {e}"))
            continue
        detail = f"{_gib(free)} free at {_show(probe)}"
        if free < MIN_FREE_DISK_GIB * 2**30:
            lines.append(Line("disk", label, PROBLEM, detail,
                              f"free at least {MIN_FREE_DISK_GIB:g} GiB (logs and checkpoints are written there)"))
        elif free < LOW_FREE_DISK_GIB * 2**30:
            lines.append(Line("disk", label, WARN, detail,
                              f"checkpoints of the large workloads need up to {LOW_FREE_DISK_GIB:g} GiB"))
        else:
            lines.append(Line("disk", label, OK, detail))
    if experiment_dir.exists() and not os.access(experiment_dir, os.W_OK):
        lines.append(Line("disk", "experiment directory", PROBLEM, f"{experiment_dir} is not writable",
                          "choose a writable --experiment-dir"))
    return lines


def check_memory(framework: str) -> list[Line]:
    from workloads import registry

    free = available_memory_bytes()
    device = "RAM"
    if framework == "pytorch" and _installed("torch"):
        import torch

        if torch.cuda.is_available():
            free, device = torch.cuda.mem_get_info(0)[0], f"GPU 0 ({torch.cuda.get_device_name(0)})"
    if free is None:
        return [Line("memory", "free memory", INFO, "unknown (no /proc/meminfo)")]
    lines = [Line("memory", "free memory", OK, f"{_gib(free)} available on {device}")]
    needs = sorted(((memory_need_bytes(i, framework), i.name) for i in registry.all_workloads().values()
                    if not i.is_variant and i.n_params), reverse=True)
    too_big = [(need, name) for need, name in needs if need > free]
    fits = [name for need, name in needs if need <= free]
    if needs and len(too_big) == len(needs):
        smallest = min(needs)
        lines.append(Line("memory", "workloads", PROBLEM, f"no workload fits: the smallest ({smallest[1]}) needs "
                          f"at least {_gib(smallest[0])}", "free memory or use a larger machine"))
        return lines
    for need, name in too_big:
        lines.append(Line("memory", name, WARN, f"needs at least {_gib(need)} (parameters, gradients and two "
                          f"optimizer moments in float32), {_gib(free)} available",
                          "run it on a machine with more memory, or close other jobs"))
    if fits:
        largest = next((need, name) for need, name in needs if need <= free)
        lines.append(Line("memory", "fit", OK, f"{len(fits)} workloads fit (largest: {largest[1]}, at least "
                          f"{_gib(largest[0])}): {', '.join(sorted(fits))}"))
    return lines


def check_docker() -> list[Line]:
    path = shutil.which("docker")
    if path is None:
        return [Line("docker", "docker", INFO, "not installed (needed only for `algoperf docker` images)")]
    try:
        proc = subprocess.run([path, "info", "--format", "{{.ServerVersion}}"], capture_output=True,
                              text=True, timeout=DOCKER_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return [Line("docker", "daemon", WARN, f"no answer from the daemon in {DOCKER_TIMEOUT_S} s",
                     "start it (`sudo systemctl start docker`)")]
    except OSError as e:
        return [Line("docker", "docker", WARN, f"{path} does not run: {e}")]
    if proc.returncode != 0:
        reason = (proc.stderr.strip().splitlines() or ["unknown error"])[-1]
        fix = ("add yourself to the docker group (`sudo usermod -aG docker $USER`, then log in again)"
               if "permission denied" in reason.lower() else "start the daemon (`sudo systemctl start docker`)")
        return [Line("docker", "daemon", WARN, f"not reachable: {reason}", fix)]
    return [Line("docker", "daemon", OK, f"reachable, server {proc.stdout.strip()}")]


def diagnose(data_dir: Path | None = None, experiment_dir: Path = Path("experiments"),
             side_by_side: bool = True) -> list[Line]:
    gpus = _gpus_on_machine()
    lines = check_python() + check_packages()
    lines.append(Line("gpu", "driver", OK if gpus else INFO,
                      f"{len(gpus)} GPU(s): {', '.join(gpus)}" if gpus else "no NVIDIA GPU (no nvidia-smi): CPU runs"))
    lines += check_torch(gpus) + check_jax(gpus)
    if side_by_side:
        lines += check_side_by_side()
    lines += check_threads() + check_data(data_dir) + check_disk(data_dir, experiment_dir)
    lines += check_memory("pytorch" if _installed("torch") else "jax") + check_docker()
    return lines


# ---- output ------------------------------------------------------------------------------------

_STYLE = {OK: "green", INFO: "cyan", WARN: "yellow", PROBLEM: "bold red"}


def print_report(lines: list[Line]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=None if sys.stdout.isatty() or "COLUMNS" in os.environ else 140)
    table = Table(title="algoperf doctor", title_justify="left")
    for col in ("section", "item", "status", "detail"):
        table.add_column(col, no_wrap=col in ("section", "status"))
    for line in lines:
        detail = line.detail + (f"\n-> {line.fix}" if line.fix and line.status == INFO else "")
        table.add_row(line.section, line.item, f"[{_STYLE[line.status]}]{line.status}[/]", detail)
    console.print(table)
    problems = [line for line in lines if line.status == PROBLEM]
    warnings = [line for line in lines if line.status == WARN]
    for line in problems + warnings:
        console.print(f"[{_STYLE[line.status]}]{line.status.upper()}[/] {line.item}: {line.detail}"
                      + (f" -> fix: {line.fix}" if line.fix else ""), highlight=False)
    console.print(f"{len(problems)} problem(s) that would break a run, {len(warnings)} warning(s)")


def cmd_doctor(args: argparse.Namespace) -> int:
    lines = diagnose(Path(args.data_dir) if args.data_dir else None, Path(args.experiment_dir),
                     side_by_side=not args.no_side_by_side)
    if args.json:
        print(json.dumps({"ok": not any(line.status == PROBLEM for line in lines),
                          "lines": [asdict(line) for line in lines]}, indent=2))
    else:
        print_report(lines)
    return 1 if any(line.status == PROBLEM for line in lines) else 0


def register(sub: Any) -> None:
    p = sub.add_parser("doctor", help="check this environment: frameworks, devices, data, disk, memory, docker",
                       description="Checks the environment a run needs. Exit code 1 when a problem "
                                   "would break a run; each problem is one line with its fix.")
    p.add_argument("--data-dir", help="the data directory to inspect (default: ALGOPERF_DATA_DIR or "
                                      "~/.cache/algoperf)")
    p.add_argument("--experiment-dir", default="./experiments", help="where runs write (free disk)")
    p.add_argument("--no-side-by-side", action="store_true",
                   help="skip loading torch and jax together in a subprocess (saves ~10 s)")
    p.add_argument("--json", action="store_true", help="print the lines as JSON")
    p.set_defaults(func=cmd_doctor)
