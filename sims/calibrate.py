"""Calibrate the catalogue: the steering that flies each class's published reference flight.

``python -m sims.calibrate`` prints, for every class, the pitch and cut-off that the trajectory
solver finds for its published apogee and range, and what the class then flies;
``--write`` stores them as ``nominal_pitch_deg`` / ``nominal_cutoff`` in sims/data/missiles.toml.
"""

from __future__ import annotations

import argparse
import re
from importlib import resources

from .catalogue import catalogue
from .flight import MissileClass, RawFlight, Steering, fly
from .solver import solve

#: Where reference flights are flown from: the azimuth and site change the range only through
#: Earth rotation, a fraction of a percent for these ranges.
REFERENCE_SITE = (39.0, 125.7)
REFERENCE_AZIMUTH_DEG = 90.0


def nominal_flight(mc: MissileClass) -> RawFlight:
    """The class flown on its stored nominal steering from the reference site."""
    return fly(mc, *REFERENCE_SITE, Steering(REFERENCE_AZIMUTH_DEG, mc.nominal_pitch_deg, mc.nominal_cutoff))


def main() -> int:
    ap = argparse.ArgumentParser(prog="python -m sims.calibrate", description=__doc__)
    ap.add_argument("--write", action="store_true", help="store the steering in sims/data/missiles.toml")
    args = ap.parse_args()
    found: dict[str, tuple[float, float]] = {}
    for name, mc in catalogue().items():
        sol = solve(mc, *REFERENCE_SITE, REFERENCE_AZIMUTH_DEG, mc.published_apogee_m, mc.published_range_m)
        st, f = sol.steering, sol.flight
        found[name] = (st.pitch_final_deg, st.cutoff_fraction)
        print(f"{name:14s} pitch {st.pitch_final_deg:6.2f} deg  cutoff {st.cutoff_fraction:.3f}  "
              f"apogee {f.apogee_m / 1e3:8.1f} km  range {f.range_m / 1e3:8.1f} km  {f.flight_time_s:6.0f} s"
              + ("" if sol.converged else f"  ({sol.message})"))
    if args.write:
        path = resources.files("sims").joinpath("data/missiles.toml")
        text = path.read_text()
        for name, (pitch, cut) in found.items():
            block = re.search(rf"(?ms)^\[{re.escape(name)}\]$.*?(?=^\[|\Z)", text)
            assert block is not None
            b = block.group(0)
            b = re.sub(r"(?m)^nominal_pitch_deg = .*$", f"nominal_pitch_deg = {pitch:.4f}", b)
            if re.search(r"(?m)^nominal_cutoff = ", b):
                b = re.sub(r"(?m)^nominal_cutoff = .*$", f"nominal_cutoff = {cut:.5f}", b)
            else:
                b = re.sub(r"(?m)^(nominal_pitch_deg = .*)$", rf"\1\nnominal_cutoff = {cut:.5f}", b)
            text = text[: block.start()] + b + text[block.end():]
        with open(str(path), "w") as f:
            f.write(text)
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
