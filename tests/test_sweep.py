"""`algoperf sweep`: a grid of trials as submitit jobs that survive being killed (issue 14).

The end-to-end test runs a real sweep through submitit's local executor (the same jobs Slurm
would run): 2 workloads x 2 studies x 2 trials of a submission slowed to 0.1 s a step, so that
one job can be SIGKILLed (with its wrapper and submitit's controller, as a lost node) and another
preempted (the scheduler's USR1) mid-run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from algoperf import sweep

from conftest import REPO, read_eval_rows, write_submission

MAX_STEPS = 30


def sweep_file(tmp_path: Path, text: str, name: str = "grid.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def algoperf(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    """The `algoperf` console script (as a cluster user runs it)."""
    return subprocess.run([str(Path(sys.executable).parent / "algoperf"), *args], cwd=cwd,
                          capture_output=True, text=True, timeout=600)


# ---- the plan -----------------------------------------------------------------------------------
def test_slurm_launch_without_slurm_says_what_to_do(tmp_path):
    path = sweep_file(tmp_path, "workloads: [mnist1d]\nsubmissions: [adamw]\nstudies: 1\ntrials: 1\n")
    result = subprocess.run(
        [str(Path(sys.executable).parent / "algoperf"), "sweep", "launch", str(path),
         "--experiment-dir", str(tmp_path / "exp")],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
        env={**os.environ, "PATH": str(Path(sys.executable).parent) + ":/usr/bin:/bin"},
    )
    assert result.returncode == 2
    assert "srun" in result.stderr and "--executor local" in result.stderr


def test_plan_is_workloads_x_submissions_x_rulesets_x_studies_x_trials(tmp_path):
    path = sweep_file(tmp_path, """
workloads: [mnist1d, {name: mnist, args: [--data, synthetic]}]
submissions: [adamw, nadamw]
rulesets: [external, self]
studies: 2
trials: 3
args: [--max-steps, "10"]
""")
    plan = sweep.load_sweep(path, tmp_path / "exp")
    keys = [job.key for job in plan.jobs]
    # external: 2 workloads x 2 submissions x 2 studies x 3 trials; self: trial 1 only.
    assert len(keys) == 2 * 2 * 2 * 3 + 2 * 2 * 2 * 1 == len(set(keys))
    job = next(j for j in plan.jobs if j.key == "external/mnist/nadamw/study_1/trial_3")
    argv = sweep.tune_argv(job)
    assert argv[:2] == ["tune", "-w"] and argv[argv.index("--study") + 1] == "1"
    assert argv[argv.index("--trial") + 1] == "3"
    assert argv[-4:] == ["--max-steps", "10", "--data", "synthetic"]
    assert job.trial_dir == (tmp_path / "exp" / "grid" / "external" / "mnist" / "nadamw" / "study_1"
                             / "mnist_pytorch" / "trial_3").resolve()


def test_plan_prints_one_line_per_job(tmp_path):
    path = sweep_file(tmp_path, '{"workloads": ["mnist1d"], "submissions": ["adamw"], '
                                '"studies": [0, 4], "trials": 2}', "grid.json")
    result = algoperf("sweep", "plan", str(path), "--experiment-dir", str(tmp_path))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert [line.split("\t")[0] for line in lines] == [
        "external/mnist1d/adamw/study_0/trial_1", "external/mnist1d/adamw/study_0/trial_2",
        "external/mnist1d/adamw/study_4/trial_1", "external/mnist1d/adamw/study_4/trial_2"]
    assert all("algoperf tune -w mnist1d -s adamw" in line for line in lines)


def test_a_sweep_without_counts_is_a_complete_submission_under_its_rules(tmp_path):
    path = sweep_file(tmp_path, "workloads: [mnist1d]\nsubmissions: [adamw]\nrules: v0.5\n")
    assert len(sweep.load_sweep(path, tmp_path).jobs) == 5 * 5  # v0.5: 5 studies x 5 trials


@pytest.mark.parametrize("text, expected", [
    ("workloads: [mnist1d]\nsubmissions: [adamw]\nargs: [--study, '3']\n", "--study"),
    ("workloads: [mnist1dd]\nsubmissions: [adamw]\n", "mnist1dd"),
    ("workloads: [mnist1d]\nsubmissions: [no_such_submission]\n", "no_such_submission"),
    ("workloads: [mnist1d]\nsubmissions: [adamw]\nstudies: 0\n", "studies"),
    ("workloads: [mnist1d]\nsubmissions: [adamw]\nrulesets: [internal]\n", "rulesets"),
    ("workloads: [mnist1d]\nsubmission: [adamw]\n", "unknown key"),
    ("workloads: [mnist1d, mnist1d]\nsubmissions: [adamw]\n", "listed twice"),
])
def test_a_bad_sweep_file_is_named_with_the_problem(tmp_path, text, expected):
    path = sweep_file(tmp_path, text)
    result = algoperf("sweep", "plan", str(path))
    assert result.returncode == 2
    assert str(path) in result.stderr and expected in result.stderr
    assert "Traceback" not in result.stderr


def test_job_command_runs_tune_in_docker_when_an_image_is_given(tmp_path):
    path = sweep_file(tmp_path, "workloads: [mnist1d]\nsubmissions: [adamw]\nstudies: 1\ntrials: 1\n")
    job = sweep.load_sweep(path, tmp_path).jobs[0]
    command = sweep.job_command(job, image="algoperf:pytorch", gpus=8)
    i = command.index("--")
    assert command[3:i] == ["docker", "run", "--image", "algoperf:pytorch", "--gpus", "all"]
    assert command[i + 1:] == sweep.tune_argv(job)


FAKE_SBATCH = """#!/bin/sh
# Records what submitit hands to Slurm, answers as sbatch does.
cp "$1" "$SBATCH_RECORD"
echo "Submitted batch job 4242"
"""


def test_slurm_launch_submits_an_array_with_partition_gpus_time_limit_and_preemption_signal(tmp_path):
    import pickle

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text(FAKE_SBATCH)
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 1\n")  # submitit looks for it on PATH
    for tool in ("sbatch", "srun"):
        (bin_dir / tool).chmod(0o755)
    record = tmp_path / "submitted.sh"
    path = sweep_file(tmp_path, "workloads: [mnist1d]\nsubmissions: [adamw]\nstudies: 1\ntrials: 3\n")
    result = subprocess.run(
        [str(Path(sys.executable).parent / "algoperf"), "sweep", "launch", str(path),
         "--experiment-dir", str(tmp_path / "exp"), "--executor", "slurm", "--partition", "gpu",
         "--gpus-per-node", "8", "--time-limit", "600", "--parallel", "2",
         "--image", "algoperf:pytorch"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
        env={**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "SBATCH_RECORD": str(record)},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "submitted external/mnist1d/adamw/study_0/trial_3: job 4242_2" in result.stdout
    sbatch = record.read_text().splitlines()
    for flag in ("--partition=gpu", "--gpus-per-node=8", "--time=600", "--array=0-2%2",
                 "--requeue", "--nodes=1", "--ntasks-per-node=1"):
        assert f"#SBATCH {flag}" in sbatch, flag
    assert any(line.startswith("#SBATCH --signal=USR1@") for line in sbatch)
    assert "export SUBMITIT_PREEMPT_SIGNAL=USR1" in sbatch  # the job's wrapper listens for it
    # Each array task runs one trial's `tune`, in the image, with the GPUs.
    pickles = sorted((tmp_path / "exp" / "grid" / ".submitit").rglob("*_submitted.pkl"))
    commands = [pickle.loads(p.read_bytes()).function.command for p in pickles]
    assert len(commands) == 3
    assert all(c[3:9] == ["docker", "run", "--image", "algoperf:pytorch", "--gpus", "all"] for c in commands)
    assert sorted(c[c.index("--trial") + 1] for c in commands) == ["1", "2", "3"]


# ---- a sweep that survives a SIGKILL and a preemption --------------------------------------------
SLOW_STEPS = """
import time as _time
_update = update_params

def update_params(*args, **kwargs):
    _time.sleep(0.1)
    return _update(*args, **kwargs)
"""


def _processes() -> dict[int, tuple[int, list[str]]]:
    """{pid: (parent pid, command line)} of every process (from /proc)."""
    out = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        out[int(entry.name)] = (ppid, [c.decode() for c in cmdline if c])
    return out


def _job_processes(job: sweep.TrialSpec) -> list[int]:
    """The trial's `tune` process and its ancestors up to submitit's controller (innermost first)."""
    procs = _processes()
    argv = sweep.tune_argv(job)
    tune = [pid for pid, (_, cmd) in procs.items() if cmd[-len(argv):] == argv]
    assert len(tune) == 1, f"expected one process running {job.key}, found {tune}"
    chain, pid = [], tune[0]
    while pid in procs:
        chain.append(pid)
        if any("submitit.local._local" in c for c in procs[pid][1]):
            return chain
        pid = procs[pid][0]
    raise AssertionError(f"{job.key}: no submitit controller above process {tune[0]}")


def _wait_for_checkpoint(job: sweep.TrialSpec, launcher: subprocess.Popen, timeout_s: float = 300) -> None:
    """Until the trial has a complete checkpoint: the event of its second one is logged (an
    event is logged as a checkpoint starts; the first is complete once the trial steps on)."""
    events = job.trial_dir / "events.jsonl"
    deadline = time.monotonic() + timeout_s
    while not (events.exists() and events.read_text().count('"event": "checkpoint"') >= 2):
        assert launcher.poll() is None, launcher.communicate()[0]
        assert time.monotonic() < deadline, f"{job.key} wrote no checkpoint in {timeout_s} s"
        time.sleep(0.05)


def _events(trial_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (trial_dir / "events.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_killed_and_preempted_jobs_complete_without_a_trial_run_twice(tmp_path):
    submission = write_submission(tmp_path / "slow_sgd", SLOW_STEPS)
    (submission.parent / "tuning_search_space.json").write_text('{"lr": {"feasible_points": [0.05]}}')
    path = sweep_file(tmp_path, f"""
name: grid
workloads: [mnist1d, {{name: mnist, args: [--data, synthetic]}}]
submissions: ["{submission.parent}"]
studies: 2
trials: 2
args: [--max-steps, "{MAX_STEPS}", --checkpoint-every, "5", --eval-every, "10",
       --max-runtime, "3600", --threads, "1"]
""")
    experiments = tmp_path / "experiments"
    plan = sweep.load_sweep(path, experiments)
    killed = next(j for j in plan.jobs if j.key == "external/mnist1d/slow_sgd/study_0/trial_2")
    preempted = next(j for j in plan.jobs if j.key == "external/mnist/slow_sgd/study_1/trial_1")
    launch = [str(Path(sys.executable).parent / "algoperf"), "sweep", "launch", str(path),
              "--experiment-dir", str(experiments), "--executor", "local", "--parallel", "4",
              "--retries", "0"]

    launcher = subprocess.Popen(launch, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    _wait_for_checkpoint(killed, launcher)
    for pid in _job_processes(killed):  # the node is lost: trial, job wrapper and controller
        os.kill(pid, signal.SIGKILL)
    _wait_for_checkpoint(preempted, launcher)
    wrapper = _job_processes(preempted)[1]
    os.kill(wrapper, signal.SIGUSR1)  # Slurm's warning before preemption: checkpoint and requeue
    output, _ = launcher.communicate(timeout=600)
    assert launcher.returncode == 1, output
    assert f"failed: {killed.key}" in output
    assert sum(line.strip().startswith("failed:") for line in output.splitlines()) == 1, output
    assert sweep.status_rows(plan)[plan.jobs.index(killed)]["state"] == "interrupted"

    again = algoperf(*launch[1:], cwd=tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "7 done/max_steps skipped; 1 to submit" in again.stdout

    status = algoperf("sweep", "status", str(path), "--experiment-dir", str(experiments), "--json")
    rows = json.loads(status.stdout)
    assert [r["job"] for r in rows] == [j.key for j in plan.jobs]
    assert {r["state"] for r in rows} == {"done/max_steps"}
    assert {r["steps"] for r in rows} == {MAX_STEPS}
    for job in plan.jobs:
        events = _events(job.trial_dir)
        starts = [e for e in events if e["event"] == "trial_start"]
        resumes = [e for e in events if e["event"] == "resume"]
        if job in (killed, preempted):
            # Resumed once from a checkpoint, not started over.
            assert len(starts) == 2 and len(resumes) == 1 and resumes[0]["from_step"] > 0, job.key
        else:
            assert len(starts) == 1 and not resumes, job.key
        steps = [int(r["global_step"]) for r in read_eval_rows(job.trial_dir)]
        assert steps == sorted(set(steps)) and steps[-1] == MAX_STEPS, (job.key, steps)


def test_status_table_reads_the_trials_own_logs(tmp_path):
    path = sweep_file(tmp_path, "workloads: [mnist1d]\nsubmissions: [adamw]\nstudies: 1\ntrials: 2\n")
    plan = sweep.load_sweep(path, tmp_path / "exp")
    done = plan.jobs[0].trial_dir
    done.mkdir(parents=True)
    (done / "summary.json").write_text('{"status": "reached", "global_step": 120, "time_to_target_s": 9.5}')
    result = algoperf("sweep", "status", str(path), "--experiment-dir", str(tmp_path / "exp"))
    assert result.returncode == 0, result.stderr
    assert "done/reached" in result.stdout and "9.50 s" in result.stdout and "120" in result.stdout
    assert result.stdout.strip().splitlines()[-1] == "1 done/reached, 1 missing"
