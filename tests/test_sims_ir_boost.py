"""The US space-layer boost track: what it reports before any radar sees a missile."""

from __future__ import annotations

import dataclasses
import math

import pytest

from sims import load_scenario, simulate
from sims.consistency import ir_boost_errors, ir_boost_table
from sims.sensors import sensors
from warnshare.metrics import nees_bounds

SEEDS = (0, 1, 2, 3)


def salvo_head():
    """The first four launches of the 8-SRBM salvo (two KN-23s, two KN-25s), the US tracker only."""
    s8 = load_scenario("srbm-salvo-2022-06-05")
    return dataclasses.replace(s8, missiles=s8.missiles[:4], duration_s=400.0)


@pytest.fixture(scope="module")
def runs() -> list:
    out, truth = [], None
    for seed in SEEDS:
        r = simulate(salvo_head(), seed=seed, nations=["USA"], truth=truth)
        truth = r.truth
        out.append(ir_boost_errors(r))
    return out


def test_space_layer_boost_reports_are_consistent(runs) -> None:
    """Mean 6-D NEES inside the chi-square band of one independent sample per track (reports
    of one track 2 s apart share most of their error)."""
    table = ir_boost_table(runs)
    tracks = sum(len(t) for t in runs)
    assert table["n"] >= 60 and tracks >= 12, (table["n"], tracks)
    lo, hi = nees_bounds(tracks)
    assert lo <= table["mean_nees"] <= hi, (table["mean_nees"], (lo, hi))


def test_space_layer_boost_reports_beat_a_single_fix_and_are_filtered(runs) -> None:
    """The track is more than its newest fix: lower error than one stereo fix, errors carried
    from report to report (a pass-through of fixes has a lag-1 correlation near 0)."""
    sbirs = next(s for s in sensors() if s.id == "USA-SBIRS")
    fix_rms = math.sqrt(2 * sbirs.sigma_horizontal_m**2 + sbirs.sigma_vertical_m**2)
    table = ir_boost_table(runs)
    assert table["rms_pos_m"] < 0.9 * fix_rms, (table["rms_pos_m"], fix_rms)
    assert table["lag1_corr"] > 0.4, table["lag1_corr"]


def test_re_filtering_the_reports_gains_nothing(runs) -> None:
    """Treating the reports as independent measurements (a constant-acceleration filter, or the
    fusion benchmark's constant-velocity anchor model) does not beat them: the tracker leaves
    no smoothing on the table."""
    table = ir_boost_table(runs)
    assert table["refilter_ca_rms_pos_m"] > 0.95 * table["rms_pos_m"], table
    assert table["refilter_cv_rms_pos_m"] > 0.95 * table["rms_pos_m"], table
