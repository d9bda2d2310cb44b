"""benchmarks/gpu.py in smoke mode (every part, a few CPU steps, run in this process as
``__main__``) and the ``compile`` option."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.helpers import compose, run_script, tiny_overrides

SECTIONS = ("a_overhead", "b_speedrun", "c_precision", "d_channels_last", "e_compile", "f_ddp")
# a number each measured row of a section must carry
MEASURE = {
    "a_overhead": "app_ms",
    "b_speedrun": "train_s_mean",
    "c_precision": "epoch_s",
    "d_channels_last": "ms_per_step",
    "e_compile": "ms_per_step",
}


def test_gpu_benchmark_smoke_measures_or_explains_every_part(
    tiny_data: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stdout = run_script(
        "benchmarks/gpu.py",
        *("--smoke", "--data-dir", str(tiny_data), "--out", str(tmp_path)),
        capsys=capsys,
        monkeypatch=monkeypatch,
    )
    report = json.loads((tmp_path / "gpu.json").read_text())
    markdown = (tmp_path / "gpu.md").read_text()
    assert report["settings"]["smoke"] is True
    assert list(report["results"]) == list(SECTIONS)
    for section, rows in report["results"].items():
        assert rows, section
        for row in rows:
            status = row["status"]
            assert status == "measured" or (
                status.startswith("not measured: ") and len(status) > len("not measured: ") + 5
            ), (section, row)
            if status == "measured" and section in MEASURE and "/" not in row.get("pipeline", ""):
                assert row[MEASURE[section]] > 0, (section, row)
        if section != "f_ddp":
            assert any(r["status"] == "measured" for r in rows), section
    # no CUDA here: 16-mixed and DDP say why
    precision = {(r["model"], r["precision"]): r for r in report["results"]["c_precision"]}
    assert set(precision) == {
        (m, p) for m in ("lenet", "cnn") for p in ("32-true", "bf16-mixed", "16-mixed")
    }
    assert "CUDA" in precision["lenet", "16-mixed"]["status"]
    assert 0 <= precision["lenet", "32-true"]["test_acc"] <= 1
    assert report["results"]["f_ddp"][0]["status"].startswith("not measured: ")
    pipelines = [r["pipeline"] for r in report["results"]["b_speedrun"]]
    assert pipelines == ["app", "hand", "app/hand"]
    assert {r["compile"] for r in report["results"]["e_compile"]} == {True, False}
    variants = {r["variant"] for r in report["results"]["d_channels_last"]}
    assert {"nchw fp32", "nhwc fp32"} <= variants
    assert {(r["model"], r["batch"]) for r in report["results"]["a_overhead"]} == {
        ("lenet", 32),
        ("mlp", 32),
    }
    # the markdown: a table per part, printed last
    for title in ("(a) app vs hand", "(b) experiment=speedrun", "(c) trainer.precision"):
        assert f"## {title}" in markdown
    for title in ("(d) channels_last", "(e) compile", "(f) multi-GPU DDP"):
        assert f"## {title}" in markdown
    assert "| lenet | 16-mixed |" in markdown and "not measured: " in markdown
    assert stdout.rstrip().endswith(markdown.rstrip().splitlines()[-1])


def test_compile_trains_mlp_on_cpu(
    tiny_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mnistapp.cli.train import train

    compiled = []
    original = torch.nn.Module.compile

    def spy(self: torch.nn.Module, *args: object, **kwargs: object) -> None:
        compiled.append(type(self).__name__)
        original(self, *args, **kwargs)

    monkeypatch.setattr(torch.nn.Module, "compile", spy)
    cfg = compose(
        *tiny_overrides(tiny_data, tmp_path),
        "model=mlp",
        "compile=true",
        "trainer.max_epochs=1",
        "plots.enabled=false",
        output_dir=tmp_path / "run",
    )
    record = train(cfg)
    assert compiled, "compile=true did not torch.compile the network"
    assert record["test/acc"] > 0.3, record  # chance is 0.1
