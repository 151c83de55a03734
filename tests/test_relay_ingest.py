"""Ingest rules: duplicates dropped, gaps and foreign nations refused whole, clocks corrected."""

from __future__ import annotations

import pytest

from tests.synth import ballistic_arc, national_reports
from warnshare.protocol import ErrorCode, Hello, Nation, ProtocolError, ReportBatch
from warnshare.relay.ingest import NodeRegistry, accept_batch

STATES = ballistic_arc(39.2, 125.7, 95, 5500, 40, 20)
LONG = ballistic_arc(39.2, 125.7, 95, 5500, 40, 40)


def link(nation: Nation = Nation.JPN):
    return NodeRegistry().hello(Hello(protocol_version=1, nation=nation, node_id="n1", sent_ns=1))


def batch(reports, sent_ns: int = 10**18) -> ReportBatch:
    return ReportBatch(sent_ns=sent_ns, reports=reports)


def test_resent_reports_are_dropped_as_duplicates() -> None:
    lk = link()
    reports = national_reports(STATES, Nation.JPN, track_number=1)
    first = accept_batch(lk, batch(reports[:10]), 0)
    assert [r.seq for r in first.reports] == list(range(1, 11)) and first.acked_seq == 10
    again = accept_batch(lk, batch(reports[5:15]), 0)
    assert again.duplicates == 5
    assert [r.seq for r in again.reports] == list(range(11, 16)) and again.acked_seq == 15


def test_a_gap_refuses_the_whole_batch_and_keeps_state() -> None:
    lk = link()
    reports = national_reports(STATES, Nation.JPN, track_number=1)
    accept_batch(lk, batch(reports[:3]), 0)
    with pytest.raises(ProtocolError) as info:
        accept_batch(lk, batch(reports[4:8]), 0)
    assert info.value.code == ErrorCode.SEQUENCE_GAP
    assert lk.last_seq == 3
    assert accept_batch(lk, batch(reports[3:5]), 0).acked_seq == 5


def test_a_link_that_holds_nothing_takes_up_the_nodes_numbering_where_it_is() -> None:
    # a relay that lost its state meets a node whose reports 1-20 another relay acknowledged
    lk = link()
    reports = national_reports(LONG, Nation.JPN, track_number=1)
    taken = accept_batch(lk, batch(reports[20:25]), 0)
    assert [r.seq for r in taken.reports] == [21, 22, 23, 24, 25]
    assert taken.taken_up_at == 21 and taken.acked_seq == 25 and lk.accepted == 5
    # from there on the numbering is held as ever: resends are duplicates, a gap is refused
    again = accept_batch(lk, batch(reports[23:27]), 0)
    assert again.duplicates == 2 and again.taken_up_at == 0 and again.acked_seq == 27
    with pytest.raises(ProtocolError) as info:
        accept_batch(lk, batch(reports[28:30]), 0)
    assert info.value.code == ErrorCode.SEQUENCE_GAP and lk.last_seq == 27
    # a batch starting at 1 is no take-up
    assert accept_batch(link(), batch(reports[:3]), 0).taken_up_at == 0


def test_a_refused_first_batch_takes_nothing_up() -> None:
    lk = link(Nation.JPN)
    late = national_reports(LONG, Nation.JPN, track_number=1)[20:22]
    spoofed = national_reports(STATES, Nation.KOR, track_number=1, first_seq=23)[:1]
    with pytest.raises(ProtocolError):
        accept_batch(lk, batch(late + spoofed), 0)
    assert lk.last_seq == 0 and lk.accepted == 0
    # still nothing held: the node's next batch, wherever it starts, is taken up
    assert accept_batch(lk, batch(late[1:]), 0).taken_up_at == 22


def test_a_report_of_another_nation_refuses_the_batch() -> None:
    lk = link(Nation.JPN)
    good = national_reports(STATES, Nation.JPN, track_number=1)[:2]
    spoofed = national_reports(STATES, Nation.KOR, track_number=1, first_seq=3)[:1]
    with pytest.raises(ProtocolError) as info:
        accept_batch(lk, batch(good + spoofed), 0)
    assert info.value.code == ErrorCode.NATION_MISMATCH
    assert lk.last_seq == 0 and lk.accepted == 0


def test_node_id_stays_with_its_first_nation() -> None:
    reg = NodeRegistry()
    reg.hello(Hello(protocol_version=1, nation=Nation.JPN, node_id="n1", sent_ns=1))
    with pytest.raises(ProtocolError) as info:
        reg.hello(Hello(protocol_version=1, nation=Nation.KOR, node_id="n1", sent_ns=1))
    assert info.value.code == ErrorCode.NATION_MISMATCH


def test_timestamps_are_moved_to_the_relay_clock() -> None:
    lk = link()
    skew = 5_000_000_000
    lk.clock.add_exchange(
        1000, 1000 + 100 + skew, 1000 + 150 + skew, 1000 + 250
    )  # symmetric 100 ns each way
    reports = national_reports(STATES, Nation.JPN, track_number=1)[:2]
    skewed = [
        r.model_copy(
            update={
                "time_of_validity_ns": r.time_of_validity_ns + skew,
                "measured_ns": r.measured_ns + skew,
            }
        )
        for r in reports
    ]
    out = accept_batch(lk, batch(skewed, sent_ns=7 + skew), lk.clock.offset_ns)
    assert [r.time_of_validity_ns for r in out.reports] == [r.time_of_validity_ns for r in reports]
    assert [r.measured_ns for r in out.reports] == [r.measured_ns for r in reports]
    assert out.reports == reports  # every other field as it came
    assert out.node_sent_ns == 7


def test_node_ids_are_capped() -> None:
    reg = NodeRegistry(max_nodes=2)
    for i in range(2):
        reg.hello(Hello(protocol_version=1, nation=Nation.JPN, node_id=f"n{i}", sent_ns=1))
    reg.hello(Hello(protocol_version=1, nation=Nation.JPN, node_id="n0", sent_ns=1))  # known: fine
    with pytest.raises(ProtocolError) as info:
        reg.hello(Hello(protocol_version=1, nation=Nation.JPN, node_id="n9", sent_ns=1))
    assert info.value.code == ErrorCode.RATE_LIMITED


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"position_ecef_m": [0.0, 0.0, 0.0]}, "from the Earth's centre"),
        ({"position_ecef_m": [1e300, 0.0, 0.0]}, "from the Earth's centre"),
        ({"velocity_ecef_mps": [3e8, 0.0, 0.0]}, "speed"),
        ({"covariance": [-1.0] + [0.0] * 20}, "position variance along x"),
        ({"covariance": [1e300] + [0.0] * 20}, "position variance along x"),
        # every variance positive, a correlation of 2 between x and vx
        ({"covariance": [1.0, 0, 0, 2.0, 0, 0, 1.0, 0, 0, 0, 0, 1.0, 0, 0, 0, 1.0, 0, 0, 1.0, 0, 1.0]},
         "not positive semi-definite"),
    ],
)
def test_a_report_no_tracker_could_make_refuses_the_batch_and_keeps_state(change, says) -> None:
    lk = link()
    reports = national_reports(STATES, Nation.JPN, track_number=1)
    accept_batch(lk, batch(reports[:2]), 0)
    bad = reports[3].model_copy(update=change)
    with pytest.raises(ProtocolError) as info:
        accept_batch(lk, batch([reports[2], bad, reports[4]]), 0)
    assert info.value.code == ErrorCode.SCHEMA_INVALID
    assert f"report seq {bad.seq}:" in str(info.value) and says in str(info.value)
    assert lk.last_seq == 2 and lk.accepted == 2
    # the batch without it goes through
    assert accept_batch(lk, batch(reports[2:5]), 0).acked_seq == 5


def test_every_report_of_the_bundled_scenarios_is_plausible() -> None:
    # the bounds refuse what no tracker of a missile reports, never a poor estimate: the
    # national trackers of every bundled scenario stay inside them
    from sims.scenario import list_scenarios, load_scenario
    from sims.simulate import simulate
    from warnshare.bench.fusion import to_reports
    from warnshare.plausibility import report_problem

    checked = 0
    for name in list_scenarios():
        for _, _, r in to_reports(simulate(load_scenario(name), seed=0)):
            if not r.lost:
                assert report_problem(r) is None, (name, r.nation, r.track_number, report_problem(r))
                checked += 1
    assert checked > 10_000
