"""Which item types the catalogue holds for a gender, and the nearest type it does hold when it holds none.

"Dresses for men": the catalogue (and the generator's training data, the same labels) has no men's
dresses, so the app says so and offers the nearest item type that it holds for men. Nearest, from the
catalogue's own data (each term is 0..1 unless said):

    2 * same subCategory + 2 * same masterCategory     (the shop's own grouping: "Innerwear", "Topwear")
    + 0.5 * usage overlap                              (shares of Casual / Ethnic / ... in common)
    + cosine of the types' mean product embeddings     (what the products look like)
    + cosine of the types' names' text embeddings      (MiniLM: "sarees" ~ "kurtas"), when an encoder is given

among the types with at least MIN_OFFER products for that gender. subCategory, masterCategory and usage
are not in the catalogue file: `assets/catalog/item_types.json` holds them per item type, written from
the shared pack's labels by

    python -m models.search.item_types --meta ../shared/data/fpi64/dev_meta.csv

(it also holds the products per gender of every type, so the check works without a catalogue).
"""
from __future__ import annotations

import argparse
import csv
import json
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from models.captions import canonical_caption
from models.resources import ASSETS_DIR
from models.search.catalog import gender_labels

ITEM_TYPES = ASSETS_DIR / "catalog" / "item_types.json"
MIN_OFFER = 3  # a type is offered for a gender only where at least this many products are for that gender
GROUP_WEIGHT = 2.0  # same subCategory, same masterCategory: more than look and name together
USAGE_WEIGHT = 0.5


def build_table(rows: Iterable[dict], source: str = "") -> dict:
    """Per item type: the commonest subCategory and masterCategory, usage and gender counts."""
    groups: dict[str, dict[str, Counter]] = defaultdict(lambda: defaultdict(Counter))
    for row in rows:
        article_type = (row.get("articleType") or "").strip()
        if article_type:
            for key in ("subCategory", "masterCategory", "usage", "gender"):
                groups[article_type][key][(row.get(key) or "").strip()] += 1
    types = {}
    for article_type, counts in sorted(groups.items()):
        types[article_type] = {
            "subCategory": counts["subCategory"].most_common(1)[0][0],
            "masterCategory": counts["masterCategory"].most_common(1)[0][0],
            "usage": {k: n for k, n in sorted(counts["usage"].items()) if k},
            "gender": {k: n for k, n in sorted(counts["gender"].items()) if k},
        }
    return {"source": source, "types": types}


def load(path: str | Path = ITEM_TYPES) -> dict:
    """The table written by `build_table`; an empty one when the file is missing or unreadable."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {"types": {}}
    return data if isinstance(data.get("types"), dict) else {"types": {}}


class ItemTypes:
    """Counts per (item type, gender) and nearest types, from a catalogue (or, without one, the table)."""

    def __init__(self, table: dict, catalogue=None, encode: Callable[[list[str]], np.ndarray] | None = None):
        self.table = table.get("types", {})
        self.catalogue = catalogue
        self.encode = encode
        self._looks: dict[str, np.ndarray] | None = None
        self._names: dict[str, np.ndarray] | None = None

    def count(self, article_type: str, gender: str | None) -> int:
        """Products of that type whose gender matches (Unisex goes with Men and Women); any gender if None."""
        wanted = gender_labels(gender)
        if self.catalogue is not None:
            return sum(t == article_type and (not wanted or g.casefold() in wanted)
                       for t, g in zip(self.catalogue.article_types, self.catalogue.genders))
        genders = self.table.get(article_type, {}).get("gender", {})
        return sum(n for g, n in genders.items() if not wanted or g.casefold() in wanted)

    def types(self) -> list[str]:
        return sorted(set(self.catalogue.article_types)) if self.catalogue is not None else sorted(self.table)

    def nearest(self, article_type: str, gender: str | None, n: int = 1) -> list[str]:
        """The n item types nearest to `article_type` that have at least MIN_OFFER products for `gender`."""
        offers = [t for t in self.types() if t != article_type and self.count(t, gender) >= MIN_OFFER]
        return sorted(offers, key=lambda t: (-self.similarity(article_type, t), t))[:n]

    def similarity(self, a: str, b: str) -> float:
        ta, tb = self.table.get(a, {}), self.table.get(b, {})
        score = sum(GROUP_WEIGHT for key in ("subCategory", "masterCategory")
                    if ta.get(key) and ta.get(key) == tb.get(key))
        score += USAGE_WEIGHT * _overlap(ta.get("usage", {}), tb.get("usage", {}))
        for vectors in (self.looks(), self.names()):
            if a in vectors and b in vectors:
                score += float(vectors[a] @ vectors[b])
        return score

    def looks(self) -> dict[str, np.ndarray]:
        """Each type's mean product embedding (unit length); none without a catalogue."""
        if self._looks is None:
            self._looks = {}
            if self.catalogue is not None:
                types = np.array(self.catalogue.article_types)
                embeddings = self.catalogue.embeddings.astype(np.float32)
                for t in set(types.tolist()):
                    self._looks[t] = _unit(embeddings[types == t].mean(0))
        return self._looks

    def names(self) -> dict[str, np.ndarray]:
        """Each type's name embedded by the text encoder ("dresses"); none without one."""
        if self._names is None:
            self._names = {}
            if self.encode is not None:
                types = self.types()
                vectors = np.asarray(self.encode([canonical_caption(t, []) for t in types]), np.float32)
                self._names = {t: _unit(v) for t, v in zip(types, vectors)}
        return self._names


def _overlap(a: dict, b: dict) -> float:
    """Shared share of two count tables: 1 when their proportions are the same, 0 when disjoint."""
    total_a, total_b = sum(a.values()), sum(b.values())
    if not total_a or not total_b:
        return 0.0
    return sum(min(n / total_a, b.get(k, 0) / total_b) for k, n in a.items())


def _unit(v: np.ndarray) -> np.ndarray:
    return v / max(float(np.linalg.norm(v)), 1e-12)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m models.search.item_types", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--meta", required=True, help="a meta CSV with articleType, subCategory, masterCategory, usage, "
                                                 "gender (the shared pack's dev_meta.csv)")
    p.add_argument("--out", default=str(ITEM_TYPES))
    args = p.parse_args(argv)
    with open(args.meta, newline="", encoding="utf-8") as fh:
        table = build_table(csv.DictReader(fh), source=Path(args.meta).name)
    Path(args.out).write_text(json.dumps(table, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    print(f"{len(table['types'])} item types -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
