"""SLURM for real: a one-node cluster on this machine (``scripts/slurm-local.sh``), a sweep whose
jobs go through ``sbatch``, and a two-task ``srun`` DDP run. Skipped, with the reason, where
SLURM cannot be started (not root, not installed)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import ROOT, run_cli, tiny_overrides

SCRIPT = ROOT / "scripts" / "slurm-local.sh"


def _cluster_up(env: dict[str, str]) -> bool:
    if not shutil.which("sinfo"):
        return False
    done = subprocess.run(["sinfo", "-h", "-o", "%a"], env=env, capture_output=True, text=True)
    return done.returncode == 0 and "up" in done.stdout


@pytest.fixture(scope="module")
def slurm() -> Iterator[dict[str, str]]:
    """The environment that reaches a running cluster: CI's (.ci/run starts one), or one
    started here and stopped after this module."""
    env = dict(os.environ)
    if env.get("SLURM_CONF") and _cluster_up(env):
        yield env
        return
    if os.geteuid() != 0:
        pytest.skip("SLURM: not running, and starting it needs root (scripts/slurm-local.sh)")
    if not shutil.which("slurmctld") or not shutil.which("munged"):
        pytest.skip("SLURM: not installed; `sudo scripts/slurm-local.sh start` installs it")
    started = subprocess.run(
        ["bash", str(SCRIPT), "start"], capture_output=True, text=True, timeout=180
    )
    if started.returncode != 0:
        pytest.skip(f"SLURM: could not start: {started.stderr.strip().splitlines()[-1:]}")
    (line,) = [x for x in started.stdout.splitlines() if x.startswith("export SLURM_CONF=")]
    env["SLURM_CONF"] = line.split("=", 1)[1]
    try:
        yield env
    finally:
        subprocess.run(["bash", str(SCRIPT), "stop"], capture_output=True, timeout=60)


def test_a_sweep_runs_each_job_through_sbatch(
    slurm: dict[str, str], tiny_data: Path, tmp_path: Path
) -> None:
    proc = run_cli(
        "train.py",
        "-m",
        "hydra/launcher=slurm",
        "model=mlp",
        "model.width=0,8,16",  # width 0 fails: the summary must list it
        *tiny_overrides(tiny_data, tmp_path),
        "trainer.max_epochs=1",
        "plots.enabled=false",
        check=False,
        env={"SLURM_CONF": slurm["SLURM_CONF"]},
    )
    (sweep_dir,) = tmp_path.glob("multirun/*/*")
    # one sbatch job array, a SLURM task per sweep job: submitit keeps each one's log
    tasks = sorted(p.parent.name for p in (sweep_dir / ".submitit").glob("*/*_log.out"))
    assert len(tasks) == 3 and len({t.split("_")[0] for t in tasks}) == 1, tasks
    records = [json.loads((sweep_dir / str(n) / "metrics.json").read_text()) for n in range(3)]
    assert [r["status"] for r in records] == ["failed", "ok", "ok"]
    assert records[1]["params_total"] < records[2]["params_total"]
    summary = (sweep_dir / "summary.md").read_text()
    assert "3 jobs: 2 ok, 1 failed." in summary
    assert "- job 0 (`model.width=0`)" in summary
    assert proc.returncode == 1 and "1 of 3 jobs failed" in proc.stderr


def test_srun_starts_two_ddp_ranks_that_share_one_run(
    slurm: dict[str, str], tiny_data: Path, tmp_path: Path
) -> None:
    argv = [
        "srun",
        "--nodes=1",
        "--ntasks-per-node=2",
        "--cpus-per-task=1",
        sys.executable,
        str(ROOT / "train.py"),
        "trainer=ddp_cpu",  # 2 devices, ddp, gloo on CPU: Lightning takes the ranks from SLURM
        "model=mlp",
        *tiny_overrides(tiny_data, tmp_path),
        "trainer.max_epochs=1",
        "plots.enabled=false",
    ]
    done = subprocess.run(argv, cwd=ROOT, env=slurm, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    # both ranks wrote into one folder, named by the SLURM job and step
    (run_dir,) = [p.parent for p in tmp_path.glob("*/*/metrics.json")]
    assert run_dir.name.startswith("slurm-")
    record = json.loads((run_dir / "metrics.json").read_text())
    assert record["status"] == "ok" and record["test/acc"] > 0
    log = (run_dir / "train.log").read_text()
    assert "GLOBAL_RANK: 0, MEMBER: 1/2" in log and "GLOBAL_RANK: 1, MEMBER: 2/2" in log
    assert "SLURM auto-requeueing enabled" in log  # Lightning's SLURM environment was detected
