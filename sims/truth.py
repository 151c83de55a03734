"""Truth: fly each launch of a scenario through the trajectory solver and sample it every second."""

from __future__ import annotations

import numpy as np

from warnshare.geo import great_circle_distance_m, initial_bearing_deg

from .catalogue import missile_class
from .flight import Steering, fly, resample
from .model import LaunchSpec, Trajectory
from .solver import aim, profile_apogee_m

NS = 1_000_000_000


def launch_geometry(spec: LaunchSpec) -> tuple[float, float]:
    """(azimuth_deg, range_m) a launch asks for."""
    if spec.azimuth_deg is not None:
        az = spec.azimuth_deg
    else:
        az = initial_bearing_deg(spec.launch_lat_deg, spec.launch_lon_deg, spec.aim_lat_deg, spec.aim_lon_deg)
    if spec.range_m is not None:
        rng = spec.range_m
    else:
        rng = great_circle_distance_m(spec.launch_lat_deg, spec.launch_lon_deg, spec.aim_lat_deg, spec.aim_lon_deg)
    return az, rng


def fly_launch(spec: LaunchSpec, start_ns: int) -> Trajectory:
    """Solve and fly one launch; times are UTC ns from the scenario's start."""
    mc = missile_class(spec.missile_class)
    az, rng = launch_geometry(spec)
    apogee = spec.apogee_m
    if apogee is None:
        apogee = profile_apogee_m(spec.profile or mc.profile, rng)
    bank = spec.bank_deg or 0.0
    sol = aim(mc, spec.launch_lat_deg, spec.launch_lon_deg, apogee, rng, az, spec.launch_alt_m, bank)
    raw = sol.flight
    if spec.failure_s is not None:
        st = sol.steering
        raw = fly(mc, spec.launch_lat_deg, spec.launch_lon_deg,
                  Steering(st.azimuth_deg, st.pitch_final_deg, st.cutoff_fraction, st.bank_deg, spec.failure_s),
                  spec.launch_alt_m)
    t, pos, vel, thr = resample(raw, 1.0)
    launch_ns = start_ns + int(round(spec.launch_time_s * NS))
    times = launch_ns + np.round(t * NS).astype(np.int64)
    return Trajectory(
        missile_id=spec.missile_id,
        missile_class=mc.name,
        times_ns=times,
        position_ecef_m=pos,
        velocity_ecef_mps=vel,
        thrusting=thr,
        launch_lat_deg=spec.launch_lat_deg,
        launch_lon_deg=spec.launch_lon_deg,
        impact_lat_deg=raw.impact_lat_deg,
        impact_lon_deg=raw.impact_lon_deg,
        launch_ns=launch_ns,
        impact_ns=int(times[-1]),
        apogee_m=raw.apogee_m,
        range_m=raw.range_m,
        flight_time_s=raw.flight_time_s,
        burnout_ns=launch_ns + int(round(raw.burnout_s * NS)),
        breakup_ns=None if raw.breakup_s is None else launch_ns + int(round(raw.breakup_s * NS)),
        target_apogee_m=apogee,
        target_range_m=rng,
        published_flight_time_s=spec.published_flight_time_s,
    )


__all__ = ["fly_launch", "launch_geometry"]
