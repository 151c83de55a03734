"""The compiled per-report kernel against the numpy arithmetic it replaces."""

import math

import numpy as np
import pytest

from warnshare import plausibility
from warnshare.fusion import dynamics, kernel
from warnshare.geo import ecef_to_geodetic


def _member(rng: np.random.Generator, dt: float, scale: float,
            near: np.ndarray | None = None) -> tuple[list[float], np.ndarray, list[float]]:
    """A kernel input block (dt, scale, state, upper triangle, q), its covariance and its state:
    a missile 50-900 km up, or within ~10 km of ``near`` (another nation's track of it)."""
    if near is None:
        r = dynamics.WGS84_A + rng.uniform(50e3, 900e3)
        u = rng.normal(size=3)
        x = [*(r * u / np.linalg.norm(u)), *rng.normal(0.0, 2000.0, 3)]
    else:
        x = (np.asarray(near) + rng.normal(0.0, [5e3] * 3 + [50.0] * 3)).tolist()
    a = rng.normal(size=(6, 6)) * np.array([300.0] * 3 + [20.0] * 3)
    p = a @ a.T + np.diag([1e3] * 3 + [1.0] * 3)
    upper = p[np.triu_indices(6)].tolist()
    q = float(rng.choice([4.0, 900.0, 2500.0]))
    return [dt, scale, *x, *upper, q], p, x


@pytest.mark.parametrize("n", [1, 2, 3])
def test_fused_row_matches_numpy_prediction_and_ci(n: int) -> None:
    rng = np.random.default_rng(7 + n)
    for trial in range(40):
        dts = rng.choice([0.0, 0.3, -1.5, 4.0, 9.0, -17.0], size=n)
        w = rng.dirichlet(np.ones(n)) if n > 1 else np.ones(1)
        blocks = [_member(rng, float(dts[0]), 1.0 / float(w[0]))]
        blocks += [_member(rng, float(dt), 1.0 / float(wi), blocks[0][2]) for dt, wi in zip(dts[1:], w[1:], strict=True)]
        row = np.array([v for b in blocks for v in b[0]])
        got = kernel.fuse_members(row, n)
        # the numpy path: each state flown, each covariance predicted and divided by its weight
        xs = np.array([dynamics.predict_state(b[2], float(dt)) for b, dt in zip(blocks, dts, strict=True)])
        coefs = np.array([dynamics.basis_coefficients(float(dt), 1.0 / float(wi)) for dt, wi in zip(dts, w, strict=True)])
        numbers = np.array([b[0][8:] for b in blocks])
        ps = dynamics.predicted_covariances(coefs, numbers)
        if n == 1:
            x, p = xs[0], ps[0]
        else:
            infos = np.linalg.inv(ps)  # the scaled covariances' inverses: w_i P_i^-1
            p = np.linalg.inv(infos.sum(axis=0))
            x = p @ np.einsum("kij,kj->i", infos, xs)
        p = 0.5 * (p + p.T)
        # the same state up to round-off, measured against its own uncertainty (the two
        # inversions differ in the last digits of ill-conditioned information sums)
        d = got[:6] - x
        assert float(d @ np.linalg.solve(p, d)) < 1e-12, trial
        assert np.allclose(got[30:].reshape(6, 6), p, rtol=1e-7, atol=1e-9 * np.abs(p).max()), trial
        assert np.array_equal(got[6:27], got[30:].reshape(6, 6)[np.triu_indices(6)])
        # against the iterated conversion (the kernel's is one Bowring step: mm near the Earth)
        lat, lon, alt = ecef_to_geodetic(got[:3])
        assert abs(got[27] - lat) < 1e-7 and abs(got[28] - lon) < 1e-9, trial
        assert abs(got[29] - alt) < 0.01, trial


def test_predicted_members_match_the_long_span_integration() -> None:
    rng = np.random.default_rng(3)
    block, _, x = _member(rng, 95.0, 1.0)
    xs, _ = kernel.predict_members(np.array(block), 1)
    assert np.allclose(xs[0], dynamics.predict_state(x, 95.0), rtol=1e-12, atol=1e-6)


def test_a_singular_covariance_gives_nans_not_a_state() -> None:
    rng = np.random.default_rng(5)
    a, _, _ = _member(rng, 0.0, 1.0)
    b, _, _ = _member(rng, 0.0, 1.0)
    b[8:29] = [0.0] * 21  # a zero covariance (and no process noise over dt = 0)
    got = kernel.fuse_members(np.array(a + b), 2)
    assert all(math.isnan(v) for v in got.tolist())


def test_covariance_check_agrees_with_the_eigenvalues() -> None:
    # positive definite, positive semi-definite (rank 3, as a track with exactly known velocity
    # would have), and indefinite matrices with every variance positive; the check must say
    # what the smallest eigenvalue says (round-off aside)
    rng = np.random.default_rng(11)
    scales = np.array([300.0] * 3 + [20.0] * 3)
    seen = {True: 0, False: 0}
    for trial in range(600):
        kind = trial % 3
        a = rng.normal(size=(6, 6 if kind == 0 else 3)) * scales[:, None]
        p = a @ a.T
        if kind == 2:
            p = p - np.diag(np.diag(p)) * rng.uniform(0.5, 0.95)  # variances cut: often indefinite
        if np.any(np.diag(p) <= 0):
            continue
        lam = np.linalg.eigvalsh(p / np.sqrt(np.outer(np.diag(p), np.diag(p))))
        if abs(lam.min()) < 1e-6:
            expected = True if kind == 1 else None  # on the edge: only the built PSD ones count
        else:
            expected = bool(lam.min() > 0)
        if expected is None:
            continue
        got = kernel.covariance_ok(p[np.triu_indices(6)])
        assert got == expected, (trial, lam.min())
        # the node's plain-Python twin says the same
        assert plausibility.covariance_psd(p[np.triu_indices(6)].tolist()) == got
        seen[got] += 1
    assert seen[True] > 100 and seen[False] > 100, seen


def test_no_state_is_flown_over_more_than_the_longest_span() -> None:
    s = [dynamics.WGS84_A + 300e3, 0.0, 0.0, 0.0, 2000.0, 1000.0]
    row = np.array([kernel.MAX_SPAN_S * 1.5, 1.0, *s, *np.eye(6)[np.triu_indices(6)], 4.0])
    with pytest.raises(ValueError, match="span"):
        dynamics.predict_state(s, kernel.MAX_SPAN_S * 1.5)
    with pytest.raises(ValueError, match="span"):
        kernel.predict_members(row, 1)
    assert len(dynamics.predict_state(s, -kernel.MAX_SPAN_S)) == 6
