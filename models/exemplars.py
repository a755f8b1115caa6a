"""Text-to-image from catalogue exemplars (instance-conditioned generation, as IC-GAN does).

Each seed picks a real product of the named item type from the catalogue (its exemplar) and the editing
generator (models.editing) redraws it as the request asks: the exemplar brings a design (shape, cut,
print), the caption decides the colour and the seed the shade. Four seeds are four designs, so one
answer shows four different products where the text-only generator drew about one per caption.

Never the exemplar itself: exemplars always come from *other* colours than the one drawn, so every
drawing is a recolour, and models.metrics.variety measures how often a drawing is still as close to a
catalogue photo as only the closest 5% of unseen real photos are. A request without a colour takes one
per seed, as often as the catalogue holds the item in it. Item types without an exemplar in another
colour are left to the text-only generator (`draw` returns None).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from models.captions import canonical_caption
from models.editing import VARIATION_AMOUNT, PhotoEditor
from models.search.catalog import gender_labels
from models.shades import foreground_means

# Strength of the exemplar's edit (1 = the full change of colour), the seeds' shade spread (as
# models.editing.SHADE_AMOUNT) and how sure the search model must be of an exemplar's type. Chosen on other
# prompt cells than the reported ones (models.metrics.evaluate --variety-only --variety-seed 1), among
# strengths 0.6-1.0, spreads 0-1 and sureness 0-0.85: at 0.6 the colour changed too little (0.70x real
# photos'), at 0.65 drawings stayed as near their exemplars as memorised ones (7%, against 5%), and from
# 0.75 up FID and item type fell (2.6x the floor, 0.86x); 0.675 / 0.25 / 0.85 had the lowest FID (1.97x)
# with type 0.93x, colour 0.98x and 4% memorised.
EXEMPLAR_STRENGTH = 0.675
EXEMPLAR_SHADE = 0.25
TYPICAL_CONFIDENCE = 0.85
# Exemplars come from colours whose mean shade lies at most this far (CIE76) from the one drawn, where the
# item comes in any: white asked of a red or black product came back red or grey in the app. On the
# selection cells 15 / 25 / no limit measured the asked colour 1.18x / 1.14x / 1.09x and FID 2.08x /
# 2.01x / 2.12x (FID moves by about 0.15 between cell sets: within its noise).
MAX_COLOUR_CHANGE = 15.0
NEAREST_COLOURS = 3  # ... or, where none lies that near, the nearest few it comes in
RARE_COLOUR_PHOTOS = 64  # photos at most behind the mean shade of a colour the shade table lacks
# Share of seeds that start from a product in such a near colour; the others start from a product in any
# other colour. An answer takes near ones first, so the others are drawn only once the item's products in
# near colours are all shown: a red dress comes in 5 catalogue products of near colours, and "show me
# more" still brings new ones (recoloured from farther, less cleanly) instead of repeats.
NEAR_SHARE = 0.75
PICK_VERSION = 2  # raised whenever a seed comes to start from another product (2: NEAR_SHARE, rare colours)
EXEMPLAR_KEY = "exemplar"  # PIL info key of a drawn image: the bank row of its exemplar
EXEMPLAR_STREAM = 7_368_787  # a seed's exemplar (and colour) come from their own random streams
# An answer skips a product whose photo lies within this mean |pixel difference| (0-1) of one shown or
# picked while other products remain (on drawings, 0.05 measured FID 2.03x and variety 1.01x on the
# selection cells; 0.01: 2.21x, 0.93x).
MIN_DISTANCE = 0.05
MAX_POOL_ROUNDS = 3  # pools of seeds drawn at most while an answer still lacks fresh exemplars in near colours
MAX_FAR_POOL_ROUNDS = 24  # ... and in any colour (a seed's pick costs microseconds; the drawing is of n only)


@dataclass
class ExemplarBank:
    """The products exemplars are drawn from: labels per row, and each row's 64x64 photo on demand."""

    article_types: np.ndarray  # str per product
    colours: np.ndarray
    genders: np.ndarray
    photo: Callable[[int], np.ndarray]  # row -> uint8 (64, 64, 3), square on white
    # Products whose photo the search model reads as their own item type, at TYPICAL_CONFIDENCE or more:
    # clear examples of it (a product whose photo looks like another type would be drawn as that one).
    # None: every product.
    typical: np.ndarray | None = None
    ids: np.ndarray | None = None  # product ids (a drawing's tag); None: the row numbers

    def key(self, row: int):
        return str(self.ids[row]) if self.ids is not None else int(row)

    def row_of(self, key) -> int | None:
        """The row a drawing's tag names (None for an untagged image or an unknown product)."""
        if key is None:
            return None
        if self.ids is None:
            return int(key) if 0 <= int(key) < len(self.article_types) else None
        if self.__dict__.get("_rows_by_id") is None:
            self.__dict__["_rows_by_id"] = {str(pid): row for row, pid in enumerate(self.ids)}
        return self.__dict__["_rows_by_id"].get(str(key))

    @classmethod
    def from_arrays(cls, images: np.ndarray, article_types, colours, genders,
                    type_logprobs: np.ndarray | None = None, type_labels=None) -> ExemplarBank:
        """Arrays of the products; the search model's item-type log-probabilities of their photos (with
        its label list) mark the typical ones."""
        article_types = np.asarray(article_types, str)
        return cls(article_types, np.asarray(colours, str), np.asarray(genders, str), lambda row: images[row],
                   _typical(article_types, type_logprobs, type_labels))

    @classmethod
    def from_catalogue(cls, catalogue) -> ExemplarBank:
        """A models.search.catalog.Catalogue: its thumbnails are the photos, its stored attribute-head
        log-probabilities mark the typical products."""
        article_types = np.asarray(catalogue.article_types, str)
        labels = catalogue.meta.get("attribute_labels", {}).get("articleType")
        return cls(article_types, np.asarray(catalogue.colours, str), np.asarray(catalogue.genders, str),
                   lambda row: np.asarray(catalogue.thumbnail(row)),
                   _typical(article_types, catalogue.attributes.get("articleType"), labels),
                   np.asarray(catalogue.ids, str))

    def rows(self, article_type: str, gender: str | None = None) -> np.ndarray:
        """Typical products of the item type (and of the gender, with unisex ones, when one is named);
        worked out once per (type, gender): a turn asks several times."""
        cache = self.__dict__.setdefault("_rows_cache", {})
        if (article_type, gender) not in cache:
            keep = self.article_types == article_type
            if self.typical is not None:
                keep &= self.typical
            if gender:
                keep &= np.isin(np.char.lower(self.genders), sorted(gender_labels(gender)))
            cache[(article_type, gender)] = np.flatnonzero(keep)
        return cache[(article_type, gender)]


@dataclass
class Request:
    """What a caption asks for, in catalogue labels (as the keyword detector reads it)."""

    article_type: str | None
    colours: list[str]
    gender: str | None = None
    usage: str | None = None
    attributes: tuple[str, ...] = ()

    def caption(self, colour: str | None) -> str:
        """The caption of the request drawn in `colour` (the asked colours when it names some)."""
        return canonical_caption(self.article_type, self.colours or ([colour] if colour else []), self.gender,
                                 self.usage, self.attributes)


class ExemplarDrawer:
    def __init__(self, editor: PhotoEditor, bank: ExemplarBank, encode: Callable[[list[str]], torch.Tensor],
                 strength: float = EXEMPLAR_STRENGTH, shade: float = EXEMPLAR_SHADE):
        self.editor, self.bank, self.encode, self.strength, self.shade = editor, bank, encode, strength, shade
        self._reachable: dict[tuple, list[str]] = {}
        self._bank_shades: dict[str, np.ndarray | None] = {}  # mean shades of colours the shade table lacks

    def can_draw(self, request: Request) -> bool:
        if not request.article_type:
            return False
        held = set(self.bank.colours[self.bank.rows(request.article_type, request.gender)].tolist())
        # another colour to start from: for an asked colour any but it, else one besides each colour drawn
        return bool(held - {request.colours[0]}) if request.colours else len(held) >= 2

    def draw(self, request: Request, seeds: list[int]) -> list | None:
        """One PIL image per seed for the request (each tagged with its exemplar, `bank.key(row)`, in
        `image.info[EXEMPLAR_KEY]`), or None when the bank holds no exemplar to draw it from."""
        if not seeds or not self.can_draw(request):
            return None
        rows = self.bank.rows(request.article_type, request.gender)
        picks = [self.pick(request, rows, seed) for seed in seeds]
        return self._draw_rows(request, [r for r, _ in picks], [c for _, c in picks], list(seeds))

    def _draw_rows(self, request: Request, rows: list[int], colours: list[str], seeds: list[int]) -> list:
        """Bank row i redrawn for the request in colours[i], with seeds[i]'s noise and shade."""
        photos = np.stack([self.bank.photo(row) for row in rows])
        own = self.encode([self.own_caption(row) for row in rows])
        wanted = self.encode([request.caption(colour) for colour in colours])
        images = [None] * len(rows)
        for colour in dict.fromkeys(colours):  # one batch per colour: its shades' spread
            idx = [i for i, c in enumerate(colours) if c == colour]
            drawn = self.editor.edit_many(photos[idx], own[idx], wanted[idx], [seeds[i] for i in idx],
                                          self.strength, colour, self.shade)
            for i, image in zip(idx, drawn):
                images[i] = _tagged(image, self.bank.key(rows[i]))
        return images

    def draw_distinct(self, request: Request, seeds: list[int], n: int, avoid: list = ()):
        """n drawings, one per product and none of a product already shown for the request (`avoid`: its
        images) -> (their seeds, images). Products are picked from their photos, so only the n chosen are
        drawn: those in near colours first, then the others; within each, in seed order, skipping a
        product while its photo lies within MIN_DISTANCE of one shown or picked; while `seeds` give fewer
        than n new products in near colours, the seeds after them are tried too (MAX_POOL_ROUNDS pools;
        MAX_FAR_POOL_ROUNDS while fewer than n new products at all). Only a bank too small even then
        repeats a product, one shown before rather than one of this answer. None when the bank cannot draw
        the request."""
        if not seeds or not self.can_draw(request):
            return None
        rows = self.bank.rows(request.article_type, request.gender)
        shown_rows = [r for r in (self.bank.row_of(im.info.get(EXEMPLAR_KEY)) for im in avoid) if r is not None]
        pool = list(seeds)
        picks = [self.pick(request, rows, seed) for seed in pool]
        for round_ in range(1, MAX_FAR_POOL_ROUNDS):
            fresh = _first_of_each(picks, shown_rows)
            if sum(self._is_near(request, rows, *picks[i]) for i in fresh) >= n or (
                    round_ >= MAX_POOL_ROUNDS and len(fresh) >= n):
                break
            more = list(range(max(pool) + 1, max(pool) + 1 + len(seeds)))
            pool, picks = pool + more, picks + [self.pick(request, rows, seed) for seed in more]
        new = _first_of_each(picks, shown_rows)
        shown = [_pixels(self.bank.photo(r)) for r in shown_rows]
        chosen = []
        for near in (True, False):  # the asked colour's reach first, then farther colours
            tier = [i for i in new if self._is_near(request, rows, *picks[i]) == near]
            for i in tier:  # in seed order, the products unlike everything shown and picked
                pixels = _pixels(self.bank.photo(picks[i][0]))
                if len(chosen) < n and all(np.abs(pixels - s).mean() >= MIN_DISTANCE for s in shown):
                    chosen.append(i)
                    shown.append(pixels)
            chosen += [i for i in tier if i not in chosen][: n - len(chosen)]  # then the tier's others
        chosen += _first_of_each(picks, [picks[i][0] for i in chosen])[: n - len(chosen)]  # then shown before
        chosen += [i for i in range(len(picks)) if i not in chosen][: n - len(chosen)]  # then any
        images = self._draw_rows(request, [picks[i][0] for i in chosen], [picks[i][1] for i in chosen],
                                 [pool[i] for i in chosen])
        return [pool[i] for i in chosen], images

    def variations(self, request: Request, seed: int, variation_seeds: list[int],
                   amount: float = VARIATION_AMOUNT) -> list | None:
        """"More like this" on the seed's drawing: its exemplar again, in the colour drawn, as the variants
        of a photo are (the editor's own shade spread; noise and shade moved `amount` of the way towards
        each variation seed's), so each stays nearest the clicked drawing."""
        if not self.can_draw(request):
            return None
        row, colour = self.pick(request, self.bank.rows(request.article_type, request.gender), seed)
        own, wanted = self.encode([self.own_caption(row), request.caption(colour)])
        images = self.editor.variations(Image.fromarray(self.bank.photo(row)), own, wanted, seed,
                                        list(variation_seeds), self.strength, amount, colour)
        return [_tagged(image, self.bank.key(row)) for image in images]

    def pick(self, request: Request, rows: np.ndarray, seed: int) -> tuple[int, str]:
        """The seed's (exemplar row, colour to draw it in): the asked colour, or (none asked) one the item
        comes in, as often as the bank holds it. The exemplar is the first product, in the seed's own order
        of the item's products, whose colour is not that one and (for NEAR_SHARE of seeds, where the item
        comes in any) lies within the editor's reach of it: "make it blue" redraws the same designs (unless
        one of them was blue already, or out of reach)."""
        labels = self.bank.colours[rows]
        if request.colours:
            colour = request.colours[0]
        else:
            names, counts = np.unique(labels, return_counts=True)
            colour = str(np.random.default_rng(int(seed) + EXEMPLAR_STREAM + 1).choice(names, p=counts / counts.sum()))
        stream = np.random.default_rng(int(seed) + EXEMPLAR_STREAM)
        order = stream.permutation(len(rows))
        other = order[labels[order] != colour]  # never empty where can_draw holds
        near = other[np.isin(labels[other], self._near_colours(request, rows, colour))]
        if len(near) and stream.random() < NEAR_SHARE:
            return int(rows[near[0]]), colour
        return int(rows[other[0]]), colour

    def _near_colours(self, request: Request, rows: np.ndarray, colour: str) -> list[str]:
        """The colours of `rows` (the request's products) within the editor's reach of `colour`."""
        key = (request.article_type, request.gender, colour)  # the bank does not change: once per request kind
        if key not in self._reachable:
            labels = self.bank.colours[rows]
            self._reachable[key] = self.reachable_colours(labels[labels != colour], colour)
        return self._reachable[key]

    def _is_near(self, request: Request, rows: np.ndarray, row: int, colour: str) -> bool:
        return self.bank.colours[row] in self._near_colours(request, rows, colour)

    def reachable_colours(self, labels: np.ndarray, colour: str) -> list[str]:
        """Of the colours in `labels`, those within MAX_COLOUR_CHANGE of `colour` (the editor turns a white
        shoe black, or a red one white, only in patches), or else the NEAREST_COLOURS nearest of them."""
        held = sorted(set(labels.tolist()), key=lambda c: (self._colour_change(c, colour), c))
        near = [c for c in held if self._colour_change(c, colour) <= MAX_COLOUR_CHANGE]
        return near or held[:NEAREST_COLOURS]

    def _colour_change(self, a: str, b: str) -> float:
        """CIE76 distance between two colours' mean shades (0 when either has no photo to measure)."""
        mean_a, mean_b = self._mean_shade(a), self._mean_shade(b)
        if mean_a is None or mean_b is None:
            return 0.0
        return float(np.linalg.norm(mean_a - mean_b))

    def _mean_shade(self, colour: str) -> np.ndarray | None:
        """The colour's mean Lab: the shade table's, else (rare colours: "rust", "mushroom brown") that of
        the bank's own photos of it. Counting those rare colours as within reach of any instead sent rust
        shoes to "white sneakers"; as out of reach of all, FID rose from 1.72x to 1.80x."""
        if colour in self.editor.shades.means:
            return np.asarray(self.editor.shades.means[colour], dtype=np.float64)
        if colour not in self._bank_shades:
            rows = np.flatnonzero(self.bank.colours == colour)[:RARE_COLOUR_PHOTOS]
            photos = [self.bank.photo(int(r)) for r in rows]
            self._bank_shades[colour] = foreground_means(np.stack(photos)).mean(axis=0) if photos else None
        return self._bank_shades[colour]

    def own_caption(self, row: int) -> str:
        return canonical_caption(self.bank.article_types[row], [self.bank.colours[row]])


def _typical(article_types: np.ndarray, logprobs: np.ndarray | None, labels) -> np.ndarray | None:
    if logprobs is None or not labels:
        return None
    logprobs = np.asarray(logprobs, np.float32)
    read = np.asarray(labels)[logprobs.argmax(axis=1)]
    return (read == article_types) & (np.exp(logprobs.max(axis=1)) >= TYPICAL_CONFIDENCE)


def _first_of_each(picks: list[tuple[int, str]], shown_rows: list[int]) -> list[int]:
    """Indices of the first pick of each product not among `shown_rows`."""
    seen, out = set(shown_rows), []
    for i, (row, _) in enumerate(picks):
        if row not in seen:
            out.append(i)
            seen.add(row)
    return out


def _tagged(image: Image.Image, key) -> Image.Image:
    image.info[EXEMPLAR_KEY] = key
    return image


def _pixels(image) -> np.ndarray:
    return np.asarray(image, dtype=np.float32) / 255.0
