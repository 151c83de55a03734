"""A nation's tracker: its sensors' reports in, the national tracks its node publishes out.

Converted-measurement Kalman filter in ECEF (position, velocity) with a ballistic prediction
(J2 gravity, Coriolis, centrifugal) and white-noise acceleration sized to what that prediction
lacks: thrust while a track boosts, drag and lift from the air density at the track's altitude
after burn-out, a small floor in near-vacuum. Each radar's registration bias is a constant
error, not noise: the filter carries it as a Schmidt-Kalman "consider" parameter (the state's
cross-covariance with each radar's range/azimuth/elevation bias), so averaging many reports of
one radar does not shrink the covariance below what the bias leaves. Greedy nearest-neighbour
association per sensor scan inside a chi-square gate; M-hit confirmation (the start-up delay),
coast-out deletion (a last update with ``lost``), track quality from the position covariance,
and a processing latency per nation.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field, replace

import numpy as np

from warnshare.geo import (
    WGS84_A,
    WGS84_B,
    WGS84_E2,
    WGS84_GM,
    WGS84_J2,
    WGS84_OMEGA,
    ecef_to_geodetic,
)

from .atmosphere import properties as air_properties
from .model import MeasurementSet, NationalTrackUpdate
from .sensors import converted_covariance, ir_to_ecef, radar_to_ecef_jacobian

NS = 1_000_000_000
GATE_CHI2 = 16.27  # 3 degrees of freedom, 99.9 %
SIGMA_A_BOOST = 80.0  # m/s^2: unknown thrust (solid SRBMs reach ~20 g at burnout)
SIGMA_A_BALLISTIC = 0.1  # m/s^2: model error in near-vacuum (J2 is modelled; venting, tail-off)
# Drag and glide lift, which the ballistic prediction lacks, scale with the dynamic pressure:
# |a| ~ rho v^2 / (2 beta) sqrt(1 + (L/D)^2). A nation does not know the class, so beta is one
# effective figure (the simulator's SRBMs fly 1,600-12,000 kg/m^2 effective, lift included)
# and the innovations raise the level for a track that needs more (_adapt): a glide's lift.
BETA_AERO_KG_M2 = 4000.0
NIS_GAIN = 0.3  # weight of the newest innovation in the running mean (a few updates' memory)
Q_SCALE_RATE = 1.0  # per update: the multiplier grows by exp(rate * (mean NIS per dof - 1))
Q_SCALE_MAX = 100.0  # the aerodynamic noise level grows at most 10x
SIGMA_A_AERO_MAX = 60.0  # m/s^2: the most drag and lift the level allows (~6 g); more is a manoeuvre
SIGMA_A_MANOEUVRE = 300.0  # m/s^2: re-entry deceleration or a thrust the gate missed
# the manoeuvre gate is tried only this soon after a track's last update: after a long coast
# its 0.5 * 300 m/s^2 * dt^2 reach spans the neighbouring missiles of a salvo
MANOEUVRE_GATE_MAX_S = 6.0
SIGMA_V_INIT = 3000.0  # m/s: a one-point track knows nothing of its velocity
BOOST_ACCEL = 8.0  # m/s^2 of non-gravitational acceleration along the velocity: thrust
BOOST_WINDOW_S = 8.0  # velocity history over which that acceleration is measured
BURNOUT_QUIET_S = 4.0  # thrust ruled out this long before burn-out is declared
BOOST_HOLD_S = 15.0  # a boost claim without fresh evidence lapses after this
MERGE_CHI2 = 25.0  # two tracks this close in position (and velocity) are one target
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
    boosting: bool = False
    phase_known: bool = False
    burnt_out: bool = False
    terminal: bool = False
    quiet_since_ns: int | None = None
    thrust_seen_ns: int = -(10**19)
    ir_until_ns: int = 0
    history: list = field(default_factory=list)  # (t_ns, velocity) after each update
    # radar id -> (6, 3) cross-covariance of the state's error with that radar's registration
    # bias in (range m, azimuth rad, elevation rad): the consider parameters
    cx: dict = field(default_factory=dict)
    q_scale: float = 1.0  # adaptive multiplier of the aerodynamic noise variance (see _adapt)
    nis_avg: float = 1.0  # running mean of the normalised innovation squared per dimension


def _accel(r: np.ndarray, v: np.ndarray) -> np.ndarray:
    """geo.ecef_acceleration for one state, in floats: numpy's call overhead dominates here."""
    x, y, z = float(r[0]), float(r[1]), float(r[2])
    r2 = x * x + y * y + z * z
    rn = math.sqrt(r2)
    k = -WGS84_GM / (r2 * rn)
    f = 1.5 * WGS84_J2 * WGS84_A * WGS84_A / r2
    zr2 = 5.0 * z * z / r2
    w = WGS84_OMEGA
    return np.array([
        k * x * (1.0 + f * (1.0 - zr2)) + 2.0 * w * float(v[1]) + w * w * x,
        k * y * (1.0 + f * (1.0 - zr2)) - 2.0 * w * float(v[0]) + w * w * y,
        k * z * (1.0 + f * (3.0 - zr2)),
    ])


_I6 = np.eye(6)
_I3 = np.eye(3)
# white-noise-acceleration Q = q (dt^4/4 A + dt^3/2 B + dt^2 C), with these block patterns
_QA = np.zeros((6, 6))
_QA[:3, :3] = _I3
_QB = np.zeros((6, 6))
_QB[:3, 3:] = _I3
_QB[3:, :3] = _I3
_QC = np.zeros((6, 6))
_QC[3:, 3:] = _I3


def _predict(x: np.ndarray, p: np.ndarray, dt: float, sigma_a: float) -> tuple[np.ndarray, np.ndarray]:
    """Ballistic prediction in sub-steps of at most 5 s, covariance by a constant-velocity F."""
    if dt <= 0.0:
        return x.copy(), p.copy()
    n = max(1, math.ceil(dt / 5.0))
    h = dt / n
    r, v = x[:3].copy(), x[3:].copy()
    for _ in range(n):
        a = _accel(r, v)
        r = r + v * h + 0.5 * a * h * h
        v = v + _accel(r, v) * 0.5 * h + a * 0.5 * h
    f = _I6.copy()
    f[:3, 3:] = _I3 * dt
    q = sigma_a**2
    qm = (q * dt**4 / 4) * _QA + (q * dt**3 / 2) * _QB + (q * dt**2) * _QC
    return np.concatenate([r, v]), f @ p @ f.T + qm


def _sigma_a(tr: _Track, dt: float) -> float:
    if tr.boosting or not tr.phase_known:
        return SIGMA_A_BOOST
    # the densest air the track reaches over the interval: a falling track's drag grows fast
    r = tr.x[:3]
    v = tr.x[3:]
    v_up = float(r @ v) / math.sqrt(float(r @ r))
    alt = _altitude(tr.x) + min(0.0, v_up) * max(dt, 0.0)
    rho = air_properties(alt)[0]
    aero = math.sqrt(tr.q_scale) * 0.5 * rho * float(v @ v) / BETA_AERO_KG_M2
    return min(SIGMA_A_AERO_MAX, max(SIGMA_A_BALLISTIC, aero))


def _adapt(tr: _Track, nis: float) -> None:
    """Raise the aerodynamic noise while innovations run larger than the filter expects, let it
    fall back while they do not: a glide vehicle's lift (several times its drag, unknown to a
    tracker that cannot tell the class) shows as a run of large innovations."""
    tr.nis_avg += NIS_GAIN * (nis / 3.0 - tr.nis_avg)
    if tr.boosting or not tr.phase_known:
        return
    tr.q_scale = min(Q_SCALE_MAX, max(1.0, tr.q_scale * math.exp(Q_SCALE_RATE * (tr.nis_avg - 1.0))))


def _altitude(x: np.ndarray) -> float:
    """Height above the ellipsoid along the geocentric radius (close enough to pick a noise level)."""
    r2 = float(x[0] ** 2 + x[1] ** 2 + x[2] ** 2)
    return math.sqrt(r2) - WGS84_B / math.sqrt(1.0 - WGS84_E2 * float(x[0] ** 2 + x[1] ** 2) / r2)


def _predict_cross(cx: dict, dt: float) -> dict:
    """The consider cross-covariances through the constant-velocity F of ``_predict``."""
    out = {}
    for sid, c in cx.items():
        c2 = c.copy()
        c2[:3] += dt * c[3:]
        out[sid] = c2
    return out


def _innovation(pp: np.ndarray, c: np.ndarray | None, rz: np.ndarray, bias: tuple | None) -> tuple[np.ndarray, np.ndarray]:
    """Innovation covariance S (3, 3) and state-measurement cross-covariance (6, 3) of a report
    z = H x + G b + v: noise ``rz``, ``bias`` = (G, G B, G B G^T) of its radar's bias b ~ N(0, B),
    ``c`` the state's cross-covariance with b (None: none yet)."""
    s = pp[:3, :3] + rz
    cross = pp[:, :3]
    if bias is not None:
        g, _, gbg = bias
        s = s + gbg
        if c is not None:
            cg = c @ g.T
            cross = cross + cg
            s = s + cg[:3] + cg[:3].T
    return s, cross


def _gate(xp: np.ndarray, s: np.ndarray, z: np.ndarray) -> float:
    y = z - xp[:3]
    yy = float(y @ y)
    if yy > GATE_CHI2 * float(np.trace(s)):
        return math.inf  # d2 >= |y|^2 / max eigenvalue >= |y|^2 / trace: outside, no solve needed
    return float(y @ np.linalg.solve(s, y))


def _log_det(s: np.ndarray) -> float:
    """ln |S|: added to d^2 it ranks pairings by likelihood, so a track coasting with a wide
    covariance (small d^2 for anything near) does not take a report from the track it fits."""
    return float(np.linalg.slogdet(s)[1])


def _update(
    xp: np.ndarray, pp: np.ndarray, cxp: dict, sid: str, z: np.ndarray, rz: np.ndarray, bias: tuple | None,
) -> tuple[np.ndarray, np.ndarray, dict, float]:
    """Schmidt-Kalman update: the gain accounts for the radar's bias, which stays unestimated
    (a single track cannot separate it from the target's position) but whose share of the
    error is kept in P and in the cross-covariances."""
    s, cross = _innovation(pp, cxp.get(sid), rz, bias)
    k = np.linalg.solve(s, cross.T).T  # (6, 3), S symmetric
    y = z - xp[:3]
    x = xp + k @ y
    p = pp - k @ cross.T
    cx = {t: c - k @ c[:3] for t, c in cxp.items()}
    if bias is not None:
        cx[sid] = cx.get(sid, np.zeros((6, 3))) - k @ bias[1]
    return x, 0.5 * (p + p.T), cx, float(y @ np.linalg.solve(s, y))


def track_quality(p: np.ndarray) -> int:
    """0..15 from the position standard deviation: 15 at 10 m, one step per doubling."""
    sigma = math.sqrt(max(float(np.trace(p[:3, :3])) / 3.0, 1e-6))
    return int(min(15, max(0, math.floor(15 - math.log2(max(sigma, 10.0) / 10.0)))))


def _update_boost(tr: _Track) -> None:
    """Boosting while the space layer sees a plume, or while the velocity history shows a
    non-gravitational acceleration along the velocity (thrust; drag and lift are not along it).
    Only settled velocity estimates count, since a young track's converging velocity looks like
    thrust; until there are enough the phase is UNKNOWN. Burn-out latches: a missile boosts
    once, so nothing later reads as thrust."""
    r, v = tr.x[:3], tr.x[3:]
    speed = float(np.linalg.norm(v))
    plume = tr.t_ns < tr.ir_until_ns
    if tr.burnt_out:
        tr.boosting = False
        return
    sigma_v = math.sqrt(max(float(np.trace(tr.p[3:, 3:])) / 3.0, 0.0))
    if sigma_v < 150.0:
        tr.history.append((tr.t_ns, v.copy()))
    while tr.history and tr.t_ns - tr.history[0][0] > BOOST_WINDOW_S * NS:
        tr.history.pop(0)
    span = (tr.history[-1][0] - tr.history[0][0]) / NS if tr.history else 0.0
    thrusting = None  # True: thrust seen; False: thrust ruled out; None: cannot tell
    if span >= 0.75 * BOOST_WINDOW_S and len(tr.history) >= 4:
        # least-squares slope of the velocity history: steadier than its two ends
        ts = np.array([(h[0] - tr.history[0][0]) / NS for h in tr.history])
        vs = np.array([h[1] for h in tr.history])
        tc = ts - ts.mean()
        slope = (tc @ (vs - vs.mean(axis=0))) / float(tc @ tc)
        along = float((slope - _accel(r, v)) @ v) / max(speed, 1.0)
        # the slope's own noise, from the scatter of the velocities about the fitted line
        resid = vs - vs.mean(axis=0) - np.outer(tc, slope)
        slope_sigma = math.sqrt(float(np.sum(resid**2)) / max(1, 3 * (len(ts) - 2)) / float(tc @ tc))
        if along - 2.0 * slope_sigma > BOOST_ACCEL and float(r @ v) > 0.0:
            thrusting = True
        elif along + 2.0 * slope_sigma < BOOST_ACCEL:
            thrusting = False
    if float(r @ v) < 0.0 and tr.phase_known and not plume:
        tr.burnt_out = True  # nothing boosts on the way down
    if plume or thrusting:
        tr.thrust_seen_ns = tr.t_ns
        tr.quiet_since_ns = None
    if tr.burnt_out:
        tr.boosting = False
    elif plume or thrusting:
        tr.boosting = True
        tr.phase_known = True
    elif thrusting is False:
        tr.phase_known = True
        if tr.quiet_since_ns is None:
            tr.quiet_since_ns = tr.t_ns
        # burn-out only once thrust has stayed ruled out for a while
        if not tr.boosting or tr.t_ns - tr.quiet_since_ns >= BURNOUT_QUIET_S * NS:
            tr.boosting = False
            tr.burnt_out = True
    elif tr.boosting and tr.t_ns - tr.thrust_seen_ns > BOOST_HOLD_S * NS:
        tr.boosting = False  # no evidence either way for a while: stop claiming a boost


def _merge(tracks: list[_Track], updated: set[int], t: int, emit, latency_ns: int) -> None:
    """Drop the younger of two tracks that follow one target (two sensors, one missile)."""
    if len(tracks) < 2:
        return
    drop: set[int] = set()
    for a in range(len(tracks)):
        ta = tracks[a]
        if a in drop or t - ta.t_ns > 2 * NS:
            continue
        for b in range(a + 1, len(tracks)):
            tb = tracks[b]
            if b in drop or t - tb.t_ns > 2 * NS or (a not in updated and b not in updated):
                continue
            if float(np.sum((ta.x[:3] - tb.x[:3]) ** 2)) > 2.5e8:  # > ~16 km apart: not one target
                continue
            t_ref = max(ta.t_ns, tb.t_ns)
            xa, pa = _predict(ta.x, ta.p, (t_ref - ta.t_ns) / NS, SIGMA_A_BOOST)
            xb, pb = _predict(tb.x, tb.p, (t_ref - tb.t_ns) / NS, SIGMA_A_BOOST)
            d = xa[:3] - xb[:3]
            if float(d @ np.linalg.solve(pa[:3, :3] + pb[:3, :3], d)) > MERGE_CHI2:
                continue
            dv = xa[3:] - xb[3:]
            if float(dv @ np.linalg.solve(pa[3:, 3:] + pb[3:, 3:], dv)) > MERGE_CHI2:
                continue
            # keep the confirmed, then the longer-lived track
            keep_a = (ta.confirmed, -ta.first_ns, -ta.number) >= (tb.confirmed, -tb.first_ns, -tb.number)
            loser = tb if keep_a else ta
            if loser.last_emit_ns >= 0:
                emit(loser, True, t + latency_ns)
            drop.add(b if keep_a else a)
            if not keep_a:
                break
    if drop:
        tracks[:] = [tr for k, tr in enumerate(tracks) if k not in drop]


def _phase(tr: _Track) -> str:
    if tr.boosting:
        return "BOOST"
    if tr.terminal:
        return "TERMINAL"
    if not tr.burnt_out:
        return "UNKNOWN"
    _, _, alt = ecef_to_geodetic(tr.x[:3])
    vr = float(tr.x[:3] @ tr.x[3:]) / float(np.linalg.norm(tr.x[:3]))
    if vr < 0 and float(alt) < 100e3:
        tr.terminal = True  # latched: a glide that levels off is still the end game
        return "TERMINAL"
    return "MIDCOURSE"


def run_tracker(
    nation: str,
    measurements: list[MeasurementSet],
    latency_s: float,
    confirm_hits: int,
    bias_sigma: dict[str, tuple[float, float, float]] | None = None,
) -> list[NationalTrackUpdate]:
    """National track updates from one nation's measurement sets, sorted by availability.

    ``bias_sigma`` (range m, azimuth deg, elevation deg per radar) is the registration bias the
    nation knows its radars may carry: a consider parameter of the filter (see the module
    docstring), which also keeps two radars of one target inside one track's gate.
    """
    bias_sigma = bias_sigma or {}
    rows_t, rows_z, rows_r, rows_sid, rows_ir, rows_lab = [], [], [], [], [], []
    rows_bias: list = []  # per report: (G, G B, G B G^T) of its radar's bias, or None
    for ms in measurements:
        if len(ms) == 0:
            continue
        if ms.kind == "radar":
            z, g = radar_to_ecef_jacobian(ms)
            r = converted_covariance(g, ms.sigma)
            b = bias_sigma.get(ms.sensor_id)
            if b is None:
                rows_bias.extend([None] * len(ms))
            else:
                bvar = np.array([b[0] ** 2, math.radians(b[1]) ** 2, math.radians(b[2]) ** 2])
                gb = g * bvar[None, None, :]
                gbg = gb @ g.transpose(0, 2, 1)
                rows_bias.extend(zip(g, gb, gbg, strict=True))
        else:
            z, r = ir_to_ecef(ms)
            rows_bias.extend([None] * len(ms))
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
            # cheap reach test before the full prediction: far from every report, skip it
            reach = 20e3 + 3.0 * math.sqrt(float(np.trace(tr.p[:3, :3]))) + 0.5 * SIGMA_A_MANOEUVRE * dt * dt \
                + 3.0 * math.sqrt(float(np.trace(tr.p[3:, 3:]))) * dt
            guess = tr.x[:3] + tr.x[3:] * dt
            if all(float(np.sum((z_all[m] - guess) ** 2)) > reach * reach for m in scan):
                continue
            sig = _sigma_a(tr, dt)
            xp, pp = _predict(tr.x, tr.p, dt, sig)
            cxp = _predict_cross(tr.cx, dt)
            c = cxp.get(str(sid))
            xh = ph = None
            for m in scan:
                s_m = _innovation(pp, c, r_all[m], rows_bias[m])[0]
                d2 = _gate(xp, s_m, z_all[m])
                if d2 <= GATE_CHI2:
                    cands.append((d2 + _log_det(s_m), k, m, False))
                elif sig < SIGMA_A_MANOEUVRE and dt <= MANOEUVRE_GATE_MAX_S:
                    if xh is None:
                        xh, ph = _predict(tr.x, tr.p, dt, SIGMA_A_MANOEUVRE)
                    s_h = _innovation(ph, c, r_all[m], rows_bias[m])[0]
                    d2h = _gate(xh, s_h, z_all[m])
                    if d2h <= GATE_CHI2:
                        cands.append((d2h + _log_det(s_h) + GATE_CHI2, k, m, True))
            preds[k] = (xp, pp, xh, ph, cxp)
        cands.sort(key=lambda c: (c[0], c[1], c[2]))
        used_t, used_m = set(), set()
        for _d2, k, m, hi in cands:
            if k in used_t or m in used_m:
                continue
            used_t.add(k)
            used_m.add(m)
            tr = tracks[k]
            xp, pp, xh, ph, cxp = preds[k]
            if hi:
                xp, pp = xh, ph
            tr.x, tr.p, tr.cx, nis = _update(xp, pp, cxp, str(sid), z_all[m], r_all[m], rows_bias[m])
            _adapt(tr, nis)
            tr.t_ns = t
            tr.hits += 1
            tr.labels[rows_lab[m]] += 1
            tr.sensor_seen[str(sid_all[m])] = t
            if ir_all[m]:
                tr.ir_until_ns = t + 5 * NS
            _update_boost(tr)
            if not tr.confirmed and tr.hits >= confirm_hits:
                tr.confirmed = True
        _merge(tracks, used_t, t, emit, latency_ns)
        for tr in tracks:
            if tr.t_ns == t and tr.confirmed and t - tr.last_emit_ns >= EMIT_INTERVAL_S * NS:
                emit(tr, False, t + latency_ns)
        for m in scan:
            if m in used_m:
                continue
            p0 = np.zeros((6, 6))
            p0[:3, :3] = r_all[m]
            p0[3:, 3:] = np.eye(3) * SIGMA_V_INIT**2
            x0 = np.concatenate([z_all[m], np.zeros(3)])
            tr = _Track(next_number[0], x0, p0, t, t)
            if rows_bias[m] is not None:
                # the first fix carries its radar's bias whole: position error = G b + noise
                p0[:3, :3] += rows_bias[m][2]
                tr.cx[str(sid)] = np.vstack([rows_bias[m][1], np.zeros((3, 3))])
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
    out = [replace(u, track_number=renum[u.track_number]) for u in out]
    out.sort(key=lambda u: (u.available_ns, u.track_number))
    return out
