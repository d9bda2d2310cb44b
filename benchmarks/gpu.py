"""Every GPU claim of docs/PERFORMANCE.md, measured by one command (issue 22).

    python benchmarks/gpu.py [--out outputs/benchmarks] [--data-dir DIR] [--smoke]

In one process, with a progress line per measurement, on the GPU when there is one:

* (a) ``overhead``: app vs hand-written loop per training step, lenet and mlp, batch 64 and 256
  (``benchmarks/overhead.py``'s ``bench_config``: interleaved repetitions, medians);
* (b) ``speedrun``: ``experiment=speedrun`` through the app (``build`` + ``fit_and_test``) and
  the same recipe as a hand-written loop: training time of its one epoch and test accuracy,
  2 warm-up runs, then seeds 1-3 each, interleaved;
* (c) ``precision``: ``trainer.precision`` 32-true / bf16-mixed / 16-mixed for lenet and cnn,
  through the app: second-epoch training time and test accuracy after 2 epochs;
* (d) ``channels_last``: NCHW vs NHWC (fp32 and bf16) for cnn and fast_cnn
  (``benchmarks/memory_format.py``'s ``stepper``);
* (e) ``compile``: ``compile=false`` vs ``compile=true`` through the app, ms per training step
  of the second epoch (the first one compiles);
* (f) ``ddp``: said not measured when fewer than 2 GPUs are visible.

Writes ``<out>/gpu.md`` and ``<out>/gpu.json`` and prints the markdown last. ``--smoke`` runs
every part for a few steps on the CPU (tests/test_gpu_benchmark.py), so the script cannot rot
between the weeks a GPU is lent. Developer instructions for the device: benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import statistics
import sys
import tempfile
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # overhead.py, memory_format.py

import lightning as L  # noqa: E402
import memory_format  # noqa: E402
import overhead  # noqa: E402
import torch  # noqa: E402
from hydra.utils import instantiate  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402
from torch import nn  # noqa: E402

from mnistapp.cli.train import LIGHTNING_SCHEDULER_KEYS, build, fit_and_test  # noqa: E402
from mnistapp.data.transforms import normalize  # noqa: E402
from mnistapp.runtime import register_resolvers  # noqa: E402

Row = dict[str, Any]


class Bench:
    """The settings of one invocation (full or smoke) and the app runs built from them."""

    def __init__(self, args: argparse.Namespace, device: torch.device, workdir: Path) -> None:
        self.smoke, self.device, self.workdir = args.smoke, device, workdir
        self.runs = 0
        self.common = [
            f"trainer.accelerator={'gpu' if device.type == 'cuda' else 'cpu'}",
            "data.download=false",  # the device has no network: the data is carried
            "extras.print_config=false",
            "plots.enabled=false",
            f"paths.log_dir={workdir / 'logs'}",
            *([f"paths.data_dir={args.data_dir}"] if args.data_dir else []),
        ]
        if args.smoke:  # tests/helpers.py tiny_overrides: 600 synthetic images
            self.common += ["data.verify=false", "data.val_size=100", "data.eval_batch_size=100"]

    def rundir(self, name: str) -> Path:
        self.runs += 1
        path = self.workdir / f"{self.runs:03d}-{name}"
        path.mkdir(parents=True)
        return path

    def app(self, overrides: list[str], name: str) -> tuple[Row, overhead.PhaseTimer]:
        """Build and fit a run as ``python train.py`` does (and test it); its record and timer."""
        rundir = self.rundir(name)
        cfg = overhead.compose([*self.common, *overrides], rundir)
        run = build(cfg)
        timer = overhead.PhaseTimer(self.device)
        timer.attach(run.module)
        with (
            open(rundir / "console.log", "w") as console,
            contextlib.redirect_stdout(console),
            contextlib.redirect_stderr(console),
        ):
            record = fit_and_test(cfg, run)
        return record, timer


def not_measured(why: str, **keys: Any) -> Row:
    return {**keys, "status": f"not measured: {why}"}


def progress(part: str, row: Row) -> None:
    cells = ", ".join(f"{k}={_fmt(v)}" for k, v in row.items() if k not in ("runs", "status"))
    print(f"[{part}] {cells}  ({row.get('status', 'measured')})", flush=True)


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


# --- (a) app vs hand-written loop --------------------------------------------------------------


def part_overhead(bench: Bench, args: argparse.Namespace) -> list[Row]:
    ns = argparse.Namespace(
        steps=3 if bench.smoke else 100,
        repeats=1 if bench.smoke else 3,
        data_dir=args.data_dir,
        override=[c for c in bench.common if not c.startswith(("trainer.acc", "paths.data"))],
    )
    rows = []
    sizes = (32,) if bench.smoke else (64, 256)
    for model in ("lenet", "mlp"):
        for batch in sizes:
            r = overhead.bench_config(model, batch, ns, bench.device, bench.rundir("overhead"))
            m = r["median"]
            row = {
                "model": model,
                "batch": batch,
                "steps": r["steps"],
                "hand_ms": m["hand"]["train_ms_per_step"],
                "app_ms": m["app"]["train_ms_per_step"],
                "app/hand": r["ratios"]["app/hand"],
                "torchvision/hand": r["ratios"]["torchvision/hand"],
                "status": "measured",
            }
            progress("a overhead", row)
            rows.append(row)
    return rows


# --- (b) the speedrun, through the app and by hand ----------------------------------------------


def hand_speedrun(cfg: DictConfig, device: torch.device, limit: int | None) -> Row:
    """``experiment=speedrun``'s recipe as a plain loop over the resident data: training time
    (synchronised) of its epochs, then accuracy on the test set."""
    data = instantiate(cfg.data)
    data.prepare_data()
    data.setup("fit")
    (train_x, train_y), (test_x, test_y) = (
        tuple(t.to(device) for t in data.data[s]) for s in ("train", "test")
    )
    mean, std, batch = cfg.data.mean, cfg.data.std, cfg.data.batch_size
    torch.manual_seed(cfg.seed)
    if cfg.get("matmul_precision"):
        torch.set_float32_matmul_precision(cfg.matmul_precision)
    net = instantiate(cfg.model).to(device)
    if cfg.channels_last:
        net = net.to(memory_format=torch.channels_last)
    optimizer = instantiate(cfg.optimizer)(params=net.parameters())
    steps = -(-len(train_y) // batch)  # the app's loader keeps the last, partial batch
    steps = min(steps, limit) if limit else steps
    options = OmegaConf.to_container(cfg.scheduler, resolve=True)
    options = {k: v for k, v in options.items() if k not in LIGHTNING_SCHEDULER_KEYS}
    scheduler = instantiate(options)(optimizer, total_steps=steps * cfg.trainer.max_epochs)
    criterion = nn.CrossEntropyLoss()
    memory = torch.channels_last if cfg.channels_last else torch.contiguous_format
    overhead._sync(device)
    start = time.perf_counter()
    for _ in range(cfg.trainer.max_epochs):
        net.train()
        order = torch.randperm(len(train_y), device=device)
        for i in range(steps):
            idx = order[i * batch : (i + 1) * batch]
            x = normalize(train_x[idx], mean, std).contiguous(memory_format=memory)
            loss = criterion(net(x), train_y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
    overhead._sync(device)
    train_s = time.perf_counter() - start
    net.eval()
    correct = torch.zeros((), dtype=torch.long, device=device)
    with torch.no_grad():
        for x, y in overhead.eval_batches(test_x, test_y, cfg.data.eval_batch_size, mean, std):
            correct += (net(x.contiguous(memory_format=memory)).argmax(1) == y).sum()
    return {"train_s": train_s, "test_acc": correct.item() / len(test_y)}


def part_speedrun(bench: Bench) -> list[Row]:
    limit = 3 if bench.smoke else None
    target = 0.99
    extra = ["experiment=speedrun", *([f"++trainer.limit_train_batches={limit}"] if limit else [])]
    if bench.smoke:
        extra.append("data.batch_size=32")
    warmups, seeds = (0, [1]) if bench.smoke else (2, [1, 2, 3])
    runs: dict[str, list[Row]] = {"app": [], "hand": []}
    for i, seed in enumerate([0] * warmups + seeds):
        warm = i < warmups
        overrides = [*extra, f"seed={seed}"]
        record, timer = bench.app(overrides, "speedrun")
        # train_s: the epoch's training phase; fit_s (Lightning's setup and validation too)
        app = {
            "train_s": timer.epochs[-1]["train_s"],
            "fit_s": record["fit_time_s"],
            "test_acc": record["test/acc"],
        }
        cfg = overhead.compose([*bench.common, *overrides], bench.rundir("speedrun-hand"))
        hand = hand_speedrun(cfg, bench.device, limit)
        for name, r in (("app", app), ("hand", hand)):
            progress("b speedrun", {"pipeline": name, "seed": seed, "warm-up": warm, **r})
            if not warm:
                runs[name].append({"seed": seed, **r})
    rows = []
    for name, rs in runs.items():
        times, accs = [r["train_s"] for r in rs], [r["test_acc"] for r in rs]
        rows.append(
            {
                "pipeline": name,
                "seeds": len(rs),
                "train_s_mean": statistics.mean(times),
                "train_s_sd": statistics.stdev(times) if len(times) > 1 else 0.0,
                "test_acc_mean": statistics.mean(accs),
                "reached_99": sum(a >= target for a in accs),
                "steps_cap": limit or "full epoch",
                "status": "measured",
                "runs": rs,
            }
        )
        if name == "app":  # Lightning's whole fit: setup, the epoch, validation
            rows[-1]["fit_s_mean"] = statistics.mean(r["fit_s"] for r in rs)
    rows.append({**rows[0], "pipeline": "app/hand", "runs": []})
    rows[-1]["train_s_mean"] = rows[0]["train_s_mean"] / rows[1]["train_s_mean"]
    for key in ("train_s_sd", "test_acc_mean", "reached_99", "seeds", "fit_s_mean"):
        rows[-1].pop(key)
    return rows


# --- (c) precision, (e) compile: through the app ------------------------------------------------


def part_precision(bench: Bench) -> list[Row]:
    rows = []
    limit = ["++trainer.limit_train_batches=3", "data.batch_size=32"] if bench.smoke else []
    for model in ("lenet", "cnn"):
        for precision in ("32-true", "bf16-mixed", "16-mixed"):
            keys = {"model": model, "precision": precision}
            if precision == "16-mixed" and bench.device.type != "cuda":
                row = not_measured("16-mixed needs CUDA (no GPU here)", **keys)
            else:
                overrides = [f"model={model}", f"trainer.precision={precision}", *limit]
                record, timer = bench.app([*overrides, "trainer.max_epochs=2"], "precision")
                row = {
                    **keys,
                    "epoch_s": timer.epochs[-1]["train_s"],
                    "test_acc": record["test/acc"],
                    "status": "measured",
                }
            progress("c precision", row)
            rows.append(row)
    return rows


def part_compile(bench: Bench) -> list[Row]:
    rows = []
    steps = 2 if bench.smoke else 100
    cases = [("mlp", 32)] if bench.smoke else [("lenet", 256), ("fast_cnn", 256)]
    for model, batch in cases:
        for compiled in (False, True):
            overrides = [
                f"model={model}",
                f"data.batch_size={batch}",
                f"compile={str(compiled).lower()}",
                "trainer.max_epochs=2",
                f"++trainer.limit_train_batches={steps}",
                "test=false",
            ]
            start = time.perf_counter()
            _, timer = bench.app(overrides, "compile")
            row = {
                "model": model,
                "batch": batch,
                "compile": compiled,
                "ms_per_step": 1000 * timer.epochs[-1]["train_s"] / steps,
                "first_epoch_s": timer.epochs[0]["train_s"],
                "run_s": time.perf_counter() - start,
                "status": "measured",
            }
            progress("e compile", row)
            rows.append(row)
    return rows


# --- (d) channels_last ---------------------------------------------------------------------------


def part_channels_last(bench: Bench) -> list[Row]:
    steps, repeats, batch = (2, 1, 16) if bench.smoke else (20, 5, 256)
    rows = []
    for model in ("cnn", "fast_cnn"):
        runs = {
            name: memory_format.stepper(model, batch, cl, bf16, bench.device)
            for name, (cl, bf16) in memory_format.VARIANTS.items()
        }
        times: dict[str, list[float]] = {name: [] for name in runs}
        for _ in range(repeats):  # interleaved
            for name, run in runs.items():
                times[name].append(run(steps) / steps * 1e3)
        for name, values in times.items():
            row = {
                "model": model,
                "variant": name,
                "batch": batch,
                "ms_per_step": statistics.median(values),
                "status": "measured",
            }
            row["vs nchw fp32"] = statistics.median(times["nchw fp32"]) / row["ms_per_step"]
            progress("d channels_last", row)
            rows.append(row)
    return rows


def part_ddp(bench: Bench) -> list[Row]:
    gpus = torch.cuda.device_count()
    why = f"{gpus} GPU(s) visible; multi-GPU DDP needs >= 2 (python train.py trainer.devices=N)"
    row = not_measured(why, check="DDP scaling")
    progress("f ddp", row)
    return [row]


# --- report ---------------------------------------------------------------------------------------

PARTS = {
    "a_overhead": ("(a) app vs hand-written loop, ms per training step", part_overhead),
    "b_speedrun": (
        "(b) experiment=speedrun: training time of its epoch, test accuracy",
        part_speedrun,
    ),
    "c_precision": (
        "(c) trainer.precision, 2 epochs: second-epoch time, test accuracy",
        part_precision,
    ),
    "d_channels_last": ("(d) channels_last, hand-stepped Classifier", part_channels_last),
    "e_compile": ("(e) compile, ms per training step of the second epoch", part_compile),
    "f_ddp": ("(f) multi-GPU DDP", part_ddp),
}


def table(rows: list[Row]) -> str:
    keys = list(dict.fromkeys(k for r in rows for k in r if k != "runs"))
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    for r in rows:
        lines.append("| " + " | ".join(_fmt(r.get(k, "")) for k in keys) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="outputs/benchmarks", help="where gpu.md/json go")
    parser.add_argument("--data-dir", default=None, help="paths.data_dir (default: the config's)")
    parser.add_argument("--smoke", action="store_true", help="every part, a few CPU steps")
    parser.add_argument("--parts", default=",".join(PARTS), help="comma-separated subset")
    args = parser.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() and not args.smoke else "cpu")
    register_resolvers()
    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)

    started = time.perf_counter()
    results: dict[str, list[Row]] = {}
    with tempfile.TemporaryDirectory(prefix="mnistapp-gpu-") as tmp:
        bench = Bench(args, device, Path(tmp))
        for key in args.parts.split(","):
            title, part = PARTS[key]
            t0 = time.perf_counter()
            try:
                results[key] = part(bench, args) if key == "a_overhead" else part(bench)
            except Exception as err:  # one failed part must not cost the others' GPU minutes
                traceback.print_exc()
                results[key] = [not_measured(f"{type(err).__name__}: {err}".splitlines()[0])]
                progress(key, results[key][0])
            print(f"== {title}: {time.perf_counter() - t0:.1f} s", flush=True)
            # after every part: a run stopped at the device's time limit keeps what it measured
            markdown = report(Path(args.out), results, args.smoke, device, started)
    print(f"wrote {Path(args.out) / 'gpu.md'} and {Path(args.out) / 'gpu.json'}\n")
    print(markdown)


def report(
    out: Path, results: dict[str, list[Row]], smoke: bool, device: torch.device, started: float
) -> str:
    """Write ``gpu.json`` and ``gpu.md`` under ``out``; return the markdown."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    settings = {
        "device": name,
        "smoke": smoke,
        "torch": torch.__version__,
        "lightning": L.__version__,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "wall_s": round(time.perf_counter() - started, 1),
    }
    sections = [
        f"# GPU benchmarks ({'smoke, ' if smoke else ''}{name})",
        f"{settings['date']}, torch {torch.__version__}, lightning {L.__version__}, "
        f"wall time {settings['wall_s']} s (`python benchmarks/gpu.py`).",
    ]
    for key, rows in results.items():
        sections += [f"## {PARTS[key][0]}", table(rows)]
    markdown = "\n\n".join(sections)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu.md").write_text(markdown + "\n")
    (out / "gpu.json").write_text(json.dumps({"settings": settings, "results": results}, indent=2))
    return markdown


if __name__ == "__main__":
    main()
