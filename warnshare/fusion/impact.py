"""Ground points of a ballistic track: impact with a 95% ellipse (sigma points), launch, ground track.

Impact: the fused state's 12 symmetric sigma points (plus the centre) are flown to the ground
with J2 (drag is not modelled: the prediction is a vacuum ballistic one, which the
converging national tracks correct in the last minutes). The spread of their ground points,
in the local East-North plane, plus a model-error term for the drag and lift the vacuum flight
lacks (``model_error_en``), gives the 2x2 covariance scaled to 95% (chi-square, 2 dof); the
time sigma adds the along-track model error at the arrival's ground speed.

Launch: while a missile boosts, its track is close to constant acceleration from rest, so the
launch is at p - v h / v_up and t - 2 h / v_up (h altitude, v_up vertical speed). Seen only after
burnout, the fused state is flown back to the ground instead (a ballistic extension, which lands
somewhat up-range of the real pad: burnout is not at the ground).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from warnshare import geo
from warnshare.fusion import kernel
from warnshare.fusion.ci import cholesky as _cholesky
from warnshare.fusion.dynamics import fly_to_ground, geodetic, predict_covariance

#: chi-square 2 dof, 95%: the ellipse scale of a 2D Gaussian.
CHI2_2D_95 = 5.991464547107979


@dataclass(frozen=True, slots=True)
class GroundPoint:
    """A predicted ground point: time (ns), place, 95% ellipse and the flown path of the centre."""

    time_ns: int
    lat_deg: float
    lon_deg: float
    semi_major_m: float
    semi_minor_m: float
    orientation_deg: float
    time_sigma_s: float
    apogee_m: float
    #: (k, 3) lat_deg, lon_deg, alt_m along the centre trajectory, for overflight.
    ground_track: NDArray
    #: 2x2 covariance (m^2) of the ground point in local (east, north), for "inside the ellipse".
    cov_en: NDArray

    def contains(self, lat_deg: float, lon_deg: float) -> bool:
        """Whether a point lies inside this 95% ellipse."""
        e, n = _east_north(lat_deg, lon_deg, self.lat_deg, self.lon_deg)
        (a, b), (c, d) = self.cov_en.tolist()
        det = a * d - b * c
        if not det > 0.0:
            return False
        # e, n against the inverse of the 2x2 covariance, written out
        return (d * e * e - (b + c) * e * n + a * n * n) / det <= CHI2_2D_95


def _ecef(lat_deg: float, lon_deg: float) -> tuple[float, float, float]:
    """``geo.geodetic_to_ecef`` of one point on the ellipsoid, in scalars."""
    lat, lon = math.radians(lat_deg), math.radians(lon_deg)
    sl = math.sin(lat)
    n = geo.WGS84_A / math.sqrt(1.0 - geo.WGS84_E2 * sl * sl)
    cl = math.cos(lat)
    return n * cl * math.cos(lon), n * cl * math.sin(lon), n * (1.0 - geo.WGS84_E2) * sl


def _en(ecef: NDArray, lat0_deg: float, lon0_deg: float) -> NDArray:
    """East and north (k, 2) of ECEF points (k, 3) from a ground origin (``geo.ecef_to_enu``
    with the origin and rotation in scalars: numpy on one point costs more than on many)."""
    x0, y0, z0 = _ecef(lat0_deg, lon0_deg)
    lat, lon = math.radians(lat0_deg), math.radians(lon0_deg)
    sl, cl, so, co = math.sin(lat), math.cos(lat), math.sin(lon), math.cos(lon)
    rot = np.array([[-so, -sl * co], [co, -sl * so], [0.0, cl]])
    return np.dot(ecef - np.array([x0, y0, z0]), rot)


def _east_north(lat_deg: float, lon_deg: float, lat0_deg: float, lon0_deg: float) -> tuple[float, float]:
    """East and north (m) of a ground point from a ground origin (``geo.ecef_to_enu``, scalars)."""
    x, y, z = _ecef(lat_deg, lon_deg)
    x0, y0, z0 = _ecef(lat0_deg, lon0_deg)
    dx, dy, dz = x - x0, y - y0, z - z0
    lat, lon = math.radians(lat0_deg), math.radians(lon0_deg)
    sl, cl, so, co = math.sin(lat), math.cos(lat), math.sin(lon), math.cos(lon)
    return -so * dx + co * dy, -sl * co * dx - sl * so * dy + cl * dz


def sigma_points(x: NDArray, p: NDArray) -> NDArray:
    """Centre plus the 12 symmetric sigma points x +- sqrt(6) L e_i (equal weights 1/12)."""
    chol = _cholesky(p)
    if not math.isfinite(float(np.add.reduce(chol, axis=None))):
        # not positive definite (round-off): the square root from the eigen-decomposition
        w, v = np.linalg.eigh(0.5 * (p + p.T))
        chol = v * np.sqrt(np.clip(w, 0.0, None))
    d = math.sqrt(6.0) * chol.T
    return np.concatenate([x[None, :], x[None, :] + d, x[None, :] - d], axis=0)


def fly_state(x: NDArray, p: NDArray, dt: float, q_accel: float) -> tuple[NDArray, NDArray]:
    """A ballistic state and its covariance moved by ``dt`` seconds through the gravity field
    (J2, rotating frame): the sigma points flown (``kernel.fly_points``: RK4 in 5 s steps,
    compiled), the covariance their spread about the flown centre, plus white-acceleration
    noise ``q_accel``. For spans of minutes, where the constant-velocity transition of
    ``dynamics.predict_covariance`` misses how gravity shears the errors: 400 states flown 17
    minutes had an average NEES of 64 against it, 5.9 against this
    (``tests/test_fusion_impact.py``). A 10-minute flight takes ~0.2 ms (8.6 ms with numpy
    RK4 in 20 s steps, on the same machine)."""
    if dt == 0.0:
        return x, p
    pts = kernel.fly_points(sigma_points(x, p), dt)
    spread = pts[1:] - pts[0]
    cov = spread.T @ spread / 12.0 + predict_covariance(np.zeros((6, 6)), dt, q_accel)
    return pts[0], 0.5 * (cov + cov.T)


def predict_impact(x: NDArray, p: NDArray, tov_ns: int, max_time_s: float) -> GroundPoint | None:
    """Impact of the fused state (x, p) valid at ``tov_ns``; None if it does not come down in time."""
    pts = sigma_points(x, p)
    t_hit, s_hit, apogee, path = fly_to_ground(pts, max_time_s=max_time_s, record_first=True)
    if not math.isfinite(t_hit[0]):
        return None
    lat0, lon0, _ = geodetic(*s_hit[0, :3])
    ok = np.isfinite(t_hit[1:])
    k = int(np.count_nonzero(ok))
    if k < 6:
        return None
    en = _en(s_hit[1:][ok, :3], lat0, lon0)
    cov = en.T @ en / k
    dt = t_hit[1:][ok] - t_hit[0]
    lat, lon, alt = geo.ecef_to_geodetic(path)
    track = np.stack([lat, lon, alt], axis=1)
    model, along_m = model_error_en(path, lat0, lon0, alt, x)
    cov = cov + model
    # the along-track model error in time. A glide covers its last stretch R in about 2R/v (its
    # speed falls as the square root of the energy left) and drag slows it further, so it is
    # flown at a third of the vacuum arrival's speed over the ground: at that speed, the
    # simulator's KN-23 (which arrives ~155 s after its vacuum arc) is inside 1.96 sigma in time
    # from every state (at the full speed: 0-63%). The time stays the vacuum arc's, the early
    # side: a warning given too early costs less than one given too late.
    vh = s_hit[0, 3:]
    vh = vh - (vh @ s_hit[0, :3]) / (s_hit[0, :3] @ s_hit[0, :3]) * s_hit[0, :3]
    speed_h = math.sqrt(float(vh @ vh))
    t_model = 3.0 * along_m / speed_h if speed_h > 1.0 else 0.0
    tsig = math.sqrt(float(np.dot(dt, dt)) / k + t_model * t_model)
    ellipse = ellipse_95(cov)
    return GroundPoint(
        time_ns=tov_ns + int(round(float(t_hit[0]) * 1e9)),
        lat_deg=lat0,
        lon_deg=lon0,
        semi_major_m=ellipse[0],
        semi_minor_m=ellipse[1],
        orientation_deg=ellipse[2],
        time_sigma_s=tsig,
        apogee_m=float(apogee[0]),
        ground_track=track,
        cov_en=cov + np.eye(2) * 1.0,
    )


#: Model error of the vacuum prediction in the atmosphere. Drag shortens the flight, a
#: quasi-ballistic body's pull-up glide (KN-23) stretches it, a banked glide bends it. Its
#: along-track standard deviation is the larger of
#: - ALONG_FRACTION of the horizontal vacuum path still to fly below ATMOSPHERE_M, and
#: - GLIDE_FRACTION of the state's energy height h + v^2 / 2g, if the vacuum arc enters the
#:   air dense enough to pull up in (below GLIDE_ALT_M) no steeper than GLIDE_MAX_DIVE_DEG: a
#:   lifting body has L/D energy heights of glide ahead, and from a shallow arc (a depressed
#:   trajectory, a glide under way) the vacuum flight falls within a minute and understates what
#:   is left by up to 0.7 energy heights on the simulator's KN-23. An arc that dives steeply
#:   into that air (a minimum-energy SRBM after its apogee) cannot pull up into a long glide:
#:   the path term alone applies.
#: Across track: CROSS_FRACTION / ALONG_FRACTION of the along-track figure. Calibrated on the
#: simulator's KN-23 and KN-25 flights (docs/FUSION.md): honest but wide while a glide may be ahead.
ALONG_FRACTION = 0.25
CROSS_FRACTION = 0.05
ATMOSPHERE_M = 120_000.0
GLIDE_FRACTION = 0.3
GLIDE_ALT_M = 50_000.0
GLIDE_MAX_DIVE_DEG = 15.0
_TAN_DIVE = math.tan(math.radians(GLIDE_MAX_DIVE_DEG))
_G0 = 9.80665


def energy_height_m(x: NDArray) -> float:
    """h + v^2 / 2g of a state in the atmosphere whose vacuum arc enters the glide band no
    steeper than ``GLIDE_MAX_DIVE_DEG``; 0 otherwise (m)."""
    px, py, pz, vx, vy, vz = (float(c) for c in x[:6])
    h = geodetic(px, py, pz)[2]
    if not 0.0 < h < ATMOSPHERE_M:
        return 0.0
    v2 = vx * vx + vy * vy + vz * vz
    r = math.sqrt(px * px + py * py + pz * pz)
    # vertical speed along the geocentric radius (within a fraction of a degree of the normal)
    v_up = (px * vx + py * vy + pz * vz) / r
    vh2 = max(v2 - v_up * v_up, 0.0)
    # the descent's vertical speed at min(h, GLIDE_ALT_M) on the same arc, gravity less the
    # centripetal relief of the horizontal speed (flat Earth otherwise): an arc climbing now
    # comes down through its own altitude as steeply as it climbs
    g = max(_G0 - vh2 / r, 0.0)
    v_down2 = v_up * v_up + 2.0 * g * max(h - GLIDE_ALT_M, 0.0)
    if v_down2 > _TAN_DIVE * _TAN_DIVE * vh2:
        return 0.0
    return h + v2 / (2.0 * _G0)


def model_error_en(
    path: NDArray, lat0: float, lon0: float, alt: NDArray, x: NDArray | None = None
) -> tuple[NDArray, float]:
    """2x2 (east, north) covariance of the prediction's model error at the impact point, and its
    along-track standard deviation (m); ``x`` the state flown (its energy height), if given."""
    if len(path) < 2:
        return np.zeros((2, 2)), 0.0
    en = _en(path, lat0, lon0)
    step = en[1:] - en[:-1]
    seg = np.sqrt(np.add.reduce(step * step, axis=1))
    low = (alt[:-1] < ATMOSPHERE_M) | (alt[1:] < ATMOSPHERE_M)
    sa = ALONG_FRACTION * float(np.add.reduce(seg[low]))
    if x is not None:
        sa = max(sa, GLIDE_FRACTION * energy_height_m(x))
    if sa <= 0.0:
        return np.zeros((2, 2)), 0.0
    de, dn = (en[-1] - en[-2] if seg[-1] > 0 else en[-1] - en[0]).tolist()
    n = math.hypot(de, dn)
    if n == 0.0:
        return np.eye(2) * sa * sa, sa
    ue, un = de / n, dn / n
    sc = sa * (CROSS_FRACTION / ALONG_FRACTION)
    # along-track variance on u = (ue, un), across-track on v = (-un, ue)
    a2, c2 = sa * sa, sc * sc
    return np.array([[a2 * ue * ue + c2 * un * un, (a2 - c2) * ue * un],
                     [(a2 - c2) * ue * un, a2 * un * un + c2 * ue * ue]]), sa


def ellipse_95(cov_en: NDArray) -> tuple[float, float, float]:
    """(semi-major m, semi-minor m, orientation deg clockwise from north in [0, 180)) at 95%.

    The 2x2 symmetric eigen-decomposition in closed form (numpy's costs tens of microseconds
    of call overhead): eigenvalues m +- r, the major axis at half the angle of (2 c_en, c_ee - c_nn)
    from north."""
    (ee, en1), (en2, nn) = cov_en.tolist()
    en = 0.5 * (en1 + en2)
    mean = 0.5 * (ee + nn)
    r = math.hypot(0.5 * (ee - nn), en)
    big, small = max(mean + r, 0.0), max(mean - r, 0.0)
    # direction (east, north) of the major axis; a circle has none: north
    orient = math.degrees(0.5 * math.atan2(2.0 * en, ee - nn)) if r > 0.0 else 0.0
    # atan2 gives the angle from east counter-clockwise; clockwise from north is 90 minus it
    orient = (90.0 - orient) % 180.0
    if orient >= 180.0:
        orient = 0.0
    return math.sqrt(CHI2_2D_95 * big), math.sqrt(CHI2_2D_95 * small), orient


def launch_from_boost(x: NDArray, p: NDArray, tov_ns: int) -> tuple[int, float, float, float] | None:
    """(time_ns, lat, lon, radius_m) of the launch from a boosting state, constant-acceleration model."""
    lat, lon, alt = geodetic(float(x[0]), float(x[1]), float(x[2]))
    up = geo.enu_rotation(lat, lon)[2]
    v = x[3:]
    v_up = float(up @ v)
    if v_up < 50.0 or alt < 0.0:
        t_since = 0.0
        ground = x[:3]
    else:
        t_since = 2.0 * alt / v_up
        ground = x[:3] - v * (alt / v_up)
    glat, glon, _ = geodetic(float(ground[0]), float(ground[1]), float(ground[2]))
    pos_sigma = math.sqrt(max(float(np.trace(p[:3, :3])), 0.0))
    # The constant-acceleration model is rough: allow a tenth of the distance flown.
    radius = 2.45 * pos_sigma + 0.1 * float(np.linalg.norm(x[:3] - ground)) + 1000.0
    return tov_ns - int(round(t_since * 1e9)), glat, glon, radius


def launch_from_ballistic(x: NDArray, tov_ns: int, max_time_s: float) -> tuple[int, float, float] | None:
    """(time_ns, lat, lon) where the ballistic arc through x meets the ground going back in time."""
    t_hit, s_hit, _, _ = fly_to_ground(x[None, :], forward=False, max_time_s=max_time_s)
    if not math.isfinite(t_hit[0]):
        return None
    lat, lon, _ = geodetic(*s_hit[0, :3])
    return tov_ns + int(round(float(t_hit[0]) * 1e9)), lat, lon
