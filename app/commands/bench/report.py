"""Benchmark results: a Stage per measurement, the Report, timing helpers, the machine and the table."""
from __future__ import annotations

import os
import platform
import resource
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]  # the source tree (bench runs main.py and reads fixtures from it)

# Targets for a 2-core CPU machine.
TARGET_TURN_MS = 150.0
TARGET_TURN_RATIO = 2.0
TARGET_WINDOW_S = 1.0
TARGET_MEMORY_MB = 1536.0


# ------------------------------------------------------------------------------------------- results


@dataclass
class Stage:
    key: str
    label: str
    value: float | None               # None: not measured (see note)
    unit: str                         # ms | s | MB | msg/s | img/s
    floor: float | None = None        # the bare work, same unit, same run
    floor_label: str = ""
    target: str = ""                  # e.g. "< 150 ms"
    ok: bool | None = None            # target met (None: no target or not measured)
    note: str = ""

    @property
    def ratio(self) -> float | None:
        if self.value is None or not self.floor:
            return None
        # rates (bigger is better) compare the other way round: overhead is always >= 1
        return self.floor / self.value if self.unit.endswith("/s") else self.value / self.floor

    def to_dict(self) -> dict:
        d = asdict(self)
        d["ratio"] = None if self.ratio is None else round(self.ratio, 3)
        return d


@dataclass
class Report:
    machine: dict
    settings: dict
    stages: dict[str, Stage] = field(default_factory=dict)
    details: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def add(self, stage: Stage) -> Stage:
        self.stages[stage.key] = stage
        return stage

    def to_dict(self) -> dict:
        checks = [s.ok for s in self.stages.values() if s.ok is not None]
        return {"machine": self.machine, "settings": self.settings,
                "stages": {k: s.to_dict() for k, s in self.stages.items()}, "details": self.details,
                "notes": self.notes, "targets_met": all(checks) if checks else None}


def percentile(values: list[float], q: float) -> float:
    import numpy as np

    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


def timed(fn: Callable[[], object], reps: int, warmup: int = 1) -> list[float]:
    """Seconds per call, `reps` calls after `warmup` untimed ones."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def add_samples(report: Report, key: str, seconds: list[float]) -> None:
    """Every timed call in ms, in the JSON: on a busy machine the spread says more than the median."""
    report.details.setdefault("samples_ms", {})[key] = [round(x * 1000, 2) for x in seconds]


def paired(measured: Callable[[], object], floor: Callable[[], object], reps: int,
           warmup: int = 1) -> tuple[list[float], list[float]]:
    """Both callables timed `reps` times, alternating, so that both see the same machine load."""
    for _ in range(warmup):
        measured()
        floor()
    a, b = [], []
    for _ in range(reps):
        for fn, out in ((measured, a), (floor, b)):
            start = time.perf_counter()
            fn()
            out.append(time.perf_counter() - start)
    return a, b


def say(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------- machine


def machine_info(device: str) -> dict:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    gpus = ([torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
            if torch.cuda.is_available() else [])
    try:
        memory_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError, AttributeError):
        memory_gb = None
    return {"cpu": cpu, "cores": os.cpu_count(), "usable_cores": usable, "memory_gb": round_or_none(memory_gb, 1),
            "gpu": ", ".join(gpus) or "none", "device": device, "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(), "torch_interop_threads": torch.get_num_interop_threads(),
            "python": platform.python_version(), "platform": platform.platform(),
            "loadavg_start": load_average(), "time": datetime.now().isoformat(timespec="seconds")}


def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def round_or_none(x, digits=3):
    return None if x is None else round(float(x), digits)


def peak_rss_mb() -> float:
    """ru_maxrss of this process in MB (kilobytes on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


# ------------------------------------------------------------------------------------------- output


def _fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "ms":
        return f"{value:.3g} ms" if value < 10 else f"{value:.0f} ms"
    if unit == "s":
        return f"{value:.2f} s"
    return f"{value:,.0f} {unit}" if value >= 100 else f"{value:.3g} {unit}"


def render_table(report: Report) -> str:
    m = report.machine
    lines = [f"FashionGAN benchmark, {m['time']}",
             f"Machine: {m['cpu']}, {m['cores']} cores ({m['usable_cores']} usable), {m['memory_gb']} GB RAM, "
             f"GPU: {m['gpu']}; device {m['device']}",
             f"torch {m['torch']}, {m['torch_threads']} threads; Python {m['python']}; "
             f"load average {m['loadavg_start']} at start, {m.get('loadavg_end')} at end", ""]
    rows = [("Stage", "Measured", "Floor (same run)", "Ratio", "Target", "")]
    for s in report.stages.values():
        floor = f"{_fmt(s.floor, s.unit)} ({s.floor_label})" if s.floor else ""
        ratio = f"{s.ratio:.2f}x" if s.ratio is not None else ""
        status = "" if s.ok is None else ("ok" if s.ok else "MISSED")
        rows.append((s.label, _fmt(s.value, s.unit), floor, ratio, s.target, status))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for i, row in enumerate(rows):
        lines.append("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |")
        if i == 0:
            lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    chat = report.details.get("chat")
    if chat:
        cache = chat["caption_cache"]
        lines += ["", f"Chat turns: {chat['turns']} distinct requests ({chat['distinct_captions']} distinct captions); "
                      f"caption-embedding cache cleared before each turn: {cache['misses']} misses, "
                      f"{cache['hits']} hits ({cache['note']})."]
    notes = [s for s in report.stages.values() if s.note]
    if notes:
        lines += [""] + [f"- {s.label}: {s.note}" for s in notes]
    lines += [f"Note: {n}" for n in report.notes]
    return "\n".join(lines)

