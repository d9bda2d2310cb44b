"""Lightning's CSV logger, made to keep a run's history when the run is resumed."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.logger import rank_zero_experiment


class ResumableCSVLogger(CSVLogger):
    """``CSVLogger`` that appends to an existing ``metrics.csv``: Lightning's writer deletes it
    (tests/test_resume.py::test_a_resume_appends_to_the_runs_csv)."""

    @property
    @rank_zero_experiment
    def experiment(self) -> Any:
        path = Path(self.log_dir) / "metrics.csv"
        kept = path.read_bytes() if self._experiment is None and path.is_file() else None
        writer = super().experiment
        if kept is not None and not path.exists():
            path.write_bytes(kept)
            with path.open(newline="") as f:
                writer.metrics_keys = list(csv.DictReader(f).fieldnames or [])
        return writer
