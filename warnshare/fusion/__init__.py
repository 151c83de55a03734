"""The fusion core: national track reports in, fused events and alerts out. Sans-I/O.

Contract used by the relay (warnshare/relay) and the benchmarks:

    engine = FusionEngine(FusionConfig())
    alerts = engine.ingest(report, node_sent_ns=..., received_ns=..., clock_offset_ns=..., clock_rtt_ns=...)
    alerts = engine.tick(now_ns)
    alerts = engine.clock_stepped(step_ns)   # the wall clock of received_ns / now_ns stepped
    engine.events() -> list[EventSummary]
    engine.last_alert_id -> int

Time bases:
- ``report.time_of_validity_ns`` is the physical time the state is valid at (on the relay's clock,
  already corrected for the node's clock offset). Dynamics use only this time.
- ``report.measured_ns``, ``node_sent_ns`` and ``received_ns`` are wall-clock instants on the
  relay's clock; they go into ``Alert.hops`` and are used for nothing else but latency.
- ``now_ns`` given to ``tick`` is the relay's wall clock; time-outs (track lost) compare it
  with the ``received_ns`` of an event's last update.

The engine never reads a clock, a socket or a file: the same sequence of calls gives the
same alerts. ``Alert.hops.fused_ns`` is set to ``received_ns`` (ingest) or ``now_ns`` (tick);
the relay overwrites it with its wall clock after the call returns.
"""

from warnshare.fusion.engine import FusionConfig, FusionEngine

__all__ = ["FusionConfig", "FusionEngine"]
