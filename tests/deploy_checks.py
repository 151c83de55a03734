"""What the deployment tests (compose, namespaces) read off an alert stream: the fused events.

An event whose LAUNCH_DETECTED alert a later CORRECTION withdraws was a duplicate: the relay
found it to be the same missile as an older event, which carries on. Counting missiles means
counting the events that were never withdrawn.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field


@dataclass
class EventView:
    event_id: int
    kinds: set[str] = field(default_factory=set)
    nations: set[str] = field(default_factory=set)
    launch_alert_ids: set[int] = field(default_factory=set)


def events_from_alerts(alerts: Iterable[dict]) -> tuple[dict[int, EventView], dict[int, EventView]]:
    """(live events, withdrawn duplicates) by event id, from alerts as JSON-like dicts."""
    events: dict[int, EventView] = {}
    withdrawn_alerts: set[int] = set()
    for a in alerts:
        event = events.setdefault(a["event_id"], EventView(a["event_id"]))
        event.kinds.add(a["kind"])
        event.nations.update(a["nations"])
        if a["kind"] == "LAUNCH_DETECTED":
            event.launch_alert_ids.add(a["alert_id"])
        if a["kind"] == "CORRECTION" and a.get("corrects_alert_id") is not None:
            withdrawn_alerts.add(a["corrects_alert_id"])
    live, duplicates = {}, {}
    for event_id, event in events.items():
        gone = event.launch_alert_ids and event.launch_alert_ids <= withdrawn_alerts
        (duplicates if gone else live)[event_id] = event
    return live, duplicates


def connected_nations(nodes: list[dict]) -> set[str]:
    """Nations with a node connected, from the relay's GET /v1/nodes.

    A node connects once it has simulated its sensors, so all three connected before the common
    start (``--start-at``) means that each one plays the scenario from its beginning.
    """
    return {n["nation"] for n in nodes if n.get("connected")}


def describe(events: dict[int, EventView]) -> str:
    return "; ".join(
        f"E{e.event_id} {'+'.join(sorted(e.nations))}: {','.join(sorted(k for k in e.kinds if k != 'TRACK_UPDATE'))}"
        for e in sorted(events.values(), key=lambda e: e.event_id)
    )
