"""Covariance intersection and the per-report prediction: consistency and closed forms."""

from __future__ import annotations

import numpy as np
import pytest

from warnshare.fusion import ci, dynamics, kernel


def random_cov(rng, scale=100.0):
    a = rng.standard_normal((6, 6)) * scale
    return a @ a.T + np.eye(6) * scale


def test_fuse_matches_the_ci_formula():
    rng = np.random.default_rng(1)
    ps = np.stack([random_cov(rng) for _ in range(3)])
    xs = rng.standard_normal((3, 6))
    w = np.array([0.2, 0.3, 0.5])
    x, p, _ = ci.fuse(xs, ps, w)
    infos = np.linalg.inv(ps)
    info = np.einsum("k,kij->ij", w, infos)
    p_ref = np.linalg.inv(info)
    x_ref = p_ref @ np.einsum("k,kij,kj->i", w, infos, xs)
    assert np.allclose(p, p_ref) and np.allclose(x, x_ref)


@pytest.mark.parametrize("criterion", ["det", "trace"])
def test_optimal_weight_beats_the_grid_and_the_extremes(criterion):
    def measure(info):  # higher is better
        if criterion == "det":
            return np.linalg.slogdet(info)[1]
        return -np.trace(np.linalg.inv(info)[:3, :3])

    rng = np.random.default_rng(2)
    for _ in range(5):
        ps = np.stack([random_cov(rng), random_cov(rng)])
        infos = np.linalg.inv(ps)
        w = ci.optimal_weights(infos, criterion)
        assert w.sum() == pytest.approx(1.0) and (w >= 0).all()
        best = measure(w[0] * infos[0] + w[1] * infos[1])
        for a in np.linspace(0, 1, 101):
            assert best >= measure(a * infos[0] + (1 - a) * infos[1]) - 1e-3 * abs(best)


def test_trace_weights_favour_the_track_accurate_in_position():
    # one track good in position and poor in velocity, the other the reverse: the trace
    # criterion leans to the first, the determinant (volume) is indifferent between them
    p1 = np.diag([10.0**2] * 3 + [50.0**2] * 3)
    p2 = np.diag([50.0**2] * 3 + [10.0**2] * 3)
    infos = np.linalg.inv(np.stack([p1, p2]))
    assert ci.optimal_weights(infos, "trace")[0] > 0.8
    assert ci.optimal_weights(infos, "det")[0] == pytest.approx(0.5, abs=0.05)


def test_inverse_ci_is_consistent_on_shared_information_and_tighter_than_ci():
    # two estimates that share part of their information (a common prior with independent
    # measurements on top): inverse CI never claims less than the actual error, and its
    # covariance is no larger than CI's
    rng = np.random.default_rng(5)
    common, own1, own2 = random_cov(rng), random_cov(rng), random_cov(rng)
    i_c = np.linalg.inv(common)
    p1 = np.linalg.inv(i_c + np.linalg.inv(own1))
    p2 = np.linalg.inv(i_c + np.linalg.inv(own2))
    n = 20000
    e0 = rng.standard_normal((n, 6)) @ np.linalg.cholesky(common).T
    z1 = rng.standard_normal((n, 6)) @ np.linalg.cholesky(own1).T
    z2 = rng.standard_normal((n, 6)) @ np.linalg.cholesky(own2).T
    # each estimate fuses the common prior with its own measurement (information form)
    e1 = (e0 @ i_c.T + z1 @ np.linalg.inv(own1).T) @ p1.T
    e2 = (e0 @ i_c.T + z2 @ np.linalg.inv(own2).T) @ p2.T
    x, p, (w,) = ci.inverse_ci(np.stack([np.zeros(6), np.zeros(6)]), np.stack([p1, p2]))
    c = w * p1 + (1 - w) * p2
    i1, i2, g = np.linalg.inv(np.stack([p1, p2, c]))
    e = (e1 @ (i1 - w * g).T + e2 @ (i2 - (1 - w) * g).T) @ p.T
    actual = np.cov(e.T)
    assert np.linalg.eigvalsh(1.05 * p - actual).min() > -1e-6 * np.trace(p)
    _, p_ci, _ = ci.fuse(np.zeros((2, 6)), np.stack([p1, p2]))
    assert np.linalg.slogdet(p)[1] <= np.linalg.slogdet(p_ci)[1] + 1e-9


def test_proportional_covariances_get_even_weights():
    p = np.diag([100.0] * 3 + [4.0] * 3)
    w = ci.optimal_weights(np.linalg.inv(np.stack([p, p, p])))
    assert np.allclose(w, 1 / 3, atol=0.05)


@pytest.mark.parametrize("rho", [0.0, 0.5, 0.9, 0.99])
def test_ci_is_never_overconfident_whatever_the_correlation(rho):
    """Monte-Carlo: errors of two tracks with cross-correlation rho, fused by CI, have a
    covariance no larger than CI claims (the claimed minus actual is PSD)."""
    rng = np.random.default_rng(3)
    p1 = random_cov(rng)
    p2 = random_cov(rng)
    l1, l2 = np.linalg.cholesky(p1), np.linalg.cholesky(p2)
    n = 20000
    common = rng.standard_normal((n, 6))
    e1 = (np.sqrt(rho) * common + np.sqrt(1 - rho) * rng.standard_normal((n, 6))) @ l1.T
    e2 = (np.sqrt(rho) * common + np.sqrt(1 - rho) * rng.standard_normal((n, 6))) @ l2.T
    w = ci.optimal_weights(np.linalg.inv(np.stack([p1, p2])))
    _, p, _ = ci.fuse(np.zeros((2, 6)), np.stack([p1, p2]), w)
    infos = np.linalg.inv(np.stack([p1, p2]))
    k1 = p @ (w[0] * infos[0])
    k2 = p @ (w[1] * infos[1])
    e = e1 @ k1.T + e2 @ k2.T
    actual = np.cov(e.T)
    # claimed - actual must be positive semi-definite, allowing 5% sampling slack
    assert np.linalg.eigvalsh(1.05 * p - actual).min() > -1e-6 * np.trace(p)


def test_independent_fuser_is_overconfident_on_correlated_errors():
    p = np.diag([100.0] * 6)
    # the engine's independent rule: the kernel with every weight 1 (members valid now)
    member = [0.0, 1.0, 6.5e6, 0.0, 0.0, 0.0, 0.0, 0.0, *p[np.triu_indices(6)], 0.0]
    p_naive = kernel.fuse_members(np.array(member + member), 2)[30:].reshape(6, 6)
    _, p_ci, _ = ci.fuse(np.zeros((2, 6)), np.stack([p, p]))
    # fully correlated equal tracks: the truth is p; naive claims p/2, CI claims p
    assert np.allclose(p_naive, p / 2) and np.allclose(p_ci, p)


def test_inv_refuses_singular():
    with pytest.raises(np.linalg.LinAlgError), np.errstate(invalid="ignore"):
        ci.inv(np.zeros((6, 6)))


def test_covariance_prediction_closed_form():
    rng = np.random.default_rng(4)
    p0 = random_cov(rng)
    for dt in (0.7, -1.3):
        f = np.eye(6)
        f[:3, 3:] = dt * np.eye(3)
        q = 3.0
        a = abs(dt)
        qm = q * np.kron(np.array([[a**3 / 3, dt * a / 2], [dt * a / 2, a]]), np.eye(3))
        assert np.allclose(dynamics.predict_covariance(p0, dt, q), f @ p0 @ f.T + qm)
    numbers = np.append(p0[np.triu_indices(6)], 1.0)
    coefs = np.array([dynamics.basis_coefficients(0.5), dynamics.basis_coefficients(0.0)])
    stack = dynamics.predicted_covariances(coefs, np.stack([numbers, numbers]))
    assert np.allclose(stack[1], p0) and np.allclose(stack[0], dynamics.predict_covariance(p0, 0.5, 1.0))


def test_state_prediction_agrees_with_fine_integration():
    from warnshare import geo

    s = list(geo.geodetic_to_ecef(40.0, 130.0, 300e3)) + [2000.0, 1500.0, 800.0]
    fine = np.array(s)[None, :]
    for _ in range(200):
        fine = dynamics.rk4_batch(fine, 0.01)
    assert np.allclose(dynamics.predict_state(s, 2.0), fine[0], atol=1e-3)
    for _ in range(1800):
        fine = dynamics.rk4_batch(fine, 0.01)
    assert np.allclose(dynamics.predict_state(s, 20.0), fine[0], atol=1e-2)
    back = dynamics.predict_state(dynamics.predict_state(s, 1.5), -1.5)
    assert np.allclose(back, s, atol=1e-3)
