"""Point-mass flight of a missile over the rotating WGS84 Earth.

Gravity with J2, Coriolis and centrifugal terms (the state is ECEF), multi-stage boost with
thrust, mass flow and a pitch programme, drag in the 1976 standard atmosphere on the way up and
on re-entry, an optional lifting glide with a banked lateral manoeuvre, and break-up in boost.

Integrated with classical RK4 on steps that land exactly on every burn boundary and shrink in the
atmosphere; written in plain floats because numpy's per-call cost dominates on 6-element states
and the trajectory solver flies each missile a dozen times.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from warnshare.geo import (
    WGS84_A,
    WGS84_B,
    WGS84_E2,
    WGS84_GM,
    WGS84_J2,
    WGS84_OMEGA,
    ecef_to_geodetic,
    enu_rotation,
    geodetic_to_ecef,
    great_circle_distance_m,
)

from .atmosphere import G0, drag_coefficient, properties

ATMOSPHERE_TOP_M = 120e3  # above this, drag is below a micro-g for any body here
DEBRIS_BETA_KG_M2 = 600.0  # tumbling boost debris: light and draggy


@dataclass(frozen=True)
class Stage:
    thrust_vac_n: float
    isp_vac_s: float
    propellant_kg: float
    dry_kg: float
    exit_area_m2: float = 0.0
    coast_after_s: float = 0.0  # gap before the next stage lights

    @property
    def mass_flow_kgps(self) -> float:
        return self.thrust_vac_n / (self.isp_vac_s * G0)

    @property
    def burn_time_s(self) -> float:
        return self.propellant_kg / self.mass_flow_kgps


@dataclass(frozen=True)
class GlideSpec:
    """A lifting re-entry body: pulls up below ``pullup_alt_m`` on the way down and glides
    level at up to ``lift_to_drag`` until it slows to ``end_speed_mps``, then dives."""

    lift_to_drag: float
    pullup_alt_m: float
    end_speed_mps: float
    bank_after_s: float = 60.0  # glide seconds before a commanded bank starts


@dataclass(frozen=True)
class MissileClass:
    name: str
    stages: tuple[Stage, ...]
    payload_kg: float
    diameter_m: float
    rv_beta_kg_m2: float  # ballistic coefficient m/(Cd A) of what re-enters
    separates: bool = True  # False: the spent last stage re-enters with the warhead
    vertical_rise_s: float = 8.0
    pitch_fraction: float = 0.5  # share of total burn time spent pitching over
    glide: GlideSpec | None = None
    profile: str = "minimum-energy"
    nominal_pitch_deg: float = 30.0
    nominal_cutoff: float = 1.0
    reference_flight: str = ""
    published_range_m: float | None = None
    published_apogee_m: float | None = None
    rcs_boost_m2: float = 5.0
    rcs_rv_m2: float = 0.05
    note: str = ""

    @property
    def reference_area_m2(self) -> float:
        return math.pi * self.diameter_m**2 / 4.0

    @property
    def launch_mass_kg(self) -> float:
        return self.payload_kg + sum(s.propellant_kg + s.dry_kg for s in self.stages)


@dataclass(frozen=True)
class Steering:
    """How one flight is flown: the free parameters the trajectory solver adjusts."""

    azimuth_deg: float
    pitch_final_deg: float  # thrust elevation above the local horizontal after the pitch-over
    cutoff_fraction: float = 1.0  # share of the last stage's propellant burned (energy management)
    bank_deg: float = 0.0
    breakup_s: float | None = None


@dataclass
class RawFlight:
    """Integrator output at its own steps, seconds after launch."""

    t: np.ndarray
    pos: np.ndarray
    vel: np.ndarray
    thrusting: np.ndarray
    burnout_s: float
    breakup_s: float | None
    apogee_m: float
    impact_lat_deg: float
    impact_lon_deg: float
    range_m: float
    flight_time_s: float
    launch_lat_deg: float
    launch_lon_deg: float


def _altitude(x: float, y: float, z: float) -> float:
    """Height above the ellipsoid along the geocentric radius (within metres of geodetic here)."""
    r2 = x * x + y * y + z * z
    r = math.sqrt(r2)
    return r - WGS84_B / math.sqrt(1.0 - WGS84_E2 * (x * x + y * y) / r2)


def _segments(missile: MissileClass, steering: Steering) -> list[tuple[float, float, float, float, float, float]]:
    """Burns as (t_start, t_end, thrust_vac_n, mass_flow, mass_at_start, exit_area)."""
    out = []
    t = 0.0
    above = [sum(s.propellant_kg + s.dry_kg for s in missile.stages[i + 1:]) for i in range(len(missile.stages))]
    for i, st in enumerate(missile.stages):
        last = i == len(missile.stages) - 1
        frac = min(1.0, max(0.0, steering.cutoff_fraction)) if last else 1.0
        mdot = st.mass_flow_kgps
        burn = st.burn_time_s * frac
        m0 = missile.payload_kg + st.propellant_kg + st.dry_kg + above[i]
        out.append((t, t + burn, st.thrust_vac_n, mdot, m0, st.exit_area_m2))
        t += burn + (st.coast_after_s if not last else 0.0)
    return out


def fly(
    missile: MissileClass,
    launch_lat_deg: float,
    launch_lon_deg: float,
    steering: Steering,
    launch_alt_m: float = 0.0,
    coarse: bool = False,
    max_time_s: float = 10800.0,
) -> RawFlight:
    """Fly one missile from launch to impact (or ``max_time_s``)."""
    segs = _segments(missile, steering)
    burnout = segs[-1][1]
    if steering.breakup_s is not None:
        burnout = min(burnout, steering.breakup_s)
    t_vert = missile.vertical_rise_s
    t_pitch_end = t_vert + missile.pitch_fraction * burnout if burnout > t_vert else t_vert + 1.0
    sin_pf = math.sin(math.radians(steering.pitch_final_deg))
    cos_pf = math.cos(math.radians(steering.pitch_final_deg))

    r0 = geodetic_to_ecef(launch_lat_deg, launch_lon_deg, launch_alt_m)
    enu = enu_rotation(launch_lat_deg, launch_lon_deg)
    az = math.radians(steering.azimuth_deg)
    d0 = math.sin(az) * enu[0] + math.cos(az) * enu[1]
    up0 = enu[2]
    # the boost stays in the ECEF plane of the launch site and its initial heading
    n = np.cross(r0 / np.linalg.norm(r0), d0)
    nx, ny, nz = (float(c) for c in n / np.linalg.norm(n))
    ux0, uy0, uz0 = (float(c) for c in up0)

    area = missile.reference_area_m2
    rv_beta = missile.rv_beta_kg_m2
    body_mass_after = missile.payload_kg + (0.0 if missile.separates else missile.stages[-1].dry_kg)
    if not missile.separates:
        st = missile.stages[-1]
        body_mass_after += st.propellant_kg * (1.0 - min(1.0, steering.cutoff_fraction))
    glide = missile.glide
    bank = math.radians(steering.bank_deg)
    cos_b, sin_b = math.cos(bank), math.sin(bank)
    w = WGS84_OMEGA
    w2 = w * w
    k_j2 = 1.5 * WGS84_J2 * WGS84_A * WGS84_A
    gm = WGS84_GM
    breakup = steering.breakup_s
    # glide state machine: 0 not yet, 1 gliding since glide_t0, 2 finished
    glide_state = [0, 0.0]

    def accel(t: float, x: float, y: float, z: float, vx: float, vy: float, vz: float) -> tuple[float, float, float]:
        r2 = x * x + y * y + z * z
        r = math.sqrt(r2)
        kk = -gm / (r2 * r)
        f = k_j2 / r2
        zr2 = 5.0 * z * z / r2
        ax = kk * x * (1.0 + f * (1.0 - zr2)) + 2.0 * w * vy + w2 * x
        ay = kk * y * (1.0 + f * (1.0 - zr2)) - 2.0 * w * vx + w2 * y
        az_ = kk * z * (1.0 + f * (3.0 - zr2))
        h = r - WGS84_B / math.sqrt(1.0 - WGS84_E2 * (x * x + y * y) / r2)
        broken = breakup is not None and t >= breakup
        seg = None
        if not broken:
            for s in segs:
                if s[0] <= t < s[1]:
                    seg = s
                    break
        v2 = vx * vx + vy * vy + vz * vz
        rho = p = 0.0
        a_sound = 300.0
        if h < ATMOSPHERE_TOP_M:
            rho, p, a_sound = properties(h)
        if seg is not None:
            t0, _, thrust, mdot, m0, ae = seg
            m = m0 - mdot * (t - t0)
            fmag = max(0.0, thrust - p * ae) / m
            ux, uy, uz = x / r, y / r, z / r
            if t < t_vert:
                dx, dy, dz = ux0, uy0, uz0
            else:
                # horizontal heading: in the launch plane, perpendicular to local up
                hx, hy, hz = ny * uz - nz * uy, nz * ux - nx * uz, nx * uy - ny * ux
                hn = math.sqrt(hx * hx + hy * hy + hz * hz)
                hx, hy, hz = hx / hn, hy / hn, hz / hn
                if t < t_pitch_end:
                    frac = (t - t_vert) / (t_pitch_end - t_vert)
                    ang = math.pi / 2 - frac * (math.pi / 2 - math.asin(sin_pf))
                    sa, ca = math.sin(ang), math.cos(ang)
                else:
                    sa, ca = sin_pf, cos_pf
                dx, dy, dz = ca * hx + sa * ux, ca * hy + sa * uy, ca * hz + sa * uz
            ax += fmag * dx
            ay += fmag * dy
            az_ += fmag * dz
            if rho > 0.0 and v2 > 0.0:
                v = math.sqrt(v2)
                dmag = 0.5 * rho * v2 * drag_coefficient(v / a_sound) * area / m
                ax -= dmag * vx / v
                ay -= dmag * vy / v
                az_ -= dmag * vz / v
            return ax, ay, az_
        if rho > 0.0 and v2 > 0.0:
            v = math.sqrt(v2)
            if broken:
                beta = DEBRIS_BETA_KG_M2
            elif missile.separates:
                beta = rv_beta
            else:
                beta = body_mass_after / (drag_coefficient(v / a_sound) * area)
            dmag = 0.5 * rho * v2 / beta
            ax -= dmag * vx / v
            ay -= dmag * vy / v
            az_ -= dmag * vz / v
            if glide is not None and not broken and glide_state[0] == 1:
                # lift toward local up, normal to velocity, rolled by the bank angle
                ux, uy, uz = x / r, y / r, z / r
                vux, vuy, vuz = vx / v, vy / v, vz / v
                dot = ux * vux + uy * vuy + uz * vuz
                lx, ly, lz = ux - dot * vux, uy - dot * vuy, uz - dot * vuz
                ln = math.sqrt(lx * lx + ly * ly + lz * lz)
                lx, ly, lz = lx / ln, ly / ln, lz / ln
                gamma = math.asin(max(-1.0, min(1.0, dot)))
                g_loc = gm / r2
                cb, sb = (cos_b, sin_b) if t - glide_state[1] >= glide.bank_after_s else (1.0, 0.0)
                # lift needed to hold level flight, plus a term that pulls the path angle to 0
                need = (g_loc - v2 / r) * math.cos(gamma) - 0.02 * gamma * v
                need = need / max(cb, 0.2)
                lmag = max(0.0, min(need, glide.lift_to_drag * dmag))
                # side direction: velocity x lift (right of track when banking positive)
                sx, sy, sz = vuy * lz - vuz * ly, vuz * lx - vux * lz, vux * ly - vuy * lx
                ax += lmag * (cb * lx + sb * sx)
                ay += lmag * (cb * ly + sb * sy)
                az_ += lmag * (cb * lz + sb * sz)
        return ax, ay, az_

    # initial state: at rest on the rotating Earth
    x, y, z = (float(c) for c in r0)
    vx = vy = vz = 0.0
    t = 0.0
    boundaries = sorted({s[0] for s in segs} | {s[1] for s in segs} | ({breakup} if breakup else set()) | {t_vert, t_pitch_end})
    ts = [0.0]
    ps = [(x, y, z)]
    vs = [(0.0, 0.0, 0.0)]
    thr = [True]
    apogee = _altitude(x, y, z)
    dt_boost = 1.0 if coarse else 0.5
    dt_vac = 20.0 if coarse else 10.0
    impact = False
    while t < max_time_s:
        h = _altitude(x, y, z)
        spd = math.sqrt(vx * vx + vy * vy + vz * vz)
        if t < burnout:
            dt = dt_boost
        elif h > ATMOSPHERE_TOP_M + 10e3:
            # big steps in vacuum, but arrive at the atmosphere's edge on a short one
            dt = min(dt_vac, max(1.0, (h - ATMOSPHERE_TOP_M) / max(spd, 1.0)))
        else:
            dt = min(dt_boost, max(0.05, (2000.0 if coarse else 400.0) / max(spd, 1.0)))
        nb = next((b for b in boundaries if b > t + 1e-9), None)
        if nb is not None and t + dt > nb:
            dt = nb - t
        # glide engages on the way down below the pull-up altitude
        if glide is not None and glide_state[0] == 0 and t > burnout:
            vr = (x * vx + y * vy + z * vz) / math.sqrt(x * x + y * y + z * z)
            if vr < 0 and h < glide.pullup_alt_m:
                glide_state[0], glide_state[1] = 1, t
        elif glide_state[0] == 1 and spd < glide.end_speed_mps:
            glide_state[0] = 2
        tm = t + 0.5 * dt
        a1 = accel(t, x, y, z, vx, vy, vz)
        x2, y2, z2 = x + 0.5 * dt * vx, y + 0.5 * dt * vy, z + 0.5 * dt * vz
        vx2, vy2, vz2 = vx + 0.5 * dt * a1[0], vy + 0.5 * dt * a1[1], vz + 0.5 * dt * a1[2]
        a2 = accel(tm, x2, y2, z2, vx2, vy2, vz2)
        x3, y3, z3 = x + 0.5 * dt * vx2, y + 0.5 * dt * vy2, z + 0.5 * dt * vz2
        vx3, vy3, vz3 = vx + 0.5 * dt * a2[0], vy + 0.5 * dt * a2[1], vz + 0.5 * dt * a2[2]
        a3 = accel(tm, x3, y3, z3, vx3, vy3, vz3)
        x4, y4, z4 = x + dt * vx3, y + dt * vy3, z + dt * vz3
        vx4, vy4, vz4 = vx + dt * a3[0], vy + dt * a3[1], vz + dt * a3[2]
        # the last stage's thrust is evaluated at the step's end inside the burn window
        a4 = accel(t + dt - (1e-9 if t + dt <= burnout else 0.0), x4, y4, z4, vx4, vy4, vz4)
        c = dt / 6.0
        nx_ = x + c * (vx + 2 * vx2 + 2 * vx3 + vx4)
        ny_ = y + c * (vy + 2 * vy2 + 2 * vy3 + vy4)
        nz_ = z + c * (vz + 2 * vz2 + 2 * vz3 + vz4)
        vx += c * (a1[0] + 2 * a2[0] + 2 * a3[0] + a4[0])
        vy += c * (a1[1] + 2 * a2[1] + 2 * a3[1] + a4[1])
        vz += c * (a1[2] + 2 * a2[2] + 2 * a3[2] + a4[2])
        x, y, z = nx_, ny_, nz_
        t += dt
        hn = _altitude(x, y, z)
        if hn > apogee:
            apogee = hn
        if hn < 0.0 and t > 1.0:
            # back up to the ground by linear interpolation on height
            f = h / (h - hn)
            px, py, pz = ps[-1]
            pvx, pvy, pvz = vs[-1]
            t = ts[-1] + f * (t - ts[-1])
            x, y, z = px + f * (x - px), py + f * (y - py), pz + f * (z - pz)
            vx, vy, vz = pvx + f * (vx - pvx), pvy + f * (vy - pvy), pvz + f * (vz - pvz)
            impact = True
        ts.append(t)
        ps.append((x, y, z))
        vs.append((vx, vy, vz))
        thr.append(t < burnout - 1e-9)
        if impact:
            break
    pos = np.array(ps)
    lat, lon, _ = ecef_to_geodetic(pos[-1])
    lat, lon = float(lat), float(lon)
    return RawFlight(
        t=np.array(ts),
        pos=pos,
        vel=np.array(vs),
        thrusting=np.array(thr),
        burnout_s=burnout,
        breakup_s=breakup,
        apogee_m=apogee,
        impact_lat_deg=lat,
        impact_lon_deg=lon,
        range_m=great_circle_distance_m(launch_lat_deg, launch_lon_deg, lat, lon),
        flight_time_s=t,
        launch_lat_deg=launch_lat_deg,
        launch_lon_deg=launch_lon_deg,
    )


def resample(raw: RawFlight, step_s: float = 1.0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(t, pos, vel, thrusting) on a uniform grid plus the exact impact sample, by cubic Hermite."""
    grid = np.arange(0.0, raw.t[-1], step_s)
    grid = np.append(grid, raw.t[-1]) if grid[-1] < raw.t[-1] else grid
    ts = raw.t
    i = np.clip(np.searchsorted(ts, grid, side="right") - 1, 0, len(ts) - 2)
    h = (ts[i + 1] - ts[i])
    s = ((grid - ts[i]) / h)[:, None]
    hh = h[:, None]
    p0, p1, v0, v1 = raw.pos[i], raw.pos[i + 1], raw.vel[i], raw.vel[i + 1]
    s2, s3 = s * s, s * s * s
    pos = (2 * s3 - 3 * s2 + 1) * p0 + (s3 - 2 * s2 + s) * hh * v0 + (-2 * s3 + 3 * s2) * p1 + (s3 - s2) * hh * v1
    # velocity by linear blend: the Hermite derivative misbehaves across thrust discontinuities
    vel = (1 - s) * v0 + s * v1
    return grid, pos, vel, grid < raw.burnout_s
