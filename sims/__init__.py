"""sims: DPRK launch flight physics, national sensors and trackers, and scenarios.

Knows nothing of the relay: it produces truth, measurements and national tracks.
"""

from .model import (
    Fault,
    LaunchSpec,
    MeasurementSet,
    NationalTrackUpdate,
    Scenario,
    ScenarioError,
    SimResult,
    Trajectory,
)
from .scenario import list_fault_overlays, list_scenarios, load_scenario
from .simulate import simulate

__all__ = [
    "Fault",
    "LaunchSpec",
    "MeasurementSet",
    "NationalTrackUpdate",
    "Scenario",
    "ScenarioError",
    "SimResult",
    "Trajectory",
    "list_fault_overlays",
    "list_scenarios",
    "load_scenario",
    "simulate",
]
