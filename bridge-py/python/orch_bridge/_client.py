"""The two clients: :class:`Client` (blocking) and :class:`AsyncClient` (asyncio), with the same
methods. Both are thin: the Rust core (``orch_bridge._core``) builds and checks each request, talks
to NATS, and raises the exceptions of :mod:`orch_bridge._errors`; this module picks the request and
turns the reply into the typed results of :mod:`orch_bridge._types`.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timezone
from typing import Any, Dict, List, Literal, Mapping, Optional, Sequence, Union

from . import _core
from ._errors import ValidationError
from ._types import (
    ClusterStatus,
    ManifestDiff,
    ManifestVersion,
    ManifestVersions,
    SelfPreservationEnded,
    StackApplied,
    Execution,
    HoldRelease,
    Instance,
    Node,
    PriorityChange,
    PriorityDetail,
    PriorityList,
    QueueStats,
    RestartResult,
    Schedule,
    Service,
    ServiceHealth,
    ServicePage,
    Stack,
)

__all__ = ["Client", "AsyncClient", "AsyncEventStream", "DEFAULT_URL", "Decision", "ExecutionId"]

#: An approval's decision (``signal_execution``).
Decision = Literal["approve", "reject"]
#: An execution's id: its UUID as text (``Execution.id``), or a ``uuid.UUID``.
ExecutionId = Union[str, uuid.UUID]

DEFAULT_URL = "nats://127.0.0.1:4222"


def _start_ns(start_time: Optional[datetime]) -> Optional[int]:
    """Nanoseconds since the epoch of an aware datetime (a naive one is refused: ambiguous)."""
    if start_time is None:
        return None
    if not isinstance(start_time, datetime):
        raise ValidationError("start_time must be a datetime", "validation_failed", "start_time")
    if start_time.tzinfo is None or start_time.utcoffset() is None:
        raise ValidationError(
            "start_time must be timezone-aware, e.g. datetime.now(timezone.utc) - timedelta(minutes=5)",
            "validation_failed",
            "start_time",
        )
    delta = start_time.astimezone(timezone.utc) - datetime(1970, 1, 1, tzinfo=timezone.utc)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1_000


def _version(field: str, value: Any) -> int:
    """A manifest version given by the caller: an int of at least 1, as the server checks it."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValidationError(f"{field} must be a version number (1 or more), not {value!r}", "validation_failed", field)
    return value


def _json(body: Mapping[str, Any]) -> bytes:
    return json.dumps({k: v for k, v in body.items() if v is not None}).encode()


def _list_filter(
    name: Optional[str],
    tags: Optional[Sequence[str]],
    health: Optional[str],
    metadata: Optional[Dict[str, str]],
    limit: Optional[int],
    after: Optional[str],
) -> bytes:
    body: Dict[str, Any] = {}
    for key, value in (("name", name), ("health", health), ("limit", limit), ("after", after)):
        if value is not None:
            body[key] = value
    if tags is not None:
        if isinstance(tags, str):
            raise ValidationError("tags must be a list of strings, not one string", "validation_failed", "tags")
        body["tags"] = list(tags)
    if metadata is not None:
        body["metadata"] = dict(metadata)
    return json.dumps(body).encode()


def _inputs_json(inputs: Optional[Mapping[str, Any]]) -> Optional[bytes]:
    """A run's inputs as JSON text, refusing what is no object of JSON values (naming
    ``inputs`` or ``inputs.<name>``, like the orchestrator)."""
    if inputs is None:
        return None
    if not isinstance(inputs, Mapping):
        raise ValidationError(
            f"inputs must be a mapping of input names to values, not {type(inputs).__name__}",
            "validation_failed",
            "inputs",
        )
    for name, value in inputs.items():
        if not isinstance(name, str):
            raise ValidationError(f"input names are strings (got {name!r})", "validation_failed", "inputs")
        try:
            json.dumps(value, allow_nan=False)
        except (TypeError, ValueError) as e:
            raise ValidationError(f"not a JSON value: {e}", "validation_failed", f"inputs.{name}") from None
    return json.dumps(dict(inputs), allow_nan=False).encode()


def _service(name: str, health: Any, page: Any) -> Service:
    return Service(name, ServiceHealth.from_json(health), ServicePage.from_json(page).items)


class _Requests:
    """The requests both clients send, each with the parsing of its reply: one place per command."""

    @staticmethod
    def set_priority(service, value, reason, source, ttl):
        return _core.Request.set_priority(service, value, source, reason, ttl), PriorityChange.from_json

    @staticmethod
    def clear_priority(service, reason, source):
        return _core.Request.clear_priority(service, source, reason), PriorityChange.from_json

    @staticmethod
    def get_priority(service, history):
        return _core.Request.get_priority(service, history), PriorityDetail.from_json

    @staticmethod
    def list_priorities():
        return _core.Request.list_priorities(), PriorityList.from_json

    @staticmethod
    def set_priority_policy(service, reason, source, baseline, min, max, pinned):
        request = _core.Request.set_policy(service, source, reason, baseline, min, max, pinned)
        return request, PriorityChange.from_json

    @staticmethod
    def release_hold(reason, source, apply):
        return _core.Request.release_hold(source, reason, apply), HoldRelease.from_json

    @staticmethod
    def list_services(name, tags, health, metadata, limit, after):
        request = _core.Request.list_services(_list_filter(name, tags, health, metadata, limit, after))
        return request, ServicePage.from_json

    @staticmethod
    def service_health(name):
        return _core.Request.service_health(name), ServiceHealth.from_json

    @staticmethod
    def restart(service):
        return _core.Request.restart(service), RestartResult.from_json

    @staticmethod
    def cluster_status():
        return _core.Request.cluster_status(), ClusterStatus.from_json

    @staticmethod
    def stack():
        return _core.Request.raw("lifecycle", "status", b"{}"), Stack.from_json

    @staticmethod
    def manifest_versions(limit, before):
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 500):
            raise ValidationError(f"limit must be 1-500, not {limit!r}", "validation_failed", "limit")
        body = _json({"limit": limit, "before": None if before is None else _version("before", before)})
        return _core.Request.raw("lifecycle", "versions", body), ManifestVersions.from_json

    @staticmethod
    def manifest_version(version):
        body = _json({"version": _version("version", version)})
        return _core.Request.raw("lifecycle", "version", body), ManifestVersion.from_json

    @staticmethod
    def manifest_diff(old, new):
        body = _json({"from": _version("old", old), "to": _version("new", new)})
        return _core.Request.raw("lifecycle", "diff", body), ManifestDiff.from_json

    @staticmethod
    def rollback(version):
        body = _json({"version": _version("version", version)})
        return _core.Request.raw("lifecycle", "rollback", body), StackApplied.from_json

    @staticmethod
    def end_self_preservation(reason):
        if reason is not None and not isinstance(reason, str):
            raise ValidationError("reason must be text", "validation_failed", "reason")
        body = _json({"reason": reason})
        return _core.Request.raw("health", "end_self_preservation", body), SelfPreservationEnded.from_json

    @staticmethod
    def nodes():
        return _core.Request.list_nodes(), Node.list_from_json

    @staticmethod
    def node(name):
        return _core.Request.get_node(name), Node.from_json

    @staticmethod
    def start_workflow(name, inputs):
        return _core.Request.run_workflow(name, _inputs_json(inputs)), Execution.from_json

    @staticmethod
    def execution(id):
        return _core.Request.get_execution(str(id)), Execution.from_json

    @staticmethod
    def executions(workflow, limit):
        return _core.Request.list_executions(workflow, limit), Execution.list_from_json

    @staticmethod
    def cancel_execution(id):
        return _core.Request.cancel_execution(str(id)), Execution.from_json

    @staticmethod
    def signal_execution(id, step, decision, comment):
        return _core.Request.signal_execution(str(id), step, decision, comment), Execution.from_json

    @staticmethod
    def retry_execution(id, from_):
        return _core.Request.retry_execution(str(id), from_), Execution.from_json

    @staticmethod
    def schedules():
        return _core.Request.workflow_schedules(), Schedule.list_from_json

    @staticmethod
    def queues():
        return _core.Request.workflow_queues(), QueueStats.list_from_json


class Client:
    """A blocking client of the orchestrator over NATS.

    Safe to share between threads; every wait releases the GIL and can be interrupted with Ctrl-C
    (``KeyboardInterrupt``). Use it as a context manager, or call :meth:`close`.

    Example::

        with Client.connect("nats://127.0.0.1:4222") as client:
            change = client.set_priority("api", 80, reason="error rate rising")
            print(change.outcome, change.effective)
            for event in client.events("orch.evt.health.>"):
                print(event.type, event.service, event.data)
    """

    def __init__(self, connection: "_core.Connection") -> None:
        self._conn = connection

    @classmethod
    def connect(
        cls,
        url: str = DEFAULT_URL,
        *,
        user: Optional[str] = None,
        password: Optional[str] = None,
        token: Optional[str] = None,
        credentials: Optional[str] = None,
        tls_ca: Optional[str] = None,
        tls_cert: Optional[str] = None,
        tls_key: Optional[str] = None,
        tls_required: bool = False,
        prefix: str = "orch",
        timeout: float = 5.0,
        name: Optional[str] = None,
    ) -> "Client":
        """Connects to the NATS server the orchestrator uses.

        Args:
            url: one or more server URLs, comma-separated (``nats://``, ``tls://``).
            user, password: user/password authentication (both or neither).
            token: token authentication.
            credentials: path of a ``.creds`` file (JWT and nkey seed).
            tls_ca: CA certificate (PEM) to verify the server with.
            tls_cert, tls_key: client certificate and key (PEM), for mutual TLS.
            tls_required: refuse a connection without TLS.
            prefix: the orchestrator's subject prefix (``--subject-prefix``), ``orch`` by default.
            timeout: seconds to wait for the connection and, by default, for each reply.
            name: the connection's name, as the NATS server's monitoring shows it.

        Raises:
            OrchConnectionError: the server cannot be reached or refuses the credentials.
            ValidationError: an argument is invalid (e.g. only one of user and password).
        """
        return cls(
            _core.Connection.connect(
                url, user, password, token, credentials, tls_ca, tls_cert, tls_key, tls_required, prefix, timeout, name
            )
        )

    # -- lifetime -----------------------------------------------------------------------------

    @property
    def prefix(self) -> str:
        """The subject prefix, e.g. ``orch``."""
        return self._conn.prefix

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._conn.closed

    def close(self) -> None:
        """Sends any queued acknowledgements and closes the connection. Idempotent."""
        self._conn.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Client({self._conn!r})"

    def _call(self, made, timeout: Optional[float] = None):
        request, parse = made
        return parse(self._conn.call(request, timeout))

    # -- events -------------------------------------------------------------------------------

    def events(
        self,
        subject: Optional[str] = None,
        *,
        durable: Optional[str] = None,
        start_time: Optional[datetime] = None,
        deliver: str = "new",
        auto_ack: bool = False,
        ack_wait: float = 30.0,
        batch: int = 512,
    ) -> "_core.EventStream":
        """Opens a stream of the orchestrator's events (CloudEvents from ``<PREFIX>_EVENTS``).

        Args:
            subject: a filter within ``<prefix>.evt.>`` (the default), e.g.
                ``orch.evt.health.>`` or ``orch.evt.lifecycle.*.crashed``.
            durable: name of a durable consumer. The server remembers what was acknowledged, so
                a process that restarts with the same name resumes after the last acked event.
                Each event must be acknowledged (``event.ack()``), or use ``auto_ack``.
                Without ``durable``, the stream is live (and ordered) and needs no acks.
            start_time: an aware datetime: begin with the events stored since then.
            deliver: where a new consumer begins without ``start_time``: ``"new"`` (only events
                from now on) or ``"all"`` (everything the stream still holds).
            auto_ack: with ``durable``: acknowledge each event once the next one is asked for
                (so an event is acknowledged only after the loop body that handled it finished).
            ack_wait: with ``durable``: seconds after which an unacknowledged event is delivered
                again.
            batch: most events fetched from the server at a time.

        Returns:
            An iterable ``EventStream`` of :class:`Event`; also ``next(timeout)``,
            ``next_batch(max, timeout)``, ``poll_batch(max)`` and ``close()``; a context manager.

        Raises:
            ValidationError: a bad filter, durable name or argument.
            NotFoundError: the events stream does not exist (no orchestrator ran with this prefix).
            ConflictError: the durable consumer exists with another filter.
        """
        return self._conn.subscribe(subject, durable, _start_ns(start_time), deliver, auto_ack, ack_wait, batch)

    def delete_durable(self, name: str) -> bool:
        """Deletes a durable consumer (its position is forgotten). False if there was none."""
        return self._conn.delete_durable(name)

    # -- priorities -----------------------------------------------------------------------------

    def set_priority(
        self,
        service: str,
        value: int,
        *,
        reason: str,
        source: str = "engine",
        ttl: Optional[float] = None,
        timeout: Optional[float] = None,
    ) -> PriorityChange:
        """Asks for ``service`` to run at priority ``value`` (0-100) as an engine adjustment.

        Returns what was applied: ``outcome`` is ``applied``, ``clamped`` (to the operator's
        bounds; ``effective`` says the value in force) or ``held`` (a mass-change hold keeps it
        back until an operator releases it or the window passes). With ``ttl`` (seconds), the
        adjustment lapses and the baseline applies again.

        Raises:
            GuardrailRefused: the service is pinned by an operator.
            RateLimited: too many changes of this service within the rate window.
            ValidationError: bad service name, value, reason or ttl.
        """
        return self._call(_Requests.set_priority(service, value, reason, source, ttl), timeout)

    def clear_priority(
        self, service: str, *, reason: str, source: str = "engine", timeout: Optional[float] = None
    ) -> PriorityChange:
        """Removes the engine's adjustment: the baseline applies again. Same guardrails as set."""
        return self._call(_Requests.clear_priority(service, reason, source), timeout)

    def get_priority(self, service: str, *, history: int = 20, timeout: Optional[float] = None) -> PriorityDetail:
        """The priority of ``service`` and its last ``history`` (0-1000) changes, newest first."""
        return self._call(_Requests.get_priority(service, history), timeout)

    def list_priorities(self, *, timeout: Optional[float] = None) -> PriorityList:
        """Every known service's priority, and the state of the mass-change guard."""
        return self._call(_Requests.list_priorities(), timeout)

    def set_priority_policy(
        self,
        service: str,
        *,
        reason: str,
        source: str = "operator",
        baseline: Optional[int] = None,
        min: Optional[int] = None,
        max: Optional[int] = None,
        pinned: Optional[bool] = None,
        timeout: Optional[float] = None,
    ) -> PriorityChange:
        """Operators: sets the baseline, the bounds an engine is clamped to, or the pin (a pinned
        service refuses engine changes). Fields left None keep their value."""
        return self._call(
            _Requests.set_priority_policy(service, reason, source, baseline, min, max, pinned), timeout
        )

    def release_hold(
        self, *, reason: str, source: str = "operator", apply: bool = True, timeout: Optional[float] = None
    ) -> HoldRelease:
        """Operators: ends a mass-change hold, applying the held changes (or dropping them with
        ``apply=False``)."""
        return self._call(_Requests.release_hold(reason, source, apply), timeout)

    # -- services ---------------------------------------------------------------------------------

    def list_services(
        self,
        *,
        name: Optional[str] = None,
        tags: Optional[Sequence[str]] = None,
        health: Optional[str] = None,
        metadata: Optional[Dict[str, str]] = None,
        limit: Optional[int] = None,
        after: Optional[str] = None,
        timeout: Optional[float] = None,
    ) -> ServicePage:
        """One page of registered instances with their health, filtered (every given filter must
        match). Pass the page's ``next`` as ``after`` for the next page; see :meth:`instances`."""
        return self._call(_Requests.list_services(name, tags, health, metadata, limit, after), timeout)

    def instances(self, *, name: Optional[str] = None, health: Optional[str] = None) -> List[Instance]:
        """Every registered instance (all pages), optionally of one service or one health."""
        found: List[Instance] = []
        after: Optional[str] = None
        while True:
            page = self.list_services(name=name, health=health, limit=1000, after=after)
            found.extend(page.items)
            if page.next is None:
                return found
            after = page.next

    def service_health(self, name: str, *, timeout: Optional[float] = None) -> ServiceHealth:
        """The health of one service: its state, counts, and each instance's checks."""
        return self._call(_Requests.service_health(name), timeout)

    def get_service(self, name: str, *, timeout: Optional[float] = None) -> Service:
        """One service: its health and its registered instances.

        Raises:
            NotFoundError: no instance of ``name`` is registered.
        """
        health = self._conn.call(_Requests.service_health(name)[0], timeout)
        page = self._conn.call(_Requests.list_services(name, None, None, None, 1000, None)[0], timeout)
        return _service(name, health, page)

    def restart(self, service: str, *, timeout: Optional[float] = None) -> RestartResult:
        """Restarts a managed service (of the applied stack).

        Raises:
            NotFoundError: no managed service of that name.
            ConflictError: it is pending, starting or stopping; try again in a moment.
        """
        return self._call(_Requests.restart(service), timeout)

    # -- the group of replicas --------------------------------------------------------------------

    def cluster_status(self, *, timeout: Optional[float] = None) -> ClusterStatus:
        """The group of replicas: whether the orchestrator runs alone (``mode`` ``single``) or
        as replicas (``replicated``), which replica leads, in which term and since when, and
        each replica's role (``leader``, ``standby`` or ``gone``). Every replica answers, the
        standbys too, so it has an answer during a failover (``leader`` is then None)."""
        return self._call(_Requests.cluster_status(), timeout)

    # -- the stack (protocol.md §12) --------------------------------------------------------------

    def stack(self, *, timeout: Optional[float] = None) -> Stack:
        """The applied stack: every managed service and replica with its state, process, the node
        it runs on and why there (``placement``), and the rolling updates in progress.

        Raises:
            NotFoundError: no manifest was ever applied.
        """
        return self._call(_Requests.stack(), timeout)

    # -- manifest history (protocol.md §12.11) ----------------------------------------------------

    def manifest_versions(
        self, *, limit: Optional[int] = None, before: Optional[int] = None, timeout: Optional[float] = None
    ) -> ManifestVersions:
        """The stored manifest versions, newest first, with who applied each and when: at most
        ``limit`` (1-500, default 50), older than ``before`` (the previous page's
        ``next_before``)."""
        return self._call(_Requests.manifest_versions(limit, before), timeout)

    def manifest_version(self, version: int, *, timeout: Optional[float] = None) -> ManifestVersion:
        """One stored version with its text (``manifest``).

        Raises:
            NotFoundError: no such version (field ``version``).
        """
        return self._call(_Requests.manifest_version(version), timeout)

    def manifest_diff(self, old: int, new: int, *, timeout: Optional[float] = None) -> ManifestDiff:
        """What changed from version ``old`` to version ``new``: services added, removed and
        changed, each changed field with its value in both.

        Raises:
            NotFoundError: a version was never stored (field ``from`` or ``to``).
        """
        return self._call(_Requests.manifest_diff(old, new), timeout)

    def rollback(self, version: int, *, timeout: Optional[float] = None) -> StackApplied:
        """Applies the stored text of ``version`` again, as a new version by this client, like any
        apply (validated, within quotas, changed services replaced or rolled). Needs the
        ``operator`` NATS user.

        Raises:
            NotFoundError: no such version.
            ConflictError: a start-up run or a shutdown is in progress.
            PermissionDenied: this client's NATS user may not roll back.
        """
        return self._call(_Requests.rollback(version), timeout)

    def end_self_preservation(
        self, reason: Optional[str] = None, *, timeout: Optional[float] = None
    ) -> SelfPreservationEnded:
        """Ends the registry's self-preservation after a deliberate large scale-down: recorded
        with this client as its principal and ``reason``, then every overdue instance expires.
        Needs the ``operator`` NATS user.

        Raises:
            ConflictError: self-preservation is not active.
        """
        return self._call(_Requests.end_self_preservation(reason), timeout)

    # -- nodes (protocol.md §17) --------------------------------------------------------------------

    def nodes(self, *, timeout: Optional[float] = None) -> List[Node]:
        """Every node whose agent ever reported, by name: whether it is ``ready`` or ``down``,
        its capacity, reservation, what is allocated and free, labels, how limits are enforced,
        the processes running there (``allocations``) and its measured use. The inventory is the
        leading orchestrator's, at most a second old."""
        return self._call(_Requests.nodes(), timeout)

    def node(self, name: str, *, timeout: Optional[float] = None) -> Node:
        """One node, as :meth:`nodes` lists it.

        Raises:
            NotFoundError: no node of that name ever reported (field ``name``).
            ValidationError: ``name`` is no node name (field ``name``).
        """
        return self._call(_Requests.node(name), timeout)

    # -- workflows (protocol.md §16) -------------------------------------------------------------

    def start_workflow(
        self, name: str, inputs: Optional[Mapping[str, Any]] = None, *, timeout: Optional[float] = None
    ) -> Execution:
        """Starts an execution of the latest version of the workflow ``name`` with ``inputs``
        (``<prefix>.req.workflow.run``). It is queued: the reply is the execution, ``queued``;
        follow it with :meth:`execution` or the events ``<prefix>.evt.workflow.<name>.>``.
        ``created_by`` is ``nats:<user>`` and ``trigger`` ``manual``.

        Raises:
            NotFoundError: no workflow ``name`` is stored.
            ValidationError: a bad name (field ``workflow``), ``inputs`` that are not a mapping of
                JSON values (``inputs``), an input the workflow does not take or a required one
                missing (``inputs.<name>``).
            PermissionDenied: the NATS user may not start workflows.
        """
        return self._call(_Requests.start_workflow(name, inputs), timeout)

    def execution(self, id: ExecutionId, *, timeout: Optional[float] = None) -> Execution:
        """One execution, with the state of each step.

        Raises:
            ValidationError: ``id`` is not a UUID (field ``id``).
            NotFoundError: no such execution.
        """
        return self._call(_Requests.execution(id), timeout)

    def executions(
        self, workflow: Optional[str] = None, limit: int = 100, *, timeout: Optional[float] = None
    ) -> List[Execution]:
        """The newest executions first, of ``workflow`` only when given, at most ``limit``
        (1-1000)."""
        return self._call(_Requests.executions(workflow, limit), timeout)

    def cancel_execution(self, id: ExecutionId, *, timeout: Optional[float] = None) -> Execution:
        """Operators: cancels an execution that has not ended (running attempts are stopped,
        pending steps will not run); returns it, ``cancelled``, with the canceller in ``reason``.

        Raises:
            ConflictError: it has ended already.
            NotFoundError: no such execution.
            PermissionDenied: the NATS user may not cancel (the shipped ``engine`` may not).
        """
        return self._call(_Requests.cancel_execution(id), timeout)

    def retry_execution(
        self, id: ExecutionId, from_: str = "failed", *, timeout: Optional[float] = None
    ) -> Execution:
        """Operators: starts a new execution that retries the ended execution ``id``, of the same
        version and with the same inputs: from its failed steps (``from_="failed"``, the default:
        what succeeded keeps its output and does not run again) or from the start
        (``from_="start"``). Returns the new execution, ``queued``, with the trigger
        ``retry:<id>``.

        Raises:
            ConflictError: the execution has not ended, or it succeeded and ``from_`` is
                ``"failed"``.
            NotFoundError: no such execution.
        """
        return self._call(_Requests.retry_execution(id, from_), timeout)

    def signal_execution(
        self,
        id: ExecutionId,
        step: str,
        decision: Decision,
        comment: Optional[str] = None,
        *,
        timeout: Optional[float] = None,
    ) -> Execution:
        """Operators: decides the approval step ``step`` of an execution: ``"approve"`` (the
        step succeeds with the output ``{"decision", "by", "comment"}``) or ``"reject"`` (it
        fails with the error kind ``rejected``). ``comment``: at most 1024 bytes. Returns the
        execution once the decision is stored.

        Raises:
            ValidationError: a bad ``id``, ``decision`` or ``comment``; ``step`` is no approval
                step (field ``step``).
            NotFoundError: no such execution, or no such step (field ``step``).
            ConflictError: the execution has ended, or the step is not waiting for a decision.
            PermissionDenied: the NATS user may not decide approvals (the shipped ``engine`` may
                not).
        """
        return self._call(_Requests.signal_execution(id, step, decision, comment), timeout)

    def schedules(self, *, timeout: Optional[float] = None) -> List[Schedule]:
        """Every cron schedule of the stored workflows, with its next firing."""
        return self._call(_Requests.schedules(), timeout)

    def queues(self, *, timeout: Optional[float] = None) -> List[QueueStats]:
        """Each execution queue's figures: waiting and running now; succeeded, failed and
        cancelled, and the wait before starting (p50, p99), over the last day."""
        return self._call(_Requests.queues(), timeout)

    # -- any request ------------------------------------------------------------------------------

    def request(self, domain: str, verb: str, body: Any = None, *, timeout: Optional[float] = None) -> Any:
        """Any request ``<prefix>.req.<domain>.<verb>`` (docs/protocol.md) with a JSON ``body``;
        returns the reply as Python objects. Errors raise like every other method."""
        payload = json.dumps({} if body is None else body).encode()
        return self._conn.call(_core.Request.raw(domain, verb, payload), timeout)


class AsyncEventStream:
    """Events for ``async for``: the asyncio face of an ``EventStream``. Batches are received on
    the bridge's own threads; the event loop is never blocked."""

    def __init__(self, stream: "_core.EventStream") -> None:
        self._stream = stream
        self._ready: List[Any] = []
        self._at = 0

    @property
    def stream(self) -> "_core.EventStream":
        """The underlying ``EventStream`` (consumer name, subject, ...)."""
        return self._stream

    def __aiter__(self) -> "AsyncEventStream":
        return self

    async def __anext__(self) -> "_core.Event":
        if self._at >= len(self._ready):
            batch = await self._stream.next_batch_async(1024)
            if batch is None:
                raise StopAsyncIteration
            self._ready, self._at = batch, 0
        event = self._ready[self._at]
        self._at += 1
        return event

    async def next_batch(self, max: int = 1024) -> Optional[List["_core.Event"]]:
        """The next non-empty batch of up to ``max`` events, or None once the stream has ended."""
        if self._at < len(self._ready):
            batch = self._ready[self._at : self._at + max]
            self._at += len(batch)
            return batch
        return await self._stream.next_batch_async(max)

    async def close(self, ack_delivered: bool = False) -> None:
        """Closes the stream (see ``EventStream.close``). Events taken but not yet handed out by
        this wrapper are handed back (durable: redelivered)."""
        for event in self._ready[self._at :]:
            event.nak()
        self._ready, self._at = [], 0
        await self._stream.close_async(ack_delivered)

    async def __aenter__(self) -> "AsyncEventStream":
        return self

    async def __aexit__(self, exc_type, exc, tb) -> None:
        await self.close(exc_type is None)


class AsyncClient:
    """The asyncio client: the methods of :class:`Client`, as coroutines.

    Example::

        client = await AsyncClient.connect("nats://127.0.0.1:4222")
        async with client:
            await client.set_priority("api", 80, reason="error rate rising")
            async with await client.events("orch.evt.priority.>") as events:
                async for event in events:
                    print(event.type, event.data)
    """

    def __init__(self, connection: "_core.Connection") -> None:
        self._conn = connection

    @classmethod
    async def connect(
        cls,
        url: str = DEFAULT_URL,
        *,
        user: Optional[str] = None,
        password: Optional[str] = None,
        token: Optional[str] = None,
        credentials: Optional[str] = None,
        tls_ca: Optional[str] = None,
        tls_cert: Optional[str] = None,
        tls_key: Optional[str] = None,
        tls_required: bool = False,
        prefix: str = "orch",
        timeout: float = 5.0,
        name: Optional[str] = None,
    ) -> "AsyncClient":
        """Connects; the arguments are those of :meth:`Client.connect`."""
        connection = await _core.Connection.connect_async(
            url, user, password, token, credentials, tls_ca, tls_cert, tls_key, tls_required, prefix, timeout, name
        )
        return cls(connection)

    @property
    def prefix(self) -> str:
        """The subject prefix, e.g. ``orch``."""
        return self._conn.prefix

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._conn.closed

    async def close(self) -> None:
        """Sends any queued acknowledgements and closes the connection. Idempotent."""
        await self._conn.close_async()

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"AsyncClient({self._conn!r})"

    async def _call(self, made, timeout: Optional[float] = None):
        request, parse = made
        return parse(await self._conn.call_async(request, timeout))

    async def events(
        self,
        subject: Optional[str] = None,
        *,
        durable: Optional[str] = None,
        start_time: Optional[datetime] = None,
        deliver: str = "new",
        auto_ack: bool = False,
        ack_wait: float = 30.0,
        batch: int = 512,
    ) -> AsyncEventStream:
        """Opens a stream of events; the arguments are those of :meth:`Client.events`."""
        stream = await self._conn.subscribe_async(
            subject, durable, _start_ns(start_time), deliver, auto_ack, ack_wait, batch
        )
        return AsyncEventStream(stream)

    async def delete_durable(self, name: str) -> bool:
        """Deletes a durable consumer. False if there was none."""
        return await self._conn.delete_durable_async(name)

    async def set_priority(
        self,
        service: str,
        value: int,
        *,
        reason: str,
        source: str = "engine",
        ttl: Optional[float] = None,
        timeout: Optional[float] = None,
    ) -> PriorityChange:
        """See :meth:`Client.set_priority`."""
        return await self._call(_Requests.set_priority(service, value, reason, source, ttl), timeout)

    async def clear_priority(
        self, service: str, *, reason: str, source: str = "engine", timeout: Optional[float] = None
    ) -> PriorityChange:
        """See :meth:`Client.clear_priority`."""
        return await self._call(_Requests.clear_priority(service, reason, source), timeout)

    async def get_priority(
        self, service: str, *, history: int = 20, timeout: Optional[float] = None
    ) -> PriorityDetail:
        """See :meth:`Client.get_priority`."""
        return await self._call(_Requests.get_priority(service, history), timeout)

    async def list_priorities(self, *, timeout: Optional[float] = None) -> PriorityList:
        """See :meth:`Client.list_priorities`."""
        return await self._call(_Requests.list_priorities(), timeout)

    async def set_priority_policy(
        self,
        service: str,
        *,
        reason: str,
        source: str = "operator",
        baseline: Optional[int] = None,
        min: Optional[int] = None,
        max: Optional[int] = None,
        pinned: Optional[bool] = None,
        timeout: Optional[float] = None,
    ) -> PriorityChange:
        """See :meth:`Client.set_priority_policy`."""
        return await self._call(
            _Requests.set_priority_policy(service, reason, source, baseline, min, max, pinned), timeout
        )

    async def release_hold(
        self, *, reason: str, source: str = "operator", apply: bool = True, timeout: Optional[float] = None
    ) -> HoldRelease:
        """See :meth:`Client.release_hold`."""
        return await self._call(_Requests.release_hold(reason, source, apply), timeout)

    async def list_services(
        self,
        *,
        name: Optional[str] = None,
        tags: Optional[Sequence[str]] = None,
        health: Optional[str] = None,
        metadata: Optional[Dict[str, str]] = None,
        limit: Optional[int] = None,
        after: Optional[str] = None,
        timeout: Optional[float] = None,
    ) -> ServicePage:
        """See :meth:`Client.list_services`."""
        return await self._call(_Requests.list_services(name, tags, health, metadata, limit, after), timeout)

    async def instances(self, *, name: Optional[str] = None, health: Optional[str] = None) -> List[Instance]:
        """See :meth:`Client.instances`."""
        found: List[Instance] = []
        after: Optional[str] = None
        while True:
            page = await self.list_services(name=name, health=health, limit=1000, after=after)
            found.extend(page.items)
            if page.next is None:
                return found
            after = page.next

    async def service_health(self, name: str, *, timeout: Optional[float] = None) -> ServiceHealth:
        """See :meth:`Client.service_health`."""
        return await self._call(_Requests.service_health(name), timeout)

    async def get_service(self, name: str, *, timeout: Optional[float] = None) -> Service:
        """See :meth:`Client.get_service`."""
        health = await self._conn.call_async(_Requests.service_health(name)[0], timeout)
        page = await self._conn.call_async(_Requests.list_services(name, None, None, None, 1000, None)[0], timeout)
        return _service(name, health, page)

    async def restart(self, service: str, *, timeout: Optional[float] = None) -> RestartResult:
        """See :meth:`Client.restart`."""
        return await self._call(_Requests.restart(service), timeout)

    async def cluster_status(self, *, timeout: Optional[float] = None) -> ClusterStatus:
        """See :meth:`Client.cluster_status`."""
        return await self._call(_Requests.cluster_status(), timeout)

    async def stack(self, *, timeout: Optional[float] = None) -> Stack:
        """See :meth:`Client.stack`."""
        return await self._call(_Requests.stack(), timeout)

    async def manifest_versions(
        self, *, limit: Optional[int] = None, before: Optional[int] = None, timeout: Optional[float] = None
    ) -> ManifestVersions:
        """See :meth:`Client.manifest_versions`."""
        return await self._call(_Requests.manifest_versions(limit, before), timeout)

    async def manifest_version(self, version: int, *, timeout: Optional[float] = None) -> ManifestVersion:
        """See :meth:`Client.manifest_version`."""
        return await self._call(_Requests.manifest_version(version), timeout)

    async def manifest_diff(self, old: int, new: int, *, timeout: Optional[float] = None) -> ManifestDiff:
        """See :meth:`Client.manifest_diff`."""
        return await self._call(_Requests.manifest_diff(old, new), timeout)

    async def rollback(self, version: int, *, timeout: Optional[float] = None) -> StackApplied:
        """See :meth:`Client.rollback`."""
        return await self._call(_Requests.rollback(version), timeout)

    async def end_self_preservation(
        self, reason: Optional[str] = None, *, timeout: Optional[float] = None
    ) -> SelfPreservationEnded:
        """See :meth:`Client.end_self_preservation`."""
        return await self._call(_Requests.end_self_preservation(reason), timeout)

    async def nodes(self, *, timeout: Optional[float] = None) -> List[Node]:
        """See :meth:`Client.nodes`."""
        return await self._call(_Requests.nodes(), timeout)

    async def node(self, name: str, *, timeout: Optional[float] = None) -> Node:
        """See :meth:`Client.node`."""
        return await self._call(_Requests.node(name), timeout)

    async def start_workflow(
        self, name: str, inputs: Optional[Mapping[str, Any]] = None, *, timeout: Optional[float] = None
    ) -> Execution:
        """See :meth:`Client.start_workflow`."""
        return await self._call(_Requests.start_workflow(name, inputs), timeout)

    async def execution(self, id: ExecutionId, *, timeout: Optional[float] = None) -> Execution:
        """See :meth:`Client.execution`."""
        return await self._call(_Requests.execution(id), timeout)

    async def executions(
        self, workflow: Optional[str] = None, limit: int = 100, *, timeout: Optional[float] = None
    ) -> List[Execution]:
        """See :meth:`Client.executions`."""
        return await self._call(_Requests.executions(workflow, limit), timeout)

    async def cancel_execution(self, id: ExecutionId, *, timeout: Optional[float] = None) -> Execution:
        """See :meth:`Client.cancel_execution`."""
        return await self._call(_Requests.cancel_execution(id), timeout)

    async def signal_execution(
        self,
        id: ExecutionId,
        step: str,
        decision: Decision,
        comment: Optional[str] = None,
        *,
        timeout: Optional[float] = None,
    ) -> Execution:
        """See :meth:`Client.signal_execution`."""
        return await self._call(_Requests.signal_execution(id, step, decision, comment), timeout)

    async def retry_execution(
        self, id: ExecutionId, from_: str = "failed", *, timeout: Optional[float] = None
    ) -> Execution:
        """See :meth:`Client.retry_execution`."""
        return await self._call(_Requests.retry_execution(id, from_), timeout)

    async def schedules(self, *, timeout: Optional[float] = None) -> List[Schedule]:
        """See :meth:`Client.schedules`."""
        return await self._call(_Requests.schedules(), timeout)

    async def queues(self, *, timeout: Optional[float] = None) -> List[QueueStats]:
        """See :meth:`Client.queues`."""
        return await self._call(_Requests.queues(), timeout)

    async def request(self, domain: str, verb: str, body: Any = None, *, timeout: Optional[float] = None) -> Any:
        """See :meth:`Client.request`."""
        payload = json.dumps({} if body is None else body).encode()
        return await self._conn.call_async(_core.Request.raw(domain, verb, payload), timeout)
