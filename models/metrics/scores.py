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



# ---- realism and variety apart (k-NN manifolds), memorisation -----------------------------------------

def _pairwise(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Euclidean distances between the rows of a and b, (len(a), len(b)), by one matrix product."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    sq = (a * a).sum(1)[:, None] + (b * b).sum(1)[None] - 2 * a @ b.T
    return np.sqrt(np.maximum(sq, 0))


def knn_radii(features: np.ndarray, k: int) -> np.ndarray:
    """Distance from each row to its k-th nearest other row."""
    d = _pairwise(features, features)
    return np.sort(d, axis=1)[:, k]  # column 0 is the row itself


def knn_precision_recall(real: np.ndarray, fake: np.ndarray, k: int = 3) -> dict:
    """Kynkaanniemi et al. 2019: precision = share of generated samples inside the real manifold (the union
    of k-NN balls around real samples), recall = share of real samples inside the generated manifold; and
    Naeem et al. 2020's density (how many real balls a generated sample falls in, / k) and coverage (share
    of real balls holding at least one generated sample)."""
    real_r, fake_r = knn_radii(real, k), knn_radii(fake, k)
    d = _pairwise(fake, real)  # (fake, real)
    inside_real = d <= real_r[None]
    return {"k": k, "precision": float(inside_real.any(1).mean()),
            "recall": float((d <= fake_r[:, None]).any(0).mean()),
            "density": float(inside_real.sum(1).mean() / k), "coverage": float(inside_real.any(0).mean())}


def nearest_distances(queries: np.ndarray, reference: np.ndarray, batch: int = 512) -> np.ndarray:
    """Distance from each query row to its nearest reference row."""
    return np.concatenate([_pairwise(queries[i : i + batch], reference).min(1)
                           for i in range(0, len(queries), batch)]) if len(queries) else np.zeros(0)


def memorisation_rates(generated: np.ndarray, held_out: np.ndarray, train: np.ndarray,
                       percentile: float = 5.0) -> dict:
    """How often an image is as close to its nearest training image as only the closest `percentile`% of
    held-out real photos are: the held-out photos' own rate is that percentile by construction; a
    generator that copies training photos lands far above it."""
    held_d, gen_d = nearest_distances(held_out, train), nearest_distances(generated, train)
    threshold = float(np.percentile(held_d, percentile))
    return {"threshold": threshold, "percentile": percentile, "held_out_rate": float((held_d <= threshold).mean()),
            "generated_rate": float((gen_d <= threshold).mean()),
            "median_nn_distance": {"held_out": float(np.median(held_d)), "generated": float(np.median(gen_d))}}
