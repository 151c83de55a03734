"""Accuracy of fused output against truth: GOSPA, SIAP, RMSE, NEES, alert latency, impact error
and 95%-ellipse coverage. Pure functions on numpy arrays, shared by tests and the benchmark.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Hashable, Iterable, Sequence

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.optimize import linear_sum_assignment
from scipy.stats import chi2

from warnshare import geo


def gospa(truth: ArrayLike, estimates: ArrayLike, c: float, p: float = 2.0) -> dict[str, float]:
    """Generalised OSPA (alpha = 2) between truth points (n, d) and estimates (m, d).

    Returns the distance and its split: localisation (assigned pairs), missed truths and
    false estimates, each already raised to the power p (so they add up to gospa**p).
    """
    x = np.asarray(truth, dtype=float).reshape(-1, np.shape(truth)[-1] if np.size(truth) else 3)
    y = np.asarray(estimates, dtype=float).reshape(-1, x.shape[1])
    cp = c**p
    loc = 0.0
    assigned = 0
    if len(x) and len(y):
        d = np.linalg.norm(x[:, None, :] - y[None, :, :], axis=2)
        cost = np.minimum(d, c) ** p
        rows, cols = linear_sum_assignment(cost)
        for r, k in zip(rows, cols, strict=True):
            if d[r, k] < c:
                loc += d[r, k] ** p
                assigned += 1
    missed = (len(x) - assigned) * cp / 2.0
    false = (len(y) - assigned) * cp / 2.0
    return {
        "gospa": float((loc + missed + false) ** (1.0 / p)),
        "localisation": float(loc),
        "missed": float(missed),
        "false": float(false),
    }


def siap(
    truth_alive: Sequence[Iterable[Hashable]],
    track_to_truth: Sequence[dict[Hashable, Hashable | None]],
) -> dict[str, float]:
    """SIAP completeness, ambiguity and spuriousness over time steps.

    ``truth_alive[k]``: truth ids present at step k; ``track_to_truth[k]``: each track present
    at step k and the truth it is associated with (None: spurious).
    Completeness = sum of truths with >= 1 track / sum of truths; ambiguity = sum of
    associated tracks / sum of truths with >= 1 track (1 is ideal); spuriousness = sum of
    unassociated tracks / sum of tracks.
    """
    n_truth = n_covered = n_assoc = n_tracks = n_spur = 0
    for alive, assoc in zip(truth_alive, track_to_truth, strict=True):
        alive = set(alive)
        n_truth += len(alive)
        covered = {t for t in assoc.values() if t is not None and t in alive}
        n_covered += len(covered)
        n_assoc += sum(1 for t in assoc.values() if t is not None and t in alive)
        n_tracks += len(assoc)
        n_spur += sum(1 for t in assoc.values() if t is None or t not in alive)
    return {
        "completeness": n_covered / n_truth if n_truth else math.nan,
        "ambiguity": n_assoc / n_covered if n_covered else math.nan,
        "spuriousness": n_spur / n_tracks if n_tracks else math.nan,
    }


def rmse(errors: ArrayLike) -> float:
    """Root mean square of error norms (errors (n, d) or norms (n,))."""
    e = np.asarray(errors, dtype=float)
    if e.size == 0:
        return math.nan
    sq = (e * e).sum(axis=-1) if e.ndim > 1 else e * e
    return float(np.sqrt(sq.mean()))


def nees(errors: ArrayLike, covariances: ArrayLike) -> NDArray:
    """Normalised estimation error squared of each (n, d) error under its (n, d, d) covariance."""
    e = np.asarray(errors, dtype=float)
    p = np.asarray(covariances, dtype=float)
    sol = np.linalg.solve(p, e[..., None])[..., 0]
    return np.einsum("ni,ni->n", e, sol)


def nees_bounds(n_samples: int, dof: int = 6, confidence: float = 0.95) -> tuple[float, float]:
    """Two-sided chi-square bounds of the average NEES of ``n_samples`` independent samples."""
    a = (1.0 - confidence) / 2.0
    k = dof * n_samples
    return float(chi2.ppf(a, k) / n_samples), float(chi2.ppf(1.0 - a, k) / n_samples)


def in_ellipse(
    lat_deg: float,
    lon_deg: float,
    center_lat_deg: float,
    center_lon_deg: float,
    semi_major_m: float,
    semi_minor_m: float,
    orientation_deg: float,
) -> bool:
    """Whether a point lies inside a ground ellipse (orientation clockwise from north)."""
    en = geo.ecef_to_enu(geo.geodetic_to_ecef(lat_deg, lon_deg, 0.0), center_lat_deg, center_lon_deg)
    th = math.radians(orientation_deg)
    major = np.array([math.sin(th), math.cos(th)])
    minor = np.array([math.cos(th), -math.sin(th)])
    a = float(en[:2] @ major) / max(semi_major_m, 1e-6)
    b = float(en[:2] @ minor) / max(semi_minor_m, 1e-6)
    return a * a + b * b <= 1.0


def ground_error_m(lat1_deg: float, lon1_deg: float, lat2_deg: float, lon2_deg: float) -> float:
    return geo.great_circle_distance_m(lat1_deg, lon1_deg, lat2_deg, lon2_deg)


def binned_median(x: ArrayLike, y: ArrayLike, edges: ArrayLike) -> list[tuple[float, float, float, int]]:
    """(bin start, bin end, median y, count) of y by x bins, empty bins left out."""
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    out = []
    e = np.asarray(edges, dtype=float)
    for a, b in zip(e[:-1], e[1:], strict=True):
        sel = (x >= a) & (x < b)
        if sel.any():
            out.append((float(a), float(b), float(np.median(y[sel])), int(sel.sum())))
    return out


def majority_labels(labels_by_track: dict[Hashable, Sequence[Hashable]]) -> dict[Hashable, Hashable]:
    """Each fused track's truth: the label most of its updates came from."""
    return {k: Counter(v).most_common(1)[0][0] for k, v in labels_by_track.items() if len(v)}


def count_swaps(labels: Sequence[Hashable], settle: int = 3) -> int:
    """Times a fused track's truth label changes and stays changed for ``settle`` updates."""
    swaps = 0
    current = None
    run_label, run = None, 0
    for lab in labels:
        if lab == run_label:
            run += 1
        else:
            run_label, run = lab, 1
        if run == settle and lab != current:
            if current is not None:
                swaps += 1
            current = lab
    return swaps
