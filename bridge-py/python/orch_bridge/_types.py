"""Typed results of the orchestrator's replies, and typed events (see docs/protocol.md and the
protocol crate's ``priority.rs``, ``workflow.rs``, ``resources.rs`` and ``stack.rs``). Each is a frozen
dataclass built from the reply's JSON; ``raw`` keeps the JSON as received, so fields a newer
orchestrator adds are not lost.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Dict, List, Literal, Optional, TypedDict, TypeVar, Union

from . import _core
from ._errors import OrchError

__all__ = [
    "Adjustment",
    "PriorityView",
    "Change",
    "PriorityChange",
    "PriorityDetail",
    "GuardView",
    "PriorityList",
    "HoldRelease",
    "Instance",
    "ServicePage",
    "ServiceHealth",
    "Service",
    "RestartResult",
    "Leader",
    "Replica",
    "ClusterStatus",
    "StepError",
    "StepState",
    "Execution",
    "Schedule",
    "QueueStats",
    "WorkflowEventData",
    "WorkflowEvent",
    "EXECUTION_ENDED",
    "Resources",
    "Allocation",
    "Node",
    "NodeEvent",
    "ServiceLost",
    "ServicePreempted",
    "ResourceEvent",
    "resource_event",
    "RolloutPhase",
    "RolloutEvent",
    "Rollout",
    "ManagedService",
    "Stack",
    "CONFIG_CHANGED",
    "CONFIG_DELETED",
    "ConfigEntry",
    "ConfigList",
    "ConfigOp",
    "ConfigChange",
    "ConfigHistory",
    "ConfigSchema",
    "LogStream",
    "LogLine",
    "UnitLogs",
    "ServiceLogs",
]

Json = Dict[str, Any]
T = TypeVar("T")


def _time(value: Optional[str]) -> Optional[datetime]:
    return None if value is None else _core.parse_time(value)


def _bad_reply(what: str, error: Exception, raw: Any) -> OrchError:
    return OrchError(f"cannot read the orchestrator's {what} reply ({error!r}): {raw!r}"[:2000], "bad_reply")


def _typed_event(event: Any, what: str, build: Callable[[Json], T]) -> T:
    """``build(event.data)``, for the ``from_event`` of each typed event: data without the
    protocol's shape is an ``OrchError`` with code ``bad_reply`` naming ``what``."""
    d = event.data
    try:
        return build(d)
    except (KeyError, TypeError, ValueError, AttributeError, OrchError) as e:
        raise _bad_reply(what, e, d) from None


@dataclass(frozen=True)
class Adjustment:
    """An engine's adjustment in force."""

    requested: int
    """The value asked for, before clamping."""
    source: str
    reason: str
    at: datetime
    expires_at: Optional[datetime]
    """When it lapses (then the baseline applies again), or None."""
    principal: str = ""
    """Who set it, as authenticated (``key:<name>``, ``nats``...; protocol.md §6.1)."""

    @classmethod
    def from_json(cls, d: Json) -> "Adjustment":
        at, expires_at = _core.parse_time(d["at"]), _time(d.get("expires_at"))
        return cls(d["requested"], d["source"], d["reason"], at, expires_at, d.get("principal", ""))


@dataclass(frozen=True)
class PriorityView:
    """A service's priority: what applies and why."""

    service: str
    effective: int
    """The priority in force (0-100)."""
    baseline: int
    baseline_source: str
    """``default``, ``manifest`` or ``operator``."""
    min: int
    max: int
    pinned: bool
    adjustment: Optional[Adjustment]
    updated_at: Optional[datetime]
    raw: Json = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, d: Json) -> "PriorityView":
        adjustment = d.get("adjustment")
        return cls(
            d["service"],
            d["effective"],
            d["baseline"],
            d["baseline_source"],
            d["min"],
            d["max"],
            d["pinned"],
            None if adjustment is None else Adjustment.from_json(adjustment),
            _time(d.get("updated_at")),
            d,
        )


@dataclass(frozen=True)
class Change:
    """One change of a service's priority; its ``id`` is also the id of its event
    ``io.orch.priority.<outcome>.v1``."""

    id: str
    service: str
    action: str
    """``set``, ``clear``, ``policy``, ``expire`` or ``release``."""
    outcome: str
    """``applied``, ``clamped``, ``held``, ``refused``, ``expired`` or ``dropped``."""
    requested: Optional[int]
    previous: int
    effective: int
    source: str
    reason: str
    guardrail: Optional[str]
    """For refused, held and clamped changes: ``pinned``, ``rate_limited`` or ``mass_change``."""
    detail: Optional[str]
    expires_at: Optional[datetime]
    at: datetime
    raw: Json = field(repr=False, compare=False)
    principal: str = ""
    """Who asked, as authenticated: ``key:<name>``, ``jwt:<sub>``, ``anonymous``,
    ``nats:<user>``, ``nats`` or ``orchestrator`` (protocol.md §6.1); ``source`` is what the
    caller said of itself."""
    count: int = 1
    """How many requests this record stands for: refusals of one service by one guardrail
    within a rate window are counted into one ``refused`` record, and held changes that
    replaced one another into one ``held`` record (protocol.md §13.4)."""

    @classmethod
    def from_json(cls, d: Json) -> "Change":
        return cls(
            d["id"],
            d["service"],
            d["action"],
            d["outcome"],
            d.get("requested"),
            d["previous"],
            d["effective"],
            d["source"],
            d.get("reason", ""),
            d.get("guardrail"),
            d.get("detail"),
            _time(d.get("expires_at")),
            _core.parse_time(d["at"]),
            d,
            d.get("principal", ""),
            d.get("count") or 1,
        )


@dataclass(frozen=True)
class PriorityChange:
    """The reply to ``set_priority`` and ``clear_priority``: the change and the priority after it.
    A ``held`` outcome is no error: the change is accepted and waits for an operator's release."""

    change: Change
    priority: PriorityView

    @property
    def outcome(self) -> str:
        """Shortcut for ``change.outcome``."""
        return self.change.outcome

    @property
    def effective(self) -> int:
        """Shortcut for ``priority.effective``."""
        return self.priority.effective

    @property
    def held(self) -> bool:
        """True if a mass-change hold keeps the change back."""
        return self.change.outcome == "held"

    @classmethod
    def from_json(cls, d: Json) -> "PriorityChange":
        try:
            return cls(Change.from_json(d["change"]), PriorityView.from_json(d["priority"]))
        except (KeyError, TypeError, ValueError) as e:
            raise _bad_reply("priority change", e, d) from None


@dataclass(frozen=True)
class PriorityDetail:
    """The reply to ``get_priority``: the priority and its recent changes, newest first."""

    priority: PriorityView
    history: List[Change]

    @classmethod
    def from_json(cls, d: Json) -> "PriorityDetail":
        try:
            return cls(PriorityView.from_json(d["priority"]), [Change.from_json(c) for c in d["history"]])
        except (KeyError, TypeError, ValueError) as e:
            raise _bad_reply("priority", e, d) from None


@dataclass(frozen=True)
class GuardView:
    """The mass-change guard: whether engine changes are being held, and how close it is."""

    holding: bool
    since: Optional[datetime]
    until: Optional[datetime]
    """When the hold ends by itself (held changes are then dropped)."""
    held: List[str]
    """Services with a held change."""
    changed_in_window: int
    limit: int

    @classmethod
    def from_json(cls, d: Json) -> "GuardView":
        return cls(
            d["holding"],
            _time(d.get("since")),
            _time(d.get("until")),
            list(d["held"]),
            d["changed_in_window"],
            d["limit"],
        )


@dataclass(frozen=True)
class PriorityList:
    """The reply to ``list_priorities``."""

    priorities: List[PriorityView]
    guard: GuardView

    def by_service(self) -> Dict[str, PriorityView]:
        """The priorities keyed by service name."""
        return {p.service: p for p in self.priorities}

    @classmethod
    def from_json(cls, d: Json) -> "PriorityList":
        try:
            return cls([PriorityView.from_json(p) for p in d["priorities"]], GuardView.from_json(d["guard"]))
        except (KeyError, TypeError, ValueError) as e:
            raise _bad_reply("priority list", e, d) from None


@dataclass(frozen=True)
class HoldRelease:
    """The reply to ``release_hold``: the changes applied (or dropped) and the guard after."""

    changes: List[Change]
    guard: GuardView

    @classmethod
    def from_json(cls, d: Json) -> "HoldRelease":
        try:
            return cls([Change.from_json(c) for c in d["changes"]], GuardView.from_json(d["guard"]))
        except (KeyError, TypeError, ValueError) as e:
            raise _bad_reply("release", e, d) from None


@dataclass(frozen=True)
class Instance:
    """A registered instance (protocol.md §3.4); every field is in ``raw``."""

    id: str
    name: str
    version: str
    address: str
    port: int
    protocol: str
    tags: List[str]
    metadata: Dict[str, str]
    health: str
    """``passing``, ``warning`` or ``critical``: the worst of the lease and the checks."""
    lease: str
    revision: int
    registered_at: datetime
    updated_at: datetime
    critical_since: Optional[datetime]
    raw: Json = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, d: Json) -> "Instance":
        return cls(
            d["id"],
            d["name"],
            d.get("version", ""),
            d["address"],
            d["port"],
            d.get("protocol", "http"),
            list(d.get("tags", [])),
            dict(d.get("metadata", {})),
            d["health"],
            d.get("lease", "passing"),
            d["revision"],
            _core.parse_time(d["registered_at"]),
            _core.parse_time(d["updated_at"]),
            _time(d.get("critical_since")),
            d,
        )


@dataclass(frozen=True)
class ServicePage:
    """One page of the registry list; pass ``next`` as ``after`` for the next page."""

    items: List[Instance]
    next: Optional[str]

    @classmethod
    def from_json(cls, d: Json) -> "ServicePage":
        try:
            return cls([Instance.from_json(i) for i in d["items"]], d.get("next"))
        except (KeyError, TypeError, ValueError) as e:
            raise _bad_reply("registry list", e, d) from None


@dataclass(frozen=True)
class ServiceHealth:
    """The health of one service (protocol.md §5.9)."""

    service: str
    state: str
    """``healthy``, ``degraded`` or ``critical``."""
    counts: Dict[str, int]
    """``passing``, ``warning``, ``critical``, ``maintenance``, ``flapping``."""
    critical: bool
    """The service is marked critical (``--critical-services``)."""
    in_maintenance: bool
    instances: List[Json]
    """Each instance's ``id``, ``health``, ``lease``, ``checks`` and, when set, ``maintenance``,
    ``flapping_since``, ``critical_since``."""
    raw: Json = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, d: Json) -> "ServiceHealth":
        try:
            return cls(
                d["service"],
                d["state"],
                dict(d["counts"]),
                d["critical"],
                d["in_maintenance"],
                list(d["instances"]),
                d,
            )
        except (KeyError, TypeError, ValueError) as e:
            raise _bad_reply("service health", e, d) from None


@dataclass(frozen=True)
class Service:
    """One service as ``get_service`` sees it: its health and its registered instances."""

    name: str
    health: ServiceHealth
    instances: List[Instance]
    """The registry's view of each instance (address, port, tags, ...), by id."""

    @property
    def state(self) -> str:
        """Shortcut for ``health.state``."""
        return self.health.state


@dataclass(frozen=True)
class RestartResult:
    """The reply to ``restart``: the managed service is being restarted."""

    service: str
    restarting: bool

    @classmethod
    def from_json(cls, d: Json) -> "RestartResult":
        try:
            return cls(d["service"], d["restarting"])
        except (KeyError, TypeError) as e:
            raise _bad_reply("restart", e, d) from None


@dataclass(frozen=True)
class Leader:
    """The replica that holds the group's lease (protocol.md §15.1)."""

    replica: str
    term: int
    """Grows by one with each election; writes under an older term are refused."""
    since: datetime
    """When this term began."""
    expires_at: datetime
    """When the lease runs out unless renewed (the leader renews it every fifth of its length)."""

    @classmethod
    def from_json(cls, d: Json) -> "Leader":
        return cls(d["replica"], d["term"], _core.parse_time(d["since"]), _core.parse_time(d["expires_at"]))


@dataclass(frozen=True)
class Replica:
    """One replica of the group, as it announced itself."""

    name: str
    http_url: str
    """Where it answers HTTP (a standby forwards to the leader's)."""
    version: str
    """The orchestrator's version it runs."""
    role: str
    """``leader`` (holds the lease), ``standby`` (ready to take over) or ``gone`` (silent for
    over 5 s)."""
    started_at: datetime
    seen_at: datetime
    """Its last sign of life (each replica refreshes it every second)."""

    @classmethod
    def from_json(cls, d: Json) -> "Replica":
        return cls(
            d["name"],
            d["http_url"],
            d["version"],
            d["role"],
            _core.parse_time(d["started_at"]),
            _core.parse_time(d["seen_at"]),
        )


@dataclass(frozen=True)
class ClusterStatus:
    """The reply to ``cluster_status``: the group of replicas, which one leads, in which term and
    since when (protocol.md §15.2). Every replica answers it, standbys too."""

    mode: str
    """``replicated`` when orchestrators run as replicas (``serve --replica``), ``single`` for one
    orchestrator alone (then ``answered_by`` and ``leader`` are None and ``replicas`` is empty)."""
    answered_by: Optional[str]
    """The replica that answered (None for one orchestrator alone)."""
    leader: Optional[Leader]
    """The lease's holder, or None while no lease runs (a failover under way) or alone."""
    replicas: List[Replica]
    """Every replica that announced itself, by name."""
    raw: Json = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, d: Json) -> "ClusterStatus":
        try:
            leader = d.get("leader")
            return cls(
                d["mode"],
                d.get("answered_by"),
                None if leader is None else Leader.from_json(leader),
                [Replica.from_json(r) for r in d["replicas"]],
                d,
            )
        except (KeyError, TypeError, ValueError) as e:
            raise _bad_reply("cluster status", e, d) from None


# -- workflows (protocol.md §16) ------------------------------------------------------------------

#: The statuses of an execution that has ended: it changes no more.
EXECUTION_ENDED = frozenset({"succeeded", "failed", "cancelled"})


def _millis(value: Optional[int]) -> Optional[datetime]:
    """A step's time (milliseconds since the Unix epoch) as an aware datetime in UTC."""
    return None if value is None else datetime.fromtimestamp(value / 1000.0, tz=timezone.utc)


@dataclass(frozen=True)
class StepError:
    """Why a step's attempt failed."""

    kind: str
    """``timeout``, ``error``, ``unavailable`` or ``rejected`` (an approval a person rejected)."""
    message: str

    @classmethod
    def from_json(cls, d: Json) -> "StepError":
        return cls(d["kind"], d.get("message", ""))


@dataclass(frozen=True)
class StepState:
    """One step of an execution (protocol.md §16.1)."""

    status: str
    """``pending``, ``retrying`` (waiting for its next attempt at ``due_at``), ``running``
    (``due_at``: when the attempt times out), ``succeeded``, ``failed``, ``skipped`` or
    ``cancelled``."""
    attempt: int
    """The attempt running or last run, from 1 (0 before the first)."""
    started_at: Optional[datetime]
    """When the running (or last) attempt started."""
    due_at: Optional[datetime]
    """When the running attempt times out, or the next attempt is due."""
    output: Any
    """What the step produced (JSON), e.g. an approval's ``{"decision", "by", "comment"}``;
    None if nothing."""
    error: Optional[StepError]

    @classmethod
    def from_json(cls, d: Json) -> "StepState":
        error = d.get("error")
        return cls(
            d["status"],
            d.get("attempt", 0),
            _millis(d.get("started_at")),
            _millis(d.get("due_at")),
            d.get("output"),
            None if error is None else StepError.from_json(error),
        )


@dataclass(frozen=True)
class Execution:
    """One execution of a workflow (protocol.md §16.1): the reply to ``start_workflow``,
    ``execution``, ``cancel_execution`` and ``signal_execution``, and each item of
    ``executions``."""

    id: str
    """Its id (a UUID), also the CloudEvents ``subject`` of its events."""
    workflow: str
    version: int
    """The version of the workflow's definition it runs."""
    status: str
    """``queued``, ``running``, ``compensating``, ``succeeded``, ``failed`` or ``cancelled``."""
    queue: str
    priority: int
    inputs: Dict[str, Any]
    """The inputs, with the defaults filled in (None for an optional input without one)."""
    steps: Dict[str, StepState]
    """Each step by id."""
    reason: Optional[str]
    """Why it failed or was cancelled."""
    created_at: datetime
    created_by: str
    """Who started it, as authenticated: ``nats:<user>`` over NATS, ``key:<name>`` over HTTP,
    ``workflow:<name>`` for a sub-workflow (protocol.md §6.1)."""
    started_at: Optional[datetime]
    finished_at: Optional[datetime]
    trigger: str
    """``manual``, ``cron:<n>`` (the ``n``-th schedule), or ``parent:<execution>/<step>``."""
    fire_at: Optional[datetime]
    """The firing a scheduled execution was started for."""
    raw: Json = field(repr=False, compare=False)

    @property
    def ended(self) -> bool:
        """True once it succeeded, failed or was cancelled."""
        return self.status in EXECUTION_ENDED

    @classmethod
    def from_json(cls, d: Json) -> "Execution":
        try:
            return cls(
                d["id"],
                d["workflow"],
                d["version"],
                d["status"],
                d["queue"],
                d["priority"],
                dict(d.get("inputs") or {}),
                {step: StepState.from_json(state) for step, state in (d.get("steps") or {}).items()},
                d.get("reason"),
                _core.parse_time(d["created_at"]),
                d["created_by"],
                _time(d.get("started_at")),
                _time(d.get("finished_at")),
                d["trigger"],
                _time(d.get("fire_at")),
                d,
            )
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise _bad_reply("execution", e, d) from None

    @classmethod
    def list_from_json(cls, d: Any) -> List["Execution"]:
        if not isinstance(d, list):
            raise _bad_reply("execution list", TypeError("not a list"), d)
        return [cls.from_json(e) for e in d]


@dataclass(frozen=True)
class Schedule:
    """A cron schedule of a workflow and its next firing (``schedules``)."""

    workflow: str
    index: int
    """Its place among the workflow's ``[[schedule]]`` (0 first): the executions it starts have
    the trigger ``cron:<index>``."""
    version: int
    """The workflow version the schedule comes from."""
    cron: str
    timezone: str
    overlap: str
    """``skip``, ``allow`` or ``replace``."""
    catch_up: str
    """``once``, ``skip`` or ``all``."""
    next_fire_at: datetime
    last_fired_at: Optional[datetime]
    raw: Json = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, d: Json) -> "Schedule":
        return cls(
            d["workflow"],
            d["index"],
            d["version"],
            d["cron"],
            d["timezone"],
            d["overlap"],
            d["catch_up"],
            _core.parse_time(d["next_fire_at"]),
            _time(d.get("last_fired_at")),
            d,
        )

    @classmethod
    def list_from_json(cls, d: Any) -> List["Schedule"]:
        try:
            return [cls.from_json(s) for s in d]
        except (KeyError, TypeError, ValueError) as e:
            raise _bad_reply("schedules", e, d) from None


@dataclass(frozen=True)
class QueueStats:
    """A queue's figures (``queues``): executions waiting and running now; those that ended, and
    the wait before starting (p50, p99, in milliseconds), over the last day."""

    queue: str
    waiting: int
    running: int
    succeeded: int
    failed: int
    cancelled: int
    wait_p50_ms: Optional[float]
    """None when no execution of the queue started within the last day."""
    wait_p99_ms: Optional[float]
    raw: Json = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, d: Json) -> "QueueStats":
        return cls(
            d["queue"],
            d["waiting"],
            d["running"],
            d["succeeded"],
            d["failed"],
            d["cancelled"],
            d.get("wait_p50_ms"),
            d.get("wait_p99_ms"),
            d,
        )

    @classmethod
    def list_from_json(cls, d: Any) -> List["QueueStats"]:
        try:
            return [cls.from_json(q) for q in d]
        except (KeyError, TypeError, ValueError) as e:
            raise _bad_reply("queues", e, d) from None


class _WorkflowEventKeys(TypedDict):
    execution_id: str
    workflow: str
    version: int
    status: str
    """The execution's status after the change."""


class WorkflowEventData(_WorkflowEventKeys, total=False):
    """The ``data`` of a workflow event (``io.orch.workflow.<kind>.v1``, protocol.md §16.3), as
    ``Event.data`` holds it: ``execution_id``, ``workflow``, ``version`` and ``status`` always;
    the keys below only for the kinds they apply to."""

    step: str
    """``step_*`` and ``compensation_started``: the step (the one that failed, for the latter)."""
    attempt: int
    error: str
    """``step_retrying``, ``step_failed``: why the attempt failed."""
    reason: str
    """``step_skipped``, ``failed``, ``cancelled``: why."""
    next_at: str
    """``step_retrying``: when the next attempt is due (RFC 3339)."""
    compensation: str
    """``compensation_started``: the compensating step."""


@dataclass(frozen=True)
class WorkflowEvent:
    """A workflow event, typed: ``WorkflowEvent.from_event(event)`` for an :class:`Event` of
    ``<prefix>.evt.workflow.<workflow>.<kind>`` (None for any other event).

    Example::

        with client.events("orch.evt.workflow.>") as events:
            for event in events:
                wf = WorkflowEvent.from_event(event)
                print(wf.workflow, wf.kind, wf.step, wf.status)
    """

    kind: str
    """``started``, ``step_started``, ``step_succeeded``, ``step_retrying``, ``step_failed``,
    ``step_skipped``, ``compensation_started``, ``succeeded``, ``failed`` or ``cancelled``
    (``orch_bridge._core.WORKFLOW_EVENT_KINDS``)."""
    execution_id: str
    workflow: str
    version: int
    status: str
    """The execution's status after the change."""
    step: Optional[str]
    attempt: Optional[int]
    error: Optional[str]
    reason: Optional[str]
    next_at: Optional[datetime]
    compensation: Optional[str]
    id: str
    """The event's id (unique)."""
    time: Optional[datetime]
    principal: Optional[str]

    @property
    def ended(self) -> bool:
        """True for the events that end an execution: ``succeeded``, ``failed``, ``cancelled``."""
        return self.kind in EXECUTION_ENDED

    @classmethod
    def from_event(cls, event: Any) -> Optional["WorkflowEvent"]:
        """The typed workflow event of ``event``, or None if it is no workflow event.

        Raises:
            OrchError: (code ``bad_reply``) a workflow event whose data does not have the
                protocol's shape.
        """
        ty = event.type
        if not (ty.startswith("io.orch.workflow.") and ty.endswith(".v1")):
            return None
        kind = ty[len("io.orch.workflow.") : -len(".v1")]
        d = event.data
        try:
            if kind not in _core.WORKFLOW_EVENT_KINDS:
                raise ValueError(f"unknown workflow event kind {kind!r}")
            return cls(
                kind,
                d["execution_id"],
                d["workflow"],
                d["version"],
                d["status"],
                d.get("step"),
                d.get("attempt"),
                d.get("error"),
                d.get("reason"),
                _time(d.get("next_at")),
                d.get("compensation"),
                event.id,
                event.time,
                event.principal,
            )
        except (KeyError, TypeError, ValueError, OrchError) as e:
            raise _bad_reply(f"workflow event {ty}", e, d) from None


# -- resources: nodes, and the services placed on them (protocol.md §17) --------------------------


@dataclass(frozen=True)
class Resources:
    """An amount of CPU and memory: ``Resources(500, 256)`` is half a core and 256 MiB."""

    cpu: int
    """Millicores: 1000 is one core."""
    memory: int
    """MiB."""

    def fits(self, other: "Resources") -> bool:
        """Whether ``other`` fits in this amount, in both dimensions."""
        return other.cpu <= self.cpu and other.memory <= self.memory

    @classmethod
    def from_json(cls, d: Json) -> "Resources":
        return cls(d.get("cpu", 0), d.get("memory", 0))


@dataclass(frozen=True)
class Allocation:
    """One process on a node and what its service asked for."""

    service: str
    """The managed service (a replica's own name, ``api-1``)."""
    pid: int
    resources: Resources

    @classmethod
    def from_json(cls, d: Json) -> "Allocation":
        return cls(d["service"], d["pid"], Resources.from_json(d["resources"]))


@dataclass(frozen=True)
class Node:
    """A node as the inventory shows it (protocol.md §17.3): the reply to ``node``, and each item
    of ``nodes``. Its agent's last report, whether it is heard from, and what is left on it."""

    name: str
    status: str
    """``ready`` (its agent reports) or ``down`` (silent longer than the node-down time: nothing
    new is placed there)."""
    since: datetime
    """When it entered its status."""
    last_seen: datetime
    """When its last report arrived (by the orchestrator's clock)."""
    capacity: Resources
    """What the machine has."""
    reserved: Resources
    """Kept for the system and the agent: never placed on."""
    allocatable: Resources
    """``capacity`` less ``reserved``: what placement may use."""
    allocated: Resources
    """What the processes running there asked for."""
    free: Resources
    """``allocatable`` less ``allocated``."""
    labels: Dict[str, str]
    """What placement constraints select on (``zone``, ``disk``, ...)."""
    enforcement: str
    """How the agent enforces limits: ``cgroup_v2``, ``cgroup_v1``, ``unlimited`` or ``none``."""
    allocations: List[Allocation]
    """Every process its agent runs, with what it asked for."""
    cpu_used: float
    """Measured busy share of all CPUs (0-1) at the last report."""
    memory_used: float
    """Measured used share of memory (0-1) at the last report."""
    agent_version: str
    agent_started: datetime
    raw: Json = field(repr=False, compare=False)

    @property
    def ready(self) -> bool:
        """True while its agent is heard from."""
        return self.status == "ready"

    @property
    def services(self) -> List[str]:
        """The services whose processes run there, as its last report named them."""
        return [a.service for a in self.allocations]

    @classmethod
    def from_json(cls, d: Json) -> "Node":
        try:
            return cls(
                d["name"],
                d["status"],
                _core.parse_time(d["since"]),
                _core.parse_time(d["last_seen"]),
                Resources.from_json(d["capacity"]),
                Resources.from_json(d["reserved"]),
                Resources.from_json(d["allocatable"]),
                Resources.from_json(d["allocated"]),
                Resources.from_json(d["free"]),
                dict(d.get("labels") or {}),
                d["enforcement"],
                [Allocation.from_json(a) for a in d.get("allocations") or []],
                d["cpu_used"],
                d["memory_used"],
                d.get("agent_version", ""),
                _core.parse_time(d["agent_started"]),
                d,
            )
        except (KeyError, TypeError, ValueError, AttributeError, OrchError) as e:
            raise _bad_reply("node", e, d) from None

    @classmethod
    def list_from_json(cls, d: Any) -> List["Node"]:
        try:
            nodes = d["nodes"]
        except (KeyError, TypeError) as e:
            raise _bad_reply("node list", e, d) from None
        if not isinstance(nodes, list):
            raise _bad_reply("node list", TypeError("nodes is not a list"), d)
        return [cls.from_json(n) for n in nodes]


def _resource_kind(event: Any) -> Optional[str]:
    """``node_joined`` for ``io.orch.resource.node_joined.v1``; None for an event of another
    domain."""
    ty = event.type
    if not (ty.startswith("io.orch.resource.") and ty.endswith(".v1")):
        return None
    return ty[len("io.orch.resource.") : -len(".v1")]


@dataclass(frozen=True)
class NodeEvent:
    """A node joined, went down or came back (``io.orch.resource.node_joined.v1``,
    ``node_down.v1``, ``node_up.v1`` on ``<prefix>.evt.resource.<node>.<kind>``; protocol.md
    §17.2), typed: ``NodeEvent.from_event(event)`` (None for any other event).

    Example::

        with client.events("orch.evt.resource.>") as events:
            for event in events:
                node = NodeEvent.from_event(event)
                if node is not None and node.kind == "node_down":
                    print(node.node, node.reason, node.services)
    """

    kind: str
    """``node_joined`` (its agent's first report), ``node_down`` (silent longer than the
    node-down time) or ``node_up`` (reported again); ``orch_bridge._core.NODE_EVENT_KINDS``."""
    node: str
    status: str
    """``ready`` or ``down``: the node's status after the change."""
    reason: str
    """Why, in words: ``first report``, ``silent for 10.4s (node-down time 10s)``,
    ``reported again``."""
    last_seen: datetime
    capacity: Resources
    labels: Dict[str, str]
    services: List[str]
    """The services its last report named (those lost with a node that went down)."""
    id: str
    """The event's id (unique)."""
    time: Optional[datetime]
    principal: Optional[str]

    @property
    def ready(self) -> bool:
        """True when the node is ready after the change (joined, or up again)."""
        return self.status == "ready"

    @classmethod
    def from_event(cls, event: Any) -> Optional["NodeEvent"]:
        """The typed node event of ``event``, or None if it is no node event.

        Raises:
            OrchError: (code ``bad_reply``) a node event whose data does not have the protocol's
                shape.
        """
        kind = _resource_kind(event)
        if kind is None or kind not in _core.NODE_EVENT_KINDS:
            return None
        return _typed_event(
            event,
            f"node event {event.type}",
            lambda d: cls(
                kind,
                d["node"],
                d["status"],
                d.get("reason", ""),
                _core.parse_time(d["last_seen"]),
                Resources.from_json(d["capacity"]),
                dict(d.get("labels") or {}),
                list(d.get("services") or []),
                event.id,
                event.time,
                event.principal,
            ),
        )


@dataclass(frozen=True)
class ServiceLost:
    """A managed service (or replica) ran on a node that went down; it is placed again
    (``io.orch.resource.lost.v1`` on ``<prefix>.evt.resource.<service>.lost``), typed:
    ``ServiceLost.from_event(event)`` (None for any other event)."""

    service: str
    """The managed service: a replica's own name (``api-1``)."""
    replica_of: Optional[str]
    """The service a replica belongs to (``api``); None for a service of one."""
    node: str
    """The node that went down."""
    pid: Optional[int]
    """The pid it had there, if it had one (the process may still run there, out of reach)."""
    reason: str
    id: str
    """The event's id (unique)."""
    time: Optional[datetime]
    principal: Optional[str]

    @classmethod
    def from_event(cls, event: Any) -> Optional["ServiceLost"]:
        """The typed event of ``event``, or None if it is no ``lost`` event.

        Raises:
            OrchError: (code ``bad_reply``) a ``lost`` event whose data does not have the
                protocol's shape.
        """
        if _resource_kind(event) != "lost":
            return None
        return _typed_event(
            event,
            f"event {event.type}",
            lambda d: cls(
                d["service"],
                d.get("replica_of"),
                d["node"],
                d.get("pid"),
                d.get("reason", ""),
                event.id,
                event.time,
                event.principal,
            ),
        )


@dataclass(frozen=True)
class ServicePreempted:
    """A managed service was stopped to make room for one of higher priority, and waits to be
    placed again (``io.orch.resource.preempted.v1`` on
    ``<prefix>.evt.resource.<service>.preempted``), typed: ``ServicePreempted.from_event(event)``
    (None for any other event)."""

    service: str
    """The service stopped (a replica's own name)."""
    priority: int
    """Its effective priority."""
    by: str
    """The service it made room for."""
    by_priority: int
    """That service's effective priority."""
    node: str
    reason: str
    """Who preempted whom and why, in words."""
    budget_left: int
    """Preemptions left in the budget's window after this one."""
    id: str
    """The event's id (unique)."""
    time: Optional[datetime]
    principal: Optional[str]

    @classmethod
    def from_event(cls, event: Any) -> Optional["ServicePreempted"]:
        """The typed event of ``event``, or None if it is no ``preempted`` event.

        Raises:
            OrchError: (code ``bad_reply``) a ``preempted`` event whose data does not have the
                protocol's shape.
        """
        if _resource_kind(event) != "preempted":
            return None
        return _typed_event(
            event,
            f"event {event.type}",
            lambda d: cls(
                d["service"],
                d["priority"],
                d["by"],
                d["by_priority"],
                d["node"],
                d.get("reason", ""),
                d["budget_left"],
                event.id,
                event.time,
                event.principal,
            ),
        )


#: The typed resource events (see :func:`resource_event`).
ResourceEvent = Union[NodeEvent, ServiceLost, ServicePreempted]


def resource_event(event: Any) -> Optional[ResourceEvent]:
    """The typed resource event of ``event``: a :class:`NodeEvent`, :class:`ServiceLost` or
    :class:`ServicePreempted`; None for any other event (node pressure events included).

    Example::

        with client.events("orch.evt.resource.>", durable="engine-resources", auto_ack=True) as events:
            for event in events:
                typed = resource_event(event)
                if isinstance(typed, ServicePreempted):
                    print(typed.service, "made room for", typed.by, "on", typed.node)
    """
    return NodeEvent.from_event(event) or ServiceLost.from_event(event) or ServicePreempted.from_event(event)


# -- rolling updates (the manifest's ``update`` block) -------------------------------------------

#: Where a rolling update stands, from its event: ``io.orch.lifecycle.rollout_<phase>.v1``.
RolloutPhase = Literal["started", "progressed", "completed", "failed"]


@dataclass(frozen=True)
class RolloutEvent:
    """An event of a rolling update: a changed service with an ``update`` block has its replicas
    replaced a batch of at most ``max_parallel`` at a time, each batch healthy for
    ``min_healthy_time`` before the next (``io.orch.lifecycle.rollout_started.v1``,
    ``rollout_progressed.v1``, ``rollout_completed.v1``, ``rollout_failed.v1`` on
    ``<prefix>.evt.lifecycle.<service>.<kind>``, data ``RolloutData``), typed:
    ``RolloutEvent.from_event(event)`` (None for any other event).

    Example::

        with client.events("orch.evt.lifecycle.>") as events:
            for event in events:
                rollout = RolloutEvent.from_event(event)
                if rollout is not None:
                    print(rollout.service, rollout.phase, f"v{rollout.version}",
                          f"{len(rollout.replaced)} of {rollout.total} replaced", rollout.reason or "")
    """

    phase: RolloutPhase
    """``started`` (the new version is installed; no replica replaced yet), ``progressed`` (a
    batch was healthy long enough and the next one is being replaced), ``completed`` (every
    replica runs the new version) or ``failed`` (a batch crashed or was not healthy within
    ``healthy_deadline``: see ``reason`` and ``revert_to``)."""
    service: str
    """The service whose replicas are replaced (its event's service token)."""
    version: int
    """The manifest version rolled out."""
    from_version: int
    """The manifest version its replicas ran before."""
    revert_to: Optional[int]
    """The version applied again if the update fails (``auto_revert``); None when it does not
    revert (turned off, or this update is itself a revert). On ``failed``: the version now being
    applied again, if any."""
    max_parallel: int
    """Most replicas replaced at a time."""
    replaced: List[str]
    """Replicas running the new version, healthy for ``min_healthy_time``."""
    batch: List[str]
    """The batch being replaced now."""
    remaining: List[str]
    """Replicas still on the old version, in the order they will be replaced."""
    started_at: datetime
    """When the update began."""
    reason: Optional[str]
    """``failed``: why (``api-0 crashed on version 3: ...``); None otherwise."""
    id: str
    """The event's id (unique)."""
    time: Optional[datetime]
    principal: Optional[str]

    @property
    def kind(self) -> str:
        """The event's kind, ``rollout_<phase>``: the last token of its subject
        (``orch_bridge._core.ROLLOUT_EVENT_KINDS``)."""
        return f"rollout_{self.phase}"

    @property
    def total(self) -> int:
        """How many replicas the update replaces in all."""
        return len(self.replaced) + len(self.batch) + len(self.remaining)

    @property
    def ended(self) -> bool:
        """True for the events that end an update: ``completed`` and ``failed``."""
        return self.phase in ("completed", "failed")

    @classmethod
    def from_event(cls, event: Any) -> Optional["RolloutEvent"]:
        """The typed event of ``event``, or None if it is no rollout event.

        Raises:
            OrchError: (code ``bad_reply``) a rollout event whose data does not have the
                protocol's shape.
        """
        ty = event.type
        if not (ty.startswith("io.orch.lifecycle.") and ty.endswith(".v1")):
            return None
        kind = ty[len("io.orch.lifecycle.") : -len(".v1")]
        if kind not in _core.ROLLOUT_EVENT_KINDS:
            return None
        r = _typed_event(event, f"rollout event {ty}", Rollout.from_json)
        return cls(
            kind[len("rollout_") :],  # a RolloutPhase: the kind is one of ROLLOUT_EVENT_KINDS
            r.service,
            r.version,
            r.from_version,
            r.revert_to,
            r.max_parallel,
            r.replaced,
            r.batch,
            r.remaining,
            r.started_at,
            r.reason,
            event.id,
            event.time,
            event.principal,
        )


@dataclass(frozen=True)
class Rollout:
    """A rolling update as the stack shows it (protocol.md §12.10): in progress, or failed (with
    its ``reason``) until a newer version supersedes it. The fields are those of
    :class:`RolloutEvent`."""

    service: str
    version: int
    from_version: int
    revert_to: Optional[int]
    max_parallel: int
    replaced: List[str]
    batch: List[str]
    remaining: List[str]
    started_at: datetime
    reason: Optional[str]

    @property
    def total(self) -> int:
        """How many replicas the update replaces in all."""
        return len(self.replaced) + len(self.batch) + len(self.remaining)

    @property
    def failed(self) -> bool:
        return self.reason is not None

    @classmethod
    def from_json(cls, d: Json) -> "Rollout":
        return cls(
            d["service"],
            d["version"],
            d["from_version"],
            d.get("revert_to"),
            d["max_parallel"],
            list(d["replaced"]),
            list(d["batch"]),
            list(d["remaining"]),
            _core.parse_time(d["started_at"]),
            d.get("reason"),
        )


@dataclass(frozen=True)
class ManagedService:
    """One managed service of the stack, or one replica of a replicated service (protocol.md
    §12.7): where it runs and why, its state and process."""

    name: str
    """The service, or a replica's own name (``api-1``)."""
    replica_of: Optional[str]
    """The service a replica belongs to (``api``); None for a service of one."""
    node: Optional[str]
    """The node it runs on (its pin, or where it was placed); None while it waits for one."""
    placement: Optional[str]
    """Why it runs where it runs, or why it waits for a node, in words (its last placement)."""
    resources: Optional[Resources]
    """What each replica asks of its node (manifest ``resources``)."""
    group: Optional[str]
    """The quota group it counts against."""
    state: str
    """``pending``, ``starting``, ``started``, ``ready``, ``completed``, ``stopping``,
    ``stopped``, ``crashed``, ``restarting``, ``blocked`` or ``failed`` (protocol.md §12.2)."""
    reason: Optional[str]
    pid: Optional[int]
    restarts: int
    since: datetime
    """Its last transition."""
    priority: int
    """Its effective priority."""
    critical: bool
    depends_on: List[str]
    level: int
    """Its level in the dependency graph (0: depends on nothing)."""

    @property
    def service(self) -> str:
        """The service it is (a replica's service, else its own name)."""
        return self.replica_of or self.name

    @classmethod
    def from_json(cls, d: Json) -> "ManagedService":
        resources = d.get("resources")
        return cls(
            d["name"],
            d.get("replica_of"),
            d.get("node"),
            d.get("placement"),
            None if resources is None else Resources.from_json(resources),
            d.get("group"),
            d["state"],
            d.get("reason"),
            d.get("pid"),
            d["restarts"],
            _core.parse_time(d["since"]),
            d["priority"],
            d["critical"],
            list(d["depends_on"]),
            d["level"],
        )


@dataclass(frozen=True)
class Stack:
    """The applied stack (``orch.req.lifecycle.status``, protocol.md §12.7): its version, every
    managed service and replica with its node and placement, and the rolling updates."""

    version: int
    desired: str
    """``up`` or ``down``."""
    run_id: Optional[str]
    """The start-up run in progress, if any."""
    counts: Dict[str, int]
    """Services in each state (only states that occur)."""
    services: List[ManagedService]
    rollouts: List[Rollout]

    def service(self, name: str) -> ManagedService:
        """The service or replica ``name``.

        Raises:
            KeyError: the stack has none of that name.
        """
        for s in self.services:
            if s.name == name:
                return s
        raise KeyError(name)

    def replicas(self, service: str) -> List[ManagedService]:
        """The replicas of ``service`` (itself, for a service of one), by name."""
        return [s for s in self.services if s.service == service]

    @classmethod
    def from_json(cls, d: Json) -> "Stack":
        try:
            return cls(
                d["version"],
                d["desired"],
                d.get("run_id"),
                dict(d["counts"]),
                [ManagedService.from_json(s) for s in d["services"]],
                [Rollout.from_json(r) for r in d.get("rollouts", [])],
            )
        except (KeyError, TypeError, ValueError, OrchError) as e:
            raise _bad_reply("stack", e, d) from None


# -- manifest history (protocol.md §12.11) and self-preservation (§4, §5.9) ------------------------


@dataclass(frozen=True)
class ManifestVersion:
    """One stored version of the manifest: who applied it, when and from where."""

    version: int
    source: str
    """What applied it: ``api``, ``nats``, ``cli:stack.toml``, ``rollback to v3``, ``auto-revert …``."""
    principal: Optional[str]
    """Who applied it, as authenticated (``key:ops``, ``nats:operator``, ``orchestrator``); None for
    a version stored before principals were recorded."""
    applied_at: datetime
    desired: Literal["up", "down"]
    current: bool
    """The newest version: the stack the orchestrator brings about."""
    manifest: Optional[str]
    """The TOML text as applied (:meth:`Client.manifest_version`; None in a listing)."""

    @classmethod
    def from_json(cls, d: Json) -> "ManifestVersion":
        try:
            return cls(
                d["version"],
                d["source"],
                d.get("principal"),
                _core.parse_time(d["applied_at"]),
                d["desired"],
                d["current"],
                d.get("manifest"),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise _bad_reply("manifest version", e, d) from None


@dataclass(frozen=True)
class ManifestVersions:
    """A page of stored versions, newest first."""

    versions: List[ManifestVersion]
    next_before: Optional[int]
    """Pass as ``before`` for the next (older) page; None on the last page."""

    @classmethod
    def from_json(cls, d: Json) -> "ManifestVersions":
        try:
            return cls([ManifestVersion.from_json(v) for v in d["versions"]], d.get("next_before"))
        except (KeyError, TypeError) as e:
            raise _bad_reply("manifest versions", e, d) from None


@dataclass(frozen=True)
class FieldChange:
    """One field that differs between two versions: its dotted path (``env.LOG_LEVEL``,
    ``readiness.interval``, ``args``) and its value in each (None where it is not set)."""

    field: str
    old: Any
    new: Any

    @classmethod
    def from_json(cls, d: Json) -> "FieldChange":
        return cls(d["field"], d.get("from"), d.get("to"))


@dataclass(frozen=True)
class ServiceDiff:
    """A service that differs between two versions."""

    service: str
    change: Literal["added", "removed", "changed"]
    fields: List[FieldChange]
    """The fields that differ (``changed`` only)."""

    @classmethod
    def from_json(cls, d: Json) -> "ServiceDiff":
        return cls(d["service"], d["change"], [FieldChange.from_json(f) for f in d.get("fields", [])])


@dataclass(frozen=True)
class ManifestDiff:
    """What changed from version ``old`` to version ``new``, service by service and field by
    field, defaults filled in (a field written out with its default is no change)."""

    old: int
    new: int
    stack: List[FieldChange]
    """Stack-wide settings that differ (``max_parallel``, ``stop_on_critical_failure``)."""
    services: List[ServiceDiff]

    @property
    def empty(self) -> bool:
        """Whether the two versions declare the same stack."""
        return not self.stack and not self.services

    @classmethod
    def from_json(cls, d: Json) -> "ManifestDiff":
        try:
            return cls(
                d["from"],
                d["to"],
                [FieldChange.from_json(f) for f in d["stack"]],
                [ServiceDiff.from_json(s) for s in d["services"]],
            )
        except (KeyError, TypeError) as e:
            raise _bad_reply("manifest diff", e, d) from None


@dataclass(frozen=True)
class StackApplied:
    """An accepted apply (here: a rollback): the new version and the start-up run that brings it
    about."""

    version: int
    run_id: str
    services: int
    replaced: List[str]
    """Services stopped first because they changed or left the stack."""
    rolling: List[str]
    """Replicas replaced a batch at a time once the stack is up (rolling updates)."""

    @classmethod
    def from_json(cls, d: Json) -> "StackApplied":
        try:
            return cls(d["version"], d["run_id"], d["services"], list(d["replaced"]), list(d.get("rolling", [])))
        except (KeyError, TypeError) as e:
            raise _bad_reply("stack applied", e, d) from None


@dataclass(frozen=True)
class SelfPreservationEnded:
    """Self-preservation ended at an operator's request: the overdue leases expired at once."""

    expiring: int
    """Overdue leases, expired at once."""
    live: int
    """Live leases before."""
    message: str
    """As recorded in the ``self_preservation_exited`` event."""
    reason: Optional[str]

    @classmethod
    def from_json(cls, d: Json) -> "SelfPreservationEnded":
        try:
            return cls(d["expiring"], d["live"], d["message"], d.get("reason"))
        except (KeyError, TypeError) as e:
            raise _bad_reply("self-preservation ended", e, d) from None


# -- the config store (protocol.md §18) --------------------------------------------------------

#: The type of the event of a put or revert of a config key (``<prefix>.evt.config.<first token
#: of the key>.changed``, data ``ConfigChange``).
CONFIG_CHANGED = "io.orch.config.changed.v1"
#: The type of the event of a deleted config key (``<prefix>.evt.config.<first token>.deleted``).
CONFIG_DELETED = "io.orch.config.deleted.v1"


@dataclass(frozen=True)
class ConfigEntry:
    """A config key with its current value."""

    key: str
    value: Any
    """The JSON value, as Python objects."""
    revision: int
    """The key's revision: pass it back as ``revision`` to change the key only if nobody changed
    it since (compare-and-set)."""
    updated_at: datetime

    @classmethod
    def from_json(cls, d: Json) -> "ConfigEntry":
        try:
            return cls(d["key"], d["value"], d["revision"], _core.parse_time(d["updated_at"]))
        except (KeyError, TypeError) as e:
            raise _bad_reply("config entry", e, d) from None


@dataclass(frozen=True)
class ConfigList:
    """The keys under a prefix, sorted."""

    prefix: str
    entries: List[ConfigEntry]
    truncated: bool
    """More keys matched than one listing returns (1000): narrow the prefix."""

    def values(self) -> Dict[str, Any]:
        """Each key's value, by key."""
        return {e.key: e.value for e in self.entries}

    @classmethod
    def from_json(cls, d: Json) -> "ConfigList":
        try:
            return cls(d["prefix"], [ConfigEntry.from_json(e) for e in d["entries"]], d["truncated"])
        except (KeyError, TypeError) as e:
            raise _bad_reply("config list", e, d) from None


#: What a change of a config key did: a ``put``, a ``delete``, or a ``revert`` (a put of the value
#: an earlier revision had).
ConfigOp = Literal["put", "delete", "revert"]


@dataclass(frozen=True)
class ConfigChange:
    """One recorded change of a config key: the reply to a write, an entry of its history, and the
    data of its event (``ConfigChange.from_event``)."""

    key: str
    op: ConfigOp
    revision: int
    """The key's revision after the change."""
    previous: Any
    """The value before (None when the key did not exist; see ``previous_revision``)."""
    previous_revision: Optional[int]
    """The revision before; None when the key did not exist."""
    value: Any
    """The value after (None for a delete)."""
    reverted_to: Optional[int]
    """A revert: the revision whose value was put again."""
    principal: str
    """Who made it, as authenticated (``nats:operator``, ``key:<name>``, ``anonymous``;
    protocol.md §6.1)."""
    at: datetime

    @property
    def deleted(self) -> bool:
        return self.op == "delete"

    @classmethod
    def from_json(cls, d: Json) -> "ConfigChange":
        try:
            return cls(
                d["key"],
                d["op"],
                d["revision"],
                d.get("previous"),
                d.get("previous_revision"),
                d.get("value"),
                d.get("reverted_to"),
                d["principal"],
                _core.parse_time(d["at"]),
            )
        except (KeyError, TypeError) as e:
            raise _bad_reply("config change", e, d) from None

    @classmethod
    def from_event(cls, event: Any) -> Optional["ConfigChange"]:
        """The change of a config event (``io.orch.config.changed.v1`` or
        ``io.orch.config.deleted.v1``), or None for any other event.

        Raises:
            OrchError: (code ``bad_reply``) a config event whose data does not have the protocol's
                shape.
        """
        ty = event.type
        if ty not in (CONFIG_CHANGED, CONFIG_DELETED):
            return None
        return _typed_event(event, f"config event {ty}", cls.from_json)


@dataclass(frozen=True)
class ConfigHistory:
    """The recorded changes of a key, newest first (deletes included)."""

    key: str
    changes: List[ConfigChange]

    @classmethod
    def from_json(cls, d: Json) -> "ConfigHistory":
        try:
            return cls(d["key"], [ConfigChange.from_json(c) for c in d["changes"]])
        except (KeyError, TypeError) as e:
            raise _bad_reply("config history", e, d) from None


@dataclass(frozen=True)
class ConfigSchema:
    """A JSON Schema that every value of the keys under ``prefix`` must satisfy (the longest
    covering prefix's schema applies)."""

    prefix: str
    schema: Any
    set_by: str
    """Who set it (§6.1)."""
    set_at: datetime

    @classmethod
    def from_json(cls, d: Json) -> "ConfigSchema":
        try:
            return cls(d["prefix"], d["schema"], d["set_by"], _core.parse_time(d["set_at"]))
        except (KeyError, TypeError) as e:
            raise _bad_reply("config schema", e, d) from None

    @classmethod
    def list_from_json(cls, d: Any) -> List["ConfigSchema"]:
        try:
            return [cls.from_json(s) for s in d["schemas"]]
        except (KeyError, TypeError) as e:
            raise _bad_reply("config schemas", e, d) from None


# -- services' output (protocol.md §11, §12.7) ---------------------------------------------------

#: Which output of a process a line came from.
LogStream = Literal["stdout", "stderr"]


@dataclass(frozen=True)
class LogLine:
    """One line of a managed service's output."""

    time: datetime
    """When the agent read it (aware, UTC)."""
    unit: str
    """The process that wrote it: the service, or one of its replicas (``web-1``)."""
    node: str
    """The node it runs on."""
    stream: LogStream
    text: str

    @classmethod
    def from_json(cls, d: Json) -> "LogLine":
        return cls(_core.parse_time(d["time"]), d["unit"], d["node"], d["stream"], d["text"])

    @classmethod
    def list_from_batch(cls, d: Json) -> List["LogLine"]:
        """The lines of an agent's ``LogBatch`` (published on ``<prefix>.log.<node>.<unit>``)."""
        try:
            node, unit = d["node"], d["service"]
            return [cls(_core.parse_time(line["time"]), unit, node, line["stream"], line["text"]) for line in d["lines"]]
        except (KeyError, TypeError, OrchError) as e:
            raise _bad_reply("log batch", e, d) from None


@dataclass(frozen=True)
class UnitLogs:
    """How the search of one unit (the service, or one replica) went."""

    unit: str
    node: Optional[str]
    """The node that runs it; None if it was never placed."""
    truncated: bool
    """Its agent stopped at the scan bound: older matching lines may exist."""
    scanned_bytes: int
    error: Optional[str]
    """Why its lines are missing (its agent did not answer), if they are."""

    @classmethod
    def from_json(cls, d: Json) -> "UnitLogs":
        return cls(d["unit"], d.get("node"), d["truncated"], d["scanned_bytes"], d.get("error"))


@dataclass(frozen=True)
class ServiceLogs:
    """The last lines of a service's output that matched, from every unit, oldest first."""

    service: str
    lines: List[LogLine]
    units: List[UnitLogs]
    truncated: bool
    """Some unit's scan stopped at its bound, or some unit could not be read."""

    @classmethod
    def from_json(cls, d: Json) -> "ServiceLogs":
        try:
            return cls(
                d["service"],
                [LogLine.from_json(line) for line in d["lines"]],
                [UnitLogs.from_json(u) for u in d["units"]],
                d["truncated"],
            )
        except (KeyError, TypeError, OrchError) as e:
            raise _bad_reply("service logs", e, d) from None
