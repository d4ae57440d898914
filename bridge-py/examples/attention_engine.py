#!/usr/bin/env python3
"""A reference "attention engine" for the orchestrator, written with orch_bridge.

It watches the orchestrator's health and lifecycle events, scores each service by how much trouble
it has been in lately, and raises the priority of services in trouble, so that they get more of
the orchestrator's attention (restarts first, shed last). When a service calms down its priority
goes back to the baseline. Every change carries a reason that names the signals behind it, and a
TTL, so a stopped engine leaves no lasting trace.

Run it against a local orchestrator:

    make dev       # terminal 1: NATS, PostgreSQL and the orchestrator
    make engine    # terminal 2: builds and installs orch_bridge, then runs this engine

or by hand, once the bridge is installed (scripts/bridge.sh):

    .local/venv/bin/python bridge-py/examples/attention_engine.py \
        --nats-url "$(cat .local/dev/nats-auth/engine.url)"

(``make dev``'s NATS refuses anonymous clients: the engine connects as the ``engine`` user that
``make dev`` made, which may set and clear adjustments, start workflows and read events, and
little more.)

Then make something fail, e.g. apply the demo stack (`orchestrator up -f examples/demo.toml`) and
kill one of its processes: the engine logs lines such as

    db: priority 50 -> 78 (2 crashes, 2 restarts in the last 5 min) applied

How it works:

* Events come from one durable JetStream consumer (``--durable``) on ``<prefix>.evt.>``, filtered
  here, and each is acknowledged once handled, so a restarted engine resumes where it stopped.
  At start-up it also replays the last ``--window`` of events from the stream (a live read, no
  acks) to rebuild its scores; events seen twice are counted once (by event id).
* Scoring (:class:`AttentionScorer`, pure, no NATS): each signal within the sliding window adds
  points that fade linearly to 0 at the window's end: crashes, failures (the orchestrator gave
  up), restarts, instances going critical, health changes, flapping alerts; plus a standing bonus
  while the service is critical or degraded (for 15 s or more), or an instance of it flaps.
  Health signals of a service in maintenance are ignored.
* Deciding (:func:`target_priority`, :func:`decide`, pure): the target is the service's baseline
  plus the score (at most ``--max-boost``, capped at 100). The engine sets it only when it moved
  by ``--min-change`` points or more, at most once per ``--min-interval`` per service, refreshes
  it before its TTL runs out while the trouble lasts, and clears it once the score is back near 0.
* Guardrails of the orchestrator (pinned services, the per-service rate limit, the mass-change
  hold) are logged and respected; the engine carries on.
* Remediation (:class:`CrashRemediator`, pure): a service that crashed ``--remediate-crashes``
  times (3) within ``--remediate-window`` (10 min) gets the workflow ``--remediate-workflow``
  (``remediate-crashes``, shipped as ``remediate-crashes.toml`` next to this file: restart it,
  wait until it is ready, raise its priority), started with the inputs ``{"service",
  "crashes"}``, at most once per ``--remediate-cooldown`` (10 min) per service. A workflow that
  cannot be started (not stored, refused, ...) is logged and the engine carries on. The
  remediations of the last cooldown, read at start-up, count, so a restarted engine does not
  start them again.

The scoring and the remediation decisions are importable without NATS or orch_bridge: ``from
attention_engine import AttentionScorer, target_priority, decide, CrashRemediator``.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Dict, List, Mapping, Optional, Set, Tuple

log = logging.getLogger("attention-engine")

DEFAULT_PRIORITY = 50  # the orchestrator's default baseline (orch_bridge.DEFAULT_PRIORITY)
MAX_PRIORITY = 100
MAX_REASON_LEN = 1024

# -- signals and their weights --------------------------------------------------------------------

CRASH = "crash"
FAILURE = "failure"
RESTART = "restart"
CRITICAL = "critical"
HEALTH_CHANGE = "health_change"
FLAPPING = "flapping"

#: Points a signal adds to its service's score when it just happened (fading to 0 at the end of
#: the window).
WEIGHTS: Dict[str, float] = {
    CRASH: 12.0,  # io.orch.lifecycle.crashed.v1
    FAILURE: 20.0,  # io.orch.lifecycle.failed.v1: the orchestrator gave up on it
    RESTART: 4.0,  # io.orch.lifecycle.restarting.v1
    CRITICAL: 8.0,  # io.orch.health.instance_changed.v1 into critical
    HEALTH_CHANGE: 2.0,  # io.orch.health.instance_changed.v1 into passing or warning
    FLAPPING: 10.0,  # io.orch.health.flapping_started.v1
}

#: Points added while a condition lasts (not faded).
STATE_WEIGHTS: Dict[str, float] = {
    "critical": 10.0,  # io.orch.health.service_changed.v1 state critical
    "degraded": 4.0,  # ... state degraded
    "flapping": 6.0,  # an instance of it flaps (flapping_started without flapping_stopped yet)
}

_LABELS: Dict[str, Tuple[str, str]] = {
    CRASH: ("crash", "crashes"),
    FAILURE: ("failure", "failures"),
    RESTART: ("restart", "restarts"),
    CRITICAL: ("drop to critical health", "drops to critical health"),
    HEALTH_CHANGE: ("health change", "health changes"),
    FLAPPING: ("flapping alert", "flapping alerts"),
}
_ORDER = [FAILURE, CRASH, RESTART, CRITICAL, FLAPPING, HEALTH_CHANGE]
_SOURCES: Dict[str, str] = {
    CRASH: "io.orch.lifecycle.crashed.v1",
    FAILURE: "io.orch.lifecycle.failed.v1 (gave up)",
    RESTART: "io.orch.lifecycle.restarting.v1",
    CRITICAL: "io.orch.health.instance_changed.v1, health critical",
    HEALTH_CHANGE: "io.orch.health.instance_changed.v1, other health",
    FLAPPING: "io.orch.health.flapping_started.v1",
}


def describe_duration(seconds: float) -> str:
    """``300`` -> ``"5 min"``, ``90`` -> ``"90 s"``, ``7200`` -> ``"2 h"``."""
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{int(seconds // 3600)} h"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{int(seconds // 60)} min"
    return f"{seconds:g} s"


@dataclass(frozen=True)
class Score:
    """A service's score at one moment, and what it is made of."""

    service: str
    points: float
    """The score: faded signal points plus standing bonuses (0 when all is well)."""
    counts: Mapping[str, int]
    """Signals within the window, by kind (only kinds that occurred)."""
    state: Optional[str]
    """``critical`` or ``degraded`` while the service has been in that health state for at least
    the scorer's ``state_grace``; else None."""
    flapping: bool
    """An instance of the service is flapping now."""
    window: float
    """The window, in seconds."""

    def summary(self) -> str:
        """The signals in words, e.g. ``2 crashes, 1 restart in the last 5 min; critical now``."""
        parts = []
        for kind in _ORDER:
            n = self.counts.get(kind, 0)
            if n:
                one, many = _LABELS[kind]
                parts.append(f"{n} {one if n == 1 else many}")
        text = (", ".join(parts) if parts else "no crashes, restarts or health changes") + (
            f" in the last {describe_duration(self.window)}"
        )
        now = [s for s, on in (("critical now", self.state == "critical"), ("degraded now", self.state == "degraded"),
                               ("flapping now", self.flapping)) if on]
        return text + ("; " + ", ".join(now) if now else "")


class AttentionScorer:
    """Per-service scores from the orchestrator's events over a sliding window. Pure: it is fed
    plain values (event id, type, service, data, time) and every method takes ``now``
    (seconds since the epoch), so the same inputs always give the same scores.

    >>> s = AttentionScorer(window=300)
    >>> s.observe("e1", "io.orch.lifecycle.crashed.v1", "db", {"state": "crashed"}, at=1000.0, now=1000.0)
    'crash'
    >>> s.score("db", now=1000.0).points
    12.0
    >>> s.score("db", now=1150.0).points  # half the window later: half the points
    6.0
    """

    def __init__(self, window: float = 300.0, weights: Optional[Mapping[str, float]] = None,
                 state_weights: Optional[Mapping[str, float]] = None, state_grace: float = 15.0) -> None:
        if window <= 0:
            raise ValueError("window must be positive")
        self.window = float(window)
        # A service is critical for a moment at every start (its check starts critical) and
        # during each restart, which the lifecycle signals count already: a state only counts
        # once it lasted this long.
        self.state_grace = float(state_grace)
        self.weights = dict(WEIGHTS if weights is None else weights)
        self.state_weights = dict(STATE_WEIGHTS if state_weights is None else state_weights)
        self._signals: Dict[str, List[Tuple[float, str]]] = {}  # service -> [(at, kind)], by time
        self._seen: Dict[str, float] = {}  # event id -> at, for events within the window
        self._state: Dict[str, Tuple[str, float]] = {}  # service -> (healthy | degraded | critical, since)
        self._flapping: Dict[str, Set[str]] = {}  # service -> flapping instance ids
        self._maintenance: Set[str] = set()  # services in maintenance (whole service)

    def observe(self, event_id: str, event_type: str, service: Optional[str], data: Any, *,
                at: Optional[float], now: float) -> Optional[str]:
        """Takes one event into account. Returns what it noted (a signal kind, or a state change
        such as ``state critical``), or None if the event does not matter, is a duplicate, or is
        older than the window."""
        at = now if at is None else min(at, now)
        if at <= now - self.window or event_id in self._seen:
            return None
        if not service or service.startswith("_"):
            return None  # `_system`: no single service
        self._seen[event_id] = at
        data = data if isinstance(data, dict) else {}
        parts = event_type.split(".")  # io.orch.<domain>.<kind>.v1
        if len(parts) != 5 or parts[:2] != ["io", "orch"]:
            return None
        domain, kind = parts[2], parts[3]
        if domain == "lifecycle":
            signal_kind = {"crashed": CRASH, "failed": FAILURE, "restarting": RESTART}.get(kind)
            if signal_kind:
                return self._add(service, at, signal_kind)
            return None
        if domain != "health":
            return None
        if kind == "maintenance_entered" and not data.get("instance_id"):
            self._maintenance.add(service)
            return "maintenance entered"
        if kind == "maintenance_exited" and not data.get("instance_id"):
            self._maintenance.discard(service)
            return "maintenance exited"
        if service in self._maintenance:
            return None
        if kind == "instance_changed":
            return self._add(service, at, CRITICAL if data.get("health") == "critical" else HEALTH_CHANGE)
        if kind == "flapping_started":
            instance = (data.get("instance") or {}).get("id", "?")
            self._flapping.setdefault(service, set()).add(instance)
            return self._add(service, at, FLAPPING)
        if kind == "flapping_stopped":
            instance = (data.get("instance") or {}).get("id", "?")
            self._flapping.get(service, set()).discard(instance)
            return "flapping stopped"
        if kind == "service_changed" and isinstance(data.get("state"), str):
            self._state[service] = (data["state"], at)
            return f"state {data['state']}"
        return None

    def _add(self, service: str, at: float, kind: str) -> str:
        signals = self._signals.setdefault(service, [])
        signals.append((at, kind))
        signals.sort()  # events arrive in stream order; a replay may interleave
        return kind

    def prune(self, now: float) -> None:
        """Forgets what fell out of the window."""
        horizon = now - self.window
        for service in list(self._signals):
            kept = [s for s in self._signals[service] if s[0] > horizon]
            if kept:
                self._signals[service] = kept
            else:
                del self._signals[service]
        self._seen = {i: at for i, at in self._seen.items() if at > horizon}

    def services(self) -> List[str]:
        """Services with a signal in the window or a standing condition, sorted."""
        names = set(self._signals) | {s for s, (st, _) in self._state.items() if st != "healthy"}
        names |= {s for s, inst in self._flapping.items() if inst}
        return sorted(names)

    def score(self, service: str, now: float) -> Score:
        """The score of ``service`` at ``now``."""
        points = 0.0
        counts: Dict[str, int] = {}
        for at, kind in self._signals.get(service, []):
            age = now - at
            if age >= self.window:
                continue
            points += self.weights.get(kind, 0.0) * (1.0 - max(age, 0.0) / self.window)
            counts[kind] = counts.get(kind, 0) + 1
        in_maintenance = service in self._maintenance
        current, since = self._state.get(service, ("healthy", now))
        lasting = current in ("critical", "degraded") and now - since >= self.state_grace
        state = current if lasting and not in_maintenance else None
        flapping = not in_maintenance and bool(self._flapping.get(service))
        if state is not None:
            points += self.state_weights.get(state, 0.0)
        if flapping:
            points += self.state_weights.get("flapping", 0.0)
        return Score(service, round(points, 6), counts, state, flapping, self.window)


def target_priority(baseline: int, points: float, max_boost: int = 40) -> int:
    """The priority a service should have: its baseline raised by its score (rounded), by at most
    ``max_boost`` points, within 0-100.

    >>> target_priority(50, 28.4), target_priority(50, 0), target_priority(90, 30)
    (78, 50, 100)
    """
    boost = min(max(int(round(points)), 0), max(max_boost, 0))
    return max(0, min(MAX_PRIORITY, baseline + boost))


@dataclass(frozen=True)
class Decision:
    """What to do about one service: ``set`` a value, ``refresh`` it (same trouble, TTL running
    out) or ``clear`` the engine's adjustment (back to the baseline)."""

    action: str
    value: int


def decide(target: int, baseline: int, current: Optional[int], *, now: float,
           last_request_at: Optional[float], expires_at: Optional[float],
           min_change: int = 5, min_interval: float = 30.0, ttl: Optional[float] = 300.0) -> Optional[Decision]:
    """Whether to change a service's priority. ``current`` is the value of the engine's adjustment
    in force (None: none); ``last_request_at`` when the engine last asked anything for the
    service; ``expires_at`` when its adjustment lapses. Pure.

    >>> decide(78, 50, None, now=100.0, last_request_at=None, expires_at=None)
    Decision(action='set', value=78)
    >>> decide(80, 50, 78, now=100.0, last_request_at=None, expires_at=None) is None  # < 5 points
    True
    >>> decide(52, 50, 78, now=100.0, last_request_at=0.0, expires_at=None)
    Decision(action='clear', value=50)
    >>> decide(52, 50, 78, now=100.0, last_request_at=90.0, expires_at=None) is None  # too soon
    True
    """
    if last_request_at is not None and now - last_request_at < min_interval:
        return None
    near_baseline = target - baseline < min_change
    if current is None:
        return None if near_baseline else Decision("set", target)
    if near_baseline:
        return Decision("clear", baseline)
    if abs(target - current) >= min_change:
        return Decision("set", target)
    if ttl and expires_at is not None and expires_at - now < max(ttl / 3.0, min_interval * 2):
        return Decision("refresh", target)
    return None


# -- remediation: a workflow for a service that keeps crashing --------------------------------------

CRASHED_TYPE = "io.orch.lifecycle.crashed.v1"


@dataclass(frozen=True)
class Remediation:
    """A remediation that is due: start the workflow for ``service``, which crashed ``crashes``
    times within the window (since the last remediation)."""

    service: str
    crashes: int
    first_at: float
    """When the first of those crashes happened (seconds since the epoch)."""
    last_at: float

    def inputs(self) -> Dict[str, Any]:
        """The workflow's inputs: ``{"service", "crashes"}``."""
        return {"service": self.service, "crashes": self.crashes}


class CrashRemediator:
    """Decides when a service that keeps crashing gets a remediation workflow: once it crashed
    ``threshold`` times within ``window`` seconds, and at most once per ``cooldown`` seconds per
    service. Crashes from before the last remediation of a service do not count again. Pure: it
    is fed crash events (id, service, time) and every method takes ``now`` (seconds since the
    epoch); starting the workflow is the caller's business (:meth:`started` records it).

    >>> r = CrashRemediator(threshold=3, window=600, cooldown=600)
    >>> for i, at in enumerate((100.0, 160.0)):
    ...     _ = r.observe(f"e{i}", "db", at=at, now=at)
    >>> r.due(now=170.0)
    []
    >>> r.observe("e2", "db", at=200.0, now=200.0)
    True
    >>> r.due(now=200.0)
    [Remediation(service='db', crashes=3, first_at=100.0, last_at=200.0)]
    >>> r.started("db", now=200.0)
    >>> r.observe("e3", "db", at=300.0, now=300.0), r.due(now=300.0)  # cooling down
    (True, [])
    """

    def __init__(self, threshold: int = 3, window: float = 600.0, cooldown: float = 600.0) -> None:
        if threshold < 1:
            raise ValueError("threshold must be at least 1")
        if window <= 0 or cooldown < 0:
            raise ValueError("window must be positive and cooldown 0 or more")
        self.threshold = int(threshold)
        self.window = float(window)
        self.cooldown = float(cooldown)
        self._crashes: Dict[str, List[float]] = {}  # service -> crash times, sorted
        self._seen: Dict[str, float] = {}  # event id -> at, within the window
        self._last: Dict[str, float] = {}  # service -> when its last remediation was started

    def observe(self, event_id: str, service: Optional[str], *, at: Optional[float], now: float) -> bool:
        """Takes one crash of ``service`` into account. False if it is a duplicate (by event id),
        older than the window, or of no single service."""
        at = now if at is None else min(at, now)
        if not service or service.startswith("_") or at <= now - self.window or event_id in self._seen:
            return False
        self._seen[event_id] = at
        crashes = self._crashes.setdefault(service, [])
        crashes.append(at)
        crashes.sort()  # a replay may interleave with the live events
        return True

    def started(self, service: str, now: float) -> None:
        """Records that a remediation of ``service`` was started (or tried) at ``now``: the
        cooldown runs from here, and the crashes so far are used up."""
        self._last[service] = max(now, self._last.get(service, now))

    def crashes(self, service: str, now: float) -> List[float]:
        """The crashes of ``service`` that count at ``now``: within the window, and after its
        last remediation."""
        since = max(now - self.window, self._last.get(service, float("-inf")))
        return [at for at in self._crashes.get(service, []) if since < at <= now]

    def due(self, now: float) -> List[Remediation]:
        """The remediations to start now, by service name."""
        found = []
        for service in sorted(self._crashes):
            last = self._last.get(service)
            if last is not None and now - last < self.cooldown:
                continue
            crashes = self.crashes(service, now)
            if len(crashes) >= self.threshold:
                found.append(Remediation(service, len(crashes), crashes[0], crashes[-1]))
        return found

    def prune(self, now: float) -> None:
        """Forgets the crashes and event ids that fell out of the window, and cooldowns that
        ended."""
        horizon = now - self.window
        for service in list(self._crashes):
            kept = [at for at in self._crashes[service] if at > horizon]
            if kept:
                self._crashes[service] = kept
            else:
                del self._crashes[service]
        self._seen = {i: at for i, at in self._seen.items() if at > horizon}
        self._last = {s: at for s, at in self._last.items() if now - at < max(self.cooldown, self.window)}


# -- the engine: orch_bridge glue -----------------------------------------------------------------


def _epoch(at: Optional[datetime]) -> Optional[float]:
    return None if at is None else at.timestamp()


@dataclass
class _Mine:
    """The engine's own adjustment of one service, as far as it knows."""

    value: Optional[int] = None
    """The value it asked for (None: no adjustment of the engine's in force)."""
    last_request_at: Optional[float] = None
    expires_at: Optional[float] = None
    refused: Optional[str] = None
    """Why the orchestrator refused the last change (pinned), until the policy changes."""
    not_before: float = 0.0
    """After a rate limit: no request before this time."""
    backoff: float = 0.0
    """The wait after the last rate limit (doubles while they follow each other)."""


class Engine:
    """Feeds events to the scorer and turns scores into priority requests through a
    ``orch_bridge.Client``."""

    def __init__(self, client: Any, args: argparse.Namespace, scorer: AttentionScorer,
                 remediator: Optional[CrashRemediator] = None) -> None:
        import orch_bridge

        self.ob = orch_bridge
        self.client = client
        self.args = args
        self.scorer = scorer
        self.remediator = remediator
        self.mine: Dict[str, _Mine] = {}
        self.baselines: Dict[str, Tuple[int, bool]] = {}  # service -> (baseline, pinned)
        self.baselines_at = 0.0
        self.changes = 0
        self.remediations = 0

    # -- what the orchestrator holds ----------------------------------------------------------

    def load_priorities(self, now: float, initial: bool = False) -> None:
        """Reads every service's baseline and pin, and (at start-up) the adjustments this engine
        left in force, so that it neither repeats nor forgets them."""
        try:
            listing = self.client.list_priorities()
        except self.ob.OrchError as e:
            log.warning("cannot read the priorities (%s); assuming baseline %d", e, DEFAULT_PRIORITY)
            self.baselines_at = now
            return
        self.baselines = {p.service: (p.baseline, p.pinned) for p in listing.priorities}
        self.baselines_at = now
        for view in listing.priorities:
            mine = self.mine.setdefault(view.service, _Mine())
            if not view.pinned:
                mine.refused = None
            adjustment = view.adjustment
            if initial and adjustment is not None and adjustment.source == self.args.source:
                mine.value = adjustment.requested
                mine.last_request_at = _epoch(adjustment.at)
                mine.expires_at = _epoch(adjustment.expires_at)
                log.info("%s: priority %d from an earlier run of this engine is in force (%s)",
                         view.service, adjustment.requested, adjustment.reason)
        if listing.guard.holding:
            log.warning("the mass-change guard is holding engine changes (%s held)",
                        ", ".join(listing.guard.held) or "none yet")

    def baseline(self, service: str, now: float) -> Tuple[int, bool]:
        if now - self.baselines_at > 60.0 or (service not in self.baselines and now - self.baselines_at > 15.0):
            self.load_priorities(now)
        return self.baselines.get(service, (DEFAULT_PRIORITY, False))

    # -- events -------------------------------------------------------------------------------

    def observe(self, event: Any, now: float) -> bool:
        """Takes an event into account; True if it changed a score or a crash count."""
        domain, service = event.domain, event.service
        counted = False
        if self.remediator is not None and event.type == CRASHED_TYPE:
            counted = self.remediator.observe(event.id, service, at=_epoch(event.time), now=now)
        if domain == "priority":
            self._priority_event(service, event.data, _epoch(event.time))
            return False
        if domain not in ("health", "lifecycle"):
            return counted
        noted = self.scorer.observe(event.id, event.type, service, event.data, at=_epoch(event.time), now=now)
        if noted:
            log.debug("%s: %s (%s) -> score %.1f", service, noted, event.type,
                      self.scorer.score(service, now).points)
        return noted is not None or counted

    def _priority_event(self, service: Optional[str], change: Any, at: Optional[float]) -> None:
        """Keeps track of what happens to the engine's adjustments: they expire, a held one is
        dropped, someone else replaces or clears them, an operator changes the policy."""
        if not service or not isinstance(change, dict):
            return
        mine = self.mine.get(service)
        source, action, outcome = change.get("source"), change.get("action"), change.get("outcome")
        if action == "policy":
            self.baselines_at = 0.0  # read the new baseline / pin before the next decision
            if mine:
                mine.refused = None
            return
        if mine is None or mine.value is None:
            return
        if at is not None and mine.last_request_at is not None and at < mine.last_request_at:
            return  # older than the engine's adjustment (a replay, a backlog): cannot undo it
        reason, detail = change.get("reason") or "", change.get("detail") or ""
        ours = source == self.args.source or self.args.source in reason or self.args.source in detail
        lost = (
            (outcome == "expired" and ours)
            # held and then dropped: the hold ended or an operator dropped it; not when replaced
            # by a later held change of the engine's own
            or (outcome == "dropped" and ours and not detail.startswith("replaced by"))
            # another engine set or cleared the priority: the engine's adjustment is gone
            or (action in ("set", "clear") and outcome in ("applied", "clamped") and source != self.args.source)
        )
        if lost:
            log.info("%s: the engine's priority %d is no longer in force (%s %s by %s)",
                     service, mine.value, action, outcome, source)
            mine.value, mine.expires_at = None, None

    # -- remediation ----------------------------------------------------------------------------

    def load_remediations(self, now: float) -> None:
        """At start-up: the remediations started lately (by this engine before a restart, or by
        anyone) start their service's cooldown, so a replay of the same crashes starts no second
        one."""
        if self.remediator is None:
            return
        name = self.args.remediate_workflow
        try:
            executions = self.client.executions(name, limit=1000)
        except self.ob.OrchError as e:
            log.warning("cannot read the executions of %s (%s); assuming none lately", name, e)
            return
        for execution in executions:
            service = execution.inputs.get("service")
            at = execution.created_at.timestamp()
            if isinstance(service, str) and now - at < self.remediator.cooldown:
                self.remediator.started(service, at)
                log.info("%s: the workflow %s ran for it lately (execution %s, %s, %s): cooling down",
                         service, name, execution.id, execution.status, execution.created_at.isoformat())

    def remediate(self, now: float) -> None:
        """Starts the remediation workflow for each service that crashed often enough lately
        (:class:`CrashRemediator` decides). A failure to start it is logged, never raised."""
        if self.remediator is None:
            return
        self.remediator.prune(now)
        for due in self.remediator.due(now):
            if self.args.stop.is_set():
                return
            # The cooldown runs from the attempt, whatever its outcome: at most one per cooldown.
            self.remediator.started(due.service, now)
            try:
                self._start_remediation(due)
            except Exception:  # a bug here must not stop the engine
                log.exception("%s: could not start the remediation", due.service)

    def _start_remediation(self, due: Remediation) -> None:
        ob, args = self.ob, self.args
        name = args.remediate_workflow
        why = f"{due.crashes} crashes within {describe_duration(args.remediate_window)}"
        later = f"next try in {describe_duration(args.remediate_cooldown)} at the earliest"
        if args.dry_run:
            log.info("%s: %s: would start the workflow %s with %s [dry run: not started]",
                     due.service, why, name, due.inputs())
            return
        try:
            execution = self.client.start_workflow(name, due.inputs())
        except ob.NotFoundError as e:
            log.error("%s: %s, but the workflow %s is not defined (%s); store it, e.g. "
                      "orchestrator workflow put -f bridge-py/examples/remediate-crashes.toml; %s",
                      due.service, why, name, e.message, later)
        except ob.ValidationError as e:
            log.error("%s: %s, but the workflow %s refused the inputs %s: %s; %s",
                      due.service, why, name, due.inputs(), e, later)
        except ob.PermissionDenied as e:
            log.error("%s: %s, but this engine may not start workflows: %s; %s", due.service, why, e.message, later)
        except ob.OrchError as e:  # timeout, connection, unavailable, ...
            log.warning("%s: %s, but the workflow %s could not be started: %s; %s",
                        due.service, why, name, e, later)
        else:
            self.remediations += 1
            log.info("%s: %s: started the workflow %s (execution %s, %s, inputs %s)",
                     due.service, why, name, execution.id, execution.status, execution.inputs)

    # -- decisions ----------------------------------------------------------------------------

    def evaluate(self, now: float) -> None:
        """Decides, for every service with a score or an adjustment of the engine's, whether to
        set, refresh or clear its priority, and asks the orchestrator."""
        self.scorer.prune(now)
        services = set(self.scorer.services()) | {s for s, m in self.mine.items() if m.value is not None}
        for service in sorted(services):
            if self.args.stop.is_set():
                return
            mine = self.mine.setdefault(service, _Mine())
            if mine.value is not None and mine.expires_at is not None and mine.expires_at <= now:
                mine.value, mine.expires_at = None, None  # lapsed on the orchestrator's side too
            score = self.scorer.score(service, now)
            baseline, pinned = self.baseline(service, now)
            target = target_priority(baseline, score.points, self.args.max_boost)
            if pinned and not mine.refused and target - baseline >= self.args.min_change:
                mine.refused = "pinned by an operator"
                log.info("%s: would raise its priority %d -> %d (%s), but it is pinned by an operator; "
                         "leaving it alone while it is", service, baseline, target, score.summary())
            if pinned or mine.refused or now < mine.not_before:
                continue
            decision = decide(target, baseline, mine.value, now=now, last_request_at=mine.last_request_at,
                              expires_at=mine.expires_at, min_change=self.args.min_change,
                              min_interval=self.args.min_interval, ttl=self.args.ttl or None)
            if decision is not None:
                self._apply(service, decision, baseline, score, mine, now)

    def _apply(self, service: str, decision: Decision, baseline: int, score: Score, mine: _Mine, now: float) -> None:
        ob, args = self.ob, self.args
        before = mine.value if mine.value is not None else baseline
        if decision.action == "clear":
            why = f"calm again: {score.summary()}"
            arrow = f"{before} -> baseline {baseline}"
        else:
            why = score.summary()
            arrow = f"{before} -> {decision.value}" + (" (refresh)" if decision.action == "refresh" else "")
        reason = f"attention engine: {why} (score {score.points:.0f})"[:MAX_REASON_LEN]
        mine.last_request_at = now
        if args.dry_run:
            log.info("%s: priority %s (%s) [dry run: not sent]", service, arrow, why)
            return
        try:
            if decision.action == "clear":
                reply = self.client.clear_priority(service, reason=reason, source=args.source)
            else:
                reply = self.client.set_priority(service, decision.value, reason=reason, source=args.source,
                                                 ttl=args.ttl or None)
        except ob.RateLimited as e:  # before GuardrailRefused: it is a subclass
            mine.backoff = min(max(mine.backoff * 2, args.min_interval, 10.0), 120.0)
            mine.not_before = now + mine.backoff
            log.warning("%s: priority %s (%s) rate limited by the orchestrator: %s; next try in %gs",
                        service, arrow, why, e.message, mine.backoff)
            return
        except ob.GuardrailRefused as e:
            mine.refused = e.message
            log.warning("%s: priority %s (%s) refused: %s; not adjusting it until its policy changes",
                        service, arrow, why, e.message)
            return
        except ob.ValidationError as e:
            log.error("%s: priority %s refused as invalid: %s", service, arrow, e)
            return
        except ob.OrchError as e:  # timeout, connection, unavailable, ...
            log.warning("%s: priority %s not sent: %s; next try in %gs at the earliest",
                        service, arrow, e, args.min_interval)
            return
        self.changes += 1
        mine.backoff = 0.0
        change, view = reply.change, reply.priority
        self.baselines[service] = (view.baseline, view.pinned)
        previous = change.previous
        if decision.action == "clear":
            mine.value, mine.expires_at = None, None
            arrow = f"{previous} -> baseline {view.baseline}"
        else:
            mine.value = decision.value
            mine.expires_at = now + args.ttl if args.ttl else None
            arrow = f"{previous} -> {decision.value}" + (" (refresh)" if decision.action == "refresh" else "")
        outcome = change.outcome
        if outcome == "clamped":
            outcome = f"clamped to {view.effective} (bounds {view.min}-{view.max})"
        elif outcome == "held":
            outcome = "held by the mass-change guard until an operator releases it"
        log.info("%s: priority %s (%s) %s", service, arrow, why, outcome)


# -- running ---------------------------------------------------------------------------------------


def _install_signal_handlers(stop: threading.Event) -> None:
    """Ctrl-C and SIGTERM ask the engine to stop after the current step; a second Ctrl-C stops it
    at once (KeyboardInterrupt)."""

    def handler(signum: int, _frame: Any) -> None:
        log.info("%s: stopping", signal.Signals(signum).name)
        stop.set()
        signal.signal(signal.SIGINT, signal.default_int_handler)

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


def _span(args: argparse.Namespace) -> float:
    """How far back the engine looks at start-up: the score's window, or the remediation's."""
    return max(args.window, 0.0 if args.no_remediation else args.remediate_window)


def _replay(client: Any, engine: Engine, args: argparse.Namespace, started: float) -> int:
    """Reads the last window of events (live read, no acks) to rebuild the scores and the crash
    counts."""
    since = datetime.fromtimestamp(started - _span(args), tz=timezone.utc)
    seen = 0
    with client.events(args.subject, start_time=since) as events:
        while not args.stop.is_set():
            batch = events.next_batch(1024, timeout=0.5)
            if not batch:
                break  # caught up
            for event in batch:
                seen += 1
                engine.observe(event, time.time())
            last = batch[-1].time
            if last is not None and last.timestamp() >= started:
                break  # caught up with a busy stream
    return seen


def run(args: argparse.Namespace) -> int:
    import orch_bridge as ob

    started = time.time()
    deadline = started + args.duration if args.duration else None
    client = ob.Client.connect(args.nats_url, prefix=args.prefix, timeout=args.timeout, name="attention-engine")
    with client:
        args.subject = f"{client.prefix}.evt.>"
        scorer = AttentionScorer(window=args.window)
        remediator = None if args.no_remediation else CrashRemediator(
            args.remediate_crashes, args.remediate_window, args.remediate_cooldown)
        engine = Engine(client, args, scorer, remediator)
        log.info("connected to %s (prefix %s); source %r, window %s, ttl %s, min change %d, min interval %gs%s",
                 without_credentials(args.nats_url), client.prefix, args.source, describe_duration(args.window),
                 f"{args.ttl:g}s" if args.ttl else "none", args.min_change, args.min_interval,
                 " [dry run]" if args.dry_run else "")
        if remediator is not None:
            log.info("remediation: the workflow %s for a service with %d crashes within %s, at most once per %s",
                     args.remediate_workflow, args.remediate_crashes, describe_duration(args.remediate_window),
                     describe_duration(args.remediate_cooldown))
        engine.load_priorities(started, initial=True)
        engine.load_remediations(started)
        if args.reset and client.delete_durable(args.durable):
            log.info("deleted the durable consumer %s: starting afresh", args.durable)
        replayed = _replay(client, engine, args, started)
        log.info("replayed %d events of the last %s: %d services with signals",
                 replayed, describe_duration(_span(args)), len(scorer.services()))
        since = datetime.fromtimestamp(started - _span(args), tz=timezone.utc)
        next_tick = 0.0
        backoff = 1.0
        while not args.stop.is_set():
            try:
                # start_time only matters when the consumer is created; an existing one resumes.
                stream = client.events(args.subject, durable=args.durable, start_time=since)
            except ob.ConflictError as e:
                log.error("%s\n(start afresh with --reset, or choose another --durable name)", e)
                return 2
            except ob.ValidationError as e:  # e.g. a --durable name JetStream does not accept
                log.error("%s", e)
                return 2
            except ob.OrchError as e:
                log.warning("cannot open the durable consumer %s: %s; retrying in %gs", args.durable, e, backoff)
                args.stop.wait(backoff)
                backoff = min(backoff * 2, 30.0)
                continue
            log.info("following %s with the durable consumer %s", stream.subject, stream.consumer)
            with stream:
                while not args.stop.is_set():
                    now = time.time()
                    if deadline is not None and now >= deadline:
                        log.info("--duration %gs reached", args.duration)
                        args.stop.set()
                        break
                    wait = 1.0 if args.once else min(1.0, max(next_tick - now, 0.05))
                    if deadline is not None:
                        wait = max(min(wait, deadline - now), 0.0)
                    try:
                        batch = stream.next_batch(256, timeout=wait)
                    except StopIteration:
                        break
                    except ob.ValidationError as e:  # a message that is no CloudEvent: skipped
                        log.warning("skipped an unreadable event: %s", e)
                        continue
                    except ob.OrchConnectionError as e:
                        log.warning("the event stream stopped: %s; reopening", e)
                        break
                    backoff = 1.0
                    changed = False
                    now = time.time()
                    for event in batch:
                        try:
                            changed = engine.observe(event, now) or changed
                        except Exception:  # a bug here must not stop the engine nor block the stream
                            log.exception("could not handle event %s (%s)", event.id, event.type)
                        event.ack()
                    if args.once and not batch:
                        engine.evaluate(time.time())
                        engine.remediate(time.time())
                        log.info("--once: caught up; %d priority changes, %d remediations started",
                                 engine.changes, engine.remediations)
                        return 0
                    if not args.once and (changed or now >= next_tick):
                        engine.evaluate(now)
                        engine.remediate(now)
                        next_tick = now + args.tick
    log.info("stopped; %d priority changes sent, %d remediations started", engine.changes, engine.remediations)
    return 0


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="attention_engine.py",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "A reference AI attention engine for the orchestrator: it follows health and lifecycle\n"
            "events, scores each service by its recent trouble (crashes, failures, restarts, critical\n"
            "health, health changes, flapping) and raises the priority of services in trouble through\n"
            "orch_bridge.Client.set_priority, with a reason naming the signals and a TTL. When a\n"
            "service calms down, its priority goes back to the baseline (clear_priority)."
        ),
        epilog=(
            "scoring:\n"
            "  Each signal within --window adds points that fade linearly to 0 at the window's end:\n"
            + "".join(f"    {k:<14} {v:>3g}  {_SOURCES[k]}\n" for k, v in WEIGHTS.items())
            + f"  plus, while it lasts: service critical {STATE_WEIGHTS['critical']:g} or degraded "
            + f"{STATE_WEIGHTS['degraded']:g} (service_changed; from 15 s on),\n"
            + f"  an instance of it flapping {STATE_WEIGHTS['flapping']:g}. "
            + "Health signals of a service in maintenance are ignored.\n"
            "  target priority = baseline + min(round(score), --max-boost), at most 100. It is sent when\n"
            "  it differs from the engine's last value by --min-change points or more (at most once per\n"
            "  --min-interval per service), refreshed before --ttl runs out, and cleared once the\n"
            "  target is within --min-change of the baseline.\n"
            "\n"
            "examples:\n"
            "  make dev                                   # terminal 1: a local orchestrator\n"
            "  make engine                                # terminal 2: build the bridge, run this\n"
            "  attention_engine.py --dry-run --verbose    # log the decisions, change nothing\n"
            "  attention_engine.py --duration 60          # stop after a minute (tests)\n"
            "\n"
            "remediation:\n"
            "  A service that crashed --remediate-crashes times within --remediate-window (crashes\n"
            "  before its last remediation do not count again) gets the workflow --remediate-workflow,\n"
            "  started with the inputs {service, crashes}, at most once per --remediate-cooldown. A\n"
            "  workflow that cannot be started (not defined, ...) is logged; the engine carries on.\n"
            "  Store the shipped one: orchestrator workflow put -f bridge-py/examples/remediate-crashes.toml\n"
            "\n"
            "Events come from the durable consumer --durable on <prefix>.evt.> (each acknowledged once\n"
            "handled), after a replay of the last --window (or --remediate-window) at start-up.\n"
            "Ctrl-C or SIGTERM stops it cleanly (acknowledgements flushed; a second Ctrl-C stops it at\n"
            "once); its priorities lapse after --ttl. Exit status: 0 when stopped, 1 when the\n"
            "orchestrator or NATS cannot be used, 2 on a usage error, 130 on a second Ctrl-C."
        ),
    )
    nats = parser.add_argument_group("connection")
    nats.add_argument("--nats-url", default=os.environ.get("ORCH_NATS_URL", "nats://127.0.0.1:4222"),
                      help="NATS server(s) the orchestrator uses, comma-separated "
                           "(default: $ORCH_NATS_URL or nats://127.0.0.1:4222)")
    nats.add_argument("--prefix", default=os.environ.get("ORCH_SUBJECT_PREFIX", "orch"),
                      help="the orchestrator's subject prefix (--subject-prefix; default: "
                           "$ORCH_SUBJECT_PREFIX or orch)")
    nats.add_argument("--timeout", type=float, default=5.0, metavar="SECONDS",
                      help="connection and request timeout (default: 5)")
    events = parser.add_argument_group("events")
    events.add_argument("--durable", default="attention-engine", metavar="NAME",
                        help="name of the durable JetStream consumer; a restarted engine with the same name "
                             "resumes after the last event it handled (default: attention-engine)")
    events.add_argument("--reset", action="store_true",
                        help="delete the durable consumer first, e.g. after a change of --prefix")
    events.add_argument("--window", type=float, default=300.0, metavar="SECONDS",
                        help="sliding window of the score, also replayed at start-up (default: 300)")
    prio = parser.add_argument_group("priorities")
    prio.add_argument("--source", default="engine:attention",
                      help="who asks, recorded with every change (1-128 characters; default: engine:attention)")
    prio.add_argument("--ttl", type=float, default=300.0, metavar="SECONDS",
                      help="lifetime of each adjustment; the baseline applies again after it unless the "
                           "engine refreshes it; 0: no lifetime (default: 300)")
    prio.add_argument("--min-interval", type=float, default=30.0, metavar="SECONDS",
                      help="least time between two requests for one service (default: 30; the orchestrator's "
                           "own rate limit is 10 changes per service per 60 s by default)")
    prio.add_argument("--min-change", type=int, default=5, metavar="POINTS",
                      help="least change of a priority worth a request (default: 5)")
    prio.add_argument("--max-boost", type=int, default=40, metavar="POINTS",
                      help="most points the engine adds to a baseline (default: 40)")
    prio.add_argument("--tick", type=float, default=5.0, metavar="SECONDS",
                      help="how often scores are re-evaluated without new events, as they fade (default: 5)")
    prio.add_argument("--dry-run", action="store_true", help="log the decisions without sending them")
    fix = parser.add_argument_group("remediation")
    fix.add_argument("--remediate-workflow", default="remediate-crashes", metavar="NAME",
                     help="the workflow started for a service that keeps crashing, with the inputs "
                          "{service, crashes} (default: remediate-crashes, bridge-py/examples/remediate-crashes.toml)")
    fix.add_argument("--remediate-crashes", type=int, default=3, metavar="N",
                     help="crashes within --remediate-window that start it (default: 3)")
    fix.add_argument("--remediate-window", type=float, default=600.0, metavar="SECONDS",
                     help="the window the crashes are counted in (default: 600)")
    fix.add_argument("--remediate-cooldown", type=float, default=600.0, metavar="SECONDS",
                     help="least time between two remediations of one service, whether the last one "
                          "could be started or not (default: 600)")
    fix.add_argument("--no-remediation", action="store_true", help="never start the remediation workflow")
    run_group = parser.add_argument_group("running")
    run_group.add_argument("--duration", type=float, default=None, metavar="SECONDS",
                           help="stop after this many seconds (tests); default: run until Ctrl-C / SIGTERM")
    run_group.add_argument("--once", action="store_true",
                           help="read the events there are (replay and the durable consumer's backlog), "
                                "decide once, and exit")
    run_group.add_argument("-v", "--verbose", action="store_true", help="also log every signal noted")
    args = parser.parse_args(argv)
    problems = [
        (args.window <= 0, "--window must be positive"),
        (args.ttl < 0, "--ttl must be 0 or positive"),
        (args.min_interval < 0, "--min-interval must be 0 or positive"),
        (args.min_change < 1, "--min-change must be at least 1"),
        (not 0 <= args.max_boost <= MAX_PRIORITY, "--max-boost must be 0-100"),
        (args.tick <= 0, "--tick must be positive"),
        (args.duration is not None and args.duration <= 0, "--duration must be positive"),
        (args.timeout <= 0, "--timeout must be positive"),
        (args.remediate_crashes < 1, "--remediate-crashes must be at least 1"),
        (args.remediate_window <= 0, "--remediate-window must be positive"),
        (args.remediate_cooldown < 0, "--remediate-cooldown must be 0 or positive"),
        (not re.fullmatch(r"[a-z0-9](?:[a-z0-9_-]{0,61}[a-z0-9])?", args.remediate_workflow),
         "--remediate-workflow must be a workflow name (1-63 of a-z, 0-9, '-', '_')"),
        (not args.source.strip() or len(args.source) > 128, "--source must be 1-128 characters"),
    ]
    for bad, message in problems:
        if bad:
            parser.error(message)
    return args



def without_credentials(url: str) -> str:
    """A NATS URL (or several, comma-separated) with any user and password replaced by ***."""
    return re.sub(r"(^|,)([a-z]+://)?[^,@/]+@", lambda m: f"{m.group(1)}{m.group(2) or ''}***@", url)

def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)-7s %(message)s", datefmt="%Y-%m-%d %H:%M:%S")
    try:
        import orch_bridge
    except ImportError as e:
        log.error("cannot import orch_bridge (%s); build and install it with: bash scripts/bridge.sh", e)
        return 1
    args.stop = threading.Event()
    _install_signal_handlers(args.stop)
    try:
        return run(args)
    except KeyboardInterrupt:
        log.info("interrupted")
        return 130
    except orch_bridge.ValidationError as e:
        log.error("%s", e)
        return 2
    except orch_bridge.OrchError as e:
        log.error("%s", e)
        return 1


if __name__ == "__main__":
    sys.exit(main())
