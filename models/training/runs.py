"""What every training stage shares: its command line (options from its config dataclass, --resume,
--export) and the metrics.csv rows it writes into its run directory."""
from __future__ import annotations

import argparse
import csv
import logging
import math
from collections.abc import Callable
from pathlib import Path

import torch


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


def stage_parser(prog: str, doc: str | None, config_cls, choices: dict | None = None,
                 exported: str = "model") -> argparse.ArgumentParser:
    """One option per field of the stage's config, plus --resume and --export."""
    from models.config import add_dataclass_options

    parser = argparse.ArgumentParser(prog=prog, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_dataclass_options(parser, config_cls, choices)
    parser.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt if present")
    parser.add_argument("--export", metavar="PATH", help=f"only export OUT/checkpoint.pt's {exported} to PATH")
    return parser


def run_stage(parser: argparse.ArgumentParser, argv: list[str] | None, config_cls, make_trainer: Callable,
              export: Callable[[Path, str], None]):
    """Parse, then export OUT/checkpoint.pt or train (resuming if asked); returns the trainer (None after an
    export)."""
    from models.config import config_from_args

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parser.parse_args(argv)
    cfg = config_from_args(config_cls, args)
    if args.export:
        export(Path(cfg.out) / "checkpoint.pt", args.export)
        return None
    trainer = make_trainer(cfg)
    if args.resume:
        trainer.resume()
    trainer.train()
    return trainer


def progress_state(trainer) -> dict:
    """What a checkpoint needs, besides weights and optimisers, to resume exactly: step, time, RNG states."""
    return {"step": trainer.step, "elapsed_s": trainer.elapsed,
            "rng": {"sampling": trainer.rng.get_state(), "torch": torch.get_rng_state()}}


def restore_progress(trainer, ckpt: dict) -> None:
    """The inverse of progress_state, from a loaded checkpoint."""
    trainer.step, trainer.elapsed = int(ckpt["step"]), float(ckpt["elapsed_s"])
    trainer.rng.set_state(ckpt["rng"]["sampling"])
    torch.set_rng_state(ckpt["rng"]["torch"])
