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

try:  # the gufunc behind np.linalg.inv, without the ~4 us its error-state context costs per call
    from numpy.linalg import _umath_linalg as _ul

    _sum = np.add.reduce

    def inv(a: NDArray) -> NDArray:
        """Inverse of a (stack of) matrices; LinAlgError if singular."""
        out = _ul.inv(a, signature="d->d")
        # a singular matrix comes back as NaNs: one reduction finds them
        if not math.isfinite(_sum(out, axis=None)):
            raise np.linalg.LinAlgError("singular matrix")
        return out
except ImportError:  # pragma: no cover - other numpy layouts
    inv = np.linalg.inv

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

    A batched grid on the simplex (one determinant call) followed, for two tracks, by a
    parabolic refinement of the log-determinant, which is concave in w.
    """
    m = infos.shape[0]
    if m == 1:
        return np.ones(1)
    grid = _W2 if m == 2 else _W3 if m == 3 else _grid(m)
    sign, logdet = np.linalg.slogdet(np.einsum("gk,kij->gij", grid, infos))
    logdet = np.where(sign > 0, logdet, -np.inf)
    # Ties (proportional covariances give a flat or near-flat optimum) go to the most even
    # weights: as consistent as any, and they average independent parts of the errors.
    near = logdet >= logdet.max() - 1e-3
    spread = np.where(near, ((grid - 1.0 / m) ** 2).sum(axis=1), np.inf)
    best = int(np.argmin(spread))
    w = grid[best].copy()
    if m == 2 and near.sum() == 1 and 0 < best < len(grid) - 1:
        f0, f1, f2 = logdet[best - 1], logdet[best], logdet[best + 1]
        denom = f0 - 2.0 * f1 + f2
        if denom < 0.0:
            step = _GRID2[1] - _GRID2[0]
            shift = 0.5 * (f0 - f2) / denom * step
            w0 = float(np.clip(_GRID2[best] + shift, 0.0, 1.0))
            w = np.array([w0, 1.0 - w0])
    return w


def _grid(m: int) -> NDArray:
    """Coarse simplex grid for more than three tracks (rare: one nation, two live numbers)."""
    rows = [np.eye(m)[i] for i in range(m)] + [np.full(m, 1.0 / m)]
    return np.array(rows)


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


def fuse_independent(xs: NDArray, covs: NDArray) -> tuple[NDArray, NDArray]:
    """The naive fuser that assumes independent errors (P^-1 = sum P_i^-1), kept only to show,
    in the benchmark, that it is overconfident on correlated national tracks."""
    infos = np.linalg.inv(covs)
    p = np.linalg.inv(infos.sum(axis=0))
    p = 0.5 * (p + p.T)
    return p @ np.einsum("kij,kj->i", infos, xs), p
