"""Measure search quality on products the embedding never saw: `python -m models.metrics.evaluate_retrieval`.

The catalogue is built from the validation split of the pack only (`models.data.is_validation`), and
every query comes from it too:
- text, titles: each held-out product's real title; precision@10 of its item type and of its colour,
  and Recall@10 of the product itself;
- text, prompts: "<colour> <item>" for every (type, colour) cell with at least 10 catalogue products;
- text, gender prompts: "<colour> <item> for men|women" for every (type, colour, gender) cell with at least
  10 catalogue products of that gender (Unisex ones included);
- composed: a held-out image + "in <another colour>" (a colour with at least 10 products of that type
  in the catalogue, drawn at random); precision@10 of (same type AND the new colour), the reference
  product itself excluded;
- image only: each held-out image; precision@10 of type and colour, the product itself excluded.
Gender precision@10 counts a Unisex product as a match for men and for women (and any adult product
for a Unisex one); Boys and Girls are their own. Titles and photos want the product's own gender.
Text queries are measured with and without the synthetic expansion (generated images); every query
kind also with the embedding alone, without the catalogue-label facets and without the gender facet
("without_gender": the ranking before gender was a facet); a sweep over the fusion and facet weights
is reported. Writes a JSON report (`--out`) and prints it.
"""
from __future__ import annotations

import argparse
import json
import logging
import random
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from models.data import load_table
from models.search.catalog import Catalogue, gender_labels, gender_match
from models.search.retrieval import (
    ATTRIBUTE_WEIGHT,
    COMPOSE_IMAGE_WEIGHT,
    COMPOSE_OLD_WEIGHT,
    EXPANSION_WEIGHT,
    GENDER_WEIGHT,
    LABEL_WEIGHT,
    RAW_TEXT_WEIGHT,
    Retriever,
    SearchModel,
    composed_wanted,
)

log = logging.getLogger(__name__)

TARGETS = {"text_type_p10": 0.85, "text_colour_p10": 0.8, "composed_type_p10": 0.7, "composed_colour_p10": 0.7}
MIN_CELL = 10  # prompts and new colours only where the catalogue holds at least this many matches
HEADS_ONLY_WEIGHT = 0.1  # the attribute heads' best weight with the label facets off (the "without_labels" rows)


def precision(catalogue_labels: np.ndarray, top: np.ndarray, wanted: np.ndarray) -> float:
    """Mean over queries of the share of their top-k rows whose label equals the wanted one."""
    if len(top) == 0:
        return float("nan")
    return float((catalogue_labels[top] == wanted[:, None]).mean())


def gender_precision(catalogue_genders: np.ndarray, top: np.ndarray, wanted: np.ndarray) -> float:
    """Mean over queries with a wanted gender of the share of their top-k rows whose gender matches it
    (`models.search.catalog.gender_match`: Unisex goes with Men and Women)."""
    has = np.array([bool(w) for w in wanted], dtype=bool)
    if len(top) == 0 or not has.any():
        return float("nan")
    return float(gender_match(wanted[has], catalogue_genders[top[has]]).mean())


class Evaluation:
    def __init__(self, args):
        from models.text_encoder import TextEncoder

        self.args = args
        self.rng = random.Random(args.seed)
        table = load_table(args.data, limit=args.limit or None)
        self.val = table.split(validation=True)
        self.model = SearchModel(args.weights)
        start = time.perf_counter()
        self.catalogue = Catalogue.build(self.val, self.model, source=f"{args.data} (validation split)")
        self.build_s = time.perf_counter() - start
        self.types = np.array(self.catalogue.article_types)
        self.colours = np.array(self.catalogue.colours)
        self.genders = np.array(self.catalogue.genders)
        self.detect = _detector()
        self.generator = _generator(args.generator)
        self.retriever = Retriever(self.model, self.catalogue, TextEncoder(), self.detect, self.generator)
        log.info("catalogue of %d validation products; generator: %s", len(self.catalogue),
                 "yes" if self.generator else "none")

    # ---- query sets -----------------------------------------------------------------------------
    def title_queries(self):
        rows = [i for i, t in enumerate(self.catalogue.titles) if t]
        if self.args.max_queries and len(rows) > self.args.max_queries:
            rows = sorted(self.rng.sample(rows, self.args.max_queries))
        return [self.catalogue.titles[i] for i in rows], np.array(rows)

    def prompt_queries(self):
        cells = Counter(zip(self.types, self.colours))
        cells = sorted(c for c, n in cells.items() if n >= MIN_CELL and c[0] and c[1])
        return [f"{c} {t}".lower() for t, c in cells], np.array([t for t, _ in cells]), np.array([c for _, c in cells])

    def gender_prompt_queries(self):
        """"<colour> <item> for men|women" for every cell with at least MIN_CELL products of that gender."""
        folded = np.char.lower(self.genders)
        cells = Counter()
        for gender in ("Men", "Women"):
            ok = np.isin(folded, sorted(gender_labels(gender)))
            cells.update((t, c, gender) for t, c in zip(self.types[ok], self.colours[ok]) if t and c)
        cells = sorted(cell for cell, n in cells.items() if n >= MIN_CELL)
        return ([f"{c} {t} for {g}".lower() for t, c, g in cells], np.array([t for t, _, _ in cells]),
                np.array([c for _, c, _ in cells]), np.array([g for _, _, g in cells]))

    def composed_queries(self):
        cells = Counter(zip(self.types, self.colours))
        rows, new_colours = [], []
        order = list(range(len(self.catalogue)))
        self.rng.shuffle(order)
        for i in order:
            options = sorted(c for (t, c), n in cells.items()
                             if t == self.types[i] and c and c != self.colours[i] and n >= MIN_CELL)
            if options and self.colours[i]:
                rows.append(i)
                new_colours.append(self.rng.choice(options))
            if self.args.max_queries and len(rows) >= self.args.max_queries:
                break
        return np.array(rows, dtype=int), new_colours

    # ---- runs -----------------------------------------------------------------------------------
    def run(self) -> dict:
        k, sweep_on = self.args.k, self.args.sweep
        report = {"catalogue": {"products": len(self.catalogue), "split": "validation", "data": self.args.data,
                                "build_s": round(self.build_s, 2)},
                  "weights": str(self.model.path), "generator": str(self.args.generator) if self.generator else None,
                  "settings": {"expansion_weight": EXPANSION_WEIGHT, "raw_text_weight": RAW_TEXT_WEIGHT,
                               "compose_image_weight": COMPOSE_IMAGE_WEIGHT, "compose_old_weight": COMPOSE_OLD_WEIGHT,
                               "attribute_weight": ATTRIBUTE_WEIGHT, "label_weight": LABEL_WEIGHT,
                               "gender_weight": GENDER_WEIGHT, "k": k}}
        titles, title_rows = self.title_queries()
        title_caps, title_wanted = self.retriever.analyse(titles)
        prompts, p_types, p_colours = self.prompt_queries()
        prompt_caps, prompt_wanted = self.retriever.analyse(prompts)
        g_prompts, g_types, g_colours, g_genders = self.gender_prompt_queries()
        g_caps, g_wanted = self.retriever.analyse(g_prompts)
        report["detector_on_prompts"] = {
            "type_found": round(float(np.mean([w["articleType"] == t for w, t in zip(prompt_wanted, p_types)])), 4),
            "colour_found": round(float(np.mean([w["baseColour"] == c for w, c in zip(prompt_wanted, p_colours)])), 4)}
        raws = sorted({RAW_TEXT_WEIGHT} | ({0.0, 0.5, 1.0} if sweep_on else set()))
        expansions = sorted({0.0, EXPANSION_WEIGHT} | ({0.25, 0.5, 1.0} if sweep_on else set()))
        expansions = [e for e in expansions if e == 0.0 or self.generator]
        attrs = sorted({0.0, ATTRIBUTE_WEIGHT, HEADS_ONLY_WEIGHT} | ({0.02, 0.05, 0.1, 0.2} if sweep_on else set()))
        labels = sorted({0.0, LABEL_WEIGHT} | ({0.05, 0.1, 0.2, 0.5, 1.0} if sweep_on else set()))
        genders = sorted({0.0, GENDER_WEIGHT} | ({0.5, 1.0, 1.25, 1.5, 2.0} if sweep_on else set()))
        reranks = _reranks(attrs, labels, genders)
        sweep = {}
        for raw_w in raws:
            for exp_w in expansions:
                tv, _ = self.retriever.text_query_vectors(titles, title_caps, exp_w > 0, raw_w, exp_w)
                pv, _ = self.retriever.text_query_vectors(prompts, prompt_caps, exp_w > 0, raw_w, exp_w)
                gv, _ = self.retriever.text_query_vectors(g_prompts, g_caps, exp_w > 0, raw_w, exp_w)
                for rerank in reranks:
                    t = self.metrics(tv, title_wanted, rerank, title_rows, self.types[title_rows],
                                     self.colours[title_rows], k, self.genders[title_rows])
                    p = self.metrics(pv, prompt_wanted, rerank, None, p_types, p_colours, k)
                    g = self.metrics(gv, g_wanted, rerank, None, g_types, g_colours, k, g_genders)
                    sweep[_key(raw_w, exp_w, *rerank)] = {"titles": t, "prompts": p, "gender_prompts": g}
        for name, part in (("text_titles", "titles"), ("text_prompts", "prompts"),
                           ("text_gender_prompts", "gender_prompts")):
            report[name] = _with_ablations({_rerank_key(*r): sweep[_key(RAW_TEXT_WEIGHT, 0.0, *r)][part]
                                            for r in reranks}, "")
            report[name] = {"no_expansion": report[name].pop("default"), **report[name]}
            measured = EXPANSION_WEIGHT or 0.5  # with the expansion off by default, report it at 0.5
            key = _key(RAW_TEXT_WEIGHT, measured, ATTRIBUTE_WEIGHT, LABEL_WEIGHT, GENDER_WEIGHT)
            report[name]["expansion"] = sweep[key][part] if key in sweep else "not measured: no generator"
        report["expansion_weight_measured"] = EXPANSION_WEIGHT or 0.5
        report["composed"], report["composed_sweep"] = self.composed(k, reranks)
        report["image"], report["image_sweep"] = self.image_only(k, reranks)
        report["attributes"] = self.attribute_accuracy()
        report["text_sweep"] = sweep
        report["latency_ms"] = self.latency(k)
        report["targets"] = self.check_targets(report)
        return report

    def metrics(self, vectors, wanted, rerank, want_rows, want_types, want_colours, k, want_genders=None):
        bonus = self.catalogue.bonus(wanted, *rerank)
        top, _ = self.catalogue.search_many(vectors, k, bonus=bonus)
        out = {"queries": len(vectors), "type_p10": precision(self.types, top, want_types),
               "colour_p10": precision(self.colours, top, want_colours)}
        if want_genders is not None:
            out["gender_p10"] = gender_precision(self.genders, top, want_genders)
        if want_rows is not None:
            out["product_r10"] = float((top == want_rows[:, None]).any(1).mean())
        return {key: round(v, 4) if isinstance(v, float) else v for key, v in out.items()}

    def composed(self, k, reranks):
        rows, new_colours = self.composed_queries()
        texts = [f"in {c.lower()}" for c in new_colours]
        want_c = np.array(new_colours)
        want_t = self.types[rows]
        want_g = self.genders[rows]
        results = {}
        chosen = (COMPOSE_IMAGE_WEIGHT, COMPOSE_OLD_WEIGHT)
        grid = {(a, b) for a in (0.0, 0.25, 0.5, 1.0) for b in (0.0, 0.5, 1.0)} if self.args.sweep else set()
        for w in sorted(grid | {chosen}):
            vectors, predicted, modified = self.retriever.composed_query_vectors(self.val.images[rows], texts, w)
            wanted = [composed_wanted(p, m) for p, m in zip(predicted, modified)]
            understood = float(np.mean([m["baseColour"] == c for m, c in zip(modified, new_colours)]))
            for rerank in reranks:
                bonus = self.catalogue.bonus(wanted, *rerank)
                top, _ = self.catalogue.search_many(vectors, k, exclude=[[r] for r in rows], bonus=bonus)
                both = (self.types[top] == want_t[:, None]) & (self.colours[top] == want_c[:, None])
                results[f"image={w[0]},old={w[1]},{_rerank_key(*rerank)}"] = {
                    "queries": len(rows), "type_and_colour_p10": round(float(both.mean()), 4),
                    "type_p10": round(precision(self.types, top, want_t), 4),
                    "colour_p10": round(precision(self.colours, top, want_c), 4),
                    "gender_p10": round(gender_precision(self.genders, top, want_g), 4),
                    "modification_understood": round(understood, 4)}
        out = _with_ablations(results, f"image={chosen[0]},old={chosen[1]},")
        return {**out.pop("default"), **out}, results

    def image_only(self, k, reranks):
        vectors = self.model.embed_images(self.val.images)
        predicted = self.model.predict(self.val.images)
        wanted = [{"articleType": p["articleType"], "baseColour": p["baseColour"], "gender": p.get("gender")}
                  for p in predicted]
        results = {}
        for rerank in reranks:
            bonus = self.catalogue.bonus(wanted, *rerank)
            top, _ = self.catalogue.search_many(vectors, k, exclude=[[i] for i in range(len(vectors))], bonus=bonus)
            results[_rerank_key(*rerank)] = {"queries": len(vectors),
                                               "type_p10": round(precision(self.types, top, self.types), 4),
                                               "colour_p10": round(precision(self.colours, top, self.colours), 4),
                                               "gender_p10": round(gender_precision(self.genders, top, self.genders),
                                                                   4)}
        out = _with_ablations(results, "")
        return {**out.pop("default"), **out}, results

    def attribute_accuracy(self):
        pred = self.model.predict(self.val.images)
        t = np.mean([p["articleType"] == r for p, r in zip(pred, self.types)])
        c = np.mean([p["baseColour"] == r for p, r in zip(pred, self.colours) if r])
        g = np.mean([p.get("gender") == r for p, r in zip(pred, self.genders) if r])
        return {"type_accuracy": round(float(t), 4), "colour_accuracy": round(float(c), 4),
                "gender_accuracy": round(float(g), 4)}

    def latency(self, k):
        """Milliseconds per query on this catalogue: search alone, and a whole text query."""
        q = self.retriever.text_vectors(["red dresses"])
        n = 200
        start = time.perf_counter()
        for _ in range(n):
            self.catalogue.search(q[0], k)
        search_ms = (time.perf_counter() - start) / n * 1000
        start = time.perf_counter()
        for text in ["a navy blue shirt for office", "black running shoes", "red party dress"]:
            self.retriever.search(self.retriever.text_query(text, expand=False), k)
        text_ms = (time.perf_counter() - start) / 3 * 1000
        return {"search": round(search_ms, 3), "text_query_no_expansion": round(text_ms, 1),
                "catalogue_products": len(self.catalogue)}

    @staticmethod
    def check_targets(report):
        out = {}
        for name, kind in (("text_titles", "no_expansion"), ("text_prompts", "no_expansion"),
                           ("text_titles", "expansion"), ("text_prompts", "expansion")):
            m = report[name].get(kind)
            if isinstance(m, dict):
                out[f"{name}.{kind}"] = (m["type_p10"] >= TARGETS["text_type_p10"]
                                         and m["colour_p10"] >= TARGETS["text_colour_p10"])
        c = report["composed"]
        out["composed"] = (c["type_p10"] >= TARGETS["composed_type_p10"]
                           and c["colour_p10"] >= TARGETS["composed_colour_p10"])
        return out


def _rerank_key(attr_w, label_w, gender_w) -> str:
    return f"attributes={attr_w},labels={label_w},gender={gender_w}"


def _key(raw_w, exp_w, attr_w, label_w, gender_w) -> str:
    return f"raw={raw_w},expansion={exp_w},{_rerank_key(attr_w, label_w, gender_w)}"


def _reranks(attrs, labels, genders) -> list[tuple[float, float, float]]:
    """(attribute, label, gender) weights: each swept with the others at their defaults, plus the ablations
    (all off; the attribute heads alone)."""
    out = {(a, LABEL_WEIGHT, GENDER_WEIGHT) for a in attrs} | {(ATTRIBUTE_WEIGHT, b, GENDER_WEIGHT) for b in labels}
    out |= {(ATTRIBUTE_WEIGHT, LABEL_WEIGHT, g) for g in genders}
    out |= {(0.0, 0.0, 0.0), (HEADS_ONLY_WEIGHT, 0.0, 0.0)}
    return sorted(out)


def _with_ablations(results: dict, prefix: str) -> dict:
    """The default setting's metrics ("default"), with the ones without the gender facet, with the
    attribute heads alone and with the embedding alone."""
    return {"default": dict(results[prefix + _rerank_key(ATTRIBUTE_WEIGHT, LABEL_WEIGHT, GENDER_WEIGHT)]),
            "without_gender": results[prefix + _rerank_key(ATTRIBUTE_WEIGHT, LABEL_WEIGHT, 0.0)],
            "without_labels": results[prefix + _rerank_key(HEADS_ONLY_WEIGHT, 0.0, 0.0)],
            "embedding_only": results[prefix + _rerank_key(0.0, 0.0, 0.0)]}


def _detector():
    try:
        from app.chat.detector import get_detector

        return get_detector()
    except Exception as exc:  # noqa: BLE001 - the evaluation still runs on lower-cased text
        log.warning("keyword detector unavailable (%s): queries used as captions", exc)
        return None


def _generator(path):
    from models.checkpoint import CheckpointError
    from models.generate import TextToImage

    if path is None or not Path(path).exists():
        log.warning("no generator weights at %s: expansion not measured", path)
        return None
    try:
        return TextToImage(path, device="cpu")
    except CheckpointError as exc:
        log.warning("generator unusable (%s): expansion not measured", exc)
        return None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fashiongan-evaluate-retrieval", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="../shared/data/fpi64/dev.npz", help="pack .npz (its validation split is used)")
    p.add_argument("--limit", type=int, default=0, help="read only the first N products of the pack")
    p.add_argument("--weights", default=None, help="embedding checkpoint (default weights/embedding.pt)")
    p.add_argument("--generator", default="weights/generator.pt", help="generator for the expansion")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--max-queries", type=int, default=0, help="at most N title / composed queries (0 = all)")
    p.add_argument("--sweep", action=argparse.BooleanOptionalAction, default=True, help="also sweep fusion weights")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=None, help="write the JSON report here too")
    return p


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    report = Evaluation(args).run()
    text = json.dumps(report, indent=2)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
