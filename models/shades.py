"""Seeded shades: each variant of a request takes its own shade of its colour, as real products do.

Real products of one catalogue colour differ in shade: one "red" is nearly maroon, another nearly orange.
The shade table holds, per colour, the mean and the covariance (CIE Lab) of the foreground mean colour
of real training photos of that colour, taken from products photographed alone (footwear, bags and other
accessories): on apparel worn by a model, skin and hair would count as shade. A seed draws an offset
from that spread (clipped at MAX_SIGMA), and `apply_shade` moves the lightness and chroma of the item's
region by it, so four seeds give four shades of the colour asked for while the shape, print and
background stay.

    python -m models.shades --data ../shared/data/fpi64/dev.npz --out assets/shades.json
"""
from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models.colour import foreground, lab_to_rgb, rgb_to_lab
from models.resources import ASSETS_DIR

SHADES_PATH = ASSETS_DIR / "shades.json"
MIN_PHOTOS = 20  # a colour needs this many training photos for its own spread; others use the pooled one
MAX_SIGMA = 2.0  # offsets beyond two standard deviations are pulled back to it: no freak shades
SEED_STREAM = 104_729  # the shade's random stream of a seed, apart from its noise vector's


@dataclass
class ShadeTable:
    means: dict[str, list[float]]  # colour -> mean foreground Lab of its photos
    covariances: dict[str, list[list[float]]]  # colour -> 3x3 covariance of those means
    pooled: list[list[float]]  # the within-colour covariance over all colours

    def spread(self, colour: str | None) -> np.ndarray:
        """The Cholesky factor of the colour's shade covariance (the pooled one for unknown colours)."""
        cov = np.asarray(self.covariances.get(colour or "", self.pooled), dtype=np.float64)
        return np.linalg.cholesky(cov + 1e-6 * np.eye(3))

    def offsets(self, colour: str | None, seeds: list[int], amount: float = 1.0,
                around: int | None = None, closeness: float = 0.0) -> np.ndarray:
        """(len(seeds), 3) Lab offsets, one per seed. With `around` (a seed), each offset moves only
        `closeness` of the way from that seed's shade towards its own (`closeness` 0: `around`'s shade),
        as "More like this" moves the noise."""
        units = np.stack([unit_draw(s) for s in seeds])
        if around is not None:
            units = math.sqrt(1 - closeness**2) * unit_draw(around)[None] + closeness * units
        spread = self.spread(colour)
        return np.stack([amount * (spread @ u) for u in units])  # row by row: the same whatever the batch

    def to_dict(self) -> dict:
        return {"version": 1, "means": self.means, "covariances": self.covariances, "pooled": self.pooled}

    @classmethod
    def from_dict(cls, d: dict) -> ShadeTable:
        return cls(d["means"], d["covariances"], d["pooled"])

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=1))

    @classmethod
    def load(cls, path: str | Path = SHADES_PATH) -> ShadeTable:
        try:
            return cls.from_dict(json.loads(Path(path).read_text()))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{path} is not a shade table this program can read ({exc})") from exc


def unit_draw(seed: int) -> np.ndarray:
    """A seed's standard normal 3-vector, pulled back to MAX_SIGMA: the same seed, the same shade."""
    u = np.random.default_rng(int(seed) + SEED_STREAM).standard_normal(3)
    norm = float(np.linalg.norm(u))
    return u * (MAX_SIGMA / norm) if norm > MAX_SIGMA else u


def item_weight(images: np.ndarray) -> np.ndarray:
    """uint8 (N, H, W, 3) -> float (N, H, W): 1 on the item's pixels, 0 on the white background."""
    return foreground(images).astype(np.float64)


def foreground_means(images: np.ndarray) -> np.ndarray:
    """uint8 (N, H, W, 3) -> (N, 3): the mean Lab colour of each photo's non-background pixels."""
    lab = rgb_to_lab(images)
    w = item_weight(images)
    return (lab * w[..., None]).sum(axis=(1, 2)) / np.maximum(w.sum(axis=(1, 2)), 1.0)[:, None]


def build_shade_table(images: np.ndarray, colours: list[str], batch: int = 2048) -> ShadeTable:
    """The shade table of real photos (uint8 NHWC) labelled with their catalogue colours."""
    means = np.concatenate([foreground_means(images[i : i + batch]) for i in range(0, len(images), batch)])
    labels = np.asarray(colours)
    table_means, covariances, centred = {}, {}, []
    for colour in sorted({c for c in colours if c}):
        rows = means[labels == colour]
        if len(rows) < MIN_PHOTOS:
            continue
        mean = rows.mean(axis=0)
        table_means[colour] = np.round(mean, 3).tolist()
        covariances[colour] = np.round(np.cov(rows, rowvar=False), 3).tolist()
        centred.append(rows - mean)
    if not centred:
        raise ValueError(f"no colour has {MIN_PHOTOS} photos to measure its shades on")
    pooled = np.cov(np.concatenate(centred), rowvar=False)
    return ShadeTable(table_means, covariances, np.round(pooled, 3).tolist())


def apply_shade(image: np.ndarray, weight: np.ndarray, offset: np.ndarray) -> np.ndarray:
    """uint8 (H, W, 3) -> the same image with `offset` (Lab) added where `weight` (H, W, 0..1) says."""
    if not np.any(offset) or not weight.any():
        return image
    lab = rgb_to_lab(image)
    lab = lab + weight[..., None] * np.asarray(offset, dtype=np.float64)
    lab[..., 0] = np.clip(lab[..., 0], 0.0, 100.0)
    out = lab_to_rgb(lab)
    untouched = weight <= 0
    out[untouched] = image[untouched]
    return out


def main(argv: list[str] | None = None) -> int:
    from models.data import load_table

    parser = argparse.ArgumentParser(description="Build the shade table from the training-split photos.")
    parser.add_argument("--data", required=True, help="pack .npz, Kaggle folder or Fashion IQ folder")
    parser.add_argument("--out", default=str(SHADES_PATH))
    args = parser.parse_args(argv)
    train = load_table(args.data).split(validation=False)
    alone = [i for i, r in enumerate(train.rows) if r.get("masterCategory") != "Apparel"]
    table = build_shade_table(train.images[alone], [train.rows[i]["baseColour"] for i in alone])
    table.save(args.out)
    print(f"{len(table.means)} colours from {len(alone)} training photos of products alone -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
