"""The sequential fuser that assumes independence: a Kalman filter per event fed national tracks as measurements."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

from warnshare.fusion import FusionConfig, dynamics
from warnshare.protocol import TrackReport, covariance_from_upper

_NS = 1_000_000_000


def sequential_fuse(
    reports: Sequence[TrackReport],
    event_ids: Sequence[int | None],
    config: FusionConfig | None = None,
) -> tuple[list[NDArray | None], list[NDArray | None], list[int]]:
    """Fuse each report into its event's Kalman filter as a fresh measurement of the full state.

    ``event_ids[k]`` is the event report ``k`` went to (the engine's association; None: no
    update, the report is skipped). Per event: the first report initialises the state (x = z,
    P = R); every later one predicts the state and covariance to the report's time of validity
    with the engine's dynamics and acceleration noise (backwards, for a report older than the
    state: another nation's report that arrived late), then updates with H = I, R = the report's
    covariance. A national track is itself a filtered estimate, so this counts each nation's
    past (and the nations' shared sensors) again at every report: the textbook independence
    assumption, overconfident by construction.

    Returns, per report, the event's state (6,) and covariance (6, 6) after it (None where
    skipped) and their time of validity (the report's own).
    """
    if len(reports) != len(event_ids):
        raise ValueError("one event id per report")
    # the engine's own acceleration-noise rule (boost / atmosphere / vacuum) and its numbers
    q_of = (config or FusionConfig()).acceleration_noise
    events: dict[int, tuple[int, NDArray, NDArray]] = {}
    states: list[NDArray | None] = []
    covs: list[NDArray | None] = []
    tovs: list[int] = []
    eye = np.eye(6)
    for rep, eid in zip(reports, event_ids, strict=True):
        tovs.append(rep.time_of_validity_ns)
        if eid is None:
            states.append(None)
            covs.append(None)
            continue
        z = np.array(rep.position_ecef_m + rep.velocity_ecef_mps, dtype=float)
        r = np.asarray(covariance_from_upper(rep.covariance), dtype=float)
        r = 0.5 * (r + r.T)
        prior = events.get(eid)
        if prior is None:
            x, p = z, r
        else:
            t_ns, x0, p0 = prior
            dt = (rep.time_of_validity_ns - t_ns) / _NS
            xp = np.array(dynamics.predict_state(x0.tolist(), dt))
            pp = dynamics.predict_covariance(p0, dt, q_of(rep.boosting, x0))
            # Kalman update, H = I: K = P (P + R)^-1, Joseph form for a covariance that stays
            # symmetric positive definite however small it gets
            k = np.linalg.solve((pp + r).T, pp.T).T
            x = xp + k @ (z - xp)
            a = eye - k
            p = a @ pp @ a.T + k @ r @ k.T
            p = 0.5 * (p + p.T)
        events[eid] = (rep.time_of_validity_ns, x, p)
        states.append(x)
        covs.append(p)
    return states, covs, tovs
