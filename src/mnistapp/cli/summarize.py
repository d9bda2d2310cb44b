"""Summarise a finished (or interrupted) sweep: ``python -m mnistapp.cli.summarize <sweep_dir>``
writes ``summary.csv``, ``.md`` and ``.png`` into it, as the end of a multirun does, and prints
the table."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from mnistapp.reporting.sweeps import NotASweepError, to_markdown, write_summary


def main(argv: Sequence[str] | None = None) -> int:
    """Summarise one sweep directory; exit status 2 (with the reason) if it is not one."""
    parser = argparse.ArgumentParser(
        prog="python -m mnistapp.cli.summarize", description=__doc__.splitlines()[0]
    )
    parser.add_argument("sweep_dir", help="a multirun directory: outputs/multirun/<date>/<time>")
    args = parser.parse_args(argv)
    try:
        summary = write_summary(args.sweep_dir)
    except NotASweepError as err:
        parser.error(str(err))
    print(to_markdown(summary), end="")
    print(f"Written: {summary.sweep_dir}/summary.{{csv,md,png}}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
