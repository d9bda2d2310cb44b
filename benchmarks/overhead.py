"""Where the app's training step spends its time, next to a hand-written loop and the usual loader.

    python benchmarks/overhead.py [--models mlp,lenet] [--batch-sizes 64,256] [--steps 200]
        [--repeats 3] [--device cpu|cuda] [--data-dir DIR] [--out outputs/benchmarks]
        [--override key=value ...]

For every model and batch size, one process runs interleaved repetitions of four pipelines
(hand, app, app without train metrics, torchvision; medians are reported):

* ``hand``: a plain PyTorch loop: the network and optimizer instantiated from the same composed
  config, the DataModule's resident uint8 tensors sliced by a shuffled index, ``normalize``,
  cross-entropy; then a validation pass (eval mode, no_grad) computing accuracy.
* ``app``: ``python train.py`` as it builds the run (``mnistapp.cli.train.build`` on the real
  config composed by Hydra: default callbacks, CSV logger, progress bar, all metrics), fitted.
* ``app_nometrics``: the same, with the ``update`` of the Classifier's training-stage torchmetrics
  (loss mean, accuracy, F1) turned into no-ops, to measure their share.
* ``torchvision``: torchvision ``MNIST`` + ``ToTensor`` + ``Normalize`` in a ``DataLoader``
  (shuffle, num_workers=0), the same hand-written loop.

Each run is two epochs of ``--steps`` training batches plus a full validation pass; only the
second epoch is timed (the first one warms torch up). Then the app runs once more with Lightning's
``SimpleProfiler`` (``++trainer.profiler=simple``, as a user would profile it) for a per-step
breakdown of its hooks. Results: a markdown table on stdout, ``<out>/overhead.md`` and
``<out>/overhead.json`` (every repetition, the medians and the breakdown).
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import logging
import platform
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, open_dict
from torch import Tensor, nn

from mnistapp.cli.train import build
from mnistapp.data.transforms import normalize

PIPELINES = ("hand", "app", "app_nometrics", "torchvision")
Batches = Callable[[int], Iterable[tuple[Tensor, Tensor]]]


# --- the app's run, composed and built as `python train.py` does ------------------------------


def compose(overrides: list[str], output_dir: Path) -> DictConfig:
    """The config ``python train.py <overrides>`` would run with, its run folder ``output_dir``.

    Hydra's compose API leaves ``hydra.runtime.output_dir`` unset (only a Hydra run fills it, and
    ``paths.output_dir`` points there), so it is set here; like Hydra's ``run_job``, the ``hydra``
    node is then registered as the HydraConfig and removed from the task's config.
    """
    with hydra.initialize_config_module(config_module="mnistapp.conf", version_base="1.3"):
        cfg = hydra.compose("config", overrides=overrides, return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(output_dir)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg


def _sync(device: torch.device) -> None:
    """Wait for queued kernels, so that a clock read covers the work (CUDA runs async)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class PhaseTimer:
    """Clock each epoch's training phase and validation pass; snapshot a profiler's records.

    It listens through the Classifier's own (no-op) ``on_train_epoch_start``,
    ``on_validation_start`` and ``on_validation_end`` hooks rather than as a Callback: Lightning
    calls every hook of every callback at every step, so one more callback would add its dispatch
    cost to the step being measured. Module hooks run after the callbacks' hooks of the same
    name, so the training phase ends when validation starts (Lightning validates inside the
    training epoch, after the last batch's hooks) and the validation pass once its checkpoint is
    saved. With a ``SimpleProfiler``, the records of the last epoch's training phase are kept.
    """

    HOOKS = ("on_train_epoch_start", "on_validation_start", "on_validation_end")

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.epochs: list[dict[str, float]] = []
        self.profile: dict[str, list[float]] = {}
        self._start = 0.0

    def attach(self, module: L.LightningModule) -> None:
        """Chain the timer into ``module``'s hooks (instance attributes shadow the methods)."""
        for hook in self.HOOKS:
            original, mine = getattr(module, hook), getattr(self, hook)

            def chained(original: Callable[[], None] = original, mine: Callable = mine) -> None:
                original()
                mine(module.trainer)

            object.__setattr__(module, hook, chained)

    def on_train_epoch_start(self, trainer: L.Trainer) -> None:
        durations = getattr(trainer.profiler, "recorded_durations", None)
        if durations is not None:
            durations.clear()  # keep only this epoch's training phase
        _sync(self.device)
        self._start = time.perf_counter()

    def on_validation_start(self, trainer: L.Trainer) -> None:
        if trainer.sanity_checking:
            return
        _sync(self.device)
        now = time.perf_counter()
        self.epochs.append({"train_s": now - self._start})
        durations = getattr(trainer.profiler, "recorded_durations", None)
        if durations is not None:
            self.profile = {k: list(v) for k, v in durations.items()}
        self._start = now

    def on_validation_end(self, trainer: L.Trainer) -> None:
        if trainer.sanity_checking:
            return
        _sync(self.device)
        self.epochs[-1]["val_s"] = time.perf_counter() - self._start


def _mute_train_metrics(module: nn.Module) -> list[str]:
    """Make the ``update`` of the module's training-stage torchmetrics no-ops; return their names.

    Training-stage metrics are the module's Metric/MetricCollection children named ``train*``
    (``train_loss``, ``train_metrics``). Validation metrics stay: the Classifier stops a run whose
    ``val/loss`` is not finite. Whatever the module does per step besides calling ``update``
    (argmax, bookkeeping) is still timed.
    """
    from torchmetrics import Metric, MetricCollection

    def noop(*args: Any, **kwargs: Any) -> None:
        return None

    muted = []
    for name, child in module.named_children():
        if name.startswith("train") and isinstance(child, Metric | MetricCollection):
            # an instance attribute shadows the (wrapped) update method; nn.Module allows plain ones
            object.__setattr__(child, "update", noop)
            muted.append(name)
    if not muted:
        print("warning: no train* metrics found to mute; app_nometrics = app", file=sys.stderr)
    return muted


def run_app(
    overrides: list[str],
    workdir: Path,
    model: str,
    device: torch.device,
    metrics: bool = True,
) -> PhaseTimer:
    """Build the run exactly like ``train.py`` and fit it; return its timer."""
    cfg = compose(overrides, workdir)
    run = build(cfg, model_name=model)
    if not metrics:
        _mute_train_metrics(run.module)
    timer = PhaseTimer(device)
    timer.attach(run.module)
    # The progress bar draws as it does for users, into a file rather than over our output.
    with (
        open(workdir / "console.log", "w") as console,
        contextlib.redirect_stdout(console),
        contextlib.redirect_stderr(console),
    ):
        run.trainer.fit(run.module, datamodule=run.datamodule)
    if len(timer.epochs) != 2 or "val_s" not in timer.epochs[-1]:
        raise RuntimeError(f"expected 2 timed epochs, got {timer.epochs} (see {workdir})")
    return timer


# --- the hand-written loop and its two batch sources --------------------------------------------


def resident_batches(
    images: Tensor, labels: Tensor, batch_size: int, mean: float, std: float
) -> Batches:
    """The first ``steps`` batches of a fresh shuffle, sliced from resident uint8 tensors and
    normalised where they live (what the app's loader and ``on_after_batch_transfer`` do)."""

    def batches(steps: int) -> Iterator[tuple[Tensor, Tensor]]:
        order = torch.randperm(len(labels), device=labels.device)
        for i in range(steps):
            idx = order[i * batch_size : (i + 1) * batch_size]
            yield normalize(images[idx], mean, std), labels[idx]

    return batches


def eval_batches(
    images: Tensor, labels: Tensor, batch_size: int, mean: float, std: float
) -> Iterator[tuple[Tensor, Tensor]]:
    """The validation set in order, normalised, ``batch_size`` at a time."""
    for start in range(0, len(labels), batch_size):
        end = start + batch_size
        yield normalize(images[start:end], mean, std), labels[start:end]


def torchvision_batches(
    dataset: Any, batch_size: int, shuffle: bool, device: torch.device
) -> Batches:
    """The usual pipeline: a DataLoader over a per-sample transformed dataset, moved to device."""
    from torch.utils.data import DataLoader

    pin = device.type == "cuda"
    loader = DataLoader(
        dataset, batch_size=batch_size, shuffle=shuffle, num_workers=0, pin_memory=pin
    )

    def batches(steps: int) -> Iterator[tuple[Tensor, Tensor]]:
        for x, y in itertools.islice(loader, steps):
            yield x.to(device, non_blocking=True), y.to(device, non_blocking=True)

    return batches


def run_hand(
    cfg: DictConfig, device: torch.device, steps: int, train: Batches, val: Callable[[], Iterable]
) -> list[dict[str, float]]:
    """Two epochs of a plain PyTorch loop (``steps`` batches, then a validation pass), timed."""
    if cfg.get("matmul_precision"):
        torch.set_float32_matmul_precision(cfg.matmul_precision)  # as build() sets it
    torch.manual_seed(cfg.seed)  # build() seeds before instantiating: the same initial weights
    net = instantiate(cfg.model).to(device)
    optimizer = instantiate(cfg.optimizer)(params=net.parameters())
    criterion = nn.CrossEntropyLoss()
    epochs = []
    for _ in range(2):
        _sync(device)
        start = time.perf_counter()
        net.train()
        for x, y in train(steps):
            loss = criterion(net(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        _sync(device)
        middle = time.perf_counter()
        net.eval()
        correct = torch.zeros((), dtype=torch.long, device=device)
        seen = 0
        with torch.no_grad():
            for x, y in val():
                correct += (net(x).argmax(dim=1) == y).sum()
                seen += len(y)
        accuracy = correct.item() / max(seen, 1)  # .item() waits for the device
        end = time.perf_counter()
        epochs.append({"train_s": middle - start, "val_s": end - middle, "val_acc": accuracy})
    return epochs


# --- one configuration: interleaved repetitions and the profiled run ----------------------------


def _per_step(epochs: list[dict[str, float]], steps: int) -> dict[str, float]:
    """The timed (second) epoch as ms per training step and ms per validation pass."""
    last = epochs[-1]
    return {"train_ms_per_step": 1000 * last["train_s"] / steps, "val_ms": 1000 * last["val_s"]}


def _short_action(name: str) -> str:
    """Drop a callback's state-key arguments (``ModelCheckpoint{'monitor': ...}``) from a name."""
    return re.sub(r"\{.*\}", "", name)


# What Lightning runs nested inside ``[LightningModule]<module>.optimizer_step`` (the closure):
# (name prefix, name suffix) of the actions whose time that action includes.
NESTED_IN_OPTIMIZER_STEP = (
    ("[Strategy]", ".training_step"),
    ("[Strategy]", ".backward"),  # includes the on_before/after_backward hooks
    ("[", ".on_before_zero_grad"),
    ("[LightningModule]", ".optimizer_zero_grad"),
    ("[", ".on_before_optimizer_step"),
    ("[LightningModule]", ".configure_gradient_clipping"),
)


def breakdown(profile: dict[str, list[float]], steps: int, total_ms: float) -> dict[str, Any]:
    """Per-step cost (ms) and calls per step of every profiled action of the training phase.

    Besides Lightning's own (inclusive, nested) actions: each callback's hooks summed, all
    callbacks summed, and two exclusive remainders: the step outside ``run_training_batch``
    (fetch, transfer, batch hooks, logger connector) and ``optimizer_step`` minus what it nests
    (the SGD update itself plus Lightning's closure machinery).
    """
    actions: dict[str, dict[str, float]] = {}

    def add(name: str, durations: list[float]) -> None:
        entry = actions.setdefault(name, {"ms_per_step": 0.0, "calls_per_step": 0.0})
        entry["ms_per_step"] += 1000 * sum(durations) / steps
        entry["calls_per_step"] += len(durations) / steps

    for name, durations in profile.items():
        short = _short_action(name)
        add(short, durations)
        if short.startswith("[Callback]"):
            add(short.rsplit(".", 1)[0] + ".* (all hooks)", durations)
            add("[Callback]* (all callbacks, all hooks)", durations)

    def ms(name: str) -> float:
        return actions.get(name, {}).get("ms_per_step", 0.0)

    optimizer_step = next(
        (a for a in actions if a.startswith("[LightningModule]") and a.endswith(".optimizer_step")),
        "",
    )
    nested = sum(
        v["ms_per_step"]
        for a, v in actions.items()
        if "(all" not in a
        and any(a.startswith(pre) and a.endswith(suf) for pre, suf in NESTED_IN_OPTIMIZER_STEP)
    )
    derived = {
        "(exclusive) step outside run_training_batch": total_ms - ms("run_training_batch"),
        "(exclusive) optimizer_step minus nested actions": ms(optimizer_step) - nested,
    }
    for name, value in derived.items():
        actions[name] = {"ms_per_step": value, "calls_per_step": 1.0}
    return dict(sorted(actions.items(), key=lambda kv: -kv[1]["ms_per_step"]))


def bench_config(
    model: str, batch: int, args: argparse.Namespace, device: torch.device, workdir: Path
) -> dict[str, Any]:
    """All pipelines for one model and batch size; returns repetitions, medians and breakdown."""
    base = [
        f"model={model}",
        f"data.batch_size={batch}",
        "trainer.max_epochs=2",
        f"trainer.accelerator={'gpu' if device.type == 'cuda' else 'cpu'}",
        "test=false",  # only fit is timed; train.py would also test
        *([f"paths.data_dir={args.data_dir}"] if args.data_dir else []),
        *args.override,
    ]
    cfg = compose(base, workdir / "compose")
    data = instantiate(cfg.data)
    data.prepare_data()
    data.setup("fit")
    mean, std = cfg.data.mean, cfg.data.std
    train_x, train_y = (t.to(device) for t in data.data["train"])
    val_x, val_y = (t.to(device) for t in data.data["val"])
    # Full batches only, the same count for every pipeline.
    steps = min(args.steps, len(train_y) // batch)
    if steps < 1:
        raise SystemExit(f"{len(train_y)} training images cannot make one batch of {batch}")
    overrides = [*base, f"++trainer.limit_train_batches={steps}"]

    from torch.utils.data import Subset
    from torchvision import transforms
    from torchvision.datasets import MNIST

    tv_dataset = MNIST(
        data.hparams.data_dir,
        train=True,
        transform=transforms.Compose(
            [transforms.ToTensor(), transforms.Normalize((mean,), (std,))]
        ),
    )
    # the DataModule's split (MNISTDataModule.setup), so both validate on the same images
    perm = torch.randperm(
        len(tv_dataset), generator=torch.Generator().manual_seed(cfg.data.split_seed)
    )
    n_val = cfg.data.val_size
    tv_train = torchvision_batches(Subset(tv_dataset, perm[n_val:].tolist()), batch, True, device)
    tv_val = torchvision_batches(
        Subset(tv_dataset, perm[:n_val].tolist()), cfg.data.eval_batch_size, False, device
    )
    hand_train = resident_batches(train_x, train_y, batch, mean, std)

    def hand_val() -> Iterator[tuple[Tensor, Tensor]]:
        return eval_batches(val_x, val_y, cfg.data.eval_batch_size, mean, std)

    def tv_val_all() -> Iterable[tuple[Tensor, Tensor]]:
        return tv_val(len(perm))

    runners: dict[str, Callable[[Path], list[dict[str, float]]]] = {
        "hand": lambda _: run_hand(cfg, device, steps, hand_train, hand_val),
        "app": lambda d: run_app(overrides, d, model, device).epochs,
        "app_nometrics": lambda d: run_app(overrides, d, model, device, metrics=False).epochs,
        "torchvision": lambda _: run_hand(cfg, device, steps, tv_train, tv_val_all),
    }
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in PIPELINES}
    for rep in range(args.repeats):
        # A B C D A B C D ...: machine noise hits every pipeline alike
        for name in PIPELINES:
            rundir = workdir / f"{model}-{batch}-{name}-{rep}"
            rundir.mkdir(parents=True)
            runs[name].append(_per_step(runners[name](rundir), steps))
        line = "  ".join(f"{n} {runs[n][-1]['train_ms_per_step']:.3f}" for n in PIPELINES)
        print(f"[{model} b{batch} rep {rep + 1}/{args.repeats}] ms/step: {line}", flush=True)

    median = {
        name: {key: statistics.median(r[key] for r in reps) for key in reps[0]}
        for name, reps in runs.items()
    }
    hand_ms = median["hand"]["train_ms_per_step"]
    ratios = {
        f"{name}/hand": median[name]["train_ms_per_step"] / hand_ms
        for name in PIPELINES
        if name != "hand"
    }
    profiled_dir = workdir / f"{model}-{batch}-profiled"
    profiled_dir.mkdir()
    timer = run_app([*overrides, "++trainer.profiler=simple"], profiled_dir, model, device)
    profiled = _per_step(timer.epochs, steps)["train_ms_per_step"]
    return {
        "model": model,
        "batch_size": batch,
        "steps": steps,
        "runs": runs,
        "median": median,
        "ratios": ratios,
        "breakdown": {
            "profiled_train_ms_per_step": profiled,
            "metrics_ms_per_step": median["app"]["train_ms_per_step"]
            - median["app_nometrics"]["train_ms_per_step"],
            "actions": breakdown(timer.profile, steps, profiled),
        },
    }


# --- report -----------------------------------------------------------------------------------


def results_table(results: list[dict[str, Any]]) -> str:
    """Medians per configuration: ms per training step, ratios to hand-written, validation pass."""
    lines = [
        "| model | batch | steps | hand ms/step | app ms/step | app no-metrics ms/step "
        "| torchvision ms/step | app/hand | app no-metrics/hand | torchvision/hand "
        "| val ms hand | val ms app | val ms torchvision |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for r in results:
        m, q = r["median"], r["ratios"]
        lines.append(
            f"| {r['model']} | {r['batch_size']} | {r['steps']} "
            f"| {m['hand']['train_ms_per_step']:.3f} | {m['app']['train_ms_per_step']:.3f} "
            f"| {m['app_nometrics']['train_ms_per_step']:.3f} "
            f"| {m['torchvision']['train_ms_per_step']:.3f} "
            f"| {q['app/hand']:.2f} | {q['app_nometrics/hand']:.2f} | {q['torchvision/hand']:.2f} "
            f"| {m['hand']['val_ms']:.1f} | {m['app']['val_ms']:.1f} "
            f"| {m['torchvision']['val_ms']:.1f} |"
        )
    return "\n".join(lines)


def breakdown_table(results: list[dict[str, Any]], top: int = 24) -> str:
    """The profiled app run: ms per training step of each hook/action (inclusive), per config."""
    names = [f"{r['model']}/{r['batch_size']}" for r in results]
    actions = [r["breakdown"]["actions"] for r in results]
    per_step = {a for acts in actions for a, v in acts.items() if v["calls_per_step"] >= 0.9}
    ranked = sorted(
        per_step, key=lambda a: -max(acts.get(a, {}).get("ms_per_step", 0) for acts in actions)
    )
    lines = [
        "| action (inclusive; nested actions overlap) | calls/step | "
        + " | ".join(f"{n} ms/step" for n in names)
        + " |",
        "|---|--:|" + "--:|" * len(names),
    ]

    def row(label: str, calls: str, values: list[float]) -> str:
        return f"| {label} | {calls} | " + " | ".join(f"{v:.3f}" for v in values) + " |"

    lines.append(
        row(
            "**profiled train step (total)**",
            "",
            [r["breakdown"]["profiled_train_ms_per_step"] for r in results],
        )
    )
    lines.append(
        row(
            "**hand-written step (median)**",
            "",
            [r["median"]["hand"]["train_ms_per_step"] for r in results],
        )
    )
    lines.append(
        row(
            "**train metric updates (app - app no-metrics)**",
            "",
            [r["breakdown"]["metrics_ms_per_step"] for r in results],
        )
    )
    for action in ranked[:top]:
        calls = next(acts[action]["calls_per_step"] for acts in actions if action in acts)
        values = [acts.get(action, {}).get("ms_per_step", 0.0) for acts in actions]
        lines.append(row(f"`{action}`", f"{calls:.0f}", values))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="mlp,lenet", help="comma-separated model= options")
    parser.add_argument("--batch-sizes", default="64,256", help="comma-separated batch sizes")
    parser.add_argument("--steps", type=int, default=200, help="training steps per timed epoch")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repetitions")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--data-dir", default=None, help="paths.data_dir (default: the config's)")
    parser.add_argument("--out", default="outputs/benchmarks", help="where the report goes")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)"
    )
    parser.add_argument(
        "--override",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra Hydra override for every run (repeatable), e.g. data.val_size=100",
    )
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device here")
    if args.threads:
        torch.set_num_threads(args.threads)
    # Lightning's info lines (GPU available, seed set, model summary) would bury the results.
    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)

    models = [m for m in args.models.split(",") if m]
    batch_sizes = [int(b) for b in args.batch_sizes.split(",") if b]
    started = time.perf_counter()
    results = []
    with tempfile.TemporaryDirectory(prefix="mnistapp-overhead-") as tmp:
        for model, batch in itertools.product(models, batch_sizes):
            results.append(bench_config(model, batch, args, device, Path(tmp)))

    settings = {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else platform.processor() or platform.machine(),
        "cpu_threads": torch.get_num_threads(),
        "steps": args.steps,
        "repeats": args.repeats,
        "overrides": args.override,
        "torch": torch.__version__,
        "lightning": L.__version__,
        "python": sys.version.split()[0],
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "wall_s": round(time.perf_counter() - started, 1),
    }
    markdown = "\n\n".join(
        [
            "# Training-step overhead: app vs hand-written loop",
            f"device `{device}` ({settings['device_name']}, {settings['cpu_threads']} torch "
            f"threads), torch {torch.__version__}, lightning {L.__version__}; second of two "
            f"epochs timed, median of {args.repeats} interleaved repetitions; "
            f"wall time {settings['wall_s']} s.",
            results_table(results),
            "## Where the app's step goes (SimpleProfiler, training phase of the second epoch)",
            breakdown_table(results),
        ]
    )
    print(markdown)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "overhead.md").write_text(markdown + "\n")
    (out / "overhead.json").write_text(
        json.dumps({"settings": settings, "results": results}, indent=2)
    )
    print(f"\nwrote {out / 'overhead.md'} and {out / 'overhead.json'}")


if __name__ == "__main__":
    main()
