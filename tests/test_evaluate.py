"""``python eval.py``: reproduces training's test metrics, writes the figures, refuses bad files."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import pytest
import torch

from mnistapp.training.checkpoints import CheckpointError, restore
from tests.helpers import assert_png, compose, run_cli, tiny_overrides

FIGURES = ("curves", "kernels", "confusion", "failures", "tsne")


def eval_overrides(data_dir: Path, log_dir: Path) -> list[str]:
    """The tiny-data overrides that apply to eval.py (it has no callbacks group)."""
    return [o for o in tiny_overrides(data_dir, log_dir) if not o.startswith("callbacks.")]


def run_eval(*overrides: str, output_dir: Path) -> dict:
    """``python eval.py overrides...`` in this process, into ``output_dir``."""
    from mnistapp.cli.evaluate import RESULT_KEYS, evaluate
    from mnistapp.cli.task import run_on_checkpoint

    cfg = compose(*overrides, config_name="eval", output_dir=output_dir)
    return run_on_checkpoint("eval", evaluate, cfg, RESULT_KEYS)


def test_training_writes_its_figures(trained_run: Path) -> None:
    for name in FIGURES[:-1]:  # t-SNE is opt-in
        assert_png(trained_run / f"{name}.png", min_kb=2 if name == "failures" else 8)
    assert not (trained_run / "tsne.png").exists()


def test_eval_reproduces_training_metrics_and_writes_figures(
    trained_run: Path, tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    trained = json.loads((trained_run / "metrics.json").read_text())
    run_dir = tmp_path / "eval"
    run_eval(
        f"ckpt_path={trained['best_ckpt']}",
        *eval_overrides(tiny_data, tmp_path),
        "plots.tsne=true",
        "plots.tsne_samples=100",
        output_dir=run_dir,
    )
    stdout = capsys.readouterr().out
    evaluated = json.loads((run_dir / "metrics.json").read_text())
    # the model is named as in training (its config name), not by its class
    assert evaluated["status"] == "ok" and evaluated["model"] == trained["model"] == "lenet"
    keys = ("test/acc", "test/f1", "test/f1_per_class", "test/f1_by_class", "test/confusion")
    for key in keys:
        assert evaluated[key] == trained[key], key
    assert "test/acc" in stdout and str(run_dir) in stdout
    for name in FIGURES:  # curves come from the training run's csv/metrics.csv
        assert_png(run_dir / f"{name}.png", min_kb=2 if name == "failures" else 8)


def test_model_override_must_match_the_checkpoint(trained_run: Path) -> None:
    ckpt = trained_run / "checkpoints" / "last.ckpt"
    lenet = {"_target_": "mnistapp.models.LeNet5", "num_classes": 10, "width": 6}
    assert type(restore(ckpt, lenet).module.net).__name__ == "LeNet5"
    with pytest.raises(CheckpointError, match="does not fit LeNet5: .*shape mismatch"):
        restore(ckpt, {**lenet, "width": 8})
    with pytest.raises(CheckpointError, match="holds a LeNet5, not the requested MLP"):
        restore(ckpt, {"_target_": "mnistapp.models.MLP"})


def test_wrong_architecture_is_one_clear_line(
    trained_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ckpt = trained_run / "checkpoints" / "last.ckpt"
    with pytest.raises(SystemExit) as exit_:
        run_eval(
            f"ckpt_path={ckpt}", "model=cnn", f"paths.log_dir={tmp_path}", output_dir=tmp_path / "r"
        )
    assert exit_.value.code == 2
    stderr = capsys.readouterr().err
    assert "holds a LeNet5, not the requested DeeperCNN" in stderr
    assert "Traceback" not in stderr and stderr.count("\n") == 1


class Payload:
    """Unpickling this calls ``os.system`` (what a hostile checkpoint would do)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _malicious_files(tmp_path: Path, marker: Path) -> dict[str, Path]:
    payload = {"state_dict": {}, "hyper_parameters": Payload(marker)}
    files = {name: tmp_path / f"{name}.ckpt" for name in ("zip", "legacy", "raw_pickle")}
    torch.save(payload, files["zip"])
    torch.save(payload, files["legacy"], _use_new_zipfile_serialization=False)
    files["raw_pickle"].write_bytes(pickle.dumps(payload))
    return files


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_malicious_checkpoint_is_refused_and_never_runs(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    files = _malicious_files(tmp_path, marker)
    for kind, path in files.items():
        # torch names the global it refused; a raw protocol-5 pickle fails on an opcode first
        message = (
            "refusing .* uses pickle beyond" if kind == "raw_pickle" else "would call .*system"
        )
        with pytest.raises(CheckpointError, match=message):
            restore(path)
    proc = run_cli("eval.py", f"ckpt_path={files['zip']}", f"paths.log_dir={tmp_path}", check=False)
    assert proc.returncode == 2  # the command line's exit status for a refused checkpoint
    assert "refusing to load" in proc.stderr and "Traceback" not in proc.stderr
    assert not marker.exists()


def test_saved_model_config_may_only_name_zoo_models(trained_run: Path, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    checkpoint = torch.load(trained_run / "checkpoints" / "last.ckpt", weights_only=True)
    for target in ("os.system", "mnistapp.models.count_parameters", "builtins.exec"):
        checkpoint["hyper_parameters"]["net_config"] = {"_target_": target, "command": "x"}
        torch.save(checkpoint, tmp_path / "crafted.ckpt")
        with pytest.raises(CheckpointError, match="not a mnistapp model"):
            restore(tmp_path / "crafted.ckpt")
    assert not marker.exists()


def test_missing_and_non_checkpoint_files(tmp_path: Path) -> None:
    (tmp_path / "notes.ckpt").write_text("not a checkpoint\n")
    (tmp_path / "broken.ckpt").write_bytes(b"PK\x03\x04 truncated zip")
    torch.save(torch.zeros(3), tmp_path / "tensor.ckpt")
    cases = {
        None: "no checkpoint given",
        tmp_path / "missing.ckpt": "no checkpoint file at",
        tmp_path / "notes.ckpt": "is not a PyTorch checkpoint",
        tmp_path / "broken.ckpt": "is not a PyTorch checkpoint",
        tmp_path / "tensor.ckpt": "is not a Lightning checkpoint",
    }
    for path, message in cases.items():
        with pytest.raises(CheckpointError, match=message):
            restore(path)


def test_training_resumes_only_from_a_safe_checkpoint(
    trained_run: Path, tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from mnistapp.cli.task import run_task
    from mnistapp.cli.train import train

    overrides = tiny_overrides(tiny_data, tmp_path)
    last = f"ckpt_path={trained_run}/checkpoints/last.ckpt"
    cfg = compose(*overrides, last, "trainer.max_epochs=3", output_dir=tmp_path / "resumed")
    run_task(train, cfg, ())
    record = json.loads((tmp_path / "resumed" / "metrics.json").read_text())
    assert record["status"] == "ok" and record["epochs"] == 3  # went on from epoch 2
    marker = tmp_path / "pwned"
    evil = _malicious_files(tmp_path, marker)["zip"]
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        run_task(train, compose(*overrides, f"ckpt_path={evil}", output_dir=tmp_path / "e"), ())
    stderr = capsys.readouterr().err
    assert exit_.value.code == 2 and "it would call posix.system" in stderr
    assert len(stderr.strip().splitlines()) == 1 and not marker.exists()
