"""Run records: ``metrics.json`` written and read back, and the tables that show them."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from mnistapp.files import atomic_write

METRICS_FILE = "metrics.json"


def write_metrics(run_dir: str | Path, record: Mapping[str, Any]) -> Path:
    """Write ``record`` as ``<run_dir>/metrics.json``, atomically: readers never see half a file."""
    path = Path(run_dir) / METRICS_FILE
    atomic_write(path, (json.dumps(record, indent=2, default=str) + "\n").encode())
    return path


def read_metrics(run_dir: str | Path) -> dict[str, Any]:
    """Read ``<run_dir>/metrics.json``."""
    return json.loads((Path(run_dir) / METRICS_FILE).read_text())


def scalar_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The one-element tensors of ``trainer.callback_metrics`` as floats, sorted by name."""
    return {k: v.item() for k, v in sorted(metrics.items()) if v.numel() == 1}


def format_value(value: Any) -> str:
    """A record value for tables: counts with thousands separators, scores to 4 places."""
    if value is None or value == "":
        return ""
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    if isinstance(value, float) and math.isfinite(value):
        # scores (0..1, give or take rounding) to 4 places, times and sizes to 2
        return f"{value:.4f}" if abs(value) < 1.5 else f"{value:.2f}"
    return str(value)


def format_table(title: str, rows: Mapping[str, Any]) -> str:
    """A two-column text table, the one printed at the end of a run."""
    shown = {k: v for k, v in rows.items() if v is not None}
    width = max(map(len, shown), default=0)
    lines = [f"── {title} " + "─" * max(0, 44 - len(title))]
    lines += [f"  {key:<{width}}  {format_value(value)}" for key, value in shown.items()]
    return "\n".join(lines)


def markdown_table(
    headers: Sequence[str], rows: Iterable[Sequence[str]], align: str = ""
) -> list[str]:
    """A Markdown table's lines; ``align`` has an ``r`` for each right-aligned column."""
    rule = "|".join("--:" if a == "r" else "---" for a in align.ljust(len(headers), "l"))
    return [f"| {' | '.join(headers)} |", f"|{rule}|", *(f"| {' | '.join(r)} |" for r in rows)]
