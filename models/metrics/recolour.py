"""The classical baseline for photo variants: recolour in CIE Lab.

The photo's lightness L stays; the foreground's chroma (a, b) moves to the target colour's typical
chroma, measured on real catalogue photos of that colour. It keeps every detail by construction, so it
is the bar for identity, and shows what a learned editor must beat on realism (a white shirt recoloured
"black" stays light grey: lightness is not chroma).
"""
from __future__ import annotations

import numpy as np

from models.colour import lab_to_rgb, rgb_to_lab
from models.metrics.structure import silhouette


def colour_chroma(images: np.ndarray, labels: list[str]) -> dict[str, np.ndarray]:
    """The median foreground (a, b) of the photos of each colour label."""
    lab = rgb_to_lab(images)
    fg = silhouette(images)
    out = {}
    for name in sorted(set(labels)):
        rows = [i for i, label in enumerate(labels) if label == name]
        pixels = np.concatenate([lab[i][fg[i]] for i in rows]) if rows else np.zeros((0, 3))
        if len(pixels):
            out[name] = np.median(pixels[:, 1:], axis=0)
    return out


def recolour(image: np.ndarray, chroma: np.ndarray) -> np.ndarray:
    """uint8 (H, W, 3) -> the same photo with its foreground's (a, b) set to `chroma`, L kept."""
    lab = rgb_to_lab(image)
    fg = silhouette(image[None])[0]
    lab[fg, 1:] = chroma
    out = lab_to_rgb(lab)
    out[~fg] = image[~fg]
    return out
