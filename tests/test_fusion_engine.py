"""Fusion engine behaviour: association across nations, identity, lifecycle, determinism."""

from __future__ import annotations

import dataclasses
import functools
import math

import numpy as np
import pytest

from warnshare.fusion import FusionConfig, FusionEngine
from warnshare.fusion.dynamics import covariance_from_upper
from warnshare.fusion.synthetic import DEFAULT_FEEDS, Launch, fly, reports
from warnshare.protocol import (
    NATIONS,
    AlertKind,
    FlightPhase,
    Nation,
    TrackReport,
    covariance_to_upper,
    encode,
)

T0 = 1_700_000_000 * 10**9
NS = 10**9


@pytest.fixture(scope="module")
def one_missile():
    return [fly(Launch(39.0, 125.7, 80.0, T0), dt=0.5)]


@pytest.fixture(scope="module")
def salvo():
    # three missiles from two nearby pads, seconds apart, on close azimuths
    return [
        fly(Launch(39.0, 125.7, 80.0, T0), dt=0.5),
        fly(Launch(39.02, 125.72, 82.0, T0 + 4 * NS), dt=0.5),
        fly(Launch(39.3, 125.9, 85.0, T0 + 8 * NS), dt=0.5),
    ]


def run(reps, config=None, skip=lambda r: False):
    """Feed reports in order, ticking once per second of arrival time as the relay does."""
    engine = FusionEngine(config or FusionConfig())
    alerts = []
    next_tick = None
    for t, r in reps:
        if skip(r):
            continue
        next_tick = t if next_tick is None else next_tick
        while t >= next_tick:
            alerts += engine.tick(next_tick)
            next_tick += NS
        alerts += engine.ingest(r, node_sent_ns=t + 1000, received_ns=t + 2000)
    return engine, alerts


def event_of_track(alerts_and_reports):
    """(nation, track_number) -> set of event ids its TRACK_UPDATEs went to."""
    out: dict = {}
    for rep, alerts in alerts_and_reports:
        for a in alerts:
            if a.kind == AlertKind.TRACK_UPDATE:
                out.setdefault((rep.nation, rep.track_number), set()).add(a.event_id)
    return out


def test_three_nations_one_missile_make_one_event(one_missile):
    reps = reports(one_missile, list(DEFAULT_FEEDS), seed=1)
    engine, alerts = run(reps)
    events = engine.events()
    assert len(events) == 1
    assert [n.value for n in events[0].nations] == ["USA", "JPN", "KOR"] or len(events[0].nations) >= 2
    kinds = [a.kind for a in alerts]
    assert kinds.count(AlertKind.LAUNCH_DETECTED) == 1
    assert kinds[0] == AlertKind.LAUNCH_DETECTED
    assert kinds.count(AlertKind.TRACK_UPDATE) == len(reps)
    assert AlertKind.IMPACT_PREDICTED in kinds
    ids = [a.alert_id for a in alerts]
    assert ids == list(range(1, len(alerts) + 1))
    assert engine.last_alert_id == len(alerts)


def test_every_report_gets_a_track_update_with_its_hops(one_missile):
    reps = reports(one_missile, list(DEFAULT_FEEDS), seed=2)[:30]
    engine = FusionEngine()
    for t, r in reps:
        alerts = engine.ingest(r, node_sent_ns=t + 5, received_ns=t + 9, clock_offset_ns=-3, clock_rtt_ns=7)
        upd = [a for a in alerts if a.kind == AlertKind.TRACK_UPDATE]
        assert len(upd) == 1
        h = upd[0].hops
        assert (h.measured_ns, h.node_sent_ns, h.relay_received_ns, h.fused_ns) == (r.measured_ns, t + 5, t + 9, t + 9)
        assert h.source_nation == r.nation and h.clock_offset_ns == -3 and h.clock_rtt_ns == 7
        assert "sensor" not in encode(upd[0]).decode("latin-1")


def test_replay_is_byte_identical(salvo):
    reps = reports(salvo, list(DEFAULT_FEEDS), seed=3)
    _, a1 = run(reps)
    _, a2 = run(reps)
    assert len(a1) == len(a2) > 0
    assert [encode(a) for a in a1] == [encode(a) for a in a2]


def test_alerts_are_valid_wire_messages(one_missile):
    from warnshare.protocol import Alert

    reps = reports(one_missile, list(DEFAULT_FEEDS), seed=4)
    engine, alerts = run(reps)
    alerts += engine.tick(reps[-1][0] + 10**12)
    for a in alerts[:: max(1, len(alerts) // 50)] + [a for a in alerts if a.kind != AlertKind.TRACK_UPDATE]:
        Alert.model_validate(a.model_dump())


def test_salvo_one_event_per_missile_and_no_swaps(salvo):
    reps = reports(salvo, list(DEFAULT_FEEDS), seed=5)
    engine = FusionEngine()
    pairs = []
    for t, r in reps:
        if t % NS < 10**8:
            engine.tick(t)
        pairs.append((r, engine.ingest(r, node_sent_ns=t, received_ns=t)))
    assert len(engine.events()) == 3
    mapping = event_of_track(pairs)
    # every national track stayed on one event, and each event holds one missile's tracks
    assert all(len(v) == 1 for v in mapping.values()), mapping
    by_event: dict = {}
    for (_nation, number), ev in mapping.items():
        by_event.setdefault(ev.pop(), set()).add(number % 100)
    assert all(len(v) == 1 for v in by_event.values()), by_event


def test_renumbered_track_keeps_its_event(one_missile):
    reps = reports(one_missile, list(DEFAULT_FEEDS), seed=6)
    t_switch = one_missile[0].t_ns[0] + 120 * NS
    renumbered = []
    for t, r in reps:
        if r.nation == Nation.JPN and r.time_of_validity_ns >= t_switch:
            r = r.model_copy(update={"track_number": 4242})
        renumbered.append((t, r))
    engine, alerts = run(renumbered)
    assert len(engine.events()) == 1
    assert {a.event_id for a in alerts} == {1}


def test_nation_drops_out_and_comes_back(one_missile):
    reps = reports(one_missile, list(DEFAULT_FEEDS), seed=7)
    t0 = one_missile[0].t_ns[0]
    gap = (t0 + 60 * NS, t0 + 150 * NS)

    def skip(r):
        return r.nation == Nation.KOR and gap[0] <= r.time_of_validity_ns < gap[1]

    engine, alerts = run(reps, skip=skip)
    assert len(engine.events()) == 1
    after = [a for a in alerts if a.kind == AlertKind.TRACK_UPDATE and a.hops.source_nation == Nation.KOR
             and a.state.time_of_validity_ns >= gap[1]]
    assert after and Nation.KOR in after[-1].nations


def test_one_nation_alone_still_makes_one_event(one_missile):
    reps = [(t, r) for t, r in reports(one_missile, list(DEFAULT_FEEDS), seed=8) if r.nation == Nation.JPN]
    engine, _ = run(reps)
    assert len(engine.events()) == 1 and engine.events()[0].nations == [Nation.JPN]


def test_lifecycle_impact_and_final_assessment(one_missile):
    cfg = FusionConfig(lost_timeout_ns=2 * NS, final_timeout_ns=5 * NS)
    reps = reports(one_missile, list(DEFAULT_FEEDS), seed=9)
    engine, alerts = run(reps, cfg)
    last_rx = reps[-1][0] + 2000
    # the feeds end a few seconds before the predicted fall: IMPACT when the fall is due
    # (track time runs at wall pace here), not at the lost time-out
    (event,) = engine.events()
    due_s = (event.impact.time_ns - event.state.time_of_validity_ns) / NS
    assert 2.0 < due_s < 10.0
    assert engine.tick(last_rx + 1 * NS) == []
    assert engine.tick(last_rx + int((due_s - 0.5) * NS)) == []
    t_impact = last_rx + int((due_s + 0.5) * NS)
    impact = engine.tick(t_impact)
    assert [a.kind for a in impact] == [AlertKind.IMPACT]
    assert impact[0].hops.fused_ns == t_impact
    final = engine.tick(t_impact + 6 * NS)
    assert [a.kind for a in final] == [AlertKind.FINAL_ASSESSMENT]
    a = final[0].assessment
    tr = one_missile[0]
    assert a.flight_time_s == pytest.approx((tr.t_ns[-1] - tr.t_ns[0]) / NS, abs=20)
    assert a.apogee_m == pytest.approx(
        float(max(np.linalg.norm(tr.states[:, :3], axis=1))) - 6_371_000.0, rel=0.25
    )
    assert engine.events()[0].status == "IMPACTED"
    assert engine.tick(last_rx + 60 * NS) == []


def gap_from_100_to_130_s(truths):
    """Every nation's reports before 100 s of flight, and from 130 s on (nobody sees between)."""
    reps = reports(truths, list(DEFAULT_FEEDS), seed=10)
    t0 = truths[0].t_ns[0]
    first = [(t, r) for t, r in reps if r.time_of_validity_ns < t0 + 100 * NS]
    rest = [(t, r) for t, r in reps if r.time_of_validity_ns >= t0 + 130 * NS]
    return first, rest


def test_a_gap_in_coverage_high_up_coasts_and_the_returning_track_continues_the_event(one_missile):
    cfg = FusionConfig(lost_timeout_ns=2 * NS, final_timeout_ns=1000 * NS)
    first, rest = gap_from_100_to_130_s(one_missile)
    engine, _ = run(first, cfg)
    predicted = engine.events()[0].impact.time_ns
    assert predicted > rest[0][1].time_of_validity_ns
    # silent for far longer than lost_timeout, but its predicted flight is still under way
    assert [a.kind for a in engine.tick(first[-1][0] + 10 * NS)] == [AlertKind.TRACK_COAST]
    assert engine.events()[0].status == "ACTIVE"
    t, r = rest[0]
    back = engine.ingest(r, node_sent_ns=t, received_ns=t)
    assert [a.kind for a in back if a.kind != AlertKind.TRACK_UPDATE] in ([], [AlertKind.IMPACT_PREDICTED])
    assert back[0].event_id == 1 and len(engine.events()) == 1


def test_a_silent_event_is_published_as_track_coast_predictions_until_its_fall(one_missile):
    cfg = FusionConfig(lost_timeout_ns=2 * NS, final_timeout_ns=10_000 * NS)
    first, _rest = gap_from_100_to_130_s(one_missile)
    engine, _ = run(first, cfg)
    event = engine.events()[0]
    fused, impact_ns = event.state, event.impact.time_ns
    t_last = first[-1][0]
    ticked = [a for k in range(1, 31) for a in engine.tick(t_last + k * NS)]
    coasts = [a for a in ticked if a.kind == AlertKind.TRACK_COAST]
    assert coasts == ticked and 13 <= len(coasts) <= 15  # one per 2 s of the 30 s silence
    tovs = np.array([a.state.time_of_validity_ns for a in coasts])
    assert np.all(np.diff(tovs) >= cfg.coast_update_s * NS)
    truth = one_missile[0]
    pos_var = [sum(a.state.covariance[i] for i in (0, 6, 11)) for a in coasts]
    assert np.all(np.diff(pos_var) > 0)  # the prediction grows less certain as it coasts
    for a in coasts:
        err = np.linalg.norm(np.array(a.state.position_ecef_m) - truth.at(a.state.time_of_validity_ns)[:3])
        assert err < 3.0 * np.sqrt(a.state.covariance[0] + a.state.covariance[6] + a.state.covariance[11])
        assert a.nations == [] and a.state.track_quality == 0 and a.event_id == event.event_id
        assert a.impact == event.impact
    # the event's own fused state is untouched: the next report fuses the members, not this
    assert engine.events()[0].state == fused
    # no coast in the last coast_until_s of the predicted flight, and none once the flight is
    # over (last seen high up, the event then ends as TRACK_LOST)
    t = t_last + 31 * NS
    while t < impact_ns + 60 * NS:
        ticked = engine.tick(t)
        coasts += [a for a in ticked if a.kind == AlertKind.TRACK_COAST]
        t += NS
    assert max(a.state.time_of_validity_ns for a in coasts) < impact_ns - cfg.coast_until_s * NS
    assert engine.events()[0].status == "LOST"
    assert not [a for a in engine.tick(t + 10 * NS) if a.kind == AlertKind.TRACK_COAST]


def test_coasting_updates_can_be_turned_off(one_missile):
    cfg = FusionConfig(lost_timeout_ns=2 * NS, coast_update_s=0.0)
    first, _rest = gap_from_100_to_130_s(one_missile)
    engine, _ = run(first, cfg)
    assert [a for k in range(1, 31) for a in engine.tick(first[-1][0] + k * NS)] == []


def test_track_lost_once_the_predicted_flight_is_over_then_correction_when_it_returns(one_missile):
    cfg = FusionConfig(lost_timeout_ns=2 * NS, final_timeout_ns=100_000 * NS)
    first, rest = gap_from_100_to_130_s(one_missile)
    engine, _ = run(first, cfg)
    # no report at all for longer than the whole predicted flight: the coast ends
    lost = engine.tick(first[-1][0] + int(cfg.max_flight_s) * NS + 10 * NS)
    assert [a.kind for a in lost] == [AlertKind.TRACK_LOST]
    assert engine.events()[0].status == "LOST"
    t, r = rest[0]
    back = engine.ingest(r, node_sent_ns=t, received_ns=t)
    corr = [a for a in back if a.kind == AlertKind.CORRECTION]
    assert corr and corr[0].corrects_alert_id == lost[0].alert_id
    assert engine.events()[0].status == "ACTIVE" and len(engine.events()) == 1


def test_releasability_is_the_intersection(one_missile):
    reps = reports(one_missile, list(DEFAULT_FEEDS), seed=11)
    restricted = [
        (t, r.model_copy(update={"releasable_to": [Nation.JPN, Nation.USA]}) if r.nation == Nation.JPN else r)
        for t, r in reps
    ]
    _, alerts = run(restricted)
    multi = [a for a in alerts if a.kind == AlertKind.TRACK_UPDATE and Nation.JPN in a.nations]
    assert multi and all(Nation.KOR not in a.releasable_to for a in multi)
    solo = [a for a in alerts if a.kind == AlertKind.TRACK_UPDATE and a.nations == [Nation.KOR]]
    assert all(a.releasable_to == [Nation.USA, Nation.JPN, Nation.KOR] for a in solo)


def test_fused_error_beats_single_nations(one_missile):
    """Independent national errors: the CI fused track is closer to truth than the best nation."""
    feeds = [dataclasses.replace(f, bias_m=(0.0, 0.0, 0.0)) for f in DEFAULT_FEEDS]
    reps = reports(one_missile, feeds, seed=12, shared_fraction=0.0)
    _, alerts = run(reps)
    tr = one_missile[0]
    fused, single = [], {}
    for (_t, r), a in zip(reps, [a for a in alerts if a.kind == AlertKind.TRACK_UPDATE], strict=True):
        truth = tr.at(r.time_of_validity_ns)[:3]
        single.setdefault(r.nation, []).append(np.linalg.norm(np.array(r.position_ecef_m) - truth))
        if len(a.nations) >= 2:
            fused.append(np.linalg.norm(np.array(a.state.position_ecef_m) - tr.at(a.state.time_of_validity_ns)[:3]))
    rmse = lambda v: float(np.sqrt(np.mean(np.square(v))))  # noqa: E731
    assert rmse(fused) < min(rmse(v) for v in single.values())


def test_a_national_track_that_wanders_off_and_is_dropped_makes_no_event(one_missile):
    """A nation's track jumps 30 km away for a few seconds, then its tracker drops it: the
    engine holds it apart without inventing a missile, and the event keeps the other nations."""
    reps = reports(one_missile, list(DEFAULT_FEEDS), seed=13)
    t0 = one_missile[0].t_ns[0]
    bad = (t0 + 100 * NS, t0 + 108 * NS)
    changed = []
    for t, r in reps:
        if r.nation == Nation.JPN and bad[0] <= r.time_of_validity_ns < bad[1]:
            r = r.model_copy(update={"position_ecef_m": [c + 30_000.0 for c in r.position_ecef_m]})
        elif r.nation == Nation.JPN and r.time_of_validity_ns >= bad[1]:
            if r.time_of_validity_ns < bad[1] + NS:
                r = r.model_copy(update={"lost": True})
            else:
                r = r.model_copy(update={"track_number": r.track_number + 50})
        changed.append((t, r))
    engine, alerts = run(changed)
    assert [a.kind for a in alerts].count(AlertKind.LAUNCH_DETECTED) == 1
    assert len(engine.events()) == 1
    assert Nation.JPN in engine.events()[0].nations


@pytest.mark.parametrize("gap_days", [365, -365])
def test_a_report_dated_a_year_away_is_a_new_event_and_no_prediction_spans_more_than_a_flight(
        one_missile, monkeypatch, gap_days):
    from warnshare.fusion import dynamics

    spans = []
    real = dynamics.predict_state

    def spy(s, dt):
        spans.append(abs(dt))
        return real(s, dt)

    monkeypatch.setattr(dynamics, "predict_state", spy)
    engine, _ = run(reports(one_missile, list(DEFAULT_FEEDS[:2]), seed=12)[:80])
    assert spans  # the spy sees the engine's predictions
    t, r = reports(one_missile, [DEFAULT_FEEDS[2]], seed=13)[0]
    far = r.model_copy(update={"time_of_validity_ns": r.time_of_validity_ns + gap_days * 86_400 * NS})
    out = engine.ingest(far, node_sent_ns=t, received_ns=t)
    out += engine.tick(t + 2 * NS)
    assert AlertKind.LAUNCH_DETECTED in [a.kind for a in out]
    assert len(engine.events()) == 2
    assert max(spans) <= engine.config.max_flight_s


@pytest.mark.parametrize("mode", ["REAL", "SIMULATED"])
def test_a_real_report_dated_far_ahead_of_the_relay_clock_does_not_end_a_coasting_event(one_missile, mode):
    # Reports stop at 160 s of a 308 s flight (a gap in coverage): the event coasts on its
    # prediction. One schema-valid REAL report dated a day ahead of its arrival must not become
    # the engine's "now", which would put the coasting event's predicted fall in the past and
    # declare it lost at once. (SIMULATED replays carry scenario times, not the relay's clock:
    # there the engine cannot tell, and the day-ahead report does end the coast.)
    from warnshare.protocol import DataMode

    reps = [(t, r.model_copy(update={"data_mode": DataMode(mode)}))
            for t, r in reports(one_missile, list(DEFAULT_FEEDS[:2]), seed=21)]
    upto = [(t, r) for t, r in reps if r.time_of_validity_ns < T0 + 160 * NS]
    engine, alerts = run(upto)
    (event,) = engine.events()
    assert event.impact is not None
    t_last = upto[-1][0]
    _, r = reports(one_missile, [DEFAULT_FEEDS[2]], seed=22)[0]
    far = r.model_copy(update={"time_of_validity_ns": t_last + 86_400 * NS, "track_number": 999,
                               "data_mode": DataMode(mode)})
    alerts += engine.ingest(far, node_sent_ns=t_last, received_ns=t_last)
    for k in range(1, 31):
        alerts += engine.tick(t_last + k * NS)
    lost = AlertKind.TRACK_LOST in [a.kind for a in alerts if a.event_id == event.event_id]
    assert lost == (mode == "SIMULATED")


def test_memoised_impact_area_and_land_tests_give_regions_answers(monkeypatch):
    # The engine skips polygon tests outside the land rings' boxes and reuses an impact area
    # within the radius where no rule's comparison can change; along random walks over the
    # coasts, median lines and 200 nmi limits around Japan and Korea both give exactly what
    # ``regions`` says.
    from warnshare import regions
    from warnshare.fusion import engine as eng

    rng = np.random.default_rng(5)
    reused = 0
    for _ in range(12):
        lat, lon = rng.uniform(30.0, 45.0), rng.uniform(125.0, 145.0)
        memo = None
        step = float(rng.choice([0.01, 0.05, 0.2]))
        for _ in range(25):
            lat += step * rng.normal()
            lon += step * rng.normal()
            area, new_memo = eng._impact_area(lat, lon, memo)
            reused += new_memo is memo
            memo = new_memo
            assert area == regions.impact_area(round(lat, 3), round(lon, 3)), (lat, lon)
            assert eng._territory_of(lat, lon) == regions.territory_of(lat, lon), (lat, lon)
    assert reused > 0  # the memo is exercised, not only the full computation
    # over Korea and Honshu, then out to sea: the same nations with the box filter as without
    track = np.array([[35.0, 127.0, 90e3], [36.0, 133.0, 120e3], [37.0, 138.0, 110e3], [38.0, 143.0, 60e3]])
    with_boxes = eng._overflown(track)
    monkeypatch.setattr(eng, "_in_boxes", lambda lat, lon: np.ones(len(lat), dtype=bool))
    assert with_boxes == eng._overflown(track) == [Nation.JPN, Nation.KOR]


def test_deferred_impact_keeps_predictions_off_the_report_path_and_changes_no_alert(one_missile, monkeypatch):
    # defer_impact: ingest never flies sigma points; predict_due makes the due predictions.
    # Run right after each ingest (as the relay does once the TRACK_UPDATE is sent), it gives
    # the very alerts the engine gives without deferral, byte for byte.
    from warnshare.fusion import engine as eng

    calls = {"ingest": 0, "predict_due": 0}
    where = ["ingest"]
    real_predict = eng.predict_impact

    def spy(*args):
        calls[where[0]] += 1
        return real_predict(*args)

    monkeypatch.setattr(eng, "predict_impact", spy)
    reps = reports(one_missile, list(DEFAULT_FEEDS), seed=9)
    plain = FusionEngine(FusionConfig())
    expected = [encode(a) for t, r in reps for a in plain.ingest(r, node_sent_ns=t, received_ns=t)]
    n_plain = calls["ingest"]
    calls["ingest"] = 0

    engine = FusionEngine(FusionConfig(defer_impact=True))
    alerts = []
    for t, r in reps:
        where[0] = "ingest"
        alerts += engine.ingest(r, node_sent_ns=t, received_ns=t)
        where[0] = "predict_due"
        due = engine.predictions_due
        new = engine.predict_due(t)
        assert due or not new
        for a in new:
            a.hops.fused_ns = t  # without deferral an alert is "fused" when its report arrives
        alerts += new
    assert calls["ingest"] == 0
    assert calls["predict_due"] == n_plain > 10
    assert [encode(a) for a in alerts] == expected
    kinds = [a.kind for a in alerts]
    assert AlertKind.IMPACT_PREDICTED in kinds
    (event,) = engine.events()
    assert event.impact is not None
    from warnshare import metrics

    _, lat, lon = one_missile[0].impact
    g = event.impact
    assert metrics.in_ellipse(lat, lon, g.lat_deg, g.lon_deg, g.semi_major_m, g.semi_minor_m, g.orientation_deg)


def test_deferred_predictions_left_undone_are_made_by_tick(one_missile):
    reps = reports(one_missile, list(DEFAULT_FEEDS), seed=9)
    engine = FusionEngine(FusionConfig(defer_impact=True))
    kinds = []
    for t, r in reps[: len(reps) // 2]:
        kinds += [a.kind for a in engine.ingest(r, node_sent_ns=t, received_ns=t)]
    assert AlertKind.IMPACT_PREDICTED not in kinds and engine.predictions_due
    after = engine.tick(reps[len(reps) // 2][0])
    assert AlertKind.IMPACT_PREDICTED in [a.kind for a in after]
    assert not engine.predictions_due


@pytest.mark.parametrize("n_reports", [2, 5])
def test_a_track_first_seen_falling_that_gates_with_nothing_needs_three_reports(one_missile, n_reports):
    # A national track that appears in mid-descent, far from every event, with no sign of a
    # launch: national trackers start such short-lived tracks on a mix of two close missiles'
    # returns. Two reports and "lost" must not raise a LAUNCH_DETECTED; a track that goes on
    # makes its event at its third report.
    reps = reports(one_missile, list(DEFAULT_FEEDS), seed=31)
    other = fly(Launch(40.0, 127.0, 100.0, T0 + 100 * NS), dt=0.5)
    falling = [(t, r) for t, r in reports([other], [DEFAULT_FEEDS[1]], seed=32)
               if r.time_of_validity_ns > T0 + 300 * NS]
    extra = [(t, r.model_copy(update={"track_number": 777})) for t, r in falling[:n_reports]]
    t_end, last = extra[-1]
    extra.append((t_end + NS // 2, last.model_copy(update={"lost": True, "seq": last.seq + 1})))
    engine, alerts = run(sorted(reps + extra, key=lambda tr: tr[0]))
    launches = [a for a in alerts if a.kind == AlertKind.LAUNCH_DETECTED]
    if n_reports == 2:
        assert len(launches) == 1 and len(engine.events()) == 1
    else:
        assert len(launches) == 2
        assert launches[1].hops.measured_ns == extra[2][1].measured_ns


def test_a_national_track_that_jumps_to_another_object_leaves_its_event(one_missile):
    # JPN's track keeps its number but, 200 s in, follows another missile hundreds of km away
    # (a tracker's mis-association after a coast). The event must not follow it (on 2022-06-05
    # data such a jump turned a fallen SRBM's event into a 16-minute flight into Japan's EEZ).
    other = fly(Launch(40.5, 128.5, 60.0, T0 + 60 * NS), dt=0.5)
    jpn = DEFAULT_FEEDS[1]
    base = [(t, r) for t, r in reports(one_missile, list(DEFAULT_FEEDS), seed=41)]
    mine = {r.track_number for _, r in base if r.nation == jpn.nation}
    theirs = [(t, r) for t, r in reports([other], [jpn], seed=42) if r.time_of_validity_ns > T0 + 200 * NS]
    cut = T0 + 200 * NS
    reps = [(t, r) for t, r in base if not (r.nation == jpn.nation and r.time_of_validity_ns > cut)]
    reps += [(t, r.model_copy(update={"track_number": min(mine)})) for t, r in theirs]
    reps.sort(key=lambda tr: tr[0])
    engine, alerts = run(reps)
    truth = one_missile[0]
    first = [a for a in alerts if a.kind == AlertKind.LAUNCH_DETECTED][0].event_id
    after = [a for a in alerts if a.kind == AlertKind.TRACK_UPDATE and a.event_id == first
             and a.state.time_of_validity_ns > cut]
    assert after
    worst = max(float(np.linalg.norm(np.array(a.state.position_ecef_m) - truth.at(a.state.time_of_validity_ns)[:3]))
                for a in after)
    assert worst < 20_000.0, worst
    assert len(engine.events()) == 2


def test_a_silent_coasting_event_does_not_absorb_the_next_missile_on_its_path():
    # Two SRBMs 42 s apart on one path, seen by one nation only: the first goes silent (below
    # its radar) and coasts; the second, told apart at its first report, must not be merged
    # into it later because the first's coasting gate has widened to tens of km.
    first = fly(Launch(39.64, 124.67, 250.0, T0, burn_s=40.0, elevation_deg=45.0), dt=0.5)
    second = fly(Launch(39.73, 124.84, 250.0, T0 + 42 * NS, burn_s=40.0, elevation_deg=45.0), dt=0.5)
    usa = [DEFAULT_FEEDS[0]]
    reps = [(t, r) for t, r in reports([first], usa, seed=3) if t < T0 + 70 * NS]
    reps += [(t, r.model_copy(update={"track_number": r.track_number + 50}))
             for t, r in reports([second], usa, seed=4) if t > T0 + 80 * NS]
    reps.sort(key=lambda tr: tr[0])
    engine, alerts = run(reps)
    assert not [a for a in alerts if a.kind == AlertKind.CORRECTION and "duplicate" in a.text]
    assert len(engine.events()) == 2


def test_no_impact_prediction_from_a_climbing_track_whose_phase_nobody_has_declared(one_missile):
    # National tracks start with flight phase UNKNOWN and not boosting; a vacuum prediction
    # from a missile still under thrust falls hundreds of km short. While no member declares a
    # phase and the state climbs, the engine does not predict; a declared phase lifts the hold.
    reps = reports(one_missile, list(DEFAULT_FEEDS), seed=8)
    unknown = [(t, r.model_copy(update={"flight_phase": FlightPhase.UNKNOWN, "boosting": False})) for t, r in reps]

    def first_prediction(rs):
        engine = FusionEngine(FusionConfig())
        for t, r in rs:
            for a in engine.ingest(r, node_sent_ns=t, received_ns=t):
                if a.kind == AlertKind.IMPACT_PREDICTED:
                    return a
        return None

    held = first_prediction(unknown)
    p, v = np.array(held.state.position_ecef_m), np.array(held.state.velocity_ecef_mps)
    assert float(p @ v) <= 0.0  # not before the missile comes down
    declared = first_prediction([(t, r.model_copy(update={"boosting": False})) for t, r in reps])
    p, v = np.array(declared.state.position_ecef_m), np.array(declared.state.velocity_ecef_mps)
    assert float(p @ v) > 0.0  # on the way up


def _garbled(r, what: str):
    """``r`` made impossible in one way that the schema lets through (finite numbers)."""
    if what == "speed":
        return r.model_copy(update={"velocity_ecef_mps": [1e200, 0.0, 0.0]})
    if what == "position":
        return r.model_copy(update={"position_ecef_m": [1e300, 0.0, 0.0]})
    # positive variances, a correlation of 2 between x and y: not a covariance
    cov = list(r.covariance)
    cov[1] = 2.0 * (cov[0] * cov[6]) ** 0.5
    return r.model_copy(update={"covariance": cov})


@pytest.mark.parametrize("what", ["speed", "position", "covariance"])
def test_an_impossible_report_is_refused_and_the_others_keep_fusing_its_missile(one_missile, what):
    # Before screening, one such report from one nation made every later fusion of its event
    # fail (overflow or a singular information matrix): the other nations' reports of that
    # missile were lost with it until the bad track went stale.
    reps = reports(one_missile, list(DEFAULT_FEEDS), seed=21)
    cut = reps[len(reps) // 3][0]
    jpn = next(i for i, (t, r) in enumerate(reps) if t >= cut and r.nation == Nation.JPN)
    reps[jpn] = (reps[jpn][0], _garbled(reps[jpn][1], what))
    engine, alerts = run(reps)
    assert engine.reports_refused == 1
    assert len(engine.events()) == 1
    truth = one_missile[0]
    later = [a for a in alerts if a.kind == AlertKind.TRACK_UPDATE and a.state.time_of_validity_ns > cut]
    # every report after the bad one still makes an update (the bad one made none)
    assert len(later) >= sum(1 for t, r in reps if r.time_of_validity_ns > cut and not r.lost) - 1
    worst = max(float(np.linalg.norm(np.array(a.state.position_ecef_m) - truth.at(a.state.time_of_validity_ns)[:3]))
                for a in later)
    assert worst < 5_000.0, worst


@pytest.mark.parametrize("offset_days", [365, -365, -19_000])
def test_a_track_whose_own_report_is_dated_far_away_costs_no_long_prediction(one_missile, monkeypatch, offset_days):
    # One report of a national track dated a year ahead, a year back or near 1970, then the
    # track goes on: no prediction, in Python or in the compiled kernel, spans more than a flight
    # (a span of years ran the integrator for minutes: the relay stood still), and the track
    # comes back to its event.
    from warnshare.fusion import dynamics, kernel

    spans = [0.0]
    real_state = dynamics.predict_state

    def spy_state(s, dt):
        spans.append(abs(dt))
        return real_state(s, dt)

    def spy_rows(real):
        def wrapped(row, n):
            spans.extend(abs(float(row[k * kernel.MEMBER_WIDTH])) for k in range(n))
            return real(row, n)
        return wrapped

    monkeypatch.setattr(dynamics, "predict_state", spy_state)
    monkeypatch.setattr(kernel, "predict_members", spy_rows(kernel.predict_members))
    monkeypatch.setattr(kernel, "fuse_members", spy_rows(kernel.fuse_members))
    reps = reports(one_missile, list(DEFAULT_FEEDS), seed=22)
    cut = reps[len(reps) // 3][0]
    k = next(i for i, (t, r) in enumerate(reps) if t >= cut and r.nation == Nation.KOR)
    t, r = reps[k]
    reps[k] = (t, r.model_copy(update={"time_of_validity_ns": r.time_of_validity_ns + offset_days * 86_400 * NS}))
    engine, alerts = run(reps)
    assert max(spans) <= engine.config.max_flight_s
    kor_later = {a.event_id for a in alerts
                 if a.kind == AlertKind.TRACK_UPDATE and a.hops.source_nation == Nation.KOR
                 and a.hops.relay_received_ns > t + 10 * NS}
    assert kor_later == {1}, kor_later


def _finite(o) -> bool:
    if isinstance(o, float):
        return math.isfinite(o)
    if isinstance(o, dict):
        return all(_finite(v) for v in o.values())
    if isinstance(o, list):
        return all(_finite(v) for v in o)
    return True


def test_reports_at_the_edges_of_plausible_never_break_the_engine(one_missile):
    # Three nations' reports of one missile, a third of them pushed to the edges of what the
    # screen lets through or just past it: variances of 1e-300 or the largest allowed, rank-one
    # covariances, states at 6,260 or 49,000 km from the centre at up to 14.9 km/s, dates
    # hours off. No exception, no non-finite number in any alert, and exactly the reports the
    # screen refuses are refused.
    import msgpack

    from warnshare.plausibility import report_problem

    rng = np.random.default_rng(5)
    iu = np.triu_indices(6)

    def edge(r):
        kind = rng.integers(0, 9)
        if kind == 0:
            return r.model_copy(update={"covariance": np.diag([rng.choice([1e-300, 1e-20, 1e-6])] * 6)[iu].tolist()})
        if kind == 1:
            a = rng.normal(size=(6, 1)) * np.array([[3e6]] * 3 + [[3e3]] * 3)
            return r.model_copy(update={"covariance": (a @ a.T + np.eye(6) * 1e-3)[iu].tolist()})
        if kind == 2:
            return r.model_copy(update={"covariance": np.diag([2.4e13] * 3 + [9.9e7] * 3)[iu].tolist()})
        if kind == 3:
            u, v = rng.normal(size=3), rng.normal(size=3)
            radius, speed = rng.choice([6.26e6, 4.9e7]), rng.choice([0.0, 14_900.0])
            return r.model_copy(update={"position_ecef_m": (radius * u / np.linalg.norm(u)).tolist(),
                                        "velocity_ecef_mps": (speed * v / np.linalg.norm(v)).tolist()})
        if kind == 4:
            return r.model_copy(update={"time_of_validity_ns": r.time_of_validity_ns + int(rng.integers(-10**13, 10**13))})
        return r

    engine = FusionEngine(FusionConfig())
    taken = refused = 0
    for t, r in reports(one_missile, list(DEFAULT_FEEDS), seed=23):
        r = edge(r)
        out = engine.ingest(r, node_sent_ns=t, received_ns=t) + engine.tick(t)
        if report_problem(r) is not None:
            refused += 1
            continue
        taken += 1
        for a in out:
            assert _finite(msgpack.unpackb(encode(a), raw=False)), a.kind
    assert engine.reports_refused == refused > 0
    assert taken > 100


@pytest.mark.parametrize("compensated", [False, True])
def test_a_step_of_the_wall_clock_moves_the_engines_wall_times_and_ends_no_event(one_missile, compensated):
    # The relay's wall clock jumps 600 s forward 150 s into the flight (an NTP step, a resumed
    # VM). Told of it (clock_stepped), the engine's time-outs measure silence, not the step: the
    # missile keeps its one event. Not told, it declares the event lost at once and the next
    # report opens a second one with a second LAUNCH_DETECTED (the fault this input mends).
    reps = reports(one_missile, list(DEFAULT_FEEDS), seed=3)
    step, cut = 600 * NS, T0 + 150 * NS
    engine = FusionEngine(FusionConfig())
    kinds: list = []
    next_tick, stepped = None, False
    for t, r in reps:
        if t >= cut and not stepped:
            stepped = True
            if compensated:
                assert engine.clock_stepped(step) == []
        t_wall = t + (step if stepped else 0)
        next_tick = t_wall if next_tick is None else next_tick
        while t_wall >= next_tick:
            kinds += [a.kind for a in engine.tick(next_tick)]
            next_tick += NS
        kinds += [a.kind for a in engine.ingest(r, node_sent_ns=t_wall, received_ns=t_wall)]
    launches = kinds.count(AlertKind.LAUNCH_DETECTED)
    if compensated:
        assert launches == 1 and AlertKind.TRACK_LOST not in kinds and len(engine.events()) == 1
    else:
        assert launches == 2 and AlertKind.TRACK_LOST in kinds and len(engine.events()) == 2


@pytest.fixture(scope="module")
def lofted():
    return _lofted(1300)


@functools.cache
def _lofted(jpn_from_s: int):
    """A lofted shot (apogee ~1,760 km, 26 min): KOR holds it high on the way up (releasable to
    the USA and KOR only) until 400 s, then nobody until ``jpn_from_s``, when a fresh JPN track
    re-acquires it: its position good to ~1 km, its velocity not yet converged (~300 m/s off)."""
    truth = fly(Launch(39.0, 125.7, 90.0, T0, burn_s=150.0, thrust_mps2=40.0, elevation_deg=80.0), dt=0.5)
    rng = np.random.default_rng(5)
    reps = []

    def report(nation, number, seq, t_s, pos_sigma, vel_sigma, releasable):
        t = T0 + int(t_s * NS)
        x = truth.at(t)
        err = np.concatenate([rng.normal(0, pos_sigma, 3), rng.normal(0, vel_sigma, 3)])
        cov = np.diag([pos_sigma**2] * 3 + [vel_sigma**2] * 3)
        return t, TrackReport(
            seq=seq, nation=nation, track_number=number, time_of_validity_ns=t, measured_ns=t,
            position_ecef_m=(x[:3] + err[:3]).tolist(), velocity_ecef_mps=(x[3:] + err[3:]).tolist(),
            covariance=covariance_to_upper(cov), track_quality=10,
            flight_phase=FlightPhase.MIDCOURSE, releasable_to=releasable,
        )

    for k, t_s in enumerate(range(200, 400)):
        reps.append(report(Nation.KOR, 7, k + 1, t_s, 150.0, 3.0, [Nation.USA, Nation.KOR]))
    # the velocity error is drawn once, as a young track's is: a bias, not noise
    for k, t_s in enumerate(range(jpn_from_s, 1572)):
        reps.append(report(Nation.JPN, 40, k + 1, t_s, 1_000.0, 0.0, list(NATIONS)))
    young = rng.normal(0, 400.0, 3)
    cov = covariance_to_upper(np.diag([1_000.0**2] * 3 + [500.0**2] * 3))
    reps = [(t, r) if r.nation != Nation.JPN else (t, r.model_copy(update={
        "velocity_ecef_mps": (np.array(r.velocity_ecef_mps) + young).tolist(), "covariance": cov}))
        for t, r in reps]
    return truth, reps


@pytest.mark.parametrize("jpn_from_s", [1300, 430], ids=["after a 15-minute coast", "after 30 s"])
def test_a_reacquired_event_is_fused_with_its_coasted_state_while_it_adds_something(jpn_from_s):
    truth, reps = _lofted(jpn_from_s)
    cfg = FusionConfig(lost_timeout_ns=2 * NS, final_timeout_ns=10_000 * NS)
    runs = {prior: run(reps, dataclasses.replace(cfg, coast_prior=prior)) for prior in (True, False)}
    jpn_updates = {}
    for prior, (engine, alerts) in runs.items():
        assert len(engine.events()) == 1, "the JPN track must re-acquire the coasting event"
        jpn_updates[prior] = [a for a in alerts if a.kind == AlertKind.TRACK_UPDATE
                              and a.nations == [Nation.JPN]]

    def velocity_error(a):
        return float(np.linalg.norm(np.array(a.state.velocity_ecef_mps) - truth.at(a.state.time_of_validity_ns)[3:]))

    def nees(a):
        e = np.array(a.state.position_ecef_m + a.state.velocity_ecef_mps) - truth.at(a.state.time_of_validity_ns)
        return float(e @ np.linalg.solve(np.array(covariance_from_upper(a.state.covariance)), e))

    high = [a for a in jpn_updates[True] if a.state.alt_m > 150_000.0]
    assert len(high) > 100
    # without the coasted state the fused velocity is the young track's, hundreds of m/s off
    alone = [velocity_error(a) for a in jpn_updates[False] if a.state.alt_m > 150_000.0]
    assert min(alone) > 100.0
    # with it, within metres per second, and still consistent (6-dof chi-square, 99.9%: 22.5)
    assert max(velocity_error(a) for a in high) < 25.0
    assert max(nees(a) for a in high) < 22.5
    # the state it carries was made from KOR's tracks too: it goes only where KOR's may go
    assert all(a.releasable_to == [Nation.USA, Nation.KOR] for a in high)
    # below 120 km the coasted state (no drag in it) is let go: JPN's track alone, releasable to all
    low = [a for a in jpn_updates[True] if a.state.alt_m < 100_000.0]
    assert low and all(a.releasable_to == list(NATIONS) for a in low)


def test_a_coast_above_the_air_is_published_with_the_covariance_its_errors_have(lofted):
    # 15 minutes unseen between KOR's last report and JPN's first: the TRACK_COASTs' states
    # flown by sigma points carry a covariance their errors fit (before: the constant-velocity
    # transition and q_ballistic, an average NEES of a few hundredths, 1-sigma tens of km)
    truth, reps = lofted
    _engine, alerts = run(reps, FusionConfig(lost_timeout_ns=2 * NS, final_timeout_ns=10_000 * NS))
    coasts = [a for a in alerts if a.kind == AlertKind.TRACK_COAST]
    assert len(coasts) > 300  # every 2 s of the 900 s silence

    def nees(a):
        e = np.array(a.state.position_ecef_m + a.state.velocity_ecef_mps) - truth.at(a.state.time_of_validity_ns)
        return float(e @ np.linalg.solve(np.array(covariance_from_upper(a.state.covariance)), e))

    values = [nees(a) for a in coasts]
    assert 2.0 < float(np.mean(values)) < 12.0, np.mean(values)
    last = np.array(covariance_from_upper(coasts[-1].state.covariance))
    assert math.sqrt(np.trace(last[:3, :3])) < 15_000.0
