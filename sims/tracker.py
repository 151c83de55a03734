"""A nation's tracker: its sensors' reports in, the national tracks its node publishes out.

Converted-measurement Kalman filter in ECEF (position, velocity) with a ballistic prediction
(J2 gravity, Coriolis, centrifugal) and white-noise acceleration that is large while a track
boosts or manoeuvres; greedy nearest-neighbour association per sensor scan inside a chi-square
gate; M-hit confirmation (the start-up delay), coast-out deletion (a last update with ``lost``),
track quality from the position covariance, and a processing latency per nation.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from warnshare.geo import ecef_acceleration, ecef_to_geodetic

from .model import MeasurementSet, NationalTrackUpdate
from .sensors import ir_to_ecef, radar_to_ecef

NS = 1_000_000_000
GATE_CHI2 = 16.27  # 3 degrees of freedom, 99.9 %
SIGMA_A_BOOST = 50.0  # m/s^2: unknown thrust
SIGMA_A_BALLISTIC = 4.0  # m/s^2: drag, glide lift, model error
SIGMA_A_MANOEUVRE = 150.0  # m/s^2: re-entry deceleration or a sharp turn the gate missed
SIGMA_V_INIT = 3000.0  # m/s: a one-point track knows nothing of its velocity
BOOST_ACCEL = 8.0  # m/s^2 of filter correction that marks a boosting track
TENTATIVE_TIMEOUT_S = 6.0
COAST_TIMEOUT_S = 20.0
EMIT_INTERVAL_S = 0.95


@dataclass
class _Track:
    number: int
    x: np.ndarray
    p: np.ndarray
    t_ns: int
    first_ns: int
    hits: int = 1
    confirmed: bool = False
    last_emit_ns: int = -(10**19)
    labels: Counter = field(default_factory=Counter)
    sensor_seen: dict = field(default_factory=dict)
    accel_ema: float = 0.0
    boosting: bool = True
    ir_until_ns: int = 0


def _predict(x: np.ndarray, p: np.ndarray, dt: float, sigma_a: float) -> tuple[np.ndarray, np.ndarray]:
    """Ballistic prediction in sub-steps of at most 5 s, covariance by a constant-velocity F."""
    if dt <= 0.0:
        return x.copy(), p.copy()
    n = max(1, math.ceil(dt / 5.0))
    h = dt / n
    r, v = x[:3].copy(), x[3:].copy()
    for _ in range(n):
        a = ecef_acceleration(r, v)
        r = r + v * h + 0.5 * a * h * h
        v = v + ecef_acceleration(r, v) * 0.5 * h + a * 0.5 * h
    f = np.eye(6)
    f[:3, 3:] = np.eye(3) * dt
    q = sigma_a**2
    qm = np.zeros((6, 6))
    qm[:3, :3] = np.eye(3) * q * dt**4 / 4
    qm[:3, 3:] = qm[3:, :3] = np.eye(3) * q * dt**3 / 2
    qm[3:, 3:] = np.eye(3) * q * dt**2
    return np.concatenate([r, v]), f @ p @ f.T + qm


def _gate(xp: np.ndarray, pp: np.ndarray, z: np.ndarray, rz: np.ndarray) -> float:
    y = z - xp[:3]
    s = pp[:3, :3] + rz
    return float(y @ np.linalg.solve(s, y))


def _update(xp: np.ndarray, pp: np.ndarray, z: np.ndarray, rz: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    s = pp[:3, :3] + rz
    k = np.linalg.solve(s, pp[:3, :]).T  # (6, 3) = P H^T S^-1, S symmetric
    x = xp + k @ (z - xp[:3])
    ikh = np.eye(6)
    ikh[:, :3] -= k
    p = ikh @ pp @ ikh.T + k @ rz @ k.T  # Joseph form keeps P symmetric positive
    return x, 0.5 * (p + p.T)


def track_quality(p: np.ndarray) -> int:
    """0..15 from the position standard deviation: 15 at 10 m, one step per doubling."""
    sigma = math.sqrt(max(float(np.trace(p[:3, :3])) / 3.0, 1e-6))
    return int(min(15, max(0, math.floor(15 - math.log2(max(sigma, 10.0) / 10.0)))))


def _phase(tr: _Track) -> str:
    if tr.boosting:
        return "BOOST"
    _, _, alt = ecef_to_geodetic(tr.x[:3])
    vr = float(tr.x[:3] @ tr.x[3:]) / float(np.linalg.norm(tr.x[:3]))
    if vr < 0 and float(alt) < 100e3:
        return "TERMINAL"
    return "MIDCOURSE"


def run_tracker(nation: str, measurements: list[MeasurementSet], latency_s: float, confirm_hits: int) -> list[NationalTrackUpdate]:
    """National track updates from one nation's measurement sets, sorted by availability."""
    rows_t, rows_z, rows_r, rows_sid, rows_ir, rows_lab = [], [], [], [], [], []
    for ms in measurements:
        if len(ms) == 0:
            continue
        z, r = (radar_to_ecef(ms) if ms.kind == "radar" else ir_to_ecef(ms))
        rows_t.append(ms.times_ns)
        rows_z.append(z)
        rows_r.append(r)
        rows_sid.extend([ms.sensor_id] * len(ms))
        rows_ir.append(np.full(len(ms), ms.kind == "space_ir"))
        rows_lab.extend(ms.truth_id.tolist())
    if not rows_t:
        return []
    t_all = np.concatenate(rows_t)
    z_all = np.concatenate(rows_z)
    r_all = np.concatenate(rows_r)
    ir_all = np.concatenate(rows_ir)
    sid_all = np.array(rows_sid)
    order = np.lexsort((sid_all, t_all))
    latency_ns = int(round(latency_s * NS))
    tracks: list[_Track] = []
    out: list[NationalTrackUpdate] = []
    next_number = [1]

    def emit(tr: _Track, lost: bool, available_ns: int) -> None:
        label = next((k for k, _ in tr.labels.most_common() if k), "")
        recent = tuple(sorted(s for s, t in tr.sensor_seen.items() if tr.t_ns - t <= 10 * NS))
        out.append(NationalTrackUpdate(
            nation=nation, track_number=tr.number, missile_id=label, time_of_validity_ns=tr.t_ns,
            available_ns=available_ns, position_ecef_m=tuple(float(c) for c in tr.x[:3]),
            velocity_ecef_mps=tuple(float(c) for c in tr.x[3:]), covariance=tr.p.copy(),
            track_quality=track_quality(tr.p), boosting=tr.boosting, lost=lost, flight_phase=_phase(tr),
            launch_estimate=None, impact_estimate=None, sensor_ids=recent))
        tr.last_emit_ns = tr.t_ns

    def retire(now_ns: int) -> None:
        keep = []
        for tr in tracks:
            idle = (now_ns - tr.t_ns) / NS
            if tr.confirmed and idle > COAST_TIMEOUT_S:
                emit(tr, True, now_ns + latency_ns)
            elif not tr.confirmed and idle > TENTATIVE_TIMEOUT_S:
                pass
            else:
                keep.append(tr)
        tracks[:] = keep

    i = 0
    n = len(order)
    while i < n:
        j = i
        t = int(t_all[order[i]])
        sid = sid_all[order[i]]
        while j < n and t_all[order[j]] == t and sid_all[order[j]] == sid:
            j += 1
        scan = order[i:j]
        i = j
        retire(t)
        # gate every report of this scan against every track
        cands = []
        preds = {}
        for k, tr in enumerate(tracks):
            dt = (t - tr.t_ns) / NS
            sig = SIGMA_A_BOOST if (tr.boosting or tr.hits < 4) else SIGMA_A_BALLISTIC
            xp, pp = _predict(tr.x, tr.p, dt, sig)
            xh = ph = None
            for m in scan:
                d2 = _gate(xp, pp, z_all[m], r_all[m])
                if d2 <= GATE_CHI2:
                    cands.append((d2, k, m, False))
                elif sig < SIGMA_A_MANOEUVRE:
                    if xh is None:
                        xh, ph = _predict(tr.x, tr.p, dt, SIGMA_A_MANOEUVRE)
                    d2h = _gate(xh, ph, z_all[m], r_all[m])
                    if d2h <= GATE_CHI2:
                        cands.append((d2h + GATE_CHI2, k, m, True))
            preds[k] = (xp, pp, xh, ph)
        cands.sort(key=lambda c: (c[0], c[1], c[2]))
        used_t, used_m = set(), set()
        for _d2, k, m, hi in cands:
            if k in used_t or m in used_m:
                continue
            used_t.add(k)
            used_m.add(m)
            tr = tracks[k]
            xp, pp, xh, ph = preds[k]
            if hi:
                xp, pp = xh, ph
            dt = (t - tr.t_ns) / NS
            x_new, p_new = _update(xp, pp, z_all[m], r_all[m])
            if 0.2 <= dt <= 5.0 and tr.hits >= 3:
                corr = float(np.linalg.norm(x_new[3:] - xp[3:])) / dt
                tr.accel_ema = 0.7 * tr.accel_ema + 0.3 * corr
            tr.x, tr.p, tr.t_ns = x_new, p_new, t
            tr.hits += 1
            tr.labels[rows_lab[m]] += 1
            tr.sensor_seen[str(sid_all[m])] = t
            if ir_all[m]:
                tr.ir_until_ns = t + 5 * NS
            if tr.hits >= 6:
                tr.boosting = t < tr.ir_until_ns or tr.accel_ema > BOOST_ACCEL
            if not tr.confirmed and tr.hits >= confirm_hits:
                tr.confirmed = True
            if tr.confirmed and t - tr.last_emit_ns >= EMIT_INTERVAL_S * NS:
                emit(tr, False, t + latency_ns)
        for m in scan:
            if m in used_m:
                continue
            p0 = np.zeros((6, 6))
            p0[:3, :3] = r_all[m]
            p0[3:, 3:] = np.eye(3) * SIGMA_V_INIT**2
            x0 = np.concatenate([z_all[m], np.zeros(3)])
            tr = _Track(next_number[0], x0, p0, t, t)
            next_number[0] += 1
            tr.labels[rows_lab[m]] += 1
            tr.sensor_seen[str(sid_all[m])] = t
            if ir_all[m]:
                tr.ir_until_ns = t + 5 * NS
            tracks.append(tr)
    end = int(t_all.max()) + int(COAST_TIMEOUT_S * NS) + NS
    retire(end)
    # renumber confirmed tracks 1..n in order of first output, so numbers do not leak tentatives
    renum: dict[int, int] = {}
    for u in out:
        renum.setdefault(u.track_number, len(renum) + 1)
    from dataclasses import replace

    out = [replace(u, track_number=renum[u.track_number]) for u in out]
    out.sort(key=lambda u: (u.available_ns, u.track_number))
    return out
