"""Side-by-side: training-step time of each model in NCHW vs channels-last, float32 vs bf16.

    python benchmarks/memory_format.py [--models lenet,cnn,experiment=pareto_8640] [--device cpu]

Each variant is the app's own ``Classifier`` (``channels_last=``) around the ``model=`` config's
network (a ``--models`` entry is a ``model=`` option, or ``experiment=NAME`` for that
experiment's network), stepped by hand on one resident random batch (no data loading, no
Lightning loop), so only the convolution kernels differ. Variants are interleaved over
``--repeats`` rounds and the median counts; the table gives ms/step and the ratio to NCHW
float32 of the same run.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from contextlib import nullcontext

import torch
from hydra import compose, initialize_config_module
from hydra.utils import instantiate

from mnistapp.training.module import Classifier

VARIANTS = {
    "nchw fp32": (False, False),
    "nhwc fp32": (True, False),
    "nchw bf16": (False, True),
    "nhwc bf16": (True, True),
}


def stepper(
    model: str, batch: int, channels_last: bool, bf16: bool, device: torch.device
) -> Callable[[int], float]:
    """A function that runs ``n`` training steps and returns the seconds they took."""
    with initialize_config_module("mnistapp.conf", version_base="1.3"):
        cfg = compose("config", overrides=[model if "=" in model else f"model={model}"])
    torch.manual_seed(0)
    module = Classifier(instantiate(cfg.model), channels_last=channels_last).to(device)
    optimizer = torch.optim.Adam(module.parameters(), lr=1e-3)
    x = torch.randn(batch, 1, 28, 28, device=device)
    y = torch.randint(0, 10, (batch,), device=device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else nullcontext()

    def run(n: int) -> float:
        start = time.perf_counter()
        for _ in range(n):
            with autocast:
                loss = module.criterion(module(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    run(3)  # warm-up: kernel selection, allocator
    return run


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--models", default="lenet,cnn,baseline_cnn,fast_cnn,pareto,experiment=pareto_8640"
    )
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=20, help="steps per timed round")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved rounds")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    device = torch.device(args.device)

    print(f"| model | {' | '.join(VARIANTS)} |")
    print(f"|---|{'--:|' * len(VARIANTS)}")
    for model in args.models.split(","):
        runs = {
            name: stepper(model, args.batch_size, cl, bf16, device)
            for name, (cl, bf16) in VARIANTS.items()
        }
        times: dict[str, list[float]] = {name: [] for name in VARIANTS}
        for _ in range(args.repeats):
            for name, run in runs.items():
                times[name].append(run(args.steps) / args.steps * 1e3)
        ms = {name: statistics.median(values) for name, values in times.items()}
        base = ms["nchw fp32"]
        cells = [f"{value:.1f} ms ({base / value:.2f}x)" for value in ms.values()]
        print(f"| {model} | {' | '.join(cells)} |", flush=True)


if __name__ == "__main__":
    main()
