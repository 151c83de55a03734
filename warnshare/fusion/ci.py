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

# Simplex grids for the weight search, built once.
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


def optimal_weights(infos: NDArray, criterion: str = "trace") -> NDArray:
    """CI weights (m,) for m information matrices (m, 6, 6), m <= 3: those minimising the trace
    of the fused position covariance (``criterion="trace"``, what the position error the alerts
    report depends on) or maximising det(sum w_i I_i) (``"det"``, the fused volume). Any
    weights give a consistent fusion; the criterion only chooses the tightest by its measure.

    A batched grid on the simplex (one batched inversion for the trace, one Cholesky call for
    the log-determinant: twice the sum of the log of its diagonal) followed, for two tracks, by
    a parabolic refinement (both criteria are convex in w).
    """
    m = infos.shape[0]
    if m == 1:
        return np.ones(1)
    grid, spread = _GRIDS[m] if m in _GRIDS else _grid(m)
    mats = (grid @ infos.reshape(m, 36)).reshape(-1, 6, 6)
    if criterion == "trace":
        # minus the trace of the position block of each inverse (higher is better, as for det);
        # a combination that is singular (by round-off only) comes back as NaN or infinite
        cov = inv_unchecked(mats)
        score = -(cov[:, 0, 0] + cov[:, 1, 1] + cov[:, 2, 2])
        score[~(score < 0.0)] = -np.inf
        tol = 1e-6 * float(-np.maximum.reduce(score))
    else:
        score = _half_log_dets(mats)
        tol = 0.5e-3
    # Ties (proportional covariances give a flat or near-flat optimum) go to the most even
    # weights: as consistent as any, and they average independent parts of the errors.
    near = score >= np.maximum.reduce(score) - tol
    best = int(np.where(near, spread, np.inf).argmin())
    w = grid[best].copy()
    if m == 2 and 0 < best < len(grid) - 1 and np.count_nonzero(near) == 1:
        # the parabola's vertex does not depend on the scale of the criterion
        f0, f1, f2 = score[best - 1], score[best], score[best + 1]
        denom = f0 - 2.0 * f1 + f2
        if denom < 0.0:
            step = _GRID2[1] - _GRID2[0]
            shift = 0.5 * (f0 - f2) / denom * step
            w0 = min(1.0, max(0.0, float(_GRID2[best] + shift)))
            w = np.array([w0, 1.0 - w0])
    return w


def _half_log_dets(mats: NDArray) -> NDArray:
    """Half the log-determinant of each matrix of a stack (k, 6, 6), from one batched Cholesky
    (the sum of the log of its diagonal); -inf for one that is not positive definite (by
    round-off: its factor comes back NaN)."""
    chol = cholesky(mats)
    half = np.add.reduce(np.log(chol.diagonal(axis1=1, axis2=2)), axis=1)
    half[half != half] = -np.inf
    return half


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


#: Weights tried for each pair in inverse CI.
_ICI_GRID = np.linspace(0.0, 1.0, 11)


def inverse_ci_weight(p1: NDArray, p2: NDArray) -> float:
    """The inverse-CI weight w of two covariances that maximises det P^-1, P^-1 = P1^-1 + P2^-1
    - (w P1 + (1-w) P2)^-1, on a grid (any w in [0, 1] is consistent; the grid costs one
    batched inversion and one batched Cholesky)."""
    w = _ICI_GRID[:, None, None]
    mats = inv_unchecked(np.concatenate([np.stack([p1, p2]), w * p1 + (1.0 - w) * p2]))
    half = _half_log_dets((mats[0] + mats[1]) - mats[2:])
    k = int(half.argmax())
    if not math.isfinite(float(half[k])):
        raise np.linalg.LinAlgError("inverse CI: no positive definite combination")
    return float(_ICI_GRID[k])


def inverse_ci_pair(x1: NDArray, p1: NDArray, x2: NDArray, p2: NDArray, w: float) -> tuple[NDArray, NDArray]:
    """Inverse covariance intersection of two estimates with weight ``w`` (Noack, Sijs,
    Reinhardt and Hanebeck 2017): consistent whatever the correlation that comes from
    information the two share (the national trackers' common sensors), and tighter than CI,
    which allows any correlation at all. No check (a singular input gives NaNs)."""
    c = w * p1 + (1.0 - w) * p2
    i1, i2, g = inv_unchecked(np.stack([p1, p2, c]))
    p = inv_unchecked((i1 + i2) - g)
    # P (I1 x1 + I2 x2 - G (w x1 + (1-w) x2)): one product of the stacked matrices
    return p @ (np.concatenate([i1, i2, g], axis=1) @ np.concatenate([x1, x2, -(w * x1 + (1.0 - w) * x2)])), p


def inverse_ci(xs: NDArray, covs: NDArray, weights: list[float] | None = None) -> tuple[NDArray, NDArray, list[float]]:
    """Inverse CI of m estimates (m, 6), (m, 6, 6), pairwise in the given order (most certain
    first, the caller's choice): (state, covariance, the m-1 pair weights). ``weights`` None:
    optimise them now."""
    x, p = xs[0], covs[0]
    found = []
    for k in range(1, len(xs)):
        w = weights[k - 1] if weights is not None else inverse_ci_weight(p, covs[k])
        found.append(w)
        x, p = inverse_ci_pair(x, p, xs[k], covs[k], w)
    return x, 0.5 * (p + p.T), found
