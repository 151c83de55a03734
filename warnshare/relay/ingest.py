"""Node ingest rules, sans-I/O: hello, per-node sequence de-duplication, nation checks, clocks.

A ``NodeLink`` outlives connections (a node that reconnects resumes after its last acked seq);
``accept_batch`` decides which reports of a batch are new, refuses the whole batch when any
report breaks a rule, and puts node timestamps on the relay's clock.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from warnshare.fusion import kernel
from warnshare.latency import ClockOffsetEstimator
from warnshare.plausibility import report_problem
from warnshare.protocol import (
    PROTOCOL_VERSION,
    ErrorCode,
    Hello,
    Nation,
    ProtocolError,
    ReportBatch,
    TrackReport,
    construct,
)


@dataclass
class NodeLink:
    """What the relay knows of one node across its connections."""

    node_id: str
    nation: Nation
    last_seq: int = 0
    clock: ClockOffsetEstimator = field(default_factory=ClockOffsetEstimator)
    connection: object | None = None
    #: When the current connection was welcomed (relay clock, ns; 0: never).
    connected_ns: int = 0
    #: The key the node authenticated with (None on a relay without a trust store).
    key_id: str | None = None
    accepted: int = 0
    duplicates: int = 0


class NodeRegistry:
    def __init__(self, max_nodes: int = 1_000) -> None:
        self.links: dict[str, NodeLink] = {}
        self.max_nodes = max_nodes

    def hello(self, hello: Hello) -> NodeLink:
        """The link for a hello; a node id stays bound to the nation it first declared."""
        if hello.protocol_version != PROTOCOL_VERSION:
            raise ProtocolError(
                ErrorCode.UNSUPPORTED_VERSION,
                f"protocol version {hello.protocol_version} is not supported",
            )
        link = self.links.get(hello.node_id)
        if link is None:
            if len(self.links) >= self.max_nodes:
                raise ProtocolError(
                    ErrorCode.RATE_LIMITED,
                    f"the relay already keeps state for {self.max_nodes} node ids",
                )
            link = self.links[hello.node_id] = NodeLink(hello.node_id, hello.nation)
        elif link.nation != hello.nation:
            raise ProtocolError(
                ErrorCode.NATION_MISMATCH,
                f"node {hello.node_id!r} is registered for {link.nation.value}, "
                f"not {hello.nation.value}",
            )
        return link

    def restore(self, node_id: str, nation: str) -> NodeLink:
        """A link rebuilt from the journal at start-up."""
        link = self.links[node_id] = NodeLink(node_id, Nation(nation))
        return link


@dataclass(frozen=True, slots=True)
class AcceptedBatch:
    reports: list[TrackReport]  # new reports, timestamps on the relay clock
    node_sent_ns: int  # on the relay clock
    duplicates: int
    acked_seq: int
    #: The seq at which this relay took up the node's numbering, when it held nothing of the
    #: node before this batch and the batch started past seq 1 (0 otherwise).
    taken_up_at: int = 0


def accept_batch(
    link: NodeLink, batch: ReportBatch, offset_ns: int, screen: bool = True
) -> AcceptedBatch:
    """New reports of ``batch`` for ``link``, with node times moved to the relay's clock by
    ``offset_ns`` (node clock minus relay clock); raises ProtocolError and accepts nothing on a
    report of another nation, a sequence out of order, a gap after the last accepted seq, or a
    new report no missile's tracker could make (``plausibility.report_problem``; not with
    ``screen`` False, for a journal's replay: what was accepted then is accepted again).

    A link that has accepted nothing yet takes up the node's numbering at the batch's first
    seq: a relay that lost its state (run without its journal, or a standby taking over) meets
    nodes whose earlier reports another relay acknowledged, and which they therefore no longer
    hold. Holding such a node to seq 1 refused its every batch with ``SEQUENCE_GAP``, forever."""
    expected = link.last_seq + 1
    taken_up_at = 0
    if link.last_seq == 0 and batch.reports and batch.reports[0].seq > 1:
        expected = taken_up_at = batch.reports[0].seq
    new: list[TrackReport] = []
    duplicates = 0
    previous = 0
    for report in batch.reports:
        if report.nation != link.nation:
            raise ProtocolError(
                ErrorCode.NATION_MISMATCH,
                f"report seq {report.seq} claims nation {report.nation.value} but node "
                f"{link.node_id!r} speaks for {link.nation.value}",
            )
        if report.seq <= previous:
            raise ProtocolError(
                ErrorCode.SCHEMA_INVALID,
                f"reports must be in ascending seq order ({report.seq} after {previous})",
            )
        previous = report.seq
        if report.seq < expected:
            duplicates += 1
            continue
        if report.seq > expected:
            raise ProtocolError(
                ErrorCode.SEQUENCE_GAP,
                f"expected seq {expected}, got {report.seq}; resend from {link.last_seq + 1}",
            )
        problem = report_problem(report, kernel.covariance_ok) if screen else None
        if problem is not None:
            raise ProtocolError(ErrorCode.SCHEMA_INVALID, f"report seq {report.seq}: {problem}")
        new.append(report)
        expected += 1
    offset = offset_ns
    if offset:
        # a copy with two times moved (what ``model_copy(update=...)`` gives, at half the cost:
        # a report of every batch of every node goes through here)
        new = [
            construct(TrackReport, {
                **r.__dict__,
                "time_of_validity_ns": r.time_of_validity_ns - offset,
                "measured_ns": r.measured_ns - offset,
            })
            for r in new
        ]
    link.last_seq = expected - 1
    link.accepted += len(new)
    link.duplicates += duplicates
    return AcceptedBatch(new, batch.sent_ns - offset, duplicates, link.last_seq, taken_up_at)
