"""Metrics against truth: known values and properties."""

from __future__ import annotations

import math

import numpy as np
import pytest

from warnshare import metrics


def test_gospa_known_values():
    c = 10.0
    # perfect
    assert metrics.gospa([[0, 0, 0]], [[0, 0, 0]], c)["gospa"] == 0.0
    # one localisation error of 3
    assert metrics.gospa([[0, 0, 0]], [[3, 0, 0]], c)["gospa"] == pytest.approx(3.0)
    # one missed truth: c^2/2
    r = metrics.gospa([[0, 0, 0], [100, 0, 0]], [[0, 0, 0]], c)
    assert r["gospa"] == pytest.approx(math.sqrt(c * c / 2)) and r["missed"] == pytest.approx(50.0)
    # a far estimate counts as one missed and one false, not as a localisation error
    r = metrics.gospa([[0, 0, 0]], [[50, 0, 0]], c)
    assert r["gospa"] == pytest.approx(c) and r["localisation"] == 0.0
    # empty sets
    assert metrics.gospa(np.zeros((0, 3)), np.zeros((0, 3)), c)["gospa"] == 0.0


def test_gospa_assignment_is_optimal():
    truth = [[0, 0, 0], [10, 0, 0]]
    est = [[9, 0, 0], [1, 0, 0]]
    assert metrics.gospa(truth, est, 100.0)["gospa"] == pytest.approx(math.sqrt(2.0))


def test_siap():
    alive = [{"a", "b"}, {"a", "b"}]
    assoc = [{1: "a", 2: "a", 3: None}, {1: "a"}]
    s = metrics.siap(alive, assoc)
    assert s["completeness"] == pytest.approx(2 / 4)
    assert s["ambiguity"] == pytest.approx(3 / 2)
    assert s["spuriousness"] == pytest.approx(1 / 4)


def test_nees_and_bounds():
    rng = np.random.default_rng(0)
    cov = np.diag([4.0, 9.0, 1.0, 1.0, 2.0, 3.0])
    e = rng.multivariate_normal(np.zeros(6), cov, size=5000)
    v = metrics.nees(e, np.broadcast_to(cov, (5000, 6, 6)))
    lo, hi = metrics.nees_bounds(5000)
    assert lo < v.mean() < hi
    # an estimator claiming half its real covariance fails the bound
    assert metrics.nees(e, np.broadcast_to(cov / 2, (5000, 6, 6))).mean() > hi
    lo1, hi1 = metrics.nees_bounds(1)
    assert lo1 < lo < 6 < hi < hi1  # one sample: wider bounds


def test_rmse():
    assert metrics.rmse([[3, 4, 0], [0, 0, 0]]) == pytest.approx(math.sqrt(12.5))
    assert math.isnan(metrics.rmse([]))


def test_in_ellipse_orientation():
    # ellipse 10 km east-west, 1 km north-south at (40N, 135E)
    args = (40.0, 135.0, 10_000.0, 1_000.0, 90.0)
    east = 135.0 + 8_000.0 / (111_320.0 * math.cos(math.radians(40.0)))
    assert metrics.in_ellipse(40.0, east, *args)
    assert not metrics.in_ellipse(40.0 + 3_000.0 / 111_000.0, 135.0, *args)
    assert not metrics.in_ellipse(40.0, east, 40.0, 135.0, 10_000.0, 1_000.0, 0.0)


def test_count_swaps_ignores_blips():
    assert metrics.count_swaps(["a"] * 10) == 0
    assert metrics.count_swaps(["a"] * 5 + ["b"] + ["a"] * 5) == 0
    assert metrics.count_swaps(["a"] * 5 + ["b"] * 5) == 1
    assert metrics.majority_labels({1: ["a", "a", "b"]}) == {1: "a"}


def test_binned_median():
    out = metrics.binned_median([1, 2, 11, 12, 13], [10, 20, 1, 2, 3], [0, 10, 20, 30])
    assert out == [(0.0, 10.0, 15.0, 2), (10.0, 20.0, 2.0, 3)]
