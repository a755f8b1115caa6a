"""What every training stage writes into its run directory."""
from __future__ import annotations

import csv
import math
from pathlib import Path


def append_metrics(path: Path, fields: list[str], step: int, elapsed: float, stats: dict, digits: int) -> None:
    """One row of a run's metrics.csv (header first when the file is new); finite floats rounded to `digits`,
    keys outside `fields` left out. Every stage logs through it."""
    new = not path.exists()
    with open(path, "a", newline="") as f:
        writer = csv.DictWriter(f, fields)
        if new:
            writer.writeheader()
        row = {"step": step, "elapsed_s": round(elapsed, 1)}
        row.update({k: (round(v, digits) if isinstance(v, float) and math.isfinite(v) else v)
                    for k, v in stats.items() if k in fields})
        writer.writerow(row)
