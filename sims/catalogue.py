"""Missile catalogue: the classes of sims/data/missiles.toml as flight-model objects."""

from __future__ import annotations

import tomllib
from functools import cache
from importlib import resources

from .flight import GlideSpec, MissileClass, Stage
from .model import ScenarioError


@cache
def catalogue() -> dict[str, MissileClass]:
    """Every missile class by name (read once per process)."""
    raw = tomllib.loads(resources.files("sims").joinpath("data/missiles.toml").read_text())
    out: dict[str, MissileClass] = {}
    for name, d in raw.items():
        d = dict(d)
        stages = tuple(Stage(**s) for s in d.pop("stages"))
        glide = GlideSpec(**d.pop("glide")) if "glide" in d else None
        rng = d.pop("published_range_km", None)
        apo = d.pop("published_apogee_km", None)
        out[name] = MissileClass(
            name=name,
            stages=stages,
            glide=glide,
            published_range_m=None if rng is None else rng * 1e3,
            published_apogee_m=None if apo is None else apo * 1e3,
            **d,
        )
    return out


def missile_class(name: str) -> MissileClass:
    try:
        return catalogue()[name]
    except KeyError:
        raise ScenarioError(f"unknown missile class {name!r}; known: {sorted(catalogue())}") from None
