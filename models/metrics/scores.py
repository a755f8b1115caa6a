"""Plain metric functions on numpy arrays: FID, KID, binary classification scores, ROC AUC.

No model code here: `models.metrics.evaluate` extracts the features and calls these.
"""
from __future__ import annotations

import warnings

import numpy as np
import scipy.linalg
import scipy.stats

# ---- Frechet distance (FID) -----------------------------------------------------------------------

def _features(x) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or len(x) < 2:
        raise ValueError(f"need a (n >= 2, d) feature array, got shape {x.shape}")
    return x


def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance (rows are samples) in float64."""
    x = _features(features)
    return x.mean(axis=0), np.cov(x, rowvar=False)


def frechet_distance(mu1, sigma1, mu2, sigma2, eps: float = 1e-6) -> float:
    """||mu1 - mu2||^2 + tr(S1 + S2 - 2 (S1 S2)^1/2): the Frechet distance of two Gaussians."""
    mu1, mu2 = np.atleast_1d(mu1), np.atleast_1d(mu2)
    sigma1, sigma2 = np.atleast_2d(sigma1), np.atleast_2d(sigma2)
    with warnings.catch_warnings():  # a singular product warns; the check below handles it
        warnings.simplefilter("ignore")
        covmean = scipy.linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():  # singular product (few samples): regularise as pytorch-fid does
        offset = np.eye(len(sigma1)) * eps
        covmean = scipy.linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    covmean = np.real(covmean)  # tiny imaginary parts are numerical noise
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def fid_from_features(a: np.ndarray, b: np.ndarray) -> float:
    """FID between two feature sets (e.g. real and generated images), each (n, d).

    With fewer samples than dimensions (a few hundred Inception features) the covariances are
    singular and a d x d matrix square root is slow and unstable; then the trace term is computed
    exactly from the centred samples instead: tr (S1 S2)^1/2 = ||A B^T||_* / sqrt((n-1)(m-1)),
    as the non-zero eigenvalues of S1 S2 are the squared singular values of A B^T / sqrt((n-1)(m-1)).
    """
    a, b = _features(a), _features(b)
    if min(len(a), len(b)) > a.shape[1]:
        return frechet_distance(*feature_statistics(a), *feature_statistics(b))
    ca, cb = a - a.mean(axis=0), b - b.mean(axis=0)
    scale_a, scale_b = len(a) - 1, len(b) - 1
    trace_sqrt = np.linalg.svd(ca @ cb.T, compute_uv=False).sum() / np.sqrt(scale_a * scale_b)
    diff = a.mean(axis=0) - b.mean(axis=0)
    return float(diff @ diff + (ca * ca).sum() / scale_a + (cb * cb).sum() / scale_b - 2 * trace_sqrt)


# ---- Kernel distance (KID) ------------------------------------------------------------------------

def polynomial_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """k(x, y) = (x.y / d + 1)^3, the kernel of Binkowski et al. (2018)."""
    return (x @ y.T / x.shape[1] + 1.0) ** 3


def mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased estimate of the squared MMD with the polynomial kernel (can be slightly negative)."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    m, n = len(x), len(y)
    if m < 2 or n < 2:
        raise ValueError("need at least two samples on each side")
    kxx, kyy, kxy = polynomial_kernel(x, x), polynomial_kernel(y, y), polynomial_kernel(x, y)
    within_x = (kxx.sum() - np.trace(kxx)) / (m * (m - 1))
    within_y = (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
    return float(within_x + within_y - 2 * kxy.mean())


def kid_from_features(a: np.ndarray, b: np.ndarray, n_subsets: int = 100, subset_size: int = 1000,
                      seed: int = 0) -> tuple[float, float]:
    """KID: the mean (and standard deviation) of the unbiased MMD^2 over random equal-size subsets.
    When both sets are no larger than a subset there is one estimate, on all of them; its spread is NaN."""
    rng = np.random.default_rng(seed)
    m = min(len(a), len(b), subset_size)
    if m == len(a) == len(b):
        return mmd2_unbiased(a, b), float("nan")
    values = [mmd2_unbiased(a[rng.choice(len(a), m, replace=False)], b[rng.choice(len(b), m, replace=False)])
              for _ in range(n_subsets)]
    return float(np.mean(values)), float(np.std(values))


# ---- classification scores ------------------------------------------------------------------------

def binary_scores(y_true, y_pred) -> dict:
    """Accuracy, precision, recall and F1 of the positive class (1), with the confusion counts.
    Undefined ratios (no predicted or no actual positives) are 0, as scikit-learn's zero_division=0."""
    t, p = np.asarray(y_true).astype(bool), np.asarray(y_pred).astype(bool)
    if t.shape != p.shape or t.size == 0:
        raise ValueError("y_true and y_pred must be non-empty and of the same shape")
    tp, fp = int(np.sum(t & p)), int(np.sum(~t & p))
    fn, tn = int(np.sum(t & ~p)), int(np.sum(~t & ~p))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"accuracy": (tp + tn) / t.size, "precision": precision, "recall": recall, "f1": f1,
            "tp": tp, "fp": fp, "tn": tn, "fn": fn}


def roc_auc(positive_scores, negative_scores) -> float:
    """Probability that a random positive scores above a random negative (ties count half)."""
    pos, neg = np.asarray(positive_scores, np.float64), np.asarray(negative_scores, np.float64)
    if pos.size == 0 or neg.size == 0:
        raise ValueError("need at least one positive and one negative score")
    ranks = scipy.stats.rankdata(np.concatenate([pos, neg]))  # average ranks handle ties
    return float((ranks[: pos.size].sum() - pos.size * (pos.size + 1) / 2) / (pos.size * neg.size))


def accuracy(predicted, target) -> float:
    """Share of equal entries; entries whose target is negative (unknown label) are ignored."""
    p, t = np.asarray(predicted), np.asarray(target)
    known = t >= 0
    return float((p[known] == t[known]).mean()) if known.any() else float("nan")

