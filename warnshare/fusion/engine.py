"""The fusion engine: national track reports in, one fused event per missile and its alerts out.

Sans-I/O and deterministic: no clock, no file, no randomness, insertion-ordered state only, so
the same calls give byte-identical alerts. The per-report path (``ingest``) keeps to scalar math
and a handful of small numpy calls; costly work (impact prediction with sigma points, global
re-association, CI weight optimisation) runs at most once per configured interval of track time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache

import numpy as np
from numpy.typing import NDArray

from warnshare import regions
from warnshare.fusion import association, ci, dynamics, kernel
from warnshare.fusion.impact import (
    GroundPoint,
    fly_state,
    launch_from_ballistic,
    launch_from_boost,
    predict_impact,
)
from warnshare.geo import great_circle_distance_m
from warnshare.plausibility import report_problem
from warnshare.protocol import (
    NATIONS,
    PICTURE_KINDS,
    Alert,
    AlertKind,
    Assessment,
    DataMode,
    EventSummary,
    FlightPhase,
    FusedState,
    GroundEstimate,
    Hops,
    ImpactArea,
    Nation,
    TrackReport,
    construct,
)

_NS = 1_000_000_000
_IU = np.triu_indices(6)
#: flat indices of the upper triangle, row by row (the wire's covariance order)
_IU_FLAT = np.ravel_multi_index(_IU, (6, 6))
#: the latest phase any live member reports wins
_PHASE_RANK = {FlightPhase.BOOST: 0, FlightPhase.MIDCOURSE: 1, FlightPhase.TERMINAL: 2}


def _construct(cls, **fields):
    """``protocol.construct`` with the fields as keywords."""
    return construct(cls, fields)


def _fused_state(t_ns: int, xl: list[float], cov: list[float], quality: int,
                 phase: FlightPhase | None = None, geo: list[float] | None = None) -> FusedState:
    """The FusedState of ECEF state ``xl`` (6 floats) valid at ``t_ns``, its covariance's upper
    triangle ``cov``; ``phase`` None: from the geometry (descending below 100 km is the
    terminal phase, else midcourse); ``geo`` its (lat_deg, lon_deg, alt_m) if known."""
    px, py, pz, vx, vy, vz = xl
    lat, lon, alt = dynamics.geodetic(px, py, pz) if geo is None else geo
    if phase is None:
        up = px * vx + py * vy + pz * vz
        phase = FlightPhase.TERMINAL if up < 0.0 and alt < 100_000.0 else FlightPhase.MIDCOURSE
    return _construct(
        FusedState,
        time_of_validity_ns=t_ns,
        position_ecef_m=xl[:3],
        velocity_ecef_mps=xl[3:],
        covariance=cov,
        lat_deg=lat,
        lon_deg=lon,
        alt_m=alt,
        speed_mps=math.sqrt(vx**2 + vy**2 + vz**2),
        flight_phase=phase,
        track_quality=quality,
    )


def _result_row(x: NDArray, p: NDArray) -> NDArray:
    """A fused state and covariance in the kernel's output layout (``kernel.OUT_WIDTH``)."""
    p = 0.5 * (p + p.T)
    return np.concatenate([x, p.take(_IU_FLAT), dynamics.geodetic(*x[:3].tolist()), p.reshape(-1)])


def _r2(x) -> float:
    """Squared distance from the Earth's centre of an ECEF state or position."""
    return float(x[0]) ** 2 + float(x[1]) ** 2 + float(x[2]) ** 2


def _r_dot_v(x) -> float:
    """r . v of an ECEF state (6,): positive while it climbs, negative while it falls."""
    return float(x[0]) * float(x[3]) + float(x[1]) * float(x[4]) + float(x[2]) * float(x[5])


def _gate_reach2(position_variance_m2: float) -> float:
    """Squared distance beyond which a track and a picture are not compared (no solve): 50 km
    plus six sigma of the summed position variances, which grows for an event coasting through
    a gap in coverage (its re-acquired tracks must still reach the Mahalanobis test)."""
    reach = 50_000.0 + 6.0 * math.sqrt(position_variance_m2)
    return reach * reach


_OVERFLIGHT_MIN_ALT_M = 50_000.0
# seconds of misdating (a node's clock step not yet estimated) a jump test tolerates
_CLOCK_STEP_S = 5.0
# above this a ballistic state's orbit is its future and past path: no drag, no lift
_EXO_ALT_M = 120_000.0
_ATMOSPHERE_R2 = (6_371_000.0 + 80_000.0) ** 2
_EXO_R2 = (6_371_000.0 + _EXO_ALT_M) ** 2
_POS_DIAG = np.arange(3)
_PROTECTED_AREAS = frozenset({ImpactArea.JPN_TERRITORY, ImpactArea.KOR_TERRITORY, ImpactArea.JPN_EEZ})
_AREA_TEXT = {
    ImpactArea.JPN_TERRITORY: "inside JPN territory",
    ImpactArea.KOR_TERRITORY: "inside KOR territory",
    ImpactArea.JPN_EEZ: "inside JPN EEZ",
    ImpactArea.OUTSIDE: "outside JPN/KOR territory and JPN EEZ",
}


@dataclass(frozen=True)
class FusionConfig:
    """Tuning of the engine. ``*_s`` are seconds of track time (time of validity); ``*_timeout_ns``
    are wall-clock nanoseconds on the relay's clock (compressed when scenarios replay fast)."""

    #: Gate on the squared Mahalanobis distance (6 dof; 99.9% is 22.5).
    gate_chi2: float = 30.0
    #: Unknown relative registration bias between two nations, added to the gate covariance.
    bias_pos_sigma_m: float = 500.0
    bias_vel_sigma_mps: float = 10.0
    #: White-acceleration noise spectral density (m^2/s^3) while boosting / in ballistic flight.
    q_boost: float = 900.0
    q_ballistic: float = 4.0
    #: ... below ~80 km, where drag and pull-up manoeuvres (KN-23) act.
    q_atmosphere: float = 2500.0
    #: ... for a state flown above 120 km across a silence (TRACK_COAST, the coasted prior
    #: below): J2 is modelled and nothing else acts there. ``q_ballistic`` is sized for the
    #: seconds between national reports: over a lofted ICBM's 45-minute coast it gave a
    #: covariance of 290 km (1-sigma, position) about a state 3.4 km off.
    q_exo_coast: float = 0.01
    #: A re-acquired event (its last state older than ``member_stale_s``: it went unseen, and
    #: no track that made that state is live) fuses its members' fusion with that last state
    #: flown forward (CI), while above 120 km and until CI gives it no weight: a fresh national
    #: track knows the position within km but not yet the velocity (hundreds of m/s), which the
    #: coasted state still knows within m/s. CI keeps the fusion consistent whatever the two
    #: share. Not with the "independent" rule (it would count the prior as new information).
    coast_prior: bool = True
    #: ... if that state knew its velocity within this (1-sigma per axis, RMS): a poorer one
    #: adds little, and flown for minutes its errors stop being Gaussian.
    coast_prior_max_vel_sigma_mps: float = 30.0
    #: A member older than this (relative to the newest) is left out of the fused state.
    member_stale_s: float = 5.0
    #: A member older than this leaves its event (its nation may come back under any number).
    member_drop_s: float = 60.0
    #: Re-association and duplicate-event merge run in ``tick``, once per this much track time.
    scan_interval_s: float = 1.0
    #: Consecutive scans two single-nation-disjoint events must agree before they merge (and a
    #: track must disagree with its event before it is held apart).
    merge_scans: int = 3
    #: Scans a track held apart must gate with nothing before it becomes an event of its own.
    orphan_scans: int = 10
    #: CI weights are re-optimised at most once per this much track time (any weight is consistent).
    reweight_interval_s: float = 2.0
    #: Impact prediction (sigma points to the ground, a few ms) at most once per this much track
    #: time and, for scenarios replayed faster than real time, per this much wall time.
    impact_interval_s: float = 2.0
    #: No impact prediction while the event climbs and no member has declared its flight phase
    #: (it may still be boosting), for at most this long after the event's first state.
    unknown_phase_hold_s: float = 180.0
    impact_min_wall_ns: int = 0
    #: Impact predictions that a report makes due wait for ``predict_due`` (or the next
    #: ``tick``) instead of running inside ``ingest``: the report's own TRACK_UPDATE then never
    #: carries the sigma-point flight (1-3 ms). The relay runs ``predict_due`` right after that
    #: update is on its way to the subscribers.
    defer_impact: bool = False
    #: Longest flight the impact propagation follows (s).
    max_flight_s: float = 6000.0
    #: A silent ballistic event (no report for this much track time, its predicted flight still
    #: under way) is published as a TRACK_COAST alert, its state predicted to the engine's track
    #: time, once per this much track time, so that subscribers keep a position for a missile
    #: no sensor holds (0: never).
    coast_update_s: float = 2.0
    #: ... but not in the last this-much of the predicted flight: low in the fall, the drag the
    #: prediction leaves out moves the point by kilometres, and IMPACT is due.
    coast_until_s: float = 30.0
    #: No update for this long (wall): IMPACT if the missile was near the ground, else TRACK_LOST.
    lost_timeout_ns: int = 20 * _NS
    #: No update for this long (wall): FINAL_ASSESSMENT of an impacted or lost event.
    final_timeout_ns: int = 40 * _NS
    #: The feeds ending within this much flight time of the predicted impact count as an impact.
    impact_window_s: float = 120.0
    #: Or the last fused altitude below this (m), descending.
    near_ground_alt_m: float = 30_000.0
    #: A REAL report dated more than this (s) after its arrival on the relay's clock does not
    #: move the engine's track time (one bad clock must not end every coasting event).
    #: SIMULATED and EXERCISE replays carry scenario times, so they are not checked.
    max_future_s: float = 30.0
    #: A track first seen neither boosting nor climbing (no evidence of a launch) that gates with
    #: no event makes a new event only at its this-many-th report: national trackers start
    #: short-lived tracks on a mix of two close missiles' returns, and a phantom
    #: LAUNCH_DETECTED is worse than one two report periods late.
    confirm_descending_reports: int = 3
    #: "ci" (covariance intersection). "ici" (inverse CI: tighter, consistent for errors that
    #: come from shared information, ~40 µs more per update). "independent" fuses as if the
    #: nations' errors were independent; it is overconfident and exists only to show that in
    #: the benchmark.
    fusion_rule: str = "ci"
    #: Refuse reports no missile's tracker could make (``plausibility.report_problem``): they
    #: are counted in ``reports_refused`` and change nothing. The relay turns it off, because
    #: its ingest refuses such reports (with an error to the node) before they get here.
    screen_reports: bool = True
    #: CI weights minimise the fused position covariance's "trace" or maximise the fused
    #: information's "det".
    ci_criterion: str = "trace"

    def acceleration_noise(self, boosting: bool, x) -> float:
        """White-acceleration noise for a state ``x`` (ECEF, m): thrust while boosting, drag and
        manoeuvres in the atmosphere, almost none in vacuum. Altitude from the geocentric radius
        is good to ~20 km here."""
        if boosting:
            return self.q_boost
        if _r2(x) < _ATMOSPHERE_R2:
            return self.q_atmosphere
        return self.q_ballistic


@dataclass(slots=True)
class _Member:
    """One national track (nation, track_number) as last reported."""

    nation: Nation
    track_number: int
    event_id: int
    x: list[float]
    #: the report's covariance (6, 6), built when first needed (see ``_cov``)
    p: NDArray | None
    tov_ns: int
    #: the covariance's upper triangle (21 numbers) then the acceleration noise q: what
    #: ``dynamics.predicted_covariances`` predicts the covariance from
    numbers: list[float]
    received_ns: int
    releasable: tuple[Nation, ...]
    quality: int
    boosting: bool
    phase: FlightPhase
    launch_estimate: GroundEstimate | None
    data_mode: DataMode
    misfit: int = 0
    #: Left its event for disagreeing with the other nations; not yet placed again.
    orphan: bool = False
    #: (nation, track_number), the member's key
    key: tuple = ()
    #: Reports held back while the track awaits confirmation (see ``confirm_descending_reports``).
    held: int = 0


@dataclass(slots=True)
class _Prior:
    """An event's state from before it coasted, and the releasability of what made it."""

    x: list[float]
    p: NDArray
    tov_ns: int
    releasable: tuple[Nation, ...]


@dataclass(slots=True)
class _Event:
    event_id: int
    data_mode: DataMode
    members: dict[tuple[Nation, int], _Member] = field(default_factory=dict)
    status: str = "ACTIVE"
    x: NDArray | None = None
    p: NDArray | None = None
    tov_ns: int = 0
    last_received_ns: int = 0
    #: Time of validity and wall time of the event's first state: the pace of track time
    #: against wall time (replays run faster than real time) for coasting.
    first_tov_ns: int = 0
    first_received_ns: int = 0
    last_hops: tuple = ()
    #: Some live member has said which flight phase it is in (not UNKNOWN).
    phase_declared: bool = False
    first_alert_id: int = 0
    last_alert_id: int = 0
    launch_alert_id: int = 0
    contributors: set = field(default_factory=set)
    nations: list[Nation] = field(default_factory=list)
    nations_text: str = ""
    releasable: list[Nation] = field(default_factory=list)
    rel_key: tuple = ()
    quality: int = 0
    phase: FlightPhase = FlightPhase.UNKNOWN
    boosting: bool = False
    max_alt_m: float = 0.0
    #: Apogee altitude of the Kepler orbit through the newest exo-atmospheric ballistic state
    #: (a lofted ICBM is often unseen near its apogee; the fit is not).
    orbit_apogee_m: float = 0.0
    #: CI weights by live-member set, with the time they were optimised at.
    weights: dict = field(default_factory=dict)
    impact_tov_ns: int = -(1 << 62)
    impact_rx_ns: int = -(1 << 62)
    launch: GroundEstimate | None = None
    launch_alt_m: float = math.inf
    impact: GroundPoint | None = None
    impact_estimate: GroundEstimate | None = None
    impact_area: ImpactArea | None = None
    #: (lat, lon, area, radius) of the last impact area computed (see ``_impact_area``)
    area_memo: tuple | None = None
    issued_impact: GroundPoint | None = None
    issued_impact_area: ImpactArea | None = None
    issued_impact_alert_id: int = 0
    overflight: list[Nation] = field(default_factory=list)
    overflown: set = field(default_factory=set)
    overflight_alert_id: int = 0
    lost_alert_id: int = 0
    #: track time of the latest TRACK_COAST
    coast_tov_ns: int = -(1 << 62)
    #: (state, covariance, track time) of the latest TRACK_COAST flown above the air
    coasted: tuple | None = None
    #: The event's last state before it coasted, fused with the tracks that re-acquired it
    #: (``FusionConfig.coast_prior``).
    prior: _Prior | None = None
    #: CI weights (fused members, prior) and the track time they were optimised at.
    prior_weights: tuple | None = None
    final: bool = False
    assessment: Assessment | None = None
    merge_votes: dict[int, int] = field(default_factory=dict)
    #: Events this one's first track was compared with at its birth and did not gate with.
    distinct_from: set[int] = field(default_factory=set)
    state: FusedState | None = None


class FusionEngine:
    """Associates national tracks into events (one per missile), fuses them by covariance
    intersection, predicts launch and impact, and issues the alert lifecycle."""

    def __init__(self, config: FusionConfig | None = None) -> None:
        self.config = config or FusionConfig()
        c = self.config
        kernel.warm()  # compiled (or loaded from the disk cache) now, not at the first report
        self._gate_bias = association.bias_covariance(c.bias_pos_sigma_m, c.bias_vel_sigma_mps)
        self._members: dict[tuple[Nation, int], _Member] = {}
        self._events: dict[int, _Event] = {}
        self._next_event_id = 1
        self._last_alert_id = 0
        #: Reports of tracks awaiting confirmation (``confirm_descending_reports``): accepted,
        #: part of the track's history, but no alert.
        self.reports_held = 0
        #: Reports refused as implausible (``FusionConfig.screen_reports``).
        self.reports_refused = 0
        self._next_scan_tov_ns: int | None = None
        self._latest_tov_ns = -(1 << 62)
        #: when the report that set ``_latest_tov_ns`` arrived (track time between reports, wall)
        self._latest_rx_ns = 0
        self._last_hops: tuple = ()
        #: events whose impact prediction ``ingest`` left for ``predict_due`` (an ordered set)
        self._due: dict[int, None] = {}
        self._stale_ns = int(c.member_stale_s * _NS)
        self._drop_ns = int(c.member_drop_s * _NS)
        self._reweight_ns = int(c.reweight_interval_s * _NS)
        self._impact_ns = int(c.impact_interval_s * _NS)
        self._unknown_hold_ns = int(c.unknown_phase_hold_s * _NS)
        self._scan_ns = int(c.scan_interval_s * _NS)
        self._max_flight_ns = int(c.max_flight_s * _NS)
        self._coast_ns = int(c.coast_update_s * _NS)
        self._coast_until_ns = int(c.coast_until_s * _NS)
        self._future_ns = int(c.max_future_s * _NS)

    # ------------------------------------------------------------------ public API

    @property
    def last_alert_id(self) -> int:
        return self._last_alert_id

    def ingest(
        self,
        report: TrackReport,
        *,
        node_sent_ns: int,
        received_ns: int,
        clock_offset_ns: int = 0,
        clock_rtt_ns: int = 0,
    ) -> list[Alert]:
        """Take one national track report; return the alerts it causes (at least one
        TRACK_UPDATE when it updates an event)."""
        hops = (report.measured_ns, node_sent_ns, received_ns, report.nation, clock_offset_ns, clock_rtt_ns)
        out: list[Alert] = []
        key = (report.nation, report.track_number)
        tov = report.time_of_validity_ns
        member = self._members.get(key)
        if self.config.screen_reports and report_problem(report, kernel.covariance_ok) is not None:
            self.reports_refused += 1
            return out
        if report.lost:
            if member is not None:
                self._detach(member)
                del self._members[key]
            return out
        x = [*report.position_ecef_m, *report.velocity_ecef_mps]
        numbers = [*report.covariance, self.config.acceleration_noise(report.boosting, x)]
        jumped_from = 0
        if member is None:
            member = _Member(
                report.nation, report.track_number, 0, x, None, tov, numbers, received_ns,
                tuple(report.releasable_to), report.track_quality, report.boosting,
                report.flight_phase, report.launch_estimate, report.data_mode,
            )
            member.key = key
            self._members[key] = member
        else:
            if member.event_id and self._jumped(member, x, numbers, tov):
                # the national tracker's track now follows another object: held apart, as a
                # track that stops gating with its event is (``_scan``), until it gates somewhere
                # or proves to be an object of its own
                jumped_from = member.event_id
                self._detach(member)
                member.orphan = True
                member.misfit = 0
            member.x, member.p, member.tov_ns, member.received_ns = x, None, tov, received_ns
            member.numbers = numbers
            member.releasable = tuple(report.releasable_to)
            member.quality, member.boosting, member.phase = report.track_quality, report.boosting, report.flight_phase
            if report.launch_estimate is not None:
                member.launch_estimate = report.launch_estimate
        event = self._events.get(member.event_id)
        if member.orphan:
            event = self._best_gated(member)
            if event is None:
                return out
            member.orphan = False
            member.misfit = 0
            self._attach(member, event)
            if jumped_from:
                self._withdraw_duplicate(jumped_from, event.event_id, hops, received_ns, out)
            if event.status == "LOST":
                self._revive(event, hops, received_ns, out)
        elif event is None or event.final or event.status == "IMPACTED":
            if event is not None:
                event.members.pop(key, None)
                member.event_id = 0
            event = self._associate_new(member, hops, received_ns, out)
            if event is None:
                return out
        elif event.status == "LOST":
            self._revive(event, hops, received_ns, out)
        if tov > self._latest_tov_ns and (report.data_mode != DataMode.REAL or tov - received_ns <= self._future_ns):
            self._latest_tov_ns = tov
            self._latest_rx_ns = received_ns
        self._last_hops = hops
        self._update_event(event, tov, hops, received_ns)
        out.append(self._track_update(event, received_ns, hops))
        self._lifecycle(event, hops, received_ns, out)
        return out

    def tick(self, now_ns: int) -> list[Alert]:
        """Advance wall time: re-association and duplicate merging (once per ``scan_interval_s``
        of track time), then time-outs: IMPACT or TRACK_LOST, then FINAL_ASSESSMENT."""
        out: list[Alert] = []
        c = self.config
        t = self._latest_tov_ns
        if self._last_hops and (self._next_scan_tov_ns is None or t >= self._next_scan_tov_ns):
            self._next_scan_tov_ns = t + self._scan_ns
            self._scan(t, self._last_hops, now_ns, out)
            for a in out:
                a.hops.fused_ns = now_ns
        if self._due:
            out += self.predict_due(now_ns)
        for event in list(self._events.values()):
            idle = now_ns - event.last_received_ns
            if event.status == "ACTIVE" and idle > c.lost_timeout_ns and not self._coasting(event, idle):
                hops = event.last_hops
                if self._near_ground(event):
                    event.status = "IMPACTED"
                    self._predict(event, force=True)
                    out.append(self._alert(event, AlertKind.IMPACT, now_ns, hops, self._impact_text(event),
                                           fused_ns=now_ns))
                else:
                    event.status = "LOST"
                    alert = self._alert(event, AlertKind.TRACK_LOST, now_ns, hops, self._lost_text(event),
                                        fused_ns=now_ns)
                    event.lost_alert_id = alert.alert_id
                    out.append(alert)
            if event.status in ("IMPACTED", "LOST") and not event.final and idle > c.final_timeout_ns:
                event.final = True
                self._assess(event)
                out.append(self._alert(event, AlertKind.FINAL_ASSESSMENT, now_ns, event.last_hops,
                                       self._final_text(event), fused_ns=now_ns))
        if self._coast_ns > 0 and self._last_hops:
            # track time now: the newest report's time of validity plus the wall time since it
            # arrived (a replay faster than real time coasts behind, never ahead)
            t_ns = self._latest_tov_ns + max(0, now_ns - self._latest_rx_ns)
            for event in self._events.values():
                if event.status == "ACTIVE":
                    self._coast(event, t_ns, now_ns, out)
        return out

    def _coast(self, event: _Event, t_ns: int, now_ns: int, out: list[Alert]) -> None:
        """TRACK_COAST: a silent ballistic event's state predicted to track time ``t_ns``, once
        per ``coast_update_s``, until ``coast_until_s`` before its predicted fall (and never for
        an event with no impact prediction yet). The event's own state is unchanged:
        the next report is fused with the members, not with this prediction."""
        gp = event.impact
        if event.x is None or event.boosting or gp is None or t_ns >= gp.time_ns:
            return
        if gp.time_ns - t_ns <= self._coast_until_ns:
            return
        if t_ns - max(event.tov_ns, event.coast_tov_ns) < self._coast_ns:
            return
        dt = (t_ns - event.tov_ns) / _NS
        if dt > self.config.max_flight_s:
            return
        event.coast_tov_ns = t_ns
        xe = event.x
        if _r2(xe) >= _EXO_R2:
            # above the air: flown by sigma points through the gravity field, on from the last
            # TRACK_COAST (one short step); the constant-velocity transition is wrong over
            # minutes, and with ``q_ballistic`` it gave 290 km (1-sigma) about a 3.4 km error
            base = event.coasted
            if base is None or base[2] <= event.tov_ns:
                base = (xe, event.p, event.tov_ns)
            xa, p = fly_state(np.asarray(base[0]), base[1], (t_ns - base[2]) / _NS, self.config.q_exo_coast)
            event.coasted = (xa, p, t_ns)
            x = xa.tolist()
        else:
            x = dynamics.predict_state(xe.tolist(), dt)
            p = dynamics.predict_covariance(event.p, dt, self.config.acceleration_noise(False, xe))
        state = _fused_state(t_ns, x, p.take(_IU_FLAT).tolist(), 0)
        lat, lon, alt = state.lat_deg, state.lon_deg, state.alt_m
        text = (f"TRACK_COAST event {event.event_id}: predicted {_latlon(lat, lon)} alt {alt / 1000:.0f} km, "
                f"no report for {(t_ns - event.tov_ns) / _NS:.0f} s (last {event.nations_text})")
        out.append(self._alert(event, AlertKind.TRACK_COAST, now_ns, event.last_hops, text,
                               fused_ns=now_ns, state=state, nations=[]))

    def clock_stepped(self, step_ns: int) -> list[Alert]:
        """The wall clock that ``received_ns`` and ``now_ns`` come from stepped by ``step_ns``
        (an NTP step, a resumed VM): every wall time the engine holds moves with it, so that its
        time-outs measure silence and not the step. Track time is not touched. No alerts."""
        for event in self._events.values():
            event.last_received_ns += step_ns
            event.first_received_ns += step_ns
            event.impact_rx_ns += step_ns
        for member in self._members.values():
            member.received_ns += step_ns
        if self._latest_rx_ns:
            self._latest_rx_ns += step_ns
        return []

    def predict_due(self, now_ns: int) -> list[Alert]:
        """Make the impact predictions that ``ingest`` left due (``defer_impact``), oldest
        first; their alerts carry the hops of each event's newest report, issued at ``now_ns``."""
        out: list[Alert] = []
        due, self._due = self._due, {}
        for event_id in due:
            event = self._events.get(event_id)
            if event is not None and event.status == "ACTIVE" and self._predict(event):
                self._announce_impact(event, event.last_hops, now_ns, out)
        for a in out:
            a.hops.fused_ns = now_ns
        return out

    @property
    def predictions_due(self) -> bool:
        """Whether ``predict_due`` has work (with ``defer_impact``)."""
        return bool(self._due)

    def events(self) -> list[EventSummary]:
        """Every event (one per missile), in event-id order."""
        out = []
        for e in self._events.values():
            out.append(
                _construct(
            EventSummary,
                    event_id=e.event_id,
                    status=e.status,
                    first_alert_id=e.first_alert_id,
                    last_alert_id=e.last_alert_id,
                    nations=list(e.nations),
                    state=e.state,
                    launch=e.launch,
                    impact=e.impact_estimate,
                    impact_area=e.impact_area,
                    overflight=list(e.overflight),
                    assessment=e.assessment,
                )
            )
        return out

    # ------------------------------------------------------------ association

    def _jumped(self, member: _Member, x: list[float], numbers: list[float], tov: int) -> bool:
        """Whether a track's new report is far from its own previous one flown to the new time:
        beyond 5 sigma of both positions plus 5 km, the ~50 m/s^2 a descending body's drag can
        add over the gap, and the distance flown in a few seconds of clock error. Scalar: a few
        microseconds on the per-report path."""
        dt = (tov - member.tov_ns) / _NS
        if abs(dt) > self.config.max_flight_s:
            # longer apart than any flight: not one missile's path (and no prediction spans it)
            return True
        if dt <= 0.0:
            return False
        px = dynamics.predict_state(member.x, dt)
        d2 = (x[0] - px[0]) ** 2 + (x[1] - px[1]) ** 2 + (x[2] - px[2]) ** 2
        old, new = member.numbers, numbers  # upper triangle: xx, yy, zz at 0, 6, 11
        var = old[0] + old[6] + old[11] + new[0] + new[6] + new[11]
        # a node clock that stepped by seconds, before the relay's offset estimate catches up,
        # misdates reports by that much: that is not a jump
        speed = math.sqrt(x[3] * x[3] + x[4] * x[4] + x[5] * x[5])
        slack = 5_000.0 + 25.0 * dt * dt + _CLOCK_STEP_S * speed
        return d2 > 25.0 * var + slack * slack

    def _associate_new(self, member: _Member, hops: tuple, received_ns: int, out: list[Alert]) -> _Event | None:
        """Put a track the engine has not placed yet into the best-gated event, or a new one;
        None while a track with no evidence of a launch awaits confirmation."""
        distinct: set[int] = set()
        best = self._best_gated(member, distinct)
        if best is None:
            # decided on the track's first report and kept: a phantom's velocity wanders
            suspect = member.held > 0 or (not member.boosting and _r_dot_v(member.x) < 0.0)
            if suspect and member.held + 1 < self.config.confirm_descending_reports:
                member.held += 1
                self.reports_held += 1
                return None
            event = self._new_event(member, hops, received_ns, out)
            event.distinct_from = distinct
            return event
        self._attach(member, best)
        if best.status == "LOST":
            self._revive(best, hops, received_ns, out)
        return best

    def _best_gated(self, member: _Member, distinct: set[int] | None = None) -> _Event | None:
        """The event a track gates with best at its time of validity, or None. ``distinct``
        collects the events in flight the track was compared with and did not gate with."""
        best, best_cost = None, self.config.gate_chi2
        for event in self._events.values():
            if event.final or event.status == "IMPACTED" or event.data_mode != member.data_mode:
                continue
            if event.x is None or not self._in_flight_at(event, member.tov_ns):
                continue
            # A boosting track is a launch: not the event of a missile that has been ballistic and
            # silent for longer than a member lasts (a coasting event's gate is wide after minutes)
            if member.boosting and not event.boosting and member.tov_ns - event.tov_ns > self._drop_ns:
                continue
            cost = self._cost(member, event, member.tov_ns)
            if distinct is not None and cost > self.config.gate_chi2:
                distinct.add(event.event_id)
            # A nation rarely holds two live tracks on one missile: prefer another event.
            if any(m.nation == member.nation and member.tov_ns - m.tov_ns < self._stale_ns
                   for m in event.members.values()):
                cost += 0.5 * self.config.gate_chi2
            if cost < best_cost:
                best, best_cost = event, cost
        return best

    def _in_flight_at(self, event: _Event, t_ns: int) -> bool:
        """Whether the event's missile can still be flying at ``t_ns``: within ``max_flight_s`` of
        its state (so that no prediction spans more than a flight, and a report dated a year away
        costs no more than any other) and not after its predicted fall (``impact_window_s`` of
        slack), when the prediction would run through the ground."""
        if abs(t_ns - event.tov_ns) > self._max_flight_ns:
            return False
        gp = event.impact
        return gp is None or t_ns <= gp.time_ns + int(self.config.impact_window_s * _NS)

    def _cost(self, member: _Member, event: _Event, t_ns: int) -> float:
        """Squared Mahalanobis distance between a national track and an event at time ``t_ns``."""
        if abs(t_ns - member.tov_ns) > self._max_flight_ns or abs(t_ns - event.tov_ns) > self._max_flight_ns:
            return association.FORBIDDEN
        dt_m = (t_ns - member.tov_ns) / _NS
        dt_e = (t_ns - event.tov_ns) / _NS
        xm = np.array(dynamics.predict_state(member.x, dt_m))
        xe = np.array(dynamics.predict_state(event.x.tolist(), dt_e))
        pe = dynamics.predict_covariance(event.p, dt_e, self.config.acceleration_noise(event.boosting, event.x))
        # the prefilter uses the event's covariance at t_ns (a coasting event's is wide)
        d = xm[:3] - xe[:3]
        if float(d @ d) > _gate_reach2(float(np.trace(pe[:3, :3]))):
            return association.FORBIDDEN
        pm = dynamics.predict_covariance(_cov(member), dt_m, self.config.acceleration_noise(member.boosting, member.x))
        return association.mahalanobis2(xm - xe, pm + pe + self._gate_bias)

    def _new_event(self, member: _Member, hops: tuple, received_ns: int, out: list[Alert]) -> _Event:
        event = _Event(self._next_event_id, member.data_mode)
        self._next_event_id += 1
        self._events[event.event_id] = event
        self._attach(member, event)
        self._update_event(event, member.tov_ns, hops, received_ns)
        event.first_tov_ns, event.first_received_ns = event.tov_ns, received_ns
        self._estimate_launch(event)
        alert = self._alert(event, AlertKind.LAUNCH_DETECTED, received_ns, hops, self._launch_text(event))
        event.first_alert_id = event.launch_alert_id = alert.alert_id
        out.append(alert)
        return event

    def _attach(self, member: _Member, event: _Event) -> None:
        member.event_id = event.event_id
        event.members[(member.nation, member.track_number)] = member

    def _detach(self, member: _Member) -> None:
        event = self._events.get(member.event_id)
        if event is not None:
            event.members.pop((member.nation, member.track_number), None)
        member.event_id = 0

    def _revive(self, event: _Event, hops: tuple, received_ns: int, out: list[Alert]) -> None:
        """A lost event's track is back: withdraw the TRACK_LOST."""
        event.status = "ACTIVE"
        if event.lost_alert_id:
            text = f"CORRECTION event {event.event_id}: track re-acquired, withdraws TRACK_LOST alert {event.lost_alert_id}"
            out.append(self._alert(event, AlertKind.CORRECTION, received_ns, hops, text,
                                   corrects=event.lost_alert_id))
            event.lost_alert_id = 0

    def _scan(self, t_ns: int, hops: tuple, received_ns: int, out: list[Alert]) -> None:
        """Periodic re-association per nation, then merging of duplicate events.

        A track stays with its event while it gates with the event's picture from the other
        nations. Tracks that do not are re-assigned globally (one solve per nation) to the events
        they do gate with; one that gates with none for ``merge_scans`` scans in a row becomes
        an event of its own (its nation's tracker followed another object).
        """
        c = self.config
        for key, m in list(self._members.items()):
            # either way: a track dated far after the others is no more current than one far before
            if abs(t_ns - m.tov_ns) > self._drop_ns:
                self._detach(m)
                del self._members[key]
        active = [e for e in self._events.values() if e.status == "ACTIVE" and e.x is not None]
        moved_to: dict[int, int] = {}
        for nation in NATIONS:
            tracks = [m for m in self._members.values()
                      if m.nation == nation and abs(t_ns - m.tov_ns) <= self._stale_ns]
            if not tracks or not active:
                continue
            cache: dict[int, tuple | None] = {}

            def others(e: _Event, nation: Nation = nation, cache: dict = cache) -> tuple | None:
                if e.event_id not in cache:
                    live = [o for o in e.members.values()
                            if o.nation != nation and abs(t_ns - o.tov_ns) <= self._stale_ns]
                    if not live:
                        cache[e.event_id] = None
                    else:
                        xs, ps = self._predicted(live, t_ns)
                        # even weights: consistent, and gating needs no optimum
                        w = np.full(len(live), 1.0 / len(live))
                        x, p, _ = ci.fuse(xs, ps, w) if len(live) > 1 else (xs[0], ps[0], None)
                        # what every gate test against this picture needs, computed once
                        reach2 = _gate_reach2(float(p[0, 0] + p[1, 1] + p[2, 2]))
                        cache[e.event_id] = (x, x.tolist(), reach2, p + self._gate_bias)
                return cache[e.event_id]

            suspects = []
            for m in tracks:
                e = self._events.get(m.event_id)
                if e is not None and e.status == "ACTIVE":
                    o = others(e)
                    if o is None or self._cost_to(m, o, t_ns) <= c.gate_chi2:
                        m.misfit = 0
                        continue
                    m.misfit += 1
                suspects.append(m)
            if not suspects:
                continue
            cost = np.full((len(suspects), len(active)), association.FORBIDDEN)
            for i, m in enumerate(suspects):
                for j, e in enumerate(active):
                    o = others(e) if e.data_mode == m.data_mode else None
                    if o is not None:
                        cost[i, j] = self._cost_to(m, o, t_ns)
            pairs = dict(association.assign(cost, c.gate_chi2))
            for i, m in enumerate(suspects):
                j = pairs.get(i)
                if j is None and cost[i].min() <= c.gate_chi2:
                    # the one-to-one solution gave its event to another track of this nation:
                    # a national tracker holding two tracks on one missile (a swap or a
                    # duplicate). Join it anyway rather than invent a second event.
                    j = int(np.argmin(cost[i]))
                if j is not None:
                    if active[j].event_id != m.event_id:
                        if m.event_id:
                            moved_to[m.event_id] = active[j].event_id
                        self._detach(m)
                        self._attach(m, active[j])
                    m.misfit = 0
                    m.orphan = False
                elif m.event_id and m.misfit >= c.merge_scans and len(self._events[m.event_id].members) > 1:
                    # it left its missile: hold it apart, silently, until it gates somewhere
                    # or proves to be an object of its own (national trackers often drop such
                    # tracks a moment later)
                    self._detach(m)
                    m.orphan = True
                elif m.orphan:
                    m.misfit += 1
                    if m.misfit >= c.orphan_scans:
                        m.orphan = False
                        m.misfit = 0
                        self._new_event(m, hops, received_ns, out)
        # an event whose every track went to another event was a duplicate of that event
        for old_id, new_id in moved_to.items():
            self._withdraw_duplicate(old_id, new_id, hops, received_ns, out)
        self._merge_duplicates(t_ns, hops, received_ns, out)

    def _withdraw_duplicate(self, old_id: int, new_id: int, hops: tuple, received_ns: int, out: list[Alert]) -> None:
        """An active event left with no track after its tracks went to event ``new_id`` was a
        duplicate of it: withdraw its LAUNCH_DETECTED."""
        e = self._events.get(old_id)
        if e is not None and not e.members and e.status == "ACTIVE" and new_id in self._events:
            del self._events[old_id]
            text = (f"CORRECTION event {old_id}: duplicate of event {new_id}, "
                    f"withdraws LAUNCH_DETECTED alert {e.launch_alert_id}")
            out.append(self._alert(e, AlertKind.CORRECTION, received_ns, hops, text,
                                   corrects=e.launch_alert_id))

    def _cost_to(self, m: _Member, other: tuple, t_ns: int) -> float:
        """Gate distance of a national track to a fused picture valid at ``t_ns``:
        (x, x as a list, squared reach of the position pre-test, P + registration bias)."""
        x, xl, reach2, s0 = other
        dt = (t_ns - m.tov_ns) / _NS
        xm = dynamics.predict_state(m.x, dt) if dt else m.x
        # far apart in position: no need to solve
        if (xm[0] - xl[0]) ** 2 + (xm[1] - xl[1]) ** 2 + (xm[2] - xl[2]) ** 2 > reach2:
            return association.FORBIDDEN
        flat = np.array([*dynamics.basis_coefficients(dt), *m.numbers, *xm])
        s = dynamics.predicted_covariances(flat[:6], flat[6:28])[0] + s0
        return association.mahalanobis2(flat[28:] - x, s)

    def _merge_duplicates(self, t_ns: int, hops: tuple, received_ns: int, out: list[Alert]) -> None:
        """Two active events with no nation in common, within the gate for several scans in a
        row, are one missile: the younger joins the older and its LAUNCH_DETECTED is withdrawn.

        Not an event whose first track did not gate with the other when it was born: the two
        were told apart then, and a silent event's gate only widens as it coasts (in the
        atmosphere, to tens of km within a minute), which is no evidence that they are one. Two
        SRBMs launched 42 s apart on one path were merged that way once their first was silent."""
        c = self.config
        # events left without tracks (their nations' tracks re-initiated elsewhere) take part too
        active = [e for e in self._events.values() if e.status == "ACTIVE" and e.x is not None]
        for a_i, a in enumerate(active):
            na = {m.nation for m in a.members.values()}
            for b in active[a_i + 1 :]:
                if (b.data_mode != a.data_mode or na & {m.nation for m in b.members.values()}
                        or not (a.members or b.members)
                        or b.event_id in a.distinct_from or a.event_id in b.distinct_from):
                    a.merge_votes.pop(b.event_id, None)
                    continue
                if not (self._in_flight_at(a, t_ns) and self._in_flight_at(b, t_ns)):
                    a.merge_votes.pop(b.event_id, None)
                    continue
                dt_a = (t_ns - a.tov_ns) / _NS
                dt_b = (t_ns - b.tov_ns) / _NS
                xa = np.array(dynamics.predict_state(a.x.tolist(), dt_a))
                xb = np.array(dynamics.predict_state(b.x.tolist(), dt_b))
                pa = dynamics.predict_covariance(a.p, dt_a, self.config.acceleration_noise(a.boosting, a.x))
                pb = dynamics.predict_covariance(b.p, dt_b, self.config.acceleration_noise(b.boosting, b.x))
                d = xa[:3] - xb[:3]
                if float(d @ d) > _gate_reach2(float(np.trace(pa[:3, :3]) + np.trace(pb[:3, :3]))):
                    a.merge_votes.pop(b.event_id, None)
                    continue
                if association.mahalanobis2(xa - xb, pa + pb + self._gate_bias) <= c.gate_chi2:
                    a.merge_votes[b.event_id] = a.merge_votes.get(b.event_id, 0) + 1
                else:
                    a.merge_votes.pop(b.event_id, None)
        for a in active:
            for b_id, votes in list(a.merge_votes.items()):
                b = self._events.get(b_id)
                if votes < c.merge_scans or b is None or b.status != "ACTIVE" or a.status != "ACTIVE":
                    continue
                for m in list(b.members.values()):
                    self._detach(m)
                    self._attach(m, a)
                del self._events[b_id]
                a.merge_votes.pop(b_id, None)
                text = (f"CORRECTION event {b.event_id}: duplicate of event {a.event_id}, "
                        f"withdraws LAUNCH_DETECTED alert {b.launch_alert_id}")
                out.append(self._alert(b, AlertKind.CORRECTION, received_ns, hops, text,
                                       corrects=b.launch_alert_id))

    # ------------------------------------------------------------ estimation

    def _predicted(self, members: list[_Member], t_ns: int) -> tuple[NDArray, NDArray]:
        """States (m, 6) and covariances (m, 6, 6) of members moved to ``t_ns`` (the kernel's
        prediction, unscaled: the row ``_update_event`` builds, every weight 1)."""
        row: list[float] = []
        for m in members:
            row += ((t_ns - m.tov_ns) / _NS, 1.0, *m.x, *m.numbers)
        return kernel.predict_members(np.array(row), len(members))

    def _update_event(self, event: _Event, t_ns: int, hops: tuple, received_ns: int) -> None:
        """Fuse the event's live members at time ``t_ns`` (the newest report's time of validity).

        The per-report hot path: one pass over the members in Python (the bookkeeping and the
        kernel's input row), then one compiled call (``kernel.fuse_members``: prediction, CI,
        geodetic position) whatever the number of members; two more when CI weights are due."""
        members = event.members.values()
        for m in members:
            if m.tov_ns > t_ns:
                t_ns = m.tov_ns
        oldest = t_ns - self._stale_ns
        live = [m for m in members if m.tov_ns >= oldest] or list(members)
        n = len(live)
        ci_rule = n > 1 and self.config.fusion_rule != "independent"
        # CI weights of this member set, if optimised lately. Then each member's covariance is
        # divided by its weight before the inversion, which gives w_i I_i at no cost, and a
        # member with weight 0 is left out of the arithmetic (it contributes nothing).
        scales = None
        if ci_rule:
            key = tuple([m.key for m in live])
            cached = event.weights.get(key)
            if cached is not None and t_ns - cached[1] < self._reweight_ns:
                scales = cached[2]
        # one row for the compiled kernel: per member used, its time step, its scale (the
        # inverse of its CI weight), its state and its covariance's numbers
        row: list[float] = []
        used_n = 0
        quality, boosting, rank, phase = 0, False, -1, FlightPhase.UNKNOWN
        rel_key = []
        for i, m in enumerate(live):
            rel_key.append((m.nation, m.releasable))
            if m.quality > quality:
                quality = m.quality
            boosting = boosting or m.boosting
            r = _PHASE_RANK.get(m.phase, -1)
            if r > rank:
                rank, phase = r, m.phase
            sc = 1.0 if scales is None else scales[i]
            if not sc:
                continue
            row.append((t_ns - m.tov_ns) / _NS)
            row.append(sc)
            row += m.x
            row += m.numbers
            used_n += 1
        flat = np.array(row)
        if not ci_rule or scales is not None:
            # one member, the independent rule, or CI with this member set's recent weights
            res = kernel.fuse_members(flat, used_n)
        elif self.config.fusion_rule == "ici":
            xs, ps = kernel.predict_members(flat, n)
            # pair weights and order (most certain first), re-optimised like CI's weights
            ikey = ("ici", *key)
            cached = event.weights.get(ikey)
            if cached is not None and t_ns - cached[1] < self._reweight_ns:
                x, p, _ = ci.inverse_ci(xs[cached[2]], ps[cached[2]], cached[0])
            else:
                order = np.argsort(ps[:, _POS_DIAG, _POS_DIAG].sum(axis=1))
                x, p, w = ci.inverse_ci(xs[order], ps[order])
                event.weights[ikey] = (w, t_ns, order)
            res = _result_row(x, p)
        else:
            # CI weights due: optimised on the predicted covariances, then fused with them
            _, ps = kernel.predict_members(flat, n)
            w = ci.optimal_weights(ci.inv_unchecked(ps), self.config.ci_criterion)
            sc = [1.0 / v if v > 0.0 else 0.0 for v in w.tolist()]
            event.weights[key] = (w, t_ns, sc)
            kept = [k for k in range(n) if sc[k]]
            block = flat.reshape(n, kernel.MEMBER_WIDTH)[kept]
            block[:, 1] = [sc[k] for k in kept]
            res = kernel.fuse_members(block.reshape(-1), len(kept))
        prior = self._coast_prior(event, live, t_ns)
        if prior is not None:
            res = self._with_prior(event, prior, res, t_ns)
            if event.prior is not None:  # still used: its releasability keys the recompute too
                rel_key.append((None, prior.releasable))
        out = res.tolist()
        if not math.isfinite(sum(out)):
            # a singular covariance: the event keeps its last state
            raise np.linalg.LinAlgError("singular covariance in fusion")
        xl, cov = out[:6], out[6:27]
        x, p = res[:6], res[30:].reshape(6, 6)
        event.x, event.p, event.tov_ns = x, p, t_ns
        event.last_received_ns = received_ns
        event.last_hops = hops
        # nations and releasability change rarely: recompute only when their inputs do
        if rel_key != event.rel_key:
            event.rel_key = rel_key
            nations = {m.nation for m in live}
            event.contributors |= nations
            event.nations = [n for n in NATIONS if n in nations]
            event.nations_text = ",".join(event.nations)
            rel = set(NATIONS)
            for m in live:
                rel &= set(m.releasable)
            if event.prior is not None:  # it carries what its own contributors allowed
                rel &= set(event.prior.releasable)
            event.releasable = [n for n in NATIONS if n in rel]
        event.quality = quality
        event.phase_declared = rank >= 0
        event.boosting = boosting
        # no member says (rank < 0): the phase from the geometry
        state = event.state = _fused_state(
            t_ns, xl, cov, quality, FlightPhase.BOOST if boosting else None if rank < 0 else phase, out[27:30]
        )
        event.phase = state.flight_phase
        alt = state.alt_m
        if alt > event.max_alt_m:
            event.max_alt_m = alt
        if alt > _EXO_ALT_M and not boosting:
            event.orbit_apogee_m = dynamics.kepler_apogee_alt(xl, state.lat_deg)

    def _coast_prior(self, event: _Event, live: list[_Member], t_ns: int) -> _Prior | None:
        """The coasted prior to fuse with ``live`` at ``t_ns`` (``FusionConfig.coast_prior``), or
        None: taken when the event's last state is older than a member stays live (so no track
        that made it is live, and these re-acquire it), kept while the newest member is
        ballistic above 120 km and CI gives the prior weight."""
        prior = event.prior
        if prior is None and (event.tov_ns >= t_ns - self._stale_ns or event.x is None or event.boosting):
            return None  # the per-report path: no coast behind this update
        c = self.config
        newest = max(live, key=lambda m: m.tov_ns)
        if newest.boosting or _r2(newest.x) < _EXO_R2:
            event.prior = None
            return None
        if prior is None:
            if not c.coast_prior or c.fusion_rule == "independent":
                return None
            if _r2(event.x) < _EXO_R2:
                return None
            if float(np.trace(event.p[3:, 3:])) > 3.0 * c.coast_prior_max_vel_sigma_mps**2:
                return None  # it knew the velocity no better than a young track does
            event.prior = prior = _Prior(event.x.tolist(), event.p, event.tov_ns, tuple(event.releasable))
            event.prior_weights = None
        return prior

    def _with_prior(self, event: _Event, prior: _Prior, res: NDArray, t_ns: int) -> NDArray:
        """The members' fusion ``res`` (the kernel's row) fused by CI with the coasted prior
        predicted to ``t_ns``. The weight maximises the fused information (det), not the
        position trace the members' weights minimise: what the prior adds is the velocity, which
        that trace does not see (for a young track with an uncorrelated covariance the trace
        gives the prior no weight at all). No weight: the tracks know it all, the prior goes."""
        q = self.config.q_exo_coast
        cached = event.prior_weights
        due = cached is None or t_ns - cached[1] >= self._reweight_ns
        dt = (t_ns - prior.tov_ns) / _NS
        if due:
            # flown (sigma points through the gravity field) to now, and kept there
            xp, pp = fly_state(np.array(prior.x), prior.p, dt, q)
            prior.x, prior.p, prior.tov_ns = xp.tolist(), pp, t_ns
        else:
            # seconds from where it was last flown: the constant-velocity transition will do
            xp = np.array(dynamics.predict_state(prior.x, dt))
            pp = dynamics.predict_covariance(prior.p, dt, q)
        xs = np.stack([res[:6], xp])
        ps = np.stack([res[30:].reshape(6, 6), pp])
        if due:
            w = ci.optimal_weights(ci.inv_unchecked(ps), "det")
            event.prior_weights = (w, t_ns)
            if not w[1] > 0.0:
                event.prior = None
                return res
        else:
            w = cached[0]
        x, p, _ = ci.fuse(xs, ps, w)
        return _result_row(x, p)

    def _estimate_launch(self, event: _Event) -> None:
        """Launch point and time: from boost-phase states (lowest one wins), else national estimates,
        else ballistic back-propagation."""
        st = event.state
        if st is None:
            return
        if event.boosting or st.flight_phase == FlightPhase.BOOST:
            if st.alt_m < event.launch_alt_m:
                est = launch_from_boost(event.x, event.p, event.tov_ns)
                if est is not None:
                    t, lat, lon, radius = est
                    event.launch = _ground(t, lat, lon, radius, radius, 0.0, 0.0)
                    event.launch_alt_m = st.alt_m
            return
        if event.launch is not None:
            return
        national = [m.launch_estimate for m in event.members.values() if m.launch_estimate is not None]
        if national:
            event.launch = min(national, key=lambda g: g.semi_major_m)
            return
        est = launch_from_ballistic(event.x, event.tov_ns, self.config.max_flight_s)
        if est is not None:
            t, lat, lon = est
            event.launch = _ground(t, lat, lon, 20_000.0, 20_000.0, 0.0, 10.0)

    def _prediction_due(self, event: _Event) -> bool:
        """Whether the event's impact prediction is due: ``impact_interval_s`` of track time
        (and ``impact_min_wall_ns`` of wall time) since the last one."""
        # the interval differs a little by event (x1 to x1.44), so that a salvo's events, born
        # in the same second, do not all fall due together: one relay thread pays ~2 ms each
        if (event.x is None or event.boosting
                or event.tov_ns - event.impact_tov_ns < self._impact_ns + (event.event_id % 8) * (self._impact_ns >> 4)
                or event.last_received_ns - event.impact_rx_ns < self.config.impact_min_wall_ns):
            return False
        # Still climbing and no nation has said the boost is over: a national track's first
        # reports say UNKNOWN and not boosting, and a vacuum prediction from a KN-23 23 s after
        # launch falls ~600 km short (40 sigma). Not for ever: a feed that never declares a phase
        # gets predictions ``unknown_phase_hold_s`` after the event's first state.
        return (event.phase_declared or event.tov_ns - event.first_tov_ns >= self._unknown_hold_ns
                or _r_dot_v(event.x) <= 0.0)

    def _predict(self, event: _Event, force: bool = False) -> bool:
        """Recompute the impact prediction if due; True if a new one was made."""
        if event.x is None or event.boosting or not (force or self._prediction_due(event)):
            return False
        event.impact_tov_ns = event.tov_ns
        event.impact_rx_ns = event.last_received_ns
        gp = predict_impact(event.x, event.p, event.tov_ns, self.config.max_flight_s)
        if gp is None:
            return False
        event.impact = gp
        event.impact_estimate = _ground(gp.time_ns, gp.lat_deg, gp.lon_deg, gp.semi_major_m,
                                        gp.semi_minor_m, gp.orientation_deg, gp.time_sigma_s)
        event.impact_area, event.area_memo = _impact_area(gp.lat_deg, gp.lon_deg, event.area_memo)
        self._assess(event)
        return True

    def _assess(self, event: _Event) -> None:
        gp = event.impact
        apogee = max(event.max_alt_m, event.orbit_apogee_m, gp.apogee_m if gp is not None else 0.0)
        rng, flight = 0.0, 0.0
        if gp is not None and event.launch is not None:
            rng = great_circle_distance_m(event.launch.lat_deg, event.launch.lon_deg, gp.lat_deg, gp.lon_deg)
            flight = (gp.time_ns - event.launch.time_ns) / _NS
        event.assessment = _construct(
            Assessment,
            apogee_m=apogee, range_m=rng, flight_time_s=flight, impact_area=event.impact_area
        )

    def _coasting(self, event: _Event, idle_ns: int) -> bool:
        """True while a silent event's predicted ballistic flight is still under way: it keeps
        its ACTIVE status (no TRACK_LOST) so that tracks re-acquired after a gap in coverage
        (an ICBM lofted above every radar for most of its flight) gate against it and join it.

        Under way means, in track time, that the predicted impact is later than the newest time
        of validity of any report. If no report at all arrives, track time stands still; the
        wall-clock backstop is then the remaining predicted flight at the pace track time has
        passed for this event (replays run faster than real time), after ``lost_timeout_ns``.
        """
        gp = event.impact
        if gp is None or event.boosting or event.x is None or gp.time_ns <= self._latest_tov_ns:
            return False
        # A descending event whose feeds ended before its predicted fall (the last radar lost it
        # low over the sea, a minute out) coasts too: IMPACT comes when the fall is due, not
        # ``lost_timeout`` after the last report; feeds that end at the fall end the coast at once.
        wall_ns = event.last_received_ns - event.first_received_ns
        track_ns = event.tov_ns - event.first_tov_ns
        pace = max(1.0, track_ns / wall_ns) if wall_ns > 0 else 1.0
        remaining_ns = min(gp.time_ns - event.tov_ns, self._max_flight_ns)
        if self._near_ground(event):
            # nothing to re-acquire: the fall is due after the remaining flight
            return idle_ns <= max(self.config.lost_timeout_ns, remaining_ns / pace)
        return idle_ns <= self.config.lost_timeout_ns + remaining_ns / pace

    def _near_ground(self, event: _Event) -> bool:
        st = event.state
        if st is None or event.x is None:
            return False
        descending = _r_dot_v(event.x) < 0.0
        if descending and st.alt_m < self.config.near_ground_alt_m:
            return True
        gp = event.impact
        return (descending and gp is not None
                and (gp.time_ns - event.tov_ns) / _NS <= self.config.impact_window_s)

    # ------------------------------------------------------------ lifecycle

    def _lifecycle(self, event: _Event, hops: tuple, received_ns: int, out: list[Alert]) -> None:
        """Launch refinement, impact prediction and its re-issue rules, overflight, corrections."""
        if event.boosting:
            self._estimate_launch(event)
            return
        if event.launch is None:
            self._estimate_launch(event)
        if self.config.defer_impact:
            if self._prediction_due(event):
                self._due[event.event_id] = None
        elif self._predict(event):
            self._announce_impact(event, hops, received_ns, out)

    def _announce_impact(self, event: _Event, hops: tuple, received_ns: int, out: list[Alert]) -> None:
        """After a new impact prediction: IMPACT_PREDICTED when it leaves the last issued
        ellipse (CORRECTION of a protected area), OVERFLIGHT and its corrections."""
        gp = event.impact
        if _supersedes(gp, event.issued_impact):
            prev_area, prev_id = event.issued_impact_area, event.issued_impact_alert_id
            if prev_id and prev_area in _PROTECTED_AREAS and event.impact_area != prev_area:
                text = (f"CORRECTION event {event.event_id}: withdraws alert {prev_id} "
                        f"(predicted fall {_AREA_TEXT[prev_area]}); now predicted "
                        f"{_latlon(gp.lat_deg, gp.lon_deg)}, {_AREA_TEXT[event.impact_area]}")
                out.append(self._alert(event, AlertKind.CORRECTION, received_ns, hops, text, corrects=prev_id))
            alert = self._alert(event, AlertKind.IMPACT_PREDICTED, received_ns, hops, self._impact_pred_text(event))
            event.issued_impact = gp
            event.issued_impact_area = event.impact_area
            event.issued_impact_alert_id = alert.alert_id
            out.append(alert)
        st = event.state
        if st.alt_m > _OVERFLIGHT_MIN_ALT_M:
            here = _territory_of(st.lat_deg, st.lon_deg)
            if here is not None:
                event.overflown.add(here)
        # nations already flown over stay; the rest of the prediction adds the ones ahead
        ahead = set(_overflown(gp.ground_track))
        crossed = [n for n in NATIONS if n in ahead or n.value in event.overflown]
        if crossed != event.overflight:
            prev, prev_id = event.overflight, event.overflight_alert_id
            event.overflight = crossed
            if prev_id and any(n not in crossed for n in prev):
                text = (f"CORRECTION event {event.event_id}: withdraws OVERFLIGHT alert {prev_id} "
                        f"({'/'.join(prev)}); predicted ground track now crosses "
                        f"{'/'.join(crossed) if crossed else 'no JPN/KOR territory'}")
                out.append(self._alert(event, AlertKind.CORRECTION, received_ns, hops, text, corrects=prev_id))
                event.overflight_alert_id = 0
            if crossed:
                text = (f"OVERFLIGHT event {event.event_id}: predicted ground track crosses "
                        f"{'/'.join(crossed)} territory")
                alert = self._alert(event, AlertKind.OVERFLIGHT, received_ns, hops, text)
                event.overflight_alert_id = alert.alert_id
                out.append(alert)

    # ------------------------------------------------------------ alerts and text

    def _alert(
        self,
        event: _Event,
        kind: AlertKind,
        issued_ns: int,
        hops: tuple,
        text: str,
        *,
        corrects: int | None = None,
        fused_ns: int | None = None,
        state: FusedState | None = None,
        nations: list[Nation] | None = None,
    ) -> Alert:
        aid = self._next_alert_id(event)
        measured, sent, received, nation, offset, rtt = hops
        h = _construct(
            Hops,
            measured_ns=measured,
            node_sent_ns=sent,
            relay_received_ns=received,
            fused_ns=received if fused_ns is None else fused_ns,
            source_nation=nation,
            clock_offset_ns=offset,
            clock_rtt_ns=rtt,
        )
        lifecycle = kind not in PICTURE_KINDS  # the picture carries an impact only once made
        return _construct(
            Alert,
            type="alert",
            alert_id=aid,
            event_id=event.event_id,
            kind=kind,
            issued_ns=issued_ns,
            state=event.state if state is None else state,
            launch=event.launch,
            impact=event.impact_estimate if lifecycle or event.impact_estimate is not None else None,
            impact_area=event.impact_area,
            overflight=list(event.overflight),
            assessment=event.assessment if kind == AlertKind.FINAL_ASSESSMENT else None,
            corrects_alert_id=corrects,
            nations=list(event.nations) if nations is None else nations,
            releasable_to=list(event.releasable),
            data_mode=event.data_mode,
            hops=h,
            text=text,
        )

    def _next_alert_id(self, event: _Event) -> int:
        self._last_alert_id += 1
        aid = self._last_alert_id
        event.last_alert_id = aid
        if not event.first_alert_id:
            event.first_alert_id = aid
        return aid

    def _track_update(self, event: _Event, received_ns: int, hops: tuple) -> Alert:
        """``_alert`` for the TRACK_UPDATE every report makes, written out (the same fields)."""
        aid = self._next_alert_id(event)
        measured, sent, received, nation, offset, rtt = hops
        h = construct(Hops, {
            "measured_ns": measured, "node_sent_ns": sent, "relay_received_ns": received,
            "fused_ns": received, "source_nation": nation, "clock_offset_ns": offset, "clock_rtt_ns": rtt,
        })
        return construct(Alert, {
            "type": "alert", "alert_id": aid, "event_id": event.event_id, "kind": AlertKind.TRACK_UPDATE,
            "issued_ns": received_ns, "state": event.state, "launch": event.launch,
            "impact": event.impact_estimate, "impact_area": event.impact_area,
            "overflight": list(event.overflight), "assessment": None, "corrects_alert_id": None,
            "nations": list(event.nations), "releasable_to": list(event.releasable),
            "data_mode": event.data_mode, "hops": h, "text": self._update_text(event),
        })

    def _update_text(self, e: _Event) -> str:
        # one f-string (``_latlon`` written out): this text goes with every report
        s = e.state
        lat, lon = s.lat_deg, s.lon_deg
        return (f"TRACK_UPDATE event {e.event_id}: {abs(lat):.2f}{'N' if lat >= 0 else 'S'} "
                f"{abs(lon):.2f}{'E' if lon >= 0 else 'W'} alt {s.alt_m / 1000:.0f} km "
                f"{s.speed_mps / 1000:.1f} km/s {s.flight_phase.value} ({e.nations_text})")

    def _launch_text(self, e: _Event) -> str:
        if e.launch is None:
            s = e.state
            return f"LAUNCH_DETECTED event {e.event_id}: first seen {_latlon(s.lat_deg, s.lon_deg)} {_hms(e.tov_ns)}"
        return (f"LAUNCH_DETECTED event {e.event_id}: launch {_latlon(e.launch.lat_deg, e.launch.lon_deg)} "
                f"{_hms(e.launch.time_ns)}")

    def _impact_pred_text(self, e: _Event) -> str:
        gp = e.impact
        mins = (gp.time_ns - e.tov_ns) / _NS / 60.0
        return (f"IMPACT_PREDICTED event {e.event_id}: predicted {_latlon(gp.lat_deg, gp.lon_deg)} in "
                f"{mins:.1f} min, {_AREA_TEXT[e.impact_area]}, 95% ellipse "
                f"{gp.semi_major_m / 1000:.0f}x{gp.semi_minor_m / 1000:.0f} km")

    def _impact_text(self, e: _Event) -> str:
        gp = e.impact
        if gp is None:
            s = e.state
            return f"IMPACT event {e.event_id}: fell near {_latlon(s.lat_deg, s.lon_deg)}"
        return (f"IMPACT event {e.event_id}: fell {_latlon(gp.lat_deg, gp.lon_deg)} at {_hms(gp.time_ns)}, "
                f"{_AREA_TEXT[e.impact_area]}")

    def _lost_text(self, e: _Event) -> str:
        s = e.state
        return (f"TRACK_LOST event {e.event_id}: last seen {_latlon(s.lat_deg, s.lon_deg)} alt "
                f"{s.alt_m / 1000:.0f} km {_hms(e.tov_ns)}")

    def _final_text(self, e: _Event) -> str:
        a = e.assessment
        where = _AREA_TEXT[e.impact_area] if e.impact_area is not None else "impact area unknown"
        how = "fell" if e.status == "IMPACTED" else "track lost, predicted to fall"
        return (f"FINAL_ASSESSMENT event {e.event_id}: apogee {a.apogee_m / 1000:.0f} km, range "
                f"{a.range_m / 1000:.0f} km, flight time {a.flight_time_s / 60:.1f} min, {how} {where}")


# ------------------------------------------------------------------ helpers


def _supersedes(new: GroundPoint, issued: GroundPoint | None) -> bool:
    """Whether a new impact prediction is issued in place of the last one: it falls outside the
    issued ellipse, and it is either no less certain (its ellipse no longer) or at odds with the
    issued one (whose point lies outside the new ellipse).

    A wider prediction that still allows the issued point adds nothing to it: that is a track
    re-acquired after a gap (a lofted ICBM coming down into radar cover) before it has converged.
    Over the bundled scenarios (seeds 0-6) 19 of 28 re-issues were such, every one from a lofted
    ICBM; the issued ellipse held the true impact in all 19, and its point was nearer the truth
    in 18 (typically 5-60 km against 150-850 km). TRACK_UPDATEs still carry every prediction."""
    if issued is None:
        return True
    if issued.contains(new.lat_deg, new.lon_deg):
        return False
    return new.semi_major_m <= issued.semi_major_m or not new.contains(issued.lat_deg, issued.lon_deg)


def _ground(t: int, lat: float, lon: float, a: float, b: float, orient: float, tsig: float) -> GroundEstimate:
    return _construct(
            GroundEstimate,
        time_ns=t, lat_deg=lat, lon_deg=lon, semi_major_m=a, semi_minor_m=b,
        orientation_deg=orient, time_sigma_s=tsig,
    )


def _cov(m: _Member) -> NDArray:
    """A member's covariance (6, 6), built from its report's numbers when first needed."""
    p = m.p
    if p is None:
        p = m.p = dynamics.covariance_from_upper(m.numbers)
    return p


# -- where a point is, with work skipped where the answer is already known. Every shortcut
# below gives exactly ``regions``' answer (tests/test_fusion_engine.py compares them).

#: A point of a land boundary is within ~1 km of a coast vertex (coasts are densified to
#: <= 2 km), so a point farther than this from every vertex cannot cross the boundary.
_COAST_SLACK_M = 1_500.0


@lru_cache(maxsize=1)
def _land_boxes() -> NDArray:
    """(k, 4) lon/lat boxes (lon_min, lon_max, lat_min, lat_max) of every JPN and KOR land
    ring: a point in none of them is on no JPN or KOR land (``regions`` tests the same boxes
    before its polygons)."""
    polys = regions.land_polygons_cached()
    rings = [r for code in ("JPN", "KOR") for r in polys.get(code, ())]
    return np.array([(r[:, 0].min(), r[:, 0].max(), r[:, 1].min(), r[:, 1].max()) for r in rings]).reshape(-1, 4)


def _in_boxes(lat: NDArray, lon: NDArray) -> NDArray:
    """Per point, whether it lies in some JPN/KOR land ring's box."""
    b = _land_boxes()
    lon, lat = lon[:, None], lat[:, None]
    return ((lon >= b[:, 0]) & (lon <= b[:, 1]) & (lat >= b[:, 2]) & (lat <= b[:, 3])).any(axis=1)


def _territory_of(lat_deg: float, lon_deg: float) -> str | None:
    """``regions.territory_of`` without its polygon tests for points in no land box."""
    if not _in_boxes(np.array([lat_deg]), np.array([lon_deg]))[0]:
        return None
    return regions.territory_of(lat_deg, lon_deg)


@lru_cache(maxsize=4096)
def _area_and_radius(lat_deg: float, lon_deg: float) -> tuple[ImpactArea, float]:
    """``regions.impact_area`` (the same rules, from the same distances) and a radius (m)
    within which the answer cannot change: coast distances move by at most the distance
    moved, so every comparison the rules make holds while the point stays closer than its
    margin (half of it for a comparison of two distances)."""
    dj = regions.coast_distance_m("JPN", lat_deg, lon_deg)
    dk = regions.coast_distance_m("KOR", lat_deg, lon_deg)
    radius = min(dj, dk) - _COAST_SLACK_M
    land = _territory_of(lat_deg, lon_deg)
    if land == "JPN":
        return ImpactArea.JPN_TERRITORY, radius
    if land == "KOR":
        return ImpactArea.KOR_TERRITORY, radius
    ts, eez = regions.TERRITORIAL_SEA_M, regions.EEZ_M
    radius = min(radius, abs(dj - ts), abs(dk - ts), 0.5 * abs(dj - dk))
    if dj <= ts and dj <= dk:
        return ImpactArea.JPN_TERRITORY, radius
    if dk <= ts:
        return ImpactArea.KOR_TERRITORY, radius
    if dj > eez:
        return ImpactArea.OUTSIDE, min(radius, dj - eez)
    others = [regions.coast_distance_m(n, lat_deg, lon_deg) for n in regions.EEZ_NEIGHBOURS]
    radius = min(radius, eez - dj, *(0.5 * abs(dj - d) for d in others))
    return (ImpactArea.JPN_EEZ if all(dj <= d for d in others) else ImpactArea.OUTSIDE), radius


def _impact_area(lat_deg: float, lon_deg: float, memo: tuple | None) -> tuple[ImpactArea, tuple]:
    """The impact area of a fall point, on a 0.001 degree (~100 m) grid, and the memo to pass
    next time: (lat, lon, area, radius) of the last point computed. Successive predictions of
    one missile fall close together, mostly well inside the last point's radius."""
    lat, lon = round(lat_deg, 3), round(lon_deg, 3)
    # 1 m for the round-off of the distances
    if memo is not None and great_circle_distance_m(memo[0], memo[1], lat, lon) + 1.0 < memo[3]:
        return memo[2], memo
    area, radius = _area_and_radius(lat, lon)
    return area, (lat, lon, area, radius)


def _overflown(track: NDArray, min_alt_m: float = 50_000.0) -> list[Nation]:
    """Nations whose land the predicted ground track passes over in flight (above ``min_alt_m``,
    so that the fall itself is an impact, not an overflight), densified to ~10 km."""
    if len(track) < 2:
        return []
    # samples per segment (scalar math), then every segment's samples in one set of array ops
    tl = track.tolist()
    counts = [max(1, int(math.hypot(la1 - la0, (lo1 - lo0) * math.cos(math.radians(la0))) / 0.09))
              for (la0, lo0, _), (la1, lo1, _) in zip(tl[:-1], tl[1:], strict=True)]
    seg = np.repeat(np.arange(len(counts)), counts)
    first = np.repeat(np.cumsum(counts) - counts, counts)
    n = np.array(counts, dtype=float)[seg]
    u = (np.arange(len(seg)) - first) / n
    a, b = track[:-1][seg], track[1:][seg]
    pts = a + u[:, None] * (b - a)
    pts_a = pts[pts[:, 2] > min_alt_m, :2]
    # only points in a land box can be on land
    pts_a = pts_a[_in_boxes(pts_a[:, 0], pts_a[:, 1])] if len(pts_a) else pts_a
    if len(pts_a) == 0:
        return []
    found = set(regions.territories(pts_a[:, 0], pts_a[:, 1]).tolist())
    return [n for n in NATIONS if n.value in found]


def _latlon(lat: float, lon: float) -> str:
    return f"{abs(lat):.2f}{'N' if lat >= 0 else 'S'} {abs(lon):.2f}{'E' if lon >= 0 else 'W'}"


def _hms(t_ns: int) -> str:
    return datetime.fromtimestamp(t_ns // _NS, tz=UTC).strftime("%H:%M:%SZ")
