"""Build the detector's title model: word-count naive Bayes over product titles -> articleType.

    python -m app.commands.train_title_model --meta ../shared/data/fpi64/dev_meta.csv

Reads `productDisplayName` and `articleType` of the rows in the training part of a deterministic split by id
(`split_of(id)`: crc32 of the id, 80% train / 20% held out) and writes `assets/title_nb.json`:

    {"classes": [...], "doc_counts": [...], "class_totals": [...], "alpha": 0.1,
     "words": {"word": {"class index": count, ...}, ...}, "split": "...", "source": "..."}

The held-out 20% is what `python main.py eval-detector` reports on. The app reads only the written asset.
"""
from __future__ import annotations

import argparse
import csv
import json
import re
import sys
import zlib
from collections import Counter, defaultdict
from pathlib import Path

ALPHA = 0.1            # additive smoothing of word counts
MIN_WORD_COUNT = 2     # words seen fewer times in all training titles are dropped (keeps the asset small)
HELD_OUT_PERCENT = 20  # share of ids in the held-out evaluation split
OUT_PATH = Path(__file__).resolve().parents[2] / "assets" / "title_nb.json"

_TOKEN = re.compile(r"[a-z0-9]+")


def split_of(product_id: str | int) -> str:
    """'train' or 'heldout', fixed by the id alone."""
    return "heldout" if zlib.crc32(str(product_id).encode()) % 100 < HELD_OUT_PERCENT else "train"


def read_titles(meta_path: str | Path, split: str | None = None) -> list[dict]:
    with open(meta_path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    if split:
        rows = [r for r in rows if split_of(r["id"]) == split]
    return rows


def train(rows: list[dict]) -> dict:
    classes = sorted({r["articleType"] for r in rows if r["articleType"]})
    index = {c: i for i, c in enumerate(classes)}
    doc_counts = [0] * len(classes)
    counts: dict[str, Counter] = defaultdict(Counter)
    for r in rows:
        if not r["articleType"]:
            continue
        ci = index[r["articleType"]]
        doc_counts[ci] += 1
        for word in _TOKEN.findall(r["productDisplayName"].lower()):
            counts[word][ci] += 1
    words = {w: c for w, c in counts.items() if sum(c.values()) >= MIN_WORD_COUNT}
    class_totals = [0] * len(classes)
    for c in words.values():
        for ci, n in c.items():
            class_totals[ci] += n
    return {
        "classes": classes, "doc_counts": doc_counts, "class_totals": class_totals, "alpha": ALPHA,
        "words": {w: {str(ci): n for ci, n in sorted(c.items())} for w, c in sorted(words.items())},
        "split": f"train = ids with crc32(id) % 100 >= {HELD_OUT_PERCENT}",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--meta", required=True, help="dev_meta.csv of the shared data pack")
    parser.add_argument("--out", default=str(OUT_PATH), help="where to write the model (default: assets/title_nb.json)")
    args = parser.parse_args(argv)
    try:
        rows = read_titles(args.meta, "train")
    except (OSError, KeyError, csv.Error) as exc:
        print(f"error: cannot read {args.meta}: {exc}", file=sys.stderr)
        return 2
    model = train(rows)
    model["source"] = f"{Path(args.meta).name}: {len(rows)} training titles"
    Path(args.out).write_text(json.dumps(model, separators=(",", ":"), ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {args.out}: {len(model['classes'])} classes, {len(model['words'])} words, "
          f"{Path(args.out).stat().st_size / 1e6:.2f} MB from {len(rows)} titles")
    return 0


if __name__ == "__main__":
    sys.exit(main())
