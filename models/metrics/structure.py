"""Colour-blind structure of product photos: is an edited image still the same item?

Two cues that a recolour leaves alone and a different product changes: the silhouette (which pixels
are not white background) and the luminance edges (seams, print, straps, folds). Edges are compared by
correlation of their magnitudes, so a uniform change of brightness or colour does not count, but a
moved strap, a lost print or another neckline does.
"""
from __future__ import annotations

import numpy as np

from models.colour import foreground


def silhouette(images: np.ndarray) -> np.ndarray:
    """uint8 (N, H, W, 3) -> bool (N, H, W): not background."""
    return foreground(images)


def edge_magnitude(images: np.ndarray) -> np.ndarray:
    """uint8 (N, H, W, 3) -> float (N, H, W): Sobel gradient magnitude of the luminance."""
    luma = images.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    p = np.pad(luma, ((0, 0), (1, 1), (1, 1)), mode="edge")
    gx = (p[:, :-2, 2:] + 2 * p[:, 1:-1, 2:] + p[:, 2:, 2:]) - (p[:, :-2, :-2] + 2 * p[:, 1:-1, :-2] + p[:, 2:, :-2])
    gy = (p[:, 2:, :-2] + 2 * p[:, 2:, 1:-1] + p[:, 2:, 2:]) - (p[:, :-2, :-2] + 2 * p[:, :-2, 1:-1] + p[:, :-2, 2:])
    return np.hypot(gx, gy)


def structural_similarity(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise-aligned similarity of two uint8 image batches (N, H, W, 3) in [-0.5, 1]: the mean of the
    silhouette IoU and the Pearson correlation of the edge magnitudes."""
    sa, sb = silhouette(a), silhouette(b)
    inter = (sa & sb).sum(axis=(1, 2))
    union = (sa | sb).sum(axis=(1, 2))
    iou = np.where(union > 0, inter / np.maximum(union, 1), 1.0)
    ea, eb = edge_magnitude(a).reshape(len(a), -1), edge_magnitude(b).reshape(len(b), -1)
    ea, eb = ea - ea.mean(1, keepdims=True), eb - eb.mean(1, keepdims=True)
    denom = np.sqrt((ea * ea).sum(1) * (eb * eb).sum(1))
    corr = np.where(denom > 0, (ea * eb).sum(1) / np.maximum(denom, 1e-12), 0.0)
    return 0.5 * iou + 0.5 * corr


def identity_hits(variants: np.ndarray, reference: np.ndarray,
                  distractors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each variant (N, H, W, 3) of one reference photo (H, W, 3): whether the reference is more similar
    to it than every distractor (M, H, W, 3), and its similarity to the reference."""
    n, m = len(variants), len(distractors)
    to_ref = structural_similarity(variants, np.repeat(reference[None], n, axis=0))
    to_others = structural_similarity(np.repeat(variants, m, axis=0), np.tile(distractors, (n, 1, 1, 1)))
    return to_ref > to_others.reshape(n, m).max(axis=1), to_ref


def mean_pairwise_distance(x: np.ndarray) -> float:
    """Mean over pairs of rows of the mean absolute difference (images in [0, 1] or feature vectors)."""
    x = x.reshape(len(x), -1).astype(np.float64)
    if len(x) < 2:
        return float("nan")
    i, j = np.triu_indices(len(x), k=1)
    return float(np.abs(x[i] - x[j]).mean(axis=1).mean())


def colour_difference(a: np.ndarray, b: np.ndarray) -> float:
    """Mean CIE76 colour difference (Delta E) between two uint8 (H, W, 3) images over the pixels where
    either shows the item: about 2.3 is the smallest difference people notice."""
    from models.colour import rgb_to_lab

    region = silhouette(a[None])[0] | silhouette(b[None])[0]
    if not region.any():
        return 0.0
    return float(np.linalg.norm(rgb_to_lab(a) - rgb_to_lab(b), axis=-1)[region].mean())


def median_shade_difference(groups: np.ndarray) -> float:
    """uint8 (N, k, H, W, 3): the median colour_difference over all pairs within each group."""
    pairs = [colour_difference(g[i], g[j]) for g in groups for i in range(len(g)) for j in range(i + 1, len(g))]
    return float(np.median(pairs)) if pairs else 0.0
