"""Covariance intersection: fusing national tracks whose error correlation nobody publishes.

National trackers share sensors' history, so treating their estimates as independent makes the
fused covariance overconfident. CI, P^-1 = sum_i w_i P_i^-1 with weights on the simplex, is
consistent for every weight and every cross-correlation; the weights are chosen to minimise
det P (the volume of the fused uncertainty). Any weight in the simplex is consistent, so the
engine may reuse a weight found a moment ago: a stale weight costs optimality, never honesty.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

try:  # the gufuncs behind np.linalg, without the ~4 us their error-state context costs per call
    from numpy.linalg import _umath_linalg as _ul

    _sum = np.add.reduce

    def inv(a: NDArray) -> NDArray:
        """Inverse of a (stack of) matrices; LinAlgError if singular."""
        out = _ul.inv(a, signature="d->d")
        # a singular matrix comes back as NaNs: one reduction finds them
        if not math.isfinite(_sum(out, axis=None)):
            raise np.linalg.LinAlgError("singular matrix")
        return out

    def inv_unchecked(a: NDArray) -> NDArray:
        """Inverse of a (stack of) matrices; NaNs where singular (the caller checks)."""
        return _ul.inv(a, signature="d->d")

    def cholesky(a: NDArray) -> NDArray:
        """Lower Cholesky factor(s) of a (stack of) matrices; NaNs where one is not positive
        definite (no exception, and no error-state context: the caller checks)."""
        return _ul.cholesky_lo(a, signature="d->d")
except ImportError:  # pragma: no cover - other numpy layouts
    inv = np.linalg.inv

    def inv_unchecked(a: NDArray) -> NDArray:
        try:
            return np.linalg.inv(a)
        except np.linalg.LinAlgError:
            return np.full(a.shape, np.nan)

    def cholesky(a: NDArray) -> NDArray:
        out = np.full(a.shape, np.nan)
        for i, m in enumerate(a.reshape(-1, a.shape[-2], a.shape[-1])):
            try:
                out.reshape(-1, a.shape[-2], a.shape[-1])[i] = np.linalg.cholesky(m)
            except np.linalg.LinAlgError:
                pass
        return out

# Simplex grids for the det search, built once.
_GRID2 = np.linspace(0.0, 1.0, 21)
_W2 = np.stack([_GRID2, 1.0 - _GRID2], axis=1)
_STEP3 = 10
_W3 = np.array(
    [
        (i / _STEP3, j / _STEP3, (_STEP3 - i - j) / _STEP3)
        for i in range(_STEP3 + 1)
        for j in range(_STEP3 + 1 - i)
    ]
    + [(1 / 3, 1 / 3, 1 / 3)]
)


def optimal_weights(infos: NDArray) -> NDArray:
    """CI weights (m,) maximising det(sum w_i I_i) for m information matrices (m, 6, 6), m <= 3.

    A batched grid on the simplex (one Cholesky call: log det is twice the sum of the log of
    its diagonal) followed, for two tracks, by a parabolic refinement of the log-determinant,
    which is concave in w.
    """
    m = infos.shape[0]
    if m == 1:
        return np.ones(1)
    grid, spread = _GRIDS[m] if m in _GRIDS else _grid(m)
    chol = cholesky((grid @ infos.reshape(m, 36)).reshape(-1, 6, 6))
    # half the log-determinant; a combination that is not positive definite (by round-off
    # only) comes back as NaN
    half = np.add.reduce(np.log(chol.diagonal(axis1=1, axis2=2)), axis=1)
    half[half != half] = -np.inf
    # Ties (proportional covariances give a flat or near-flat optimum) go to the most even
    # weights: as consistent as any, and they average independent parts of the errors.
    # (1e-3 of log-determinant.)
    near = half >= np.maximum.reduce(half) - 0.5e-3
    best = int(np.where(near, spread, np.inf).argmin())
    w = grid[best].copy()
    if m == 2 and 0 < best < len(grid) - 1 and np.count_nonzero(near) == 1:
        # the parabola's vertex does not depend on the scale of the log-determinant
        f0, f1, f2 = half[best - 1], half[best], half[best + 1]
        denom = f0 - 2.0 * f1 + f2
        if denom < 0.0:
            step = _GRID2[1] - _GRID2[0]
            shift = 0.5 * (f0 - f2) / denom * step
            w0 = min(1.0, max(0.0, float(_GRID2[best] + shift)))
            w = np.array([w0, 1.0 - w0])
    return w


def _grid(m: int) -> tuple[NDArray, NDArray]:
    """Coarse simplex grid for more than three tracks (rare: one nation, two live numbers)."""
    rows = np.array([np.eye(m)[i] for i in range(m)] + [np.full(m, 1.0 / m)])
    return rows, ((rows - 1.0 / m) ** 2).sum(axis=1)


# each grid with the squared distance of its points from the even weights (the tie-break)
_GRIDS = {m: (g, ((g - 1.0 / m) ** 2).sum(axis=1)) for m, g in ((2, _W2), (3, _W3))}


def fuse(xs: NDArray, covs: NDArray, weights: NDArray | None = None) -> tuple[NDArray, NDArray, NDArray]:
    """CI fusion of states (m, 6) with covariances (m, 6, 6).

    Returns (state, covariance, weights used); ``weights`` None means optimise them now.
    Written as few batched numpy calls as it can be: their per-call cost, not flops, is
    what a 6x6 fusion pays for.
    """
    m = len(xs)
    infos = inv(covs)
    if weights is None or len(weights) != m:
        weights = optimal_weights(infos)
    if m == 1:
        return xs[0], covs[0], weights
    # weighted sums over the stack as (m,) @ (m, k) products: one call each
    p = inv((weights @ infos.reshape(m, 36)).reshape(6, 6))
    x = p @ (weights @ (infos @ xs.reshape(m, 6, 1)).reshape(m, 6))
    return x, p, weights


def fuse_weighted(infos: NDArray, weights: NDArray, wx: NDArray) -> tuple[NDArray, NDArray]:
    """CI of information matrices (m, 6, 6) with ``weights`` (m,), given the weighted states
    ``wx`` (6m,) = (w_1 x_1, ..., w_m x_m) stacked: (state, covariance). The per-report form
    of ``fuse``: both weighted sums are single products (information matrices are symmetric,
    so sum w_i I_i x_i is (w x) @ the stacked I_i), and no check (the caller checks the result
    is finite: a singular input gives NaNs)."""
    m = len(weights)
    p = inv_unchecked(np.dot(weights, infos.reshape(m, 36)).reshape(6, 6))
    return np.dot(p, np.dot(wx, infos.reshape(6 * m, 6))), p


def fuse_scaled(winfos: NDArray, xs: NDArray) -> tuple[NDArray, NDArray]:
    """CI from the weighted information matrices w_i I_i (m, 6, 6) (the inverses of the
    covariances divided by their weights) and the states (6m,) stacked: (state, covariance).
    Sums are one reduction and one product; no check (a singular input gives NaNs)."""
    p = inv_unchecked(np.add.reduce(winfos, axis=0))
    return np.dot(p, np.dot(xs, winfos.reshape(6 * len(winfos), 6))), p


def fuse_independent(xs: NDArray, covs: NDArray) -> tuple[NDArray, NDArray]:
    """The naive fuser that assumes independent errors (P^-1 = sum P_i^-1), kept only to show,
    in the benchmark, that it is overconfident on correlated national tracks. No check (a
    singular input gives NaNs; the engine checks the fused state)."""
    infos = inv_unchecked(covs)
    p = inv_unchecked(np.add.reduce(infos, axis=0))
    p = 0.5 * (p + p.T)
    return np.dot(p, np.dot(xs.reshape(-1), infos.reshape(-1, 6))), p
