"""simulate(): truth, each nation's sensor measurements and national tracks for one scenario."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from .model import NATIONS, MeasurementSet, NationalTrackUpdate, Scenario, SimResult, Trajectory
from .sensors import measure, nation_params, sensors_fed_to
from .tracker import run_tracker
from .truth import NS, fly_launch


def build_truth(scenario: Scenario, progress: Callable[[str], None] | None = None) -> dict[str, Trajectory]:
    out = {}
    for m in scenario.missiles:
        if progress:
            progress(f"solving and flying {m.missile_id} ({m.missile_class})")
        out[m.missile_id] = fly_launch(m, scenario.start_ns)
    return out


def simulate(
    scenario: Scenario,
    seed: int = 0,
    nations: Iterable[str] | None = None,
    *,
    progress: Callable[[str], None] | None = None,
    truth: dict[str, Trajectory] | None = None,
) -> SimResult:
    """Fly the scenario and run the requested nations' sensors and trackers (all three if None).

    Each nation's tracker uses its own sensors and those shared with it (``[feeds]`` in
    sims/data/sensors.toml); ``measurements`` holds every sensor some requested nation used.

    Deterministic: the same scenario, seed and nations give an identical result. ``progress``,
    if given, receives a line before each long step. ``truth``, if given, is the scenario's
    ``build_truth`` result (it does not depend on the seed, so Monte-Carlo runs can share it).
    """
    wanted = list(NATIONS) if nations is None else [n for n in NATIONS if n in set(nations)]
    if truth is None:
        truth = build_truth(scenario, progress)
    t0 = scenario.start_ns
    t1 = max(tr.impact_ns for tr in truth.values())
    if scenario.duration_s > 0:
        t1 = max(t1, t0 + int(scenario.duration_s * NS))
    measurements: dict[str, MeasurementSet] = {}
    tracks: dict[str, list[NationalTrackUpdate]] = {}
    for nation in wanted:
        if progress:
            progress(f"{nation}: sensors and national tracker")
        fed = sensors_fed_to(nation, scenario.unavailable_sensors)
        # a sensor shared by two nations measures once: both trackers get the very same reports
        # (its draws depend only on the seed and its id, so this holds when nations run apart)
        for s in fed:
            if s.id not in measurements:
                measurements[s.id] = measure(s, truth, t0, t1, seed)
        sets = [measurements[s.id] for s in fed]
        params = nation_params(nation)
        bias = {s.id: (s.bias_range_m, s.bias_az_deg, s.bias_el_deg) for s in fed if s.kind == "radar"}
        tracks[nation] = run_tracker(nation, sets, params["latency_s"], params["confirm_hits"], bias)
    return SimResult(scenario=scenario, seed=seed, truth=truth, measurements=measurements, national_tracks=tracks)
