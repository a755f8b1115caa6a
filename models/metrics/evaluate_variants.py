"""Evaluate photo variants: `python -m models.metrics.evaluate_variants --out runs/eval-variants`.

On held-out product photos (`ProductTable.split(validation=True)`, never trained on), each photo gets a
target colour it does not have (drawn, with a fixed seed, among the colours its item type comes in) and
four variants "in <colour>" from each method:
- editor: the editing generator, as the app runs it (the photo described by the search model, the
  change applied to that description), at the default strength, at a lower one, and without the photo's
  fine detail put back (models.editing.keep_detail);
- image slot: the text-to-image generator conditioned on the photo's grey embedding (the earlier path);
- Lab recolour: the photo's lightness kept, the foreground's chroma moved to the colour's (classical);
- search: the four nearest real products of the composed query (photo + "in <colour>"), other products.
Measured per method:
- colour changed: the GAN-test classifier names the asked colour, against its accuracy on real held-out
  photos of those colours (same mix);
- type kept: it names the photo's item type, against its accuracy on the real photos themselves;
- identity: `models.metrics.structure.structural_similarity` (silhouette IoU + edge correlation: blind to
  colour, sensitive to shape, print and details); a hit when the reference is more similar to the
  variant than 20 other held-out photos of its type are (chance 1/21), and the mean similarity;
- realism: classifier-feature FID of the variants against real photos of the asked type and colour;
- variety: mean pairwise distance among the 4 variants of a photo, in pixels and classifier features.
The describe step (item type and colour of the photo, as the app reads them) is scored on all held-out
photos, with the confusions between near types.
"""
from __future__ import annotations

import argparse
import json
import logging
import time
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from models.data import load_table
from models.metrics.classifier import ClassifierConfig, classify, load_or_train
from models.metrics.recolour import colour_chroma, recolour
from models.metrics.scores import fid_from_features
from models.metrics.structure import identity_hits, mean_pairwise_distance, median_shade_difference
from models.resources import EDITOR_WEIGHTS, GENERATOR_WEIGHTS
from models.sampling import resolve_device

log = logging.getLogger(__name__)

SEEDS = [0, 1, 2, 3]  # four variants per photo, as the app draws
DISTRACTORS = 20  # other held-out photos of the same type in the identity test
NEAR_TYPES = [("Dresses", "Tops"), ("Kurtas", "Tops"), ("Tshirts", "Tops"), ("Shirts", "Tshirts"),
              ("Casual Shoes", "Sports Shoes"), ("Casual Shoes", "Formal Shoes"), ("Kurtas", "Kurtis")]
TARGETS = {"identity_hit_rate": (">=", 0.6), "colour_changed_ratio": (">=", 0.8), "type_kept_ratio": (">=", 0.8)}


@dataclass
class VariantEvalOptions:
    data: str = "../shared/data/fpi64/dev.npz"
    editor: str = str(EDITOR_WEIGHTS)
    generator: str = str(GENERATOR_WEIGHTS)
    photos: int = 200  # held-out photos, spread over item types with >= DISTRACTORS + 1 held-out photos
    second_strength: float = 1.0  # the editor's second setting (the default is models.editing.DEFAULT_STRENGTH)
    out: str = "runs/eval-variants"
    seed: int = 0
    device: str = "cpu"
    classifier: str = ""  # "" = the cached GAN-test classifier of models.metrics.evaluate
    classifier_steps: int = ClassifierConfig.steps
    cache_dir: str = "data_cache"


# ---- the photos and their asks --------------------------------------------------------------------

def pick_photos(rows: list[dict], n: int, rng: np.random.Generator) -> list[int]:
    """Held-out rows whose type has enough other held-out photos, round-robin over types (fixed order)."""
    by_type = defaultdict(list)
    for i, r in enumerate(rows):
        if r["articleType"] and r["baseColour"]:
            by_type[r["articleType"]].append(i)
    eligible = {t: list(rng.permutation(v)) for t, v in sorted(by_type.items()) if len(v) > DISTRACTORS}
    picked: list[int] = []
    while len(picked) < n and any(eligible.values()):
        for t in list(eligible):
            if eligible[t] and len(picked) < n:
                picked.append(int(eligible[t].pop()))
    return picked


def pick_targets(rows: list[dict], picked: list[int], train_rows: list[dict], rng) -> list[str]:
    """Per photo a colour its type comes in (in training data, weighted by sqrt count), not its own."""
    counts: dict[str, Counter] = defaultdict(Counter)
    for r in train_rows:
        if r["articleType"] and r["baseColour"]:
            counts[r["articleType"]][r["baseColour"]] += 1
    targets = []
    for i in picked:
        options = {c: n for c, n in counts[rows[i]["articleType"]].items() if c != rows[i]["baseColour"] and n >= 3}
        names = sorted(options) or ["Blue", "Red", "Black"]
        weights = np.sqrt([options.get(c, 1) for c in names])
        targets.append(str(rng.choice(names, p=weights / weights.sum())))
    return targets


# ---- the methods ----------------------------------------------------------------------------------

class Methods:
    """Each method: (photos uint8 (N,64,64,3), target colours) -> variants uint8 (N, len(SEEDS), 64, 64, 3)."""

    def __init__(self, opts: VariantEvalOptions, train, held):
        from models.search.catalog import Catalogue
        from models.search.retrieval import DEFAULT_CATALOG, Retriever, SearchModel
        from models.text_encoder import get_text_encoder

        self.opts, self.device = opts, resolve_device(opts.device)
        self._editor = None
        self.encoder = get_text_encoder()
        self.retriever = Retriever(SearchModel(), Catalogue.load(DEFAULT_CATALOG), self.encoder)
        sample = np.random.default_rng(opts.seed).permutation(len(train))[:6000]
        self.chroma = colour_chroma(train.images[sample], [train.rows[i]["baseColour"] for i in sample])

    def describe(self, photos: np.ndarray, targets: list[str]) -> tuple[list[dict], list[dict]]:
        """What the app reads from each photo, and that description changed by "in <colour>"."""
        predicted = self.retriever.model.predict(photos)
        return predicted, [self.retriever.modify(p, f"in {c}") for p, c in zip(predicted, targets)]

    def editor(self, photos, targets, strength: float | None = None, detail: bool = True):
        from PIL import Image

        from models.editing import DEFAULT_STRENGTH, DETAIL_SIGMA, PhotoEditor

        if self._editor is None:  # loaded once for every setting
            self._editor = PhotoEditor(self.opts.editor, self.opts.device)
        self._editor.detail_sigma = DETAIL_SIGMA if detail else None
        predicted, modified = self.describe(photos, targets)
        own = self.encoder.encode([p["caption"] for p in predicted])
        wanted = self.encoder.encode([m["caption"] for m in modified])
        s = DEFAULT_STRENGTH if strength is None else strength
        return np.stack([np.stack([np.asarray(im) for im in
                                   self._editor.variants(Image.fromarray(x), o, w, SEEDS, s, m.get("baseColour"))])
                         for x, o, w, m in zip(photos, own, wanted, modified)])

    def image_slot(self, photos, targets):
        from PIL import Image

        from models.generate import TextToImage

        gen = TextToImage(self.opts.generator, self.opts.device)
        _, modified = self.describe(photos, targets)
        wanted = self.encoder.encode([m["caption"] for m in modified])
        out = []
        for x, w in zip(photos, wanted):
            condition = gen.image_condition(Image.fromarray(x)) if gen.takes_images else None
            out.append(np.stack([np.asarray(im) for im in gen.generate(w, SEEDS, image_embedding=condition)]))
        return np.stack(out)

    def lab_recolour(self, photos, targets):
        one = [recolour(x, self.chroma[c]) for x, c in zip(photos, targets)]
        return np.stack([np.repeat(x[None], len(SEEDS), axis=0) for x in one])  # deterministic: 4 equal copies

    def search(self, photos, targets, ids: list[str]):
        from PIL import Image

        catalogue = self.retriever.catalogue
        out = []
        for photo, colour, own_id in zip(photos, targets, ids):
            query = self.retriever.composed_query(Image.fromarray(photo), f"in {colour}")
            rows = [r for r, _ in self.retriever.search_rows(query, len(SEEDS) + 1)
                    if str(catalogue.ids[r]) != str(own_id)][: len(SEEDS)]
            out.append(np.stack([np.asarray(catalogue.thumbnail(r)) for r in rows]))
        return np.stack(out)


# ---- scoring --------------------------------------------------------------------------------------

def score_method(variants: np.ndarray, ctx: dict) -> dict:
    """All the numbers for one method's variants (N, 4, 64, 64, 3)."""
    n, k = variants.shape[:2]
    flat = variants.reshape(n * k, *variants.shape[2:])
    types, colours, feats = classify(ctx["clf"], flat, ctx["device"])
    want_colour = np.repeat(ctx["target_idx"], k)
    want_type = np.repeat(ctx["type_idx"], k)
    hits, sims = [], []
    for i in range(n):
        hit, sim = identity_hits(variants[i], ctx["photos"][i], ctx["distractors"][i])
        hits.append(hit)
        sims.append(sim)
    per_photo_feats = feats.reshape(n, k, -1)
    pixel_var = np.mean([mean_pairwise_distance(v.astype(np.float32) / 255) for v in variants])
    feat_var = np.mean([mean_pairwise_distance(f) for f in per_photo_feats])
    colour_acc = float((colours == want_colour).mean())
    type_acc = float((types == want_type).mean())
    return {
        "colour_changed": colour_acc, "colour_changed_ratio": colour_acc / ctx["real_colour_acc"],
        "type_kept": type_acc, "type_kept_ratio": type_acc / ctx["real_type_acc"],
        "identity_hit_rate": float(np.concatenate(hits).mean()),
        "identity_similarity": float(np.concatenate(sims).mean()),
        "fid": fid_from_features(feats, ctx["real_target_feats"]),
        "variety_pixels": float(pixel_var), "variety_features": float(feat_var),
        "shade_difference": median_shade_difference(variants),
    }


def describe_step(methods: Methods, held, vocab) -> dict:
    """Type and colour accuracy of the app's description of all held-out photos; near-type confusions."""
    predicted = []
    for start in range(0, len(held), 512):
        predicted += methods.retriever.model.predict(held.images[start : start + 512])
    true_t = [r["articleType"] for r in held.rows]
    true_c = [r["baseColour"] for r in held.rows]
    pred_t = [p.get("articleType") for p in predicted]
    pred_c = [p.get("baseColour") for p in predicted]
    confusions = {}
    for a, b in NEAR_TYPES:
        confusions[f"{a} read as {b}"] = _share(true_t, pred_t, a, b)
        confusions[f"{b} read as {a}"] = _share(true_t, pred_t, b, a)
    return {"n": len(held), "type_accuracy": float(np.mean([t == p for t, p in zip(true_t, pred_t)])),
            "colour_accuracy": float(np.mean([c == p for c, p in zip(true_c, pred_c) if c])),
            "near_type_confusions": confusions}


def _share(true: list, pred: list, a: str, b: str) -> dict:
    rows = [p for t, p in zip(true, pred) if t == a]
    return {"n": len(rows), "share": float(np.mean([p == b for p in rows])) if rows else None}


# ---- the run --------------------------------------------------------------------------------------

def evaluate_variants(opts: VariantEvalOptions) -> dict:
    start = time.perf_counter()
    rng = np.random.default_rng(opts.seed)
    device = resolve_device(opts.device)
    table = load_table(opts.data)
    train, held = table.split(validation=False), table.split(validation=True)
    # the classifier of models.metrics.evaluate (seed 0), whichever photos `seed` picks
    clf, vocab, clf_info = load_or_train(opts.classifier or None, train, ClassifierConfig(steps=opts.classifier_steps),
                                         device, opts.cache_dir)
    picked = pick_photos(held.rows, opts.photos, rng)
    targets = pick_targets(held.rows, picked, train.rows, rng)
    photos = held.images[picked]
    ctx = _context(clf, vocab, device, table, held, picked, targets, rng)
    methods = Methods(opts, train, held)
    ids = [held.rows[i]["id"] for i in picked]
    runs = {
        "editor": lambda: methods.editor(photos, targets),
        f"editor, strength {opts.second_strength}": lambda: methods.editor(photos, targets, opts.second_strength),
        "editor, the network's own detail": lambda: methods.editor(photos, targets, detail=False),
        "image slot (text-to-image generator)": lambda: methods.image_slot(photos, targets),
        "Lab recolour": lambda: methods.lab_recolour(photos, targets),
        "search (nearest real products)": lambda: methods.search(photos, targets, ids),
    }
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    report = {"options": asdict(opts), "photos": len(picked),
              "types": len({held.rows[i]["articleType"] for i in picked}),
              "real": {"colour_accuracy": ctx["real_colour_acc"], "type_accuracy": ctx["real_type_acc"],
                       "fid_floor": ctx["fid_floor"]},
              "classifier": {k: clf_info.get(k) for k in ("path", "fingerprint", "trained_now")}, "methods": {}}
    grids = {}
    for name, run in runs.items():
        log.info("variants: %s", name)
        variants = run()
        grids[name] = variants
        report["methods"][name] = score_method(variants, ctx)
    report["describe"] = describe_step(methods, held, vocab)
    report["targets"] = {k: {"rule": f"{op} {v}", "editor": report["methods"]["editor"][k],
                             "pass": bool(report["methods"]["editor"][k] >= v)} for k, (op, v) in TARGETS.items()}
    report["targets"]["realism_ahead_of_recolour"] = {
        "editor_fid": report["methods"]["editor"]["fid"], "recolour_fid": report["methods"]["Lab recolour"]["fid"],
        "pass": bool(report["methods"]["editor"]["fid"] < report["methods"]["Lab recolour"]["fid"])}
    report["seconds"] = round(time.perf_counter() - start, 1)
    (out / "report.json").write_text(json.dumps(report, indent=2))
    save_grid(out / "variants.png", photos[:12], targets[:12], {k: v[:12] for k, v in grids.items()})
    return report


def _context(clf, vocab, device, table, held, picked, targets, rng) -> dict:
    """Labels as classifier indices, real-photo accuracies, distractors and the real reference set."""
    type_idx = np.array([vocab.article_types.index(held.rows[i]["articleType"]) for i in picked])
    target_idx = np.array([vocab.colours.index(c) if c in vocab.colours else -1 for c in targets])
    photos = held.images[picked]
    real_t, _, _ = classify(clf, photos, device)
    by_type, by_cell = defaultdict(list), defaultdict(list)
    for i, r in enumerate(held.rows):
        by_type[r["articleType"]].append(i)
    for i, r in enumerate(table.rows):
        by_cell[(r["articleType"], r["baseColour"])].append(i)
    distractors = []
    for i in picked:
        others = [j for j in by_type[held.rows[i]["articleType"]] if j != i]
        distractors.append(held.images[rng.choice(others, DISTRACTORS, replace=False)])
    # real photos of the asked colours (held out, same mix) for the colour ceiling
    colour_rows = defaultdict(list)
    for i, r in enumerate(held.rows):
        colour_rows[r["baseColour"]].append(i)
    ceiling_rows = [int(rng.choice(colour_rows[c])) for c in targets if colour_rows.get(c)]
    _, ceiling_c, _ = classify(clf, held.images[ceiling_rows], device)
    ceiling_target = np.array([vocab.colours.index(held.rows[i]["baseColour"]) for i in ceiling_rows])
    # real photos of the asked (type, colour), any split, not the photo itself: the realism reference
    reference_rows = []
    for i, c in zip(picked, targets):
        cell = by_cell.get((held.rows[i]["articleType"], c), [])
        reference_rows += list(rng.choice(cell, min(4, len(cell)), replace=False)) if cell else []
    _, _, real_target_feats = classify(clf, table.images[reference_rows], device)
    half = len(reference_rows) // 2
    floor_rows = rng.permutation(reference_rows)
    _, _, fa = classify(clf, table.images[floor_rows[:half]], device)
    _, _, fb = classify(clf, table.images[floor_rows[half:]], device)
    return {"clf": clf, "device": device, "photos": photos, "type_idx": type_idx, "target_idx": target_idx,
            "distractors": distractors, "real_type_acc": float((real_t == type_idx).mean()),
            "real_colour_acc": float((ceiling_c == ceiling_target).mean()),
            "real_target_feats": real_target_feats, "fid_floor": fid_from_features(fa, fb)}


def save_grid(path: Path, photos: np.ndarray, targets: list[str], grids: dict[str, np.ndarray]) -> None:
    """Rows: photos; columns: the photo, then each method's first two variants."""
    from PIL import Image

    cols = 1 + 2 * len(grids)
    grid = Image.new("RGB", (64 * cols, 64 * len(photos)), "white")
    for r, photo in enumerate(photos):
        grid.paste(Image.fromarray(photo), (0, 64 * r))
        for m, variants in enumerate(grids.values()):
            for k in range(2):
                grid.paste(Image.fromarray(variants[r, k]), (64 * (1 + 2 * m + k), 64 * r))
    grid.save(path)
    (path.with_suffix(".txt")).write_text("columns: photo, " + ", ".join(f"{n} x2" for n in grids) + "\nrows: "
                                          + ", ".join(f"in {t}" for t in targets) + "\n")


def main(argv: list[str] | None = None) -> int:
    from models.config import add_dataclass_options, config_from_args

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(prog="evaluate_variants", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_dataclass_options(parser, VariantEvalOptions)
    opts = config_from_args(VariantEvalOptions, parser.parse_args(argv))
    torch.set_num_threads(1)
    report = evaluate_variants(opts)
    print(json.dumps({"methods": report["methods"], "describe": report["describe"], "targets": report["targets"]},
                     indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
