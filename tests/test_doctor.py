"""`algoperf doctor` on this machine (CPU only: GPU lines say so and are not problems), and each
problem it must catch, with its one-line fix."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from algoperf import cli, doctor
from workloads import registry

REPO = Path(__file__).resolve().parent.parent


def _lines(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, list[dict]]:
    code = cli.main(["doctor", "--json", "--no-side-by-side", *argv])
    return code, json.loads(capsys.readouterr().out)["lines"]


def _find(lines: list[dict], section: str, item: str) -> dict:
    return next(line for line in lines if line["section"] == section and line["item"] == item)


def _executable(folder: Path, name: str, script: str) -> None:
    path = folder / name
    path.write_text("#!/bin/sh\n" + script + "\n")
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


def test_this_machine_passes_and_cpu_lines_are_not_problems(
        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, lines = _lines(capsys, "--data-dir", str(tmp_path), "--experiment-dir", str(tmp_path / "exp"))
    assert code == 0
    assert not [line for line in lines if line["status"] == doctor.PROBLEM]
    torch_devices = _find(lines, "pytorch", "devices")
    if "CPU only" in torch_devices["detail"]:  # this machine: no GPU
        assert torch_devices["status"] == doctor.OK
        assert _find(lines, "pytorch", "CUDA/cuDNN/NCCL")["status"] == doctor.INFO
    assert _find(lines, "packages", "torch")["detail"].startswith("2.")


def test_a_missing_data_directory_is_a_problem_with_its_fix(
        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    code, lines = _lines(capsys, "--data-dir", str(missing))
    line = _find(lines, "data", "data directory")
    assert code == 1 and line["status"] == doctor.PROBLEM
    assert str(missing) in line["detail"] and "algoperf datasets prepare" in line["fix"]


def test_dataset_folders_without_a_manifest_are_listed_as_present(tmp_path: Path) -> None:
    (tmp_path / "mnist1d").mkdir()
    (tmp_path / "mnist1d" / "mnist1d_20000_seed42.npz").write_bytes(b"x")
    (tmp_path / "ogbg_molpcba").mkdir()  # empty: not prepared
    lines = doctor.check_data(tmp_path)
    present = next(line for line in lines if line.item == "present").detail
    missing = next(line for line in lines if line.item == "not prepared").detail.split(", ")
    assert present == "mnist1d (a folder, no manifest to check it against)" and "ogbg" in missing


@pytest.mark.slow
def test_a_prepared_dataset_is_checked_against_its_manifest(tmp_path: Path) -> None:
    from algoperf import datasets

    if not hasattr(datasets, "verify_all"):
        pytest.skip("algoperf.datasets has no manifest reader (verify_all) yet")
    assert cli.main(["datasets", "prepare", "mnist1d", "--data-dir", str(tmp_path)]) == 0
    prepared = next(line for line in doctor.check_data(tmp_path) if line.item == "prepared")
    assert prepared.detail.startswith("mnist1d") and prepared.status == doctor.OK
    for path in (tmp_path / "mnist1d").rglob("*.npz"):
        path.write_bytes(path.read_bytes()[:100])  # a truncated file: its size no longer matches
    broken = next(line for line in doctor.check_data(tmp_path) if line.item == "mnist1d")
    assert broken.status == doctor.WARN and "datasets prepare mnist1d" in broken.fix


def test_a_nearly_full_disk_is_a_problem(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    usage = SimpleNamespace(total=100 * 2**30, used=100 * 2**30 - 2**20, free=2**20)  # 1 MiB free
    monkeypatch.setattr(doctor.shutil, "disk_usage", lambda path: usage)
    lines = doctor.check_disk(tmp_path, tmp_path)
    assert {line.status for line in lines} == {doctor.PROBLEM}
    assert lines[0].detail.startswith("0.0 GiB free") and "free at least 1 GiB" in lines[0].fix


def test_memory_need_is_parameters_times_sixteen_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    free = 4 * 2**30
    monkeypatch.setattr(doctor, "available_memory_bytes", lambda: free)
    lines = doctor.check_memory("pytorch")
    too_big = {line.item for line in lines if line.status == doctor.WARN}
    expected = {i.name for i in registry.all_workloads().values()
                if not i.is_variant and i.n_params.get("pytorch", 0) * 16 > free}
    assert too_big == expected and "criteo1tb" in too_big and "mnist" not in too_big
    criteo = next(line for line in lines if line.item == "criteo1tb")
    assert f"{539_267_457 * 16 / 2**30:.1f} GiB" in criteo.detail


def test_no_workload_fitting_is_a_problem(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(doctor, "available_memory_bytes", lambda: 1024)
    lines = doctor.check_memory("pytorch")
    assert [line.status for line in lines if line.item == "workloads"] == [doctor.PROBLEM]


def test_oversubscribing_thread_variables_warn(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "512")
    line = next(line for line in doctor.check_threads() if line.item == "OMP_NUM_THREADS")
    assert line.status == doctor.WARN and line.fix.startswith("export OMP_NUM_THREADS=")


def test_docker_absent_and_daemon_unreachable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    assert doctor.check_docker()[0].detail.startswith("not installed")
    _executable(tmp_path, "docker", 'echo "Cannot connect to the Docker daemon at unix:///var/run/docker.sock" >&2; exit 1')
    line = doctor.check_docker()[0]
    assert line.status == doctor.WARN and "Cannot connect" in line.detail and "systemctl start docker" in line.fix


def test_gpus_the_frameworks_cannot_see_are_reported(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _executable(tmp_path, "nvidia-smi", 'echo "NVIDIA A100-SXM4-80GB"')
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    gpus = doctor._gpus_on_machine()
    assert gpus == ["NVIDIA A100-SXM4-80GB"]
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU torch sees")
    line = next(line for line in doctor.check_torch(gpus) if line.item == "GPU visibility")
    assert line.status in (doctor.WARN, doctor.PROBLEM) and "1 GPU(s)" in line.detail and line.fix


@pytest.mark.slow
def test_torch_and_jax_load_side_by_side() -> None:
    (line,) = doctor.check_side_by_side()
    assert line.status == doctor.OK, line.detail


def test_doctor_and_check_import_no_framework() -> None:
    code = ("import sys, algoperf.doctor, algoperf.check, algoperf.check.static, "
            "algoperf.check.hyperparameters, algoperf.check.dynamic; "
            "print(sorted(m for m in ('torch', 'jax') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.strip() == "[]"
