"""Realism and variety of the images one request gets, at a drawing setting of the app's.

Prompts: "<colour> <item>" for (type, colour) cells with at least 2 x PER_PROMPT held-out photos; per cell
two disjoint sets of PER_PROMPT real photos, A (the reference) and B (the real-vs-real floor).
- within-prompt variety: mean pairwise distance among the PER_PROMPT images of one prompt, against the
  same among real set A's photos of that cell, in pixels (mean absolute difference, 0-1 scale) and in the
  evaluation classifier's features (Euclidean); 1.0 = as varied as the shop's own photos;
- realism apart from variety: k-NN precision/recall and density/coverage (scores.knn_precision_recall)
  against A; classifier-feature FID against A, with B's as the floor;
- GAN-test on the same images (type and colour as prompted), against A's accuracy;
- memorisation (scores.memorisation_rates): how often an image is as close to a training photo as only
  the closest 5% of held-out photos of the same cells are (up to MEMORISATION_PER_CELL per cell: the 5th
  percentile of B's 8 per cell alone swung from 0.3 to 2.0 between seeds, with a near-duplicate or two).
"""
from __future__ import annotations

from collections import defaultdict

import numpy as np

from models.captions import canonical_caption
from models.metrics.classifier import classify
from models.metrics.structure import mean_pairwise_distance

PER_PROMPT = 8  # images per prompt (and real photos per cell)
MEMORISATION_PER_CELL = 64  # held-out photos per cell behind the memorisation threshold
MAX_PROMPTS = 82


def prompt_cells(rows: list[dict], per_prompt: int = PER_PROMPT, max_prompts: int = MAX_PROMPTS,
                 seed: int = 0) -> list[tuple[str, str, list[int]]]:
    """(type, colour, `per_prompt` row indices) for the largest (type, colour) cells, one per type first."""
    cells = defaultdict(list)
    for i, r in enumerate(rows):
        if r["articleType"] and r["baseColour"]:
            cells[(r["articleType"], r["baseColour"])].append(i)
    big = sorted(((k, v) for k, v in cells.items() if len(v) >= per_prompt), key=lambda kv: -len(kv[1]))
    rng = np.random.default_rng(seed)
    seen_types, first, rest = set(), [], []
    for key, members in big:
        (first if key[0] not in seen_types else rest).append((key, members))
        seen_types.add(key[0])
    return [(t, c, sorted(rng.choice(m, per_prompt, replace=False).tolist()))
            for (t, c), m in (first + rest)[:max_prompts]]


def _pairwise_l2(x: np.ndarray) -> float:
    i, j = np.triu_indices(len(x), k=1)
    return float(np.linalg.norm(x[i] - x[j], axis=1).mean())


def variety(images: list[np.ndarray], clf, device) -> dict:
    """Mean over groups (each uint8 (k, 64, 64, 3)) of the within-group pairwise distances."""
    pixels = [mean_pairwise_distance(g.astype(np.float32) / 255) for g in images]
    feats = [_pairwise_l2(classify(clf, g, device)[2]) for g in images]
    return {"pixels": float(np.mean(pixels)), "features": float(np.mean(feats))}


class PromptSet:
    """The prompt cells of a held-out table with their real sets A and B, features computed once."""

    def __init__(self, held, train_images: np.ndarray, vocab, clf, device, seed: int = 0,
                 per_prompt: int = PER_PROMPT):
        cells = [cell for cell in prompt_cells(held.rows, per_prompt=2 * per_prompt, seed=seed)
                 if cell[0] in vocab.article_types and cell[1] in vocab.colours]
        if not cells:
            raise ValueError(f"no (type, colour) with {2 * per_prompt} held-out photos to compare with")
        self.per_prompt = per_prompt
        self.captions = [canonical_caption(t, [c]) for t, c, _ in cells]
        self.labels = np.array([[vocab.article_types.index(t), vocab.colours.index(c)] for t, c, _ in cells])
        self.real_a = [held.images[rows[:per_prompt]] for _, _, rows in cells]
        self.real_b = [held.images[rows[per_prompt:]] for _, _, rows in cells]
        self.memorisation_reference = _pixels(_cell_photos(held, cells, MEMORISATION_PER_CELL, seed))
        self.clf, self.device, self.seed = clf, device, seed
        self.train_pixels = _pixels(train_images)
        self.feats_a = classify(clf, np.concatenate(self.real_a), device)[2]
        self.feats_b = classify(clf, np.concatenate(self.real_b), device)[2]
        self.real_variety = variety(self.real_a, clf, device)
        t, c, _ = classify(clf, np.concatenate(self.real_a), device)
        want = np.repeat(self.labels, per_prompt, axis=0)
        self.real_accuracy = {"type": float((t == want[:, 0]).mean()), "colour": float((c == want[:, 1]).mean())}


def _cell_photos(held, cells, per_cell: int, seed: int) -> np.ndarray:
    """Up to `per_cell` held-out photos of each prompt cell, A and B among them."""
    by_cell = defaultdict(list)
    for i, r in enumerate(held.rows):
        by_cell[(r["articleType"], r["baseColour"])].append(i)
    rng = np.random.default_rng(seed)
    rows = []
    for t, c, _ in cells:
        members = by_cell[(t, c)]
        rows += rng.choice(members, min(per_cell, len(members)), replace=False).tolist()
    return held.images[sorted(rows)]


def _pixels(images: np.ndarray) -> np.ndarray:
    """uint8 (N, 64, 64, 3) -> (N, 3072) floats in [0, 1] at 32x32: the memorisation check's space."""
    x = images.reshape(len(images), 32, 2, 32, 2, 3).mean(axis=(2, 4), dtype=np.float32) / 255
    return x.reshape(len(images), -1)


def _ratio(a: float, b: float) -> float | None:
    return a / b if b else None


def setting_report(draw, prompts: PromptSet) -> dict:
    """`draw(caption, seeds) -> uint8 (len(seeds), 64, 64, 3)`: the numbers for one drawing setting."""
    from models.metrics.scores import fid_from_features, knn_precision_recall, memorisation_rates

    seeds = [prompts.seed + k for k in range(prompts.per_prompt)]
    generated = [draw(caption, seeds) for caption in prompts.captions]
    flat = np.concatenate(generated)
    t, c, feats = classify(prompts.clf, flat, prompts.device)
    want = np.repeat(prompts.labels, prompts.per_prompt, axis=0)
    gen_v = variety(generated, prompts.clf, prompts.device)
    fid, floor = fid_from_features(feats, prompts.feats_a), fid_from_features(prompts.feats_b, prompts.feats_a)
    accuracy = {"type": float((t == want[:, 0]).mean()), "colour": float((c == want[:, 1]).mean())}
    return {
        "variety": gen_v, "variety_ratio": {k: _ratio(gen_v[k], prompts.real_variety[k]) for k in gen_v},
        "fid": fid, "fid_floor": floor, "fid_ratio": _ratio(fid, floor),
        "knn": knn_precision_recall(prompts.feats_a, feats),
        "gan_test": accuracy, "gan_test_ratio": {k: _ratio(accuracy[k], prompts.real_accuracy[k]) for k in accuracy},
        "memorisation": memorisation_rates(_pixels(flat), prompts.memorisation_reference, prompts.train_pixels),
        "images": generated,
    }


# ---- drawing from catalogue exemplars (models.exemplars) -------------------------------------------------

def training_exemplars(train, encoder, device, editor: str | None = None):
    """An ExemplarDrawer whose bank is the training split (never a held-out photo of the sets A and B), its
    typical products read by the bundled search model as the app's catalogue marks them."""
    from models.editing import PhotoEditor
    from models.exemplars import ExemplarBank, ExemplarDrawer
    from models.search.retrieval import SearchModel

    model = SearchModel()
    chunks = [train.images[i : i + 1024] for i in range(0, len(train), 1024)]
    logp = np.concatenate([model.attribute_logprobs(chunk)[0]["articleType"] for chunk in chunks])
    bank = ExemplarBank.from_arrays(train.images, [r["articleType"] for r in train.rows],
                                    [r["baseColour"] for r in train.rows], [r["gender"] for r in train.rows],
                                    logp, list(model.config.article_types))
    return ExemplarDrawer(PhotoEditor(editor or None, getattr(device, "type", device)), bank, encoder.encode)


def exemplar_drawer(drawer, prompts: PromptSet, vocab, as_app: bool, fallback, fell_back: list | None = None):
    """`draw(caption, seeds)` for setting_report: the prompt's (type, colour) drawn from exemplars, as the
    app draws an answer (the first seeds of a 3x pool with fresh exemplars) or each seed as it comes; a
    prompt the bank cannot draw goes to `fallback(caption, seeds)` (as the app's text-only generator) and
    into `fell_back`."""
    from models.exemplars import Request
    from models.generate import CANDIDATES_PER_IMAGE

    cells = {cap: Request(vocab.article_types[t], [vocab.colours[c]]) for cap, (t, c) in
             zip(prompts.captions, prompts.labels)}

    def draw(caption: str, seeds: list[int]) -> np.ndarray:
        request = cells[caption]
        if not drawer.can_draw(request):
            if fell_back is not None:
                fell_back.append(caption)
            return fallback(caption, seeds)
        if as_app:
            pool = list(range(seeds[0], seeds[0] + CANDIDATES_PER_IMAGE * len(seeds)))
            images = drawer.draw_distinct(request, pool, len(seeds))[1]
        else:
            images = drawer.draw(request, seeds)
        return np.stack([np.asarray(im) for im in images])
    return draw


def variation_closeness(drawer, prompts: PromptSet, vocab, n_prompts: int = 15, per_card: int = 4) -> dict:
    """"More like this" on exemplar drawings: for each of an answer's 4 cards, `per_card` variations; the share
    nearest (mean |pixel difference|) the clicked card among the 4 shown."""
    from models.exemplars import Request

    hits, total = 0, 0
    for t, c in prompts.labels[:n_prompts]:
        request = Request(vocab.article_types[t], [vocab.colours[c]])
        if not drawer.can_draw(request):
            continue
        seeds, shown = drawer.draw_distinct(request, list(range(12)), 4)
        shown_px = np.stack([np.asarray(im, np.float32) for im in shown])
        for k, seed in enumerate(seeds):
            for image in drawer.variations(request, seed, [1000 + 10 * k + j for j in range(per_card)]):
                d = np.abs(shown_px - np.asarray(image, np.float32)).mean(axis=(1, 2, 3))
                hits += int(d.argmin() == k)
                total += 1
    return {"variations": total, "nearest_the_clicked_card": hits / total if total else None}
