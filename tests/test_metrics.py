"""Metric functions against closed forms and hand-computed cases."""
from __future__ import annotations

import math

import numpy as np
import pytest

from models.metrics.scores import (
    accuracy,
    binary_scores,
    feature_statistics,
    fid_from_features,
    frechet_distance,
    kid_from_features,
    mmd2_unbiased,
    polynomial_kernel,
    roc_auc,
)


def test_frechet_distance_of_gaussians_matches_closed_form():
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    var1, var2 = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 1.0])
    # Diagonal covariances: ||mu1 - mu2||^2 + sum (sqrt(var1) - sqrt(var2))^2 = 5 + (1 + 1 + 4).
    assert frechet_distance(mu1, np.diag(var1), mu2, np.diag(var2)) == pytest.approx(11.0, abs=1e-9)
    full = np.array([[2.0, 0.5], [0.5, 1.0]])
    assert frechet_distance(np.zeros(2), full, np.zeros(2), full) == pytest.approx(0.0, abs=1e-9)


def test_fid_of_a_sample_with_itself_is_zero():
    x = np.random.default_rng(0).normal(size=(500, 8))
    assert abs(fid_from_features(x, x)) < 1e-8


def test_fid_of_shifted_gaussian_samples_is_the_squared_shift():
    rng = np.random.default_rng(1)
    shift = np.array([1.0, -2.0, 0.5, 0.0])  # ||shift||^2 = 5.25
    a = rng.normal(size=(20000, 4))
    b = rng.normal(size=(20000, 4)) + shift
    assert fid_from_features(a, b) == pytest.approx(5.25, abs=0.05)
    assert fid_from_features(a, rng.normal(size=(20000, 4))) < 0.01


def test_fid_with_fewer_samples_than_dimensions_matches_the_matrix_square_root():
    """Inception features of a few hundred images: singular covariances, the low-rank route."""
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(20, 64)), rng.normal(size=(25, 64)) * 1.5 + 0.3
    value = fid_from_features(a, b)
    assert value == pytest.approx(frechet_distance(*feature_statistics(a), *feature_statistics(b)), rel=1e-6)
    assert abs(fid_from_features(a, a)) < 1e-8


def test_mmd2_unbiased_matches_the_definition():
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(5, 3)), rng.normal(size=(4, 3)) + 1
    k = lambda a, b: (a @ b / 3 + 1) ** 3  # noqa: E731
    xx = sum(k(x[i], x[j]) for i in range(5) for j in range(5) if i != j) / 20
    yy = sum(k(y[i], y[j]) for i in range(4) for j in range(4) if i != j) / 12
    xy = sum(k(a, b) for a in x for b in y) / 20
    assert mmd2_unbiased(x, y) == pytest.approx(xx + yy - 2 * xy, rel=1e-12)
    assert polynomial_kernel(x, y).shape == (5, 4)


def test_kid_is_unbiased_near_zero_for_one_distribution_and_positive_for_two():
    rng = np.random.default_rng(4)
    a, b = rng.normal(size=(600, 16)), rng.normal(size=(600, 16))
    same, same_std = kid_from_features(a, b, n_subsets=50, subset_size=300)
    assert abs(same) < 3 * same_std + 1e-3  # unbiased: centred on zero, may be negative
    shifted, _ = kid_from_features(a, b + 0.5, n_subsets=50, subset_size=300)
    assert shifted > 0.05 and shifted > 10 * abs(same)
    # Sets no larger than a subset: one estimate on everything, no spread.
    value, spread = kid_from_features(a[:100], b[:100], subset_size=300)
    assert value == pytest.approx(mmd2_unbiased(a[:100], b[:100])) and math.isnan(spread)
    # Seeded: the same call gives the same value.
    assert kid_from_features(a, b, n_subsets=5, subset_size=100, seed=7) == kid_from_features(
        a, b, n_subsets=5, subset_size=100, seed=7)


def test_binary_scores_hand_computed():
    # 3 TP, 1 FN, 1 FP, 3 TN
    y_true = [1, 1, 1, 1, 0, 0, 0, 0]
    y_pred = [1, 1, 1, 0, 1, 0, 0, 0]
    s = binary_scores(y_true, y_pred)
    assert (s["tp"], s["fn"], s["fp"], s["tn"]) == (3, 1, 1, 3)
    assert s["accuracy"] == pytest.approx(6 / 8)
    assert s["precision"] == pytest.approx(3 / 4) and s["recall"] == pytest.approx(3 / 4)
    assert s["f1"] == pytest.approx(3 / 4)
    s = binary_scores([1, 1, 0, 0], [1, 0, 0, 0])  # precision 1, recall 1/2 -> F1 2/3
    assert s["precision"] == 1.0 and s["recall"] == 0.5 and s["f1"] == pytest.approx(2 / 3)


def test_binary_scores_degenerate_cases():
    s = binary_scores([1, 1, 0], [0, 0, 0])  # nothing predicted positive
    assert s["precision"] == 0.0 and s["recall"] == 0.0 and s["f1"] == 0.0
    assert s["accuracy"] == pytest.approx(1 / 3)
    assert binary_scores([0, 0], [0, 0])["accuracy"] == 1.0
    with pytest.raises(ValueError):
        binary_scores([1, 0], [1])


def test_roc_auc_hand_computed():
    assert roc_auc([3, 4], [1, 2]) == 1.0
    assert roc_auc([1, 2], [3, 4]) == 0.0
    assert roc_auc([1], [1]) == 0.5  # a tie counts half
    # pairs (pos, neg): (2,1) win, (2,3) loss, (4,1) win, (4,3) win -> 3/4
    assert roc_auc([2, 4], [1, 3]) == pytest.approx(0.75)


def test_accuracy_ignores_unknown_targets():
    assert accuracy([0, 1, 2, 3], [0, 1, 0, -1]) == pytest.approx(2 / 3)
    assert math.isnan(accuracy([0], [-1]))
