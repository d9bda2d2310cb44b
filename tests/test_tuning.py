"""``hparams_search=optuna``: a saved study that grows, pruning, parallel trials, errors."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import optuna
import pytest
import yaml
from hydra.utils import instantiate
from omegaconf import OmegaConf

from hydra_plugins.mnistapp_optuna.optuna_sweeper import OptunaSweeper, ask, search_space
from mnistapp.errors import ConfigError
from tests.helpers import ROOT, run_cli, run_script, tiny_overrides

SEARCH = (
    "hparams_search=optuna",
    "model=mlp",
    "plots.enabled=false",
    "optimizer=adam",
    "data.batch_size=32",
    "hydra.sweeper.params={model.width: 'choice(4, 8, 16, 32)',"
    " optimizer.lr: 'tag(log, interval(0.001, 0.05))'}",
)


def _storage(log_dir: Path) -> str:
    return f"sqlite:///{log_dir}/optuna.db"


def _sweeps(log_dir: Path) -> list[Path]:
    return sorted(log_dir.glob("multirun/*/*"))


def _rows(sweep_dir: Path) -> list[dict[str, str]]:
    with (sweep_dir / "summary.csv").open(newline="") as f:
        return list(csv.DictReader(f))


def test_a_saved_study_grows_with_each_command_and_runs_trials_in_parallel(
    tiny_data: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    common = (*tiny_overrides(tiny_data, tmp_path), *SEARCH, "trainer.max_epochs=1")
    # two trials at once, in two worker processes sharing the sqlite study
    parallel = run_cli(
        "train.py",
        *common,
        "hydra.sweeper.n_trials=2",
        "hydra.sweeper.n_jobs=2",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
    )
    # the second command in this process: a command line of its own costs ~6 s of imports
    run_script(
        "train.py", *common, "hydra.sweeper.n_trials=2", capsys=capsys, monkeypatch=monkeypatch
    )

    study = optuna.load_study(study_name="mnistapp", storage=_storage(tmp_path))
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 4
    # the resumed search proposes new points, not the first command's again
    first, second = (study.trials[:2], study.trials[2:])
    assert {str(t.params) for t in first}.isdisjoint({str(t.params) for t in second})

    sweeps = _sweeps(tmp_path)
    assert len(sweeps) == 2
    for sweep_dir, trials in zip(sweeps, (first, second), strict=True):
        rows = _rows(sweep_dir)
        assert [row["tune.trial"] for row in rows] == [str(t.number) for t in trials]
        # the objective Optuna got is the job's val/f1_best from its metrics.json
        for row, trial in zip(rows, trials, strict=True):
            assert row["status"] == "ok"
            assert float(row["val/f1_best"]) == pytest.approx(trial.value)
            assert row["test/acc"] == ""  # a search never looks at the test set
    assert "Joblib.Parallel(n_jobs=2" in parallel.stdout + parallel.stderr
    # each parallel job in its own folder
    run_dirs = {json.loads((sweeps[0] / n / "metrics.json").read_text())["run_dir"] for n in "01"}
    assert run_dirs == {str(sweeps[0] / "0"), str(sweeps[0] / "1")}
    results = yaml.safe_load((sweeps[1] / "optimization_results.yaml").read_text())
    assert results["trials"] == 4 and results["best_value"] == pytest.approx(study.best_value)


def test_unpromising_trials_are_pruned_after_an_epoch(
    tiny_data: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # in this process: pruned trials are not failures, so the sweep ends without SystemExit
    run_script(
        "train.py",
        *tiny_overrides(tiny_data, tmp_path),
        *SEARCH,
        "trainer.max_epochs=3",
        "hydra.sweeper.n_trials=2",
        # no F1 reaches 1.5: every trial is pruned at its first report
        "~hydra.sweeper.pruner",
        "+hydra.sweeper.pruner={_target_: optuna.pruners.ThresholdPruner, lower: 1.5}",
        capsys=capsys,
        monkeypatch=monkeypatch,
    )
    study = optuna.load_study(study_name="mnistapp", storage=_storage(tmp_path))
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.PRUNED] * 2
    assert all(list(t.intermediate_values) == [0] for t in study.trials)

    (sweep_dir,) = _sweeps(tmp_path)
    for job in ("0", "1"):
        record = json.loads((sweep_dir / job / "metrics.json").read_text())
        assert record["status"] == "pruned" and record["pruned_after_epoch"] == 0
        assert record["epochs"] == 1  # stopped after its first of three epochs
    assert "2 jobs: 0 ok, 2 pruned, 0 failed." in (sweep_dir / "summary.md").read_text()


def _sweeper(**settings: object) -> OptunaSweeper:
    preset = OmegaConf.load(ROOT / "conf" / "hydra" / "sweeper" / "optuna.yaml")
    preset.merge_with(settings)
    return instantiate(preset, _recursive_=False)


def test_parallel_workers_on_one_study_propose_apart_and_one_search_repeats(
    tmp_path: Path,
) -> None:
    # Each worker used to seed its sampler from the trial count it found at start: two started
    # together proposed the same trials (8 trials, 4 configurations).
    space, _ = search_space(
        {"model.width": "choice(4, 8, 16, 32)", "optimizer.lr": "tag(log, interval(1e-3, 0.1))"},
        [],
    )
    storage = f"sqlite:///{tmp_path}/optuna.db"
    workers = [optuna.create_study(study_name="s", storage=storage, load_if_exists=True)] * 2
    workers[1] = optuna.load_study(study_name="s", storage=storage)
    sampler = _sweeper()._sampler
    trials = [ask(study, space, sampler) for _ in range(4) for study in workers]
    assert sorted(t.number for t in trials) == list(range(8))
    assert len({str(t.params) for t in trials}) == 8
    # one search alone, with the preset's fixed seed, proposes the same trials again
    alone = optuna.create_study()
    assert [ask(alone, space, sampler).params for _ in range(8)] == [t.params for t in trials]


def test_a_trial_whose_job_dies_is_failed_not_left_running(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path}/optuna.db"
    sweeper = _sweeper(
        storage=storage, n_trials=2, n_jobs=2, params={"model.width": "choice(4, 8)"}
    )
    sweeper.config = OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path / "sweep")}}})
    sweeper.validate_batch_is_legal = lambda overrides: None  # needs Hydra's config loader

    class Killed:  # the launcher's job process stopped by a signal, or a worker killed
        def launch(self, overrides: list[list[str]], initial_job_idx: int) -> None:
            raise KeyboardInterrupt

    sweeper.launcher = Killed()
    with pytest.raises(KeyboardInterrupt):
        sweeper.sweep([])
    study = optuna.load_study(study_name="mnistapp", storage=storage)
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.FAIL] * 2


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ({"direction": "up"}, "hydra.sweeper.direction must be maximize or minimize"),
        ({"n_trials": 0}, "hydra.sweeper.n_trials must be an integer >= 1"),
        ({"n_jobs": 0}, "hydra.sweeper.n_jobs must be an integer >= 1"),
        ({"params": {}}, "hydra.sweeper.params is empty: nothing to search"),
    ],
)
def test_bad_search_settings_are_refused(setting: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        _sweeper(**setting).sweep([])


def test_a_bad_search_setting_is_one_line(tiny_data: Path, tmp_path: Path) -> None:
    proc = run_cli(
        "train.py",
        *tiny_overrides(tiny_data, tmp_path),
        *SEARCH,
        "hydra.sweeper.direction=up",
        check=False,
        env={"HYDRA_FULL_ERROR": "0"},
    )
    assert proc.returncode == 2
    message = "train: error: hydra.sweeper.direction must be maximize or minimize"
    assert proc.stderr.strip().splitlines()[-1].startswith(message)
    assert "Traceback" not in proc.stderr
