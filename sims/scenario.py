"""Scenario files: TOML launches plus fault overlays, loaded by bundled name or by path.

``load_scenario("hwasong17-2022-11-18+jpn-outage")`` loads a bundled scenario and applies the
bundled fault overlay ``jpn-outage`` to it; see docs/SCENARIOS.md for the format.
"""

from __future__ import annotations

import datetime as dt
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any

from .model import Fault, LaunchSpec, Scenario, ScenarioError

_LAUNCH_KEYS = {
    "id", "class", "site", "lat_deg", "lon_deg", "alt_m", "time_s", "azimuth_deg", "aim_lat_deg",
    "aim_lon_deg", "apogee_km", "range_km", "profile", "failure_s", "bank_deg", "published_flight_time_s",
}


def _bundled_dir():
    return resources.files("sims").joinpath("scenarios")


def list_scenarios() -> list[str]:
    """Names of the bundled scenarios, sorted."""
    return sorted(p.name[:-5] for p in _bundled_dir().iterdir() if p.name.endswith(".toml"))


def _overlays() -> dict[str, dict]:
    return tomllib.loads(resources.files("sims").joinpath("data/faults.toml").read_text())


def list_fault_overlays() -> list[str]:
    """Names of the bundled fault overlays (append ``+NAME`` to a scenario name to apply one)."""
    return sorted(_overlays())


def _parse_time_ns(value: Any, where: str) -> int:
    if isinstance(value, dt.datetime):
        t = value
    elif isinstance(value, str):
        try:
            t = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError as e:
            raise ScenarioError(f"{where}: start {value!r} is not an ISO 8601 date-time") from e
    else:
        raise ScenarioError(f"{where}: start must be a UTC date-time, got {value!r}")
    if t.tzinfo is None:
        raise ScenarioError(f"{where}: start {value!r} needs a time zone (write Z for UTC)")
    d = t - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    return (d.days * 86400 + d.seconds) * 1_000_000_000 + d.microseconds * 1000


def _faults(items: list[dict], where: str) -> list[Fault]:
    out = []
    for i, f in enumerate(items):
        f = dict(f)
        try:
            kind, nation = f.pop("kind"), f.pop("nation")
            start, end = float(f.pop("start_s")), float(f.pop("end_s"))
        except KeyError as e:
            raise ScenarioError(f"{where}: fault {i + 1} lacks {e.args[0]!r}") from None
        out.append(Fault(kind, nation, start, end, f))
    return out


def _launch(d: dict, i: int, where: str) -> LaunchSpec:
    unknown = set(d) - _LAUNCH_KEYS
    if unknown:
        raise ScenarioError(f"{where}: launch {i + 1} has unknown keys {sorted(unknown)}")
    for k in ("class", "lat_deg", "lon_deg"):
        if k not in d:
            raise ScenarioError(f"{where}: launch {i + 1} lacks {k!r}")
    has_aim = "aim_lat_deg" in d and "aim_lon_deg" in d
    if "azimuth_deg" not in d and not has_aim:
        raise ScenarioError(f"{where}: launch {i + 1} needs azimuth_deg or aim_lat_deg + aim_lon_deg")
    if "range_km" not in d and not has_aim:
        raise ScenarioError(f"{where}: launch {i + 1} needs range_km or an aim point")

    def km(key: str) -> float | None:
        return None if key not in d else float(d[key]) * 1e3

    return LaunchSpec(
        missile_id=str(d.get("id", f"M{i + 1}")),
        missile_class=str(d["class"]),
        launch_lat_deg=float(d["lat_deg"]),
        launch_lon_deg=float(d["lon_deg"]),
        launch_alt_m=float(d.get("alt_m", 0.0)),
        launch_time_s=float(d.get("time_s", 0.0)),
        azimuth_deg=None if "azimuth_deg" not in d else float(d["azimuth_deg"]),
        aim_lat_deg=None if not has_aim else float(d["aim_lat_deg"]),
        aim_lon_deg=None if not has_aim else float(d["aim_lon_deg"]),
        apogee_m=km("apogee_km"),
        range_m=km("range_km"),
        profile=d.get("profile"),
        failure_s=None if "failure_s" not in d else float(d["failure_s"]),
        bank_deg=None if "bank_deg" not in d else float(d["bank_deg"]),
        published_flight_time_s=None if "published_flight_time_s" not in d else float(d["published_flight_time_s"]),
        site_name=str(d.get("site", "")),
    )


def parse_scenario(text: str, name: str, source: str = "") -> Scenario:
    """A Scenario from TOML text (``name`` is used when the file has none)."""
    where = source or name
    try:
        d = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ScenarioError(f"{where}: {e}") from e
    if "start" not in d:
        raise ScenarioError(f"{where}: needs start = <UTC date-time of t = 0>")
    launches = d.get("launch", [])
    if not launches:
        raise ScenarioError(f"{where}: needs at least one [[launch]]")
    missiles = tuple(_launch(x, i, where) for i, x in enumerate(launches))
    ids = [m.missile_id for m in missiles]
    if len(set(ids)) != len(ids):
        raise ScenarioError(f"{where}: launch ids repeat: {ids}")
    from .catalogue import missile_class

    for m in missiles:
        missile_class(m.missile_class)
    return Scenario(
        name=str(d.get("name", name)),
        description=str(d.get("description", "")).strip(),
        start_ns=_parse_time_ns(d["start"], where),
        duration_s=float(d.get("duration_s", 0.0)),
        missiles=missiles,
        faults=_faults(d.get("fault", []), where),
        unavailable_sensors=tuple(d.get("unavailable_sensors", [])),
        source=source,
    )


def _read_overlay(name: str) -> list[Fault]:
    p = Path(name)
    if p.suffix == ".toml" and p.is_file():
        return _faults(tomllib.loads(p.read_text()).get("fault", []), str(p))
    overlays = _overlays()
    if name not in overlays:
        raise ScenarioError(f"unknown fault overlay {name!r}; bundled: {sorted(overlays)}")
    return _faults(overlays[name].get("fault", []), f"fault overlay {name}")


def load_scenario(name_or_path: str) -> Scenario:
    """A bundled scenario by name, or a .toml file by path; ``+overlay`` suffixes add faults."""
    base, *overlays = name_or_path.split("+")
    p = Path(base)
    if base.endswith(".toml") or p.exists():
        if not p.is_file():
            raise ScenarioError(f"no scenario file {base!r}")
        sc = parse_scenario(p.read_text(), p.stem, str(p))
    else:
        f = _bundled_dir().joinpath(f"{base}.toml")
        if not f.is_file():
            raise ScenarioError(f"unknown scenario {base!r}; bundled: {list_scenarios()}")
        sc = parse_scenario(f.read_text(), base, f"sims/scenarios/{base}.toml")
    if overlays:
        faults = list(sc.faults)
        for o in overlays:
            faults.extend(_read_overlay(o))
        sc = Scenario(sc.name + "".join("+" + o for o in overlays), sc.description, sc.start_ns,
                      sc.duration_s, sc.missiles, faults, sc.unavailable_sensors, sc.source)
    return sc
