"""``mnistapp-reproduce``: run published claims over seeds, then write docs/REPRODUCTION.md.

    mnistapp-reproduce mlp_depth lenet_* --seeds 3    # run these, then rebuild the report
    mnistapp-reproduce all --seeds 3 -- trainer=gpu    # every claim; Hydra overrides after --
    mnistapp-reproduce --report-only                   # rebuild from the runs already made
    mnistapp-reproduce lenet_sgd pareto_* --data fashion_mnist   # the same on another data set

Each experiment runs as one multirun (``python -m mnistapp.cli.train -m experiment=<name>
seed=1..N``) into ``<root>/<name>/<time>/``; the report reads the newest run of each experiment,
so claims can be run a few at a time, on different machines (copy the folders), and the report
rebuilt whenever.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from mnistapp.reporting import reproduction

COMMAND = "mnistapp-reproduce all --seeds 3   # or a few: mnistapp-reproduce mlp_* --seeds 3"


def _parser() -> argparse.ArgumentParser:
    epilog = "Hydra overrides for every run go after --, e.g. -- trainer=gpu"
    parser = argparse.ArgumentParser(
        prog="mnistapp-reproduce", description=__doc__.splitlines()[0], epilog=epilog
    )
    parser.add_argument(
        "experiments", nargs="*", help="experiments with a claim: names, globs (lenet_*) or 'all'"
    )
    parser.add_argument("--seeds", type=int, default=3, help="seeds 1..N per claim (3)")
    root, out = Path("outputs/reproduction"), Path("docs/REPRODUCTION.md")
    parser.add_argument("--root", type=Path, default=root, help="where the runs go")
    parser.add_argument(
        "--out", type=Path, default=out, help="the report (and pareto.png beside it)"
    )
    parser.add_argument(
        "--data",
        default="mnist",
        help="the data= option to run on; on another than mnist any experiment may run, and the "
        "report gives it a section of its own",
    )
    parser.add_argument(
        "--report-only", action="store_true", help="run nothing; rebuild the report"
    )
    return parser


def run_experiment(name: str, seeds: int, root: Path, overrides: Sequence[str]) -> int:
    """One multirun of ``name`` over ``seeds`` seeds; its output goes to a log file."""
    sweep = root / name / datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    seed_list = ",".join(str(s) for s in range(1, seeds + 1))
    argv = [sys.executable, "-m", "mnistapp.cli.train", "-m", f"experiment={name}"]
    argv += [f"seed={seed_list}", f"hydra.sweep.dir={sweep}", *overrides]
    sweep.mkdir(parents=True, exist_ok=True)
    with open(sweep / "reproduce.log", "w") as log:
        log.write(shlex.join(argv) + "\n")
        log.flush()
        return subprocess.run(argv, stdout=log, stderr=subprocess.STDOUT).returncode


def main(argv: Sequence[str] | None = None) -> int:
    """Run the chosen claims (unless ``--report-only``), then rebuild the report."""
    args = list(sys.argv[1:] if argv is None else argv)
    overrides: list[str] = []
    if "--" in args:  # Hydra overrides for every run
        overrides, args = args[args.index("--") + 1 :], args[: args.index("--")]
    parser = _parser()
    opts = parser.parse_args(args)
    if opts.seeds < 1:
        parser.error(f"--seeds must be >= 1 (got {opts.seeds})")
    other_data = opts.data != "mnist"
    root = opts.root / opts.data if other_data else opts.root
    known = list(dict.fromkeys(p.experiment for p in reproduction.load_claims()))
    if other_data:  # no published figure to compare with: any experiment
        known = sorted(p.name.removesuffix(".yaml") for p in reproduction.EXPERIMENTS.iterdir())
        root.mkdir(parents=True, exist_ok=True)
        (root / ".data").touch()  # marks a data set's folder for the report
        overrides = [f"data={opts.data}", *overrides]
    try:
        chosen = [] if opts.report_only else reproduction.select(opts.experiments, known)
    except ValueError as err:
        parser.error(str(err))
    if not opts.report_only and not opts.experiments:
        parser.error("name the experiments to run (or 'all'), or pass --report-only")
    failed = []
    for i, name in enumerate(chosen, 1):
        start = time.perf_counter()
        print(f"[{i}/{len(chosen)}] {name}: {opts.seeds} seeds ...", flush=True)
        code = run_experiment(name, opts.seeds, root, overrides)
        status = "done" if code == 0 else f"exit {code} (see its reproduce.log)"
        took = time.perf_counter() - start
        print(f"[{i}/{len(chosen)}] {name}: {status} in {took:.0f} s", flush=True)
        if code != 0:
            failed.append(name)
    store = opts.out.parent / "reproduction"
    if opts.root.is_dir():
        reproduction.harvest(opts.root, store)
    points = reproduction.load_claims()
    reproduction.fill(points, store)
    opts.out.parent.mkdir(parents=True, exist_ok=True)
    opts.out.write_text(reproduction.render(points, COMMAND, reproduction.other_data(store)))
    pareto = opts.out.with_name("pareto.png")
    reproduction.plot(points, pareto)
    measured = sum(p.measured for p in points)
    print(f"Written: {opts.out} and {pareto} ({measured} of {len(points)} claims measured)")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
