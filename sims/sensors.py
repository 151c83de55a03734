"""National sensors: which reports each radar and the space infrared layer make of the truth.

Geometry first (horizon and elevation limits, field of regard, range), then a radar-equation
detection draw (Swerling 1), then noise and a registration bias in the sensor's own coordinates,
plus false alarms. Vectorised over each sensor's scan times.
"""

from __future__ import annotations

import math
import tomllib
import zlib
from dataclasses import dataclass
from functools import cache
from importlib import resources

import numpy as np

from warnshare.geo import aer_to_enu, ecef_to_enu, ecef_to_geodetic, enu_to_aer

from .catalogue import missile_class
from .model import MeasurementSet, Trajectory

NS = 1_000_000_000
PFA = 1e-6


@dataclass(frozen=True)
class Sensor:
    id: str
    nation: str
    kind: str
    name: str
    params: dict

    def __getattr__(self, key: str):  # data-file fields read as attributes
        try:
            return self.__dict__["params"][key]
        except KeyError:
            raise AttributeError(key) from None


@cache
def _data() -> dict:
    return tomllib.loads(resources.files("sims").joinpath("data/sensors.toml").read_text())


def nation_params(nation: str) -> dict:
    return dict(_data()["nations"][nation])


@cache
def sensors() -> tuple[Sensor, ...]:
    """Every sensor of the data file, defaults filled in."""
    d = _data()
    out = []
    for s in d["sensor"]:
        p = {**d["defaults"], **s}
        out.append(Sensor(p.pop("id"), p.pop("nation"), p.pop("kind"), p.pop("name"), p))
    return tuple(out)


def sensors_of(nation: str, unavailable: tuple[str, ...] = ()) -> list[Sensor]:
    """The sensors ``nation`` owns (and measures with), less the unavailable ones."""
    return [s for s in sensors() if s.nation == nation and s.id not in unavailable]


def sensor_feeds(sensor_id: str) -> tuple[str, ...]:
    """Nations whose trackers receive ``sensor_id``'s reports: its owner, then the nations the
    data file's ``[feeds]`` table shares it with."""
    owner = next(s.nation for s in sensors() if s.id == sensor_id)
    shared = [n for n, ids in sorted(_data().get("feeds", {}).items()) if sensor_id in ids and n != owner]
    return (owner, *shared)


def sensors_fed_to(nation: str, unavailable: tuple[str, ...] = ()) -> list[Sensor]:
    """The sensors whose reports ``nation``'s tracker uses: its own, then those other nations
    share with it (the same reports, same noise, as their owner's tracker gets)."""
    return [s for s in sensors() if s.id not in unavailable and nation in sensor_feeds(s.id)]


def rng_for(seed: int, *labels: str) -> np.random.Generator:
    """A generator that depends only on the seed and stable labels (never on Python's hash)."""
    return np.random.default_rng([seed & 0xFFFFFFFF, *(zlib.crc32(x.encode()) for x in labels)])


def _scan_times(t0_ns: int, t1_ns: int, update_s: float, phase_s: float) -> np.ndarray:
    step = int(round(update_s * NS))
    first = t0_ns + int(round(phase_s * NS))
    if t1_ns <= first:
        return np.zeros(0, dtype=np.int64)
    return np.arange(first, t1_ns, step, dtype=np.int64)


def radar_visibility(sensor: Sensor, pos_ecef: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(visible, az_deg, el_deg, range_m) of ECEF points from a radar: horizon, elevation limits,
    field of regard and instrumented range. Detection probability is applied separately."""
    enu = ecef_to_enu(pos_ecef, sensor.lat_deg, sensor.lon_deg, sensor.alt_m)
    az, el, rng = enu_to_aer(enu)
    off = (az - sensor.boresight_az_deg + 180.0) % 360.0 - 180.0
    vis = (
        (el >= sensor.min_el_deg)
        & (el <= sensor.max_el_deg)
        & (np.abs(off) <= sensor.half_fov_az_deg)
        & (rng <= sensor.instrumented_range_km * 1e3)
    )
    return vis, az, el, rng


def _radar(sensor: Sensor, truth: dict[str, Trajectory], t0_ns: int, t1_ns: int, seed: int) -> MeasurementSet:
    rng = rng_for(seed, "radar", sensor.id)
    phase = rng.uniform(0.0, sensor.update_s)
    bias = rng.normal(0.0, [sensor.bias_range_m, sensor.bias_az_deg, sensor.bias_el_deg])
    times = _scan_times(t0_ns, t1_ns, sensor.update_s, phase)
    rows_t, rows_v, rows_s, rows_id = [], [], [], []
    r_ref = sensor.max_range_km * 1e3
    for mid in sorted(truth):
        tr = truth[mid]
        sel = times[(times >= tr.launch_ns) & (times <= tr.impact_ns)]
        if len(sel) == 0:
            continue
        pos, _ = tr.state_at(sel)
        vis, az, el, r = radar_visibility(sensor, pos)
        mc = missile_class(tr.missile_class)
        idx = np.clip(((sel - tr.launch_ns) // NS).astype(np.int64), 0, len(tr.thrusting) - 1)
        rcs = np.where(tr.thrusting[idx], mc.rcs_boost_m2, mc.rcs_rv_m2)
        snr = sensor.snr_ref * (rcs / sensor.ref_rcs_m2) * (r_ref / np.maximum(r, 1.0)) ** 4
        pd = np.minimum(sensor.pd_max, PFA ** (1.0 / (1.0 + snr)))
        u = rng.random(len(sel))  # drawn for every scan so a change in one place keeps the rest
        det = vis & (u < pd)
        if not det.any():
            continue
        k = np.sqrt(sensor.snr_ref / snr[det])
        sig = np.stack([
            np.maximum(sensor.range_floor_m, sensor.sigma_range_m * k),
            np.maximum(sensor.angle_floor_deg, sensor.sigma_az_deg * k),
            np.maximum(sensor.angle_floor_deg, sensor.sigma_el_deg * k),
        ], axis=-1)
        true = np.stack([r[det], az[det], el[det]], axis=-1)
        noise = rng.normal(0.0, 1.0, true.shape) * sig
        meas = true + bias + noise
        meas[:, 1] %= 360.0
        rows_t.append(sel[det])
        rows_v.append(meas)
        rows_s.append(sig)
        rows_id.append(np.full(det.sum(), mid, dtype=object))
    # false alarms: a Poisson count per scan, uniform in the field of regard
    n_fa = rng.poisson(sensor.false_alarms_per_scan, len(times))
    if n_fa.sum():
        ft = np.repeat(times, n_fa)
        m = len(ft)
        az = (sensor.boresight_az_deg + rng.uniform(-sensor.half_fov_az_deg, sensor.half_fov_az_deg, m)) % 360.0
        el = rng.uniform(sensor.min_el_deg, min(sensor.max_el_deg, sensor.min_el_deg + 20.0), m)
        r = rng.uniform(50e3, r_ref, m)
        rows_t.append(ft)
        rows_v.append(np.stack([r, az, el], axis=-1))
        rows_s.append(np.tile([sensor.sigma_range_m, sensor.sigma_az_deg, sensor.sigma_el_deg], (m, 1)))
        rows_id.append(np.full(m, "", dtype=object))
    return _pack(sensor, "radar", sensor.lat_deg, sensor.lon_deg, sensor.alt_m, rows_t, rows_v, rows_s, rows_id)


def _space_ir(sensor: Sensor, truth: dict[str, Trajectory], t0_ns: int, t1_ns: int, seed: int) -> MeasurementSet:
    rng = rng_for(seed, "space_ir", sensor.id)
    phase = rng.uniform(0.0, sensor.update_s)
    times = _scan_times(t0_ns, t1_ns, sensor.update_s, phase)
    rows_t, rows_v, rows_s, rows_id = [], [], [], []
    for mid in sorted(truth):
        tr = truth[mid]
        end = tr.burnout_ns if tr.breakup_ns is None else min(tr.burnout_ns, tr.breakup_ns)
        sel = times[(times >= tr.launch_ns) & (times < end)]
        if len(sel) == 0:
            continue
        pos, _ = tr.state_at(sel)
        lat, lon, alt = ecef_to_geodetic(pos)
        u = rng.random(len(sel))
        det = (alt >= sensor.detect_alt_m) & (u < sensor.pd)
        if not det.any():
            continue
        n = int(det.sum())
        sh, sv = sensor.sigma_horizontal_m, sensor.sigma_vertical_m
        e = rng.normal(0.0, sh, n)
        nn = rng.normal(0.0, sh, n)
        up = rng.normal(0.0, sv, n)
        lat_m = lat[det] + np.degrees(nn / 6371e3)
        lon_m = lon[det] + np.degrees(e / (6371e3 * np.cos(np.radians(lat[det]))))
        rows_t.append(sel[det])
        rows_v.append(np.stack([lat_m, lon_m, alt[det] + up], axis=-1))
        rows_s.append(np.tile([sh, sh, sv], (n, 1)))
        rows_id.append(np.full(n, mid, dtype=object))
    return _pack(sensor, "space_ir", math.nan, math.nan, 35786e3, rows_t, rows_v, rows_s, rows_id)


def _pack(sensor: Sensor, kind: str, lat: float, lon: float, alt: float, ts, vs, ss, ids) -> MeasurementSet:
    if ts:
        t = np.concatenate(ts)
        order = np.argsort(t, kind="stable")
        t, v, s, i = t[order], np.concatenate(vs)[order], np.concatenate(ss)[order], np.concatenate(ids)[order]
    else:
        t, v, s, i = np.zeros(0, np.int64), np.zeros((0, 3)), np.zeros((0, 3)), np.zeros(0, dtype=object)
    return MeasurementSet(sensor.id, sensor.nation, kind, lat, lon, alt, t, v, s, i.astype(str))


def measure(sensor: Sensor, truth: dict[str, Trajectory], t0_ns: int, t1_ns: int, seed: int) -> MeasurementSet:
    """Every report ``sensor`` makes of the truth between two UTC ns times."""
    if sensor.kind == "radar":
        return _radar(sensor, truth, t0_ns, t1_ns, seed)
    if sensor.kind == "space_ir":
        return _space_ir(sensor, truth, t0_ns, t1_ns, seed)
    raise ValueError(f"unknown sensor kind {sensor.kind!r}")


def radar_to_ecef(ms: MeasurementSet, bias_sigma: tuple[float, float, float] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Converted radar reports: ECEF positions (N, 3) and their covariances (N, 3, 3), the
    latter widened by a registration-bias sigma (range m, az deg, el deg) when given."""
    pos, jac = radar_to_ecef_jacobian(ms)
    sig = ms.sigma if bias_sigma is None else np.sqrt(ms.sigma**2 + np.asarray(bias_sigma) ** 2)
    return pos, converted_covariance(jac, sig)


def converted_covariance(jac: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """ECEF covariances (N, 3, 3) of converted radar reports from the Jacobians of
    ``radar_to_ecef_jacobian`` and independent (range m, azimuth deg, elevation deg) sigmas (N, 3)."""
    sig = np.array(sigma, dtype=float)
    sig[:, 1:] = np.radians(sig[:, 1:])
    return (jac * sig[:, None, :] ** 2) @ jac.transpose(0, 2, 1)


def radar_to_ecef_jacobian(ms: MeasurementSet) -> tuple[np.ndarray, np.ndarray]:
    """Converted radar reports: ECEF positions (N, 3) and the Jacobians (N, 3, 3) of each
    position with respect to (range m, azimuth rad, elevation rad), which map the sensor's noise
    and its registration bias into ECEF."""
    from warnshare.geo import enu_rotation, geodetic_to_ecef

    r, az, el = ms.values[:, 0], np.radians(ms.values[:, 1]), np.radians(ms.values[:, 2])
    enu = aer_to_enu(ms.values[:, 1], ms.values[:, 2], r)
    rot = enu_rotation(ms.site_lat_deg, ms.site_lon_deg)  # rows E, N, U
    pos = enu @ rot + geodetic_to_ecef(ms.site_lat_deg, ms.site_lon_deg, ms.site_alt_m)
    sa, ca, se, ce = np.sin(az), np.cos(az), np.sin(el), np.cos(el)
    # Jacobian of (e, n, u) = r (ce sa, ce ca, se) with respect to (r, az, el)
    j = np.zeros((len(r), 3, 3))
    j[:, 0, 0], j[:, 0, 1], j[:, 0, 2] = ce * sa, r * ce * ca, -r * se * sa
    j[:, 1, 0], j[:, 1, 1], j[:, 1, 2] = ce * ca, -r * ce * sa, -r * se * ca
    j[:, 2, 0], j[:, 2, 1], j[:, 2, 2] = se, 0.0, r * ce
    return pos, rot.T @ j


def ir_to_ecef(ms: MeasurementSet) -> tuple[np.ndarray, np.ndarray]:
    """Converted space-layer fixes: ECEF positions (N, 3) and covariances (N, 3, 3)."""
    from warnshare.geo import enu_rotation, geodetic_to_ecef

    pos = geodetic_to_ecef(ms.values[:, 0], ms.values[:, 1], ms.values[:, 2])
    covs = np.zeros((len(pos), 3, 3))
    for i in range(len(pos)):
        rot = enu_rotation(ms.values[i, 0], ms.values[i, 1])
        covs[i] = rot.T @ np.diag(ms.sigma[i] ** 2) @ rot
    return pos, covs
