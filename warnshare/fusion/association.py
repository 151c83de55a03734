"""Track-to-event association: Mahalanobis distance at a common time, gating, global assignment.

Two nations' tracks of one missile differ by their errors and by each nation's registration
bias (sensor alignment, geodesy), which nobody reports; the gate therefore adds a bias
covariance to the sum of the two tracks' covariances. Assignment is global per nation
(scipy's Jonker-Volgenant ``linear_sum_assignment``), so that in a salvo one close pair cannot
steal the other's track.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray
from scipy.optimize import linear_sum_assignment

#: Cost of a forbidden pair in the assignment matrix (above any gate).
FORBIDDEN = 1e9

try:
    from numpy.linalg._umath_linalg import solve1 as _solve1
except ImportError:  # pragma: no cover - other numpy layouts

    def _solve1(s: NDArray, dx: NDArray, signature: str = "") -> NDArray:
        try:
            return np.linalg.solve(s, dx)
        except np.linalg.LinAlgError:
            return np.full(dx.shape, np.nan)


def bias_covariance(pos_sigma_m: float, vel_sigma_mps: float) -> NDArray:
    """Diagonal 6x6 covariance of the unknown relative registration bias between two nations."""
    return np.diag([pos_sigma_m**2] * 3 + [vel_sigma_mps**2] * 3)


def mahalanobis2(dx: NDArray, s: NDArray) -> float:
    """Squared Mahalanobis distance of a difference ``dx`` under covariance ``s``
    (``FORBIDDEN`` if ``s`` is singular)."""
    # the solve gufunc without np.linalg's error-state context (microseconds per call): a
    # singular matrix gives NaNs instead of an exception
    d2 = float(np.dot(dx, _solve1(s, dx, signature="dd->d")))
    return d2 if math.isfinite(d2) else FORBIDDEN


def mahalanobis2_batch(dx: NDArray, s: NDArray) -> NDArray:
    """Squared distances of differences (n, 6) under covariances (n, 6, 6), one solve call."""
    sol = np.linalg.solve(s, dx[..., None])[..., 0]
    return np.einsum("ni,ni->n", dx, sol)


def assign(cost: NDArray, gate: float) -> list[tuple[int, int]]:
    """Globally optimal (row, column) pairs with cost within ``gate`` (rows: tracks, columns: events)."""
    if cost.size == 0:
        return []
    capped = np.where(cost <= gate, cost, FORBIDDEN)
    rows, cols = linear_sum_assignment(capped)
    return [(int(r), int(c)) for r, c in zip(rows, cols, strict=True) if capped[r, c] < FORBIDDEN]
