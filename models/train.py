"""Train a model: `python -m models.train [--stage gan|embed|edit] --data PACK.npz --out runs/x ...`.

gan (the default): the text-conditioned GAN (`models/training/gan.py`); embed: the search embedding
(`models/training/embedding.py`); edit: the editing generator (`models/training/edit.py`).
`--stage NAME --help` lists a stage's options. Multi-GPU (or multi-process CPU) GAN training with the
same script: `torchrun --nproc_per_node=N -m models.train ...`.
"""
from __future__ import annotations

import argparse
import sys

STAGES = ("gan", "embed", "edit")


def split_stage(argv: list[str]) -> tuple[str, list[str]]:
    """`--stage NAME` (or `--stage=NAME`) anywhere in argv -> (NAME, the other arguments); default gan."""
    stage_parser = argparse.ArgumentParser(add_help=False)
    stage_parser.add_argument("--stage", choices=STAGES, default="gan")
    known, rest = stage_parser.parse_known_args(argv)
    return known.stage, rest


def main(argv: list[str] | None = None) -> int:
    stage, argv = split_stage(sys.argv[1:] if argv is None else list(argv))
    if stage == "embed":
        from models.training.embedding import main as train_embedding

        return train_embedding(argv)
    if stage == "edit":
        from models.training.edit import main as train_editor

        return train_editor(argv)
    from models.training.gan import main as train_gan

    return train_gan(argv)


if __name__ == "__main__":
    raise SystemExit(main())
