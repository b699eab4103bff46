"""What a run records about where it ran: hardware, package versions, the harness's git hash."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

PACKAGES = ("algoperf", "numpy", "scipy", "torch", "jax", "jaxlib", "pandas")
REPO_ROOT = Path(__file__).resolve().parent.parent


def git_revision() -> dict[str, Any]:
    """The harness's git commit and whether the work tree had changes (None outside git)."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=5
        )
        if head.returncode != 0:
            return {"git_hash": None, "git_dirty": None}
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO_ROOT, capture_output=True, text=True, timeout=5,
        )
        return {"git_hash": head.stdout.strip(), "git_dirty": bool(dirty.stdout.strip())}
    except (OSError, subprocess.SubprocessError):
        return {"git_hash": None, "git_dirty": None}


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def hardware(framework: str | None = None) -> dict[str, Any]:
    info: dict[str, Any] = {
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "memory_gib": _memory_gib(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "accelerators": [],
    }
    if framework == "pytorch":
        import torch

        if torch.cuda.is_available():
            info["accelerators"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
            info["cuda"] = torch.version.cuda
    return info


def container() -> dict[str, Any]:
    """The Docker image a run ran in, or `in_docker: False` for a run outside our images.

    The images set ALGOPERF_IMAGE (their name); `algoperf docker run` adds the image's id and
    its registry digest (none for a local build) in ALGOPERF_IMAGE_ID and ALGOPERF_IMAGE_DIGEST,
    so a result names the exact image it ran in.
    """
    image = os.environ.get("ALGOPERF_IMAGE") or None
    image_id = os.environ.get("ALGOPERF_IMAGE_ID") or None
    return {
        "in_docker": image is not None or image_id is not None,
        "image": image,
        "image_id": image_id,
        "image_digest": os.environ.get("ALGOPERF_IMAGE_DIGEST") or None,
    }


def run_metadata(framework: str | None = None) -> dict[str, Any]:
    return {
        "hardware": hardware(framework),
        "packages": package_versions(),
        **git_revision(),
        "container": container(),
    }
