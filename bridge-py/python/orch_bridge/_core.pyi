"""Type stubs of ``orch_bridge._core``, the Rust extension module of orch_bridge (bridge-py/src).

The core speaks the orchestrator's wire protocol (docs/protocol.md): it builds and checks requests
(:class:`Request`), sends them over one NATS connection (:class:`Connection`), and streams the
CloudEvents of ``<PREFIX>_EVENTS`` (:class:`EventStream` of :class:`Event`), and subscribes to plain
core NATS subjects such as the services' output (:class:`MessageStream`). Errors are raised as
the exceptions of :mod:`orch_bridge._errors` (all under ``OrchError``).

Most code should use :class:`orch_bridge.Client` / :class:`orch_bridge.AsyncClient` instead; only
``Event`` and ``EventStream`` are meant to be used directly (the clients return them).

Every blocking method releases the GIL while it waits and wakes every 100 ms to run Python's
signal handlers, so Ctrl-C (``KeyboardInterrupt``) interrupts any wait. Every ``*_async`` method
returns an awaitable that resolves on the bridge's own tokio runtime.
"""

from datetime import datetime
from types import TracebackType
from typing import Any, Awaitable, Dict, Iterator, List, Literal, Optional, Tuple, Type, final

__all__ = [
    "__version__",
    "DEFAULT_PRIORITY",
    "MAX_PRIORITY",
    "MAX_REASON_LEN",
    "MAX_SOURCE_LEN",
    "MAX_TTL_SECONDS",
    "MAX_EXECUTIONS",
    "MAX_COMMENT_LEN",
    "WORKFLOW_EVENT_KINDS",
    "NODE_EVENT_KINDS",
    "ROLLOUT_EVENT_KINDS",
    "subject_for_command",
    "subject_for_request",
    "events_stream_name",
    "parse_time",
    "json_loads",
    "Request",
    "Connection",
    "Event",
    "EventStream",
]

__version__: str
"""The version of the bridge, e.g. ``"0.1.0"``."""

DEFAULT_PRIORITY: int
"""The priority of a service nobody set one for (50)."""
MAX_PRIORITY: int
"""The highest priority (100); priorities are 0-100."""
MAX_REASON_LEN: int
"""Longest ``reason`` of a priority change, in bytes (1024)."""
MAX_SOURCE_LEN: int
"""Longest ``source`` of a priority change (128)."""
MAX_TTL_SECONDS: float
"""Longest lifetime of an engine's adjustment, in seconds (30 days)."""
MAX_EXECUTIONS: int
"""Most executions one ``workflow.list`` returns (1000)."""
MAX_COMMENT_LEN: int
"""Longest comment of an approval's decision, in bytes (1024)."""
WORKFLOW_EVENT_KINDS: Tuple[str, ...]
"""The kinds of workflow events, as the protocol crate lists them (``started``,
``step_started``, ``step_succeeded``, ``step_retrying``, ``step_failed``, ``step_skipped``,
``compensation_started``, ``succeeded``, ``failed``, ``cancelled``): the last token of
``<prefix>.evt.workflow.<workflow>.<kind>`` and the ``<kind>`` of ``io.orch.workflow.<kind>.v1``."""
NODE_EVENT_KINDS: Tuple[str, ...]
"""The kinds of node events, as the protocol crate names them (``node_joined``, ``node_down``,
``node_up``): the last token of ``<prefix>.evt.resource.<node>.<kind>`` and the ``<kind>`` of
``io.orch.resource.<kind>.v1``."""
ROLLOUT_EVENT_KINDS: Tuple[str, ...]
"""The kinds of a rolling update's events, as the protocol crate names them (``rollout_started``,
``rollout_progressed``, ``rollout_completed``, ``rollout_failed``): the last token of
``<prefix>.evt.lifecycle.<service>.<kind>`` and the ``<kind>`` of ``io.orch.lifecycle.<kind>.v1``."""

def subject_for_command(domain: str, verb: str, prefix: str = "orch") -> str:
    """Subject of a command, e.g. ``subject_for_command("registry", "register")`` ->
    ``"orch.cmd.registry.register"``.

    Raises:
        ValidationError: ``prefix`` is not a valid subject prefix.
    """

def subject_for_request(domain: str, verb: str, prefix: str = "orch") -> str:
    """Subject of a request, e.g. ``subject_for_request("priority", "set")`` ->
    ``"orch.req.priority.set"``.

    Raises:
        ValidationError: ``prefix`` is not a valid subject prefix.
    """

def events_stream_name(prefix: str = "orch") -> str:
    """Name of the events stream for a prefix, e.g. ``ORCH_EVENTS`` (``t-1`` -> ``T_1_EVENTS``).

    Raises:
        ValidationError: ``prefix`` is not a valid subject prefix.
    """

def parse_time(text: str) -> datetime:
    """Parses an RFC 3339 timestamp (as in the orchestrator's replies) into an aware ``datetime``
    in UTC (microsecond precision).

    Raises:
        ValidationError: ``text`` is not an RFC 3339 timestamp.
    """

def json_loads(data: bytes) -> Any:
    """Parses JSON text (``bytes``, not ``str``) into Python objects: the decoder behind
    ``Event.data``.

    Raises:
        OrchError: invalid JSON (code ``bad_reply``).
    """

@final
class Request:
    """A request ready to send (``<prefix>.req.<domain>.<verb>``, protocol.md §2): the subject
    (relative to the connection's prefix), the JSON body and the reply it expects. Made only by
    the static constructors, which check the arguments as the orchestrator does (raising
    ``ValidationError`` before anything is sent); sent by :meth:`Connection.call`. Immutable.
    """

    @staticmethod
    def set_priority(
        service: str, value: int, source: str, reason: str, ttl_seconds: Optional[float] = None
    ) -> "Request":
        """``priority.set``: an engine's adjustment of ``service`` to ``value`` (0-100).
        ``source`` is 1-128 characters, ``reason`` non-empty and at most 1024 bytes,
        ``ttl_seconds`` more than 0 and at most 30 days. The reply is a priority change."""
    @staticmethod
    def clear_priority(service: str, source: str, reason: str) -> "Request":
        """``priority.clear``: withdraws the engine's adjustment (the baseline applies again)."""
    @staticmethod
    def get_priority(service: str, history: int) -> "Request":
        """``priority.get``: one service's priority with up to ``history`` (0-1000) recent
        changes."""
    @staticmethod
    def list_priorities() -> "Request":
        """``priority.list`` (body ``{}``): every known service's priority and the guard."""
    @staticmethod
    def set_policy(
        service: str,
        source: str,
        reason: str,
        baseline: Optional[int] = None,
        min: Optional[int] = None,
        max: Optional[int] = None,
        pinned: Optional[bool] = None,
    ) -> "Request":
        """``priority.policy`` (operators): baseline, bounds (0-100) and pin; None keeps a
        field's value."""
    @staticmethod
    def release_hold(source: str, reason: str, apply: bool) -> "Request":
        """``priority.release`` (operators): ends a mass-change hold, applying the held changes
        (``apply``) or dropping them."""
    @staticmethod
    def list_services(filter: bytes) -> "Request":
        """``registry.list`` with ``filter``, the JSON object of protocol.md §3.7 as bytes
        (sent as it is). The reply is returned as JSON."""
    @staticmethod
    def service_health(name: str) -> "Request":
        """``health.service``: the health of one service with its instances."""
    @staticmethod
    def restart(service: str) -> "Request":
        """``lifecycle.restart`` of a managed service (protocol.md §12.7)."""
    @staticmethod
    def cluster_status() -> "Request":
        """``cluster.status`` (body ``{}``): the group of replicas, the leader and its term
        (protocol.md §15.2). Every replica answers it, standbys too."""
    @staticmethod
    def run_workflow(workflow: str, inputs: Optional[bytes] = None) -> "Request":
        """``workflow.run`` (protocol.md §16.4): queues an execution of the latest version of
        ``workflow`` (a name, field ``workflow``) with ``inputs``, the JSON text of an object
        (field ``inputs``; None or ``null``: none). The reply is the execution."""
    @staticmethod
    def get_execution(id: str) -> "Request":
        """``workflow.get``: one execution; ``id`` must be a UUID (field ``id``)."""
    @staticmethod
    def list_executions(workflow: Optional[str] = None, limit: int = 100) -> "Request":
        """``workflow.list``: the newest executions first, of ``workflow`` when given; ``limit``
        1-1000. The reply is a list of executions."""
    @staticmethod
    def cancel_execution(id: str) -> "Request":
        """``workflow.cancel`` (operators): cancels an execution that has not ended."""
    @staticmethod
    def signal_execution(id: str, step: str, decision: str, comment: Optional[str] = None) -> "Request":
        """``workflow.signal`` (operators): ``decision`` (``approve`` or ``reject``, field
        ``decision``) on the approval step ``step``; ``comment`` at most 1024 bytes."""
    @staticmethod
    def retry_execution(id: str, from_: str = "failed") -> "Request":
        """``workflow.retry`` (operators): a new execution retrying an ended one, from its
        failed steps (``"failed"``) or from the start (``"start"``; field ``from``)."""
    @staticmethod
    def workflow_schedules() -> "Request":
        """``workflow.schedules`` (body ``{}``): every cron schedule and its next firing."""
    @staticmethod
    def workflow_queues() -> "Request":
        """``workflow.queues`` (body ``{}``): each execution queue's figures."""
    @staticmethod
    def list_nodes() -> "Request":
        """``resource.nodes`` (body ``{}``): every node whose agent ever reported (protocol.md
        §17.3). The reply is ``{"nodes": [...]}``."""
    @staticmethod
    def get_node(name: str) -> "Request":
        """``resource.node``: one node; ``name`` must be a node name (field ``name``). The reply
        is the node."""
    @staticmethod
    def raw(domain: str, verb: str, body: bytes) -> "Request":
        """Any request: ``domain`` and ``verb`` must be single subject tokens; ``body`` is sent
        as it is and the reply returned as JSON."""
    @property
    def name(self) -> str:
        """``<domain>.<verb>``, e.g. ``priority.set``."""
    @property
    def body(self) -> bytes:
        """The JSON body that will be sent."""
    def __repr__(self) -> str: ...

@final
class Connection:
    """One NATS connection to the orchestrator's server, shared by every thread of the process.
    It sends requests, opens event streams on ``<PREFIX>_EVENTS`` and sends the acknowledgements
    of durable events. Made by :meth:`connect` or :meth:`connect_async`; thread-safe.
    """

    @staticmethod
    def connect(
        url: str,
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
    ) -> "Connection":
        """Connects (blocking, GIL released, interruptible). The arguments are those of
        ``Client.connect``; ``timeout`` (seconds, > 0) bounds the connection and is the default
        timeout of each request.

        Raises:
            OrchConnectionError: the server cannot be reached or refuses the credentials.
            ValidationError: a bad argument (e.g. only one of user and password).
        """
    @staticmethod
    def connect_async(
        url: str,
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
    ) -> Awaitable["Connection"]:
        """Connects; returns an awaitable of the :class:`Connection` (call it from a running
        event loop)."""
    @property
    def prefix(self) -> str:
        """The subject prefix, e.g. ``orch``."""
    @property
    def timeout(self) -> float:
        """The default request timeout in seconds."""
    @property
    def events_stream(self) -> str:
        """The events stream's name, e.g. ``ORCH_EVENTS``."""
    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
    def call(self, request: Request, timeout: Optional[float] = None) -> Any:
        """Sends ``request`` and returns its reply as Python objects (blocking). The reply is
        checked against the shape the request expects.

        Raises:
            OrchError: the orchestrator's error reply as its class (``ValidationError``,
                ``NotFoundError``, ``GuardrailRefused``, ...); ``OrchTimeoutError`` after
                ``timeout`` (default: the connection's); ``OrchConnectionError`` when closed or
                nobody answers; ``PermissionDenied`` (code ``forbidden``) as soon as the NATS
                server refuses to carry the request (the user may not publish on its subject).
        """
    def call_async(self, request: Request, timeout: Optional[float] = None) -> Awaitable[Any]:
        """Sends ``request``; returns an awaitable of its reply (errors as :meth:`call`)."""
    def subscribe(
        self,
        subject: Optional[str] = None,
        durable: Optional[str] = None,
        start_time_ns: Optional[int] = None,
        deliver: str = "new",
        auto_ack: bool = False,
        ack_wait: float = 30.0,
        batch: int = 512,
    ) -> "EventStream":
        """Opens an event stream (blocking while the consumer is created).

        ``subject`` is a filter within ``<prefix>.evt.>`` (the default). Without ``durable`` the
        stream is live and ordered (no acks); with it, the named durable consumer is created or
        reused and every event must be acknowledged. ``start_time_ns`` (nanoseconds since the
        epoch) begins with the events stored since then; otherwise ``deliver`` says where a new
        consumer begins: ``"new"`` (events from now on) or ``"all"`` (everything the stream
        still holds). An existing durable consumer resumes where it was, whatever these say.
        ``auto_ack`` needs ``durable``; ``ack_wait`` is the seconds after which an unacknowledged
        event is delivered again; ``batch`` (1-10000) the most events fetched at a time.

        Raises:
            ValidationError: a bad filter, durable name or argument.
            NotFoundError: the events stream does not exist.
            ConflictError: the durable consumer exists with another filter or ack policy.
        """
    def subscribe_async(
        self,
        subject: Optional[str] = None,
        durable: Optional[str] = None,
        start_time_ns: Optional[int] = None,
        deliver: str = "new",
        auto_ack: bool = False,
        ack_wait: float = 30.0,
        batch: int = 512,
    ) -> Awaitable["EventStream"]:
        """Opens an event stream; returns an awaitable of the :class:`EventStream`."""
    def delete_durable(self, name: str) -> bool:
        """Deletes a durable consumer of the events stream (blocking); False if there was none."""
    def delete_durable_async(self, name: str) -> Awaitable[bool]:
        """Deletes a durable consumer; returns an awaitable of whether it existed."""
    def subscribe_messages(self, subjects: List[str]) -> "MessageStream":
        """Subscribes (core NATS, no stream, nothing kept) to ``subjects`` (wildcards allowed),
        blocking until the server has the subscriptions: what is published on them afterwards is
        received.

        Raises:
            ValidationError: no subjects, too many (more than 256), or one that is no subject
                (field ``subjects``).
        """
    def subscribe_messages_async(self, subjects: List[str]) -> Awaitable["MessageStream"]:
        """Subscribes (core NATS) to ``subjects``; returns an awaitable of the
        :class:`MessageStream`."""
    def close(self) -> None:
        """Flushes queued acknowledgements and closes the connection (blocking). Idempotent."""
    def close_async(self) -> Awaitable[None]:
        """Flushes queued acknowledgements and closes the connection; returns an awaitable."""
    def __repr__(self) -> str: ...

@final
class Event:
    """One CloudEvent from the orchestrator (protocol.md §6). The attributes are read when it
    arrives; ``data`` is decoded on first access and kept. Immutable, apart from its ack state.

    The subject ``<prefix>.evt.<domain>.<service>.<kind>`` gives :attr:`domain`,
    :attr:`service` and :attr:`kind`.
    """

    @property
    def id(self) -> str:
        """The event id (a UUIDv7 for the orchestrator's events); unique, so use it to
        deduplicate."""
    @property
    def type(self) -> str:
        """The CloudEvents ``type``, e.g. ``io.orch.priority.applied.v1``."""
    @property
    def subject(self) -> str:
        """The NATS subject it was published on, e.g. ``orch.evt.priority.api.applied``."""
    @property
    def source(self) -> str:
        """The CloudEvents ``source``, ``/orchestrator`` for the orchestrator's events."""
    @property
    def ce_subject(self) -> Optional[str]:
        """The CloudEvents ``subject`` attribute (an instance id, a service name, ...), if any."""
    @property
    def principal(self) -> Optional[str]:
        """Who made the change, as authenticated: ``key:<name>``, ``jwt:<sub>``, ``anonymous``,
        ``nats`` or ``orchestrator`` (protocol.md §6.1); None for an event without one."""
    @property
    def domain(self) -> Optional[str]:
        """The subject's domain token: ``registry``, ``health``, ``lifecycle``, ``priority``,
        ``system``, ``resource``, ``cluster``, ``workflow``."""
    @property
    def service(self) -> Optional[str]:
        """The subject's service token (``_system`` for events of no single service; the node
        for ``resource`` events, the replica for ``cluster`` events, the workflow's name for
        ``workflow`` events: ``orch_bridge.WorkflowEvent.from_event`` types those)."""
    @property
    def kind(self) -> Optional[str]:
        """The subject's last token: the kind of event, e.g. ``crashed`` or ``applied``."""
    @property
    def time(self) -> Optional[datetime]:
        """When the change happened: an aware ``datetime`` in UTC (microseconds), or None."""
    @property
    def data(self) -> Any:
        """The event's ``data`` (usually a dict), decoded on first access; None if absent."""
    @property
    def raw(self) -> bytes:
        """The whole message body: the CloudEvent as JSON bytes."""
    @property
    def stream_seq(self) -> int:
        """The event's sequence number in the events stream (0 if unknown)."""
    @property
    def deliveries(self) -> int:
        """How many times the stream delivered this event (more than 1: a redelivery; 0 if
        unknown)."""
    @property
    def ackable(self) -> bool:
        """True if the event comes from a durable stream and must be acknowledged."""
    def ack(self) -> None:
        """Acknowledges the event (durable streams): it will not be delivered again. Returns at
        once; the ack is sent in the background, and closing the stream or the client waits until
        every ack is sent. Acking twice, or an event of a live stream, does nothing."""
    def nak(self) -> None:
        """Asks for the event to be delivered again now (durable streams), e.g. after a failure
        to handle it. Does nothing once acknowledged, or for an event of a live stream."""
    def to_dict(self) -> Dict[str, Any]:
        """The whole CloudEvent as a dict (decoded from :attr:`raw`)."""
    def __repr__(self) -> str: ...

@final
class EventStream:
    """Events of one consumer, in stream order. Iterate it (blocking, GIL released while
    waiting; iteration ends once the stream is closed), or take batches; the asyncio client wraps
    the ``*_async`` methods. Close it (or use ``with``) to hand back unread durable events at once
    and flush acknowledgements.

    A message that is not a CloudEvent is raised as ``ValidationError`` (code
    ``malformed_payload``) when reached, and never delivered again; the stream goes on. A
    stream that stops for good (e.g. its consumer was deleted) raises ``OrchConnectionError``.
    """

    def __iter__(self) -> Iterator[Event]: ...
    def __next__(self) -> Event:
        """The next event; waits as long as it takes. ``StopIteration`` once closed."""
    def next(self, timeout: Optional[float] = None) -> Optional[Event]:
        """The next event, or None if none arrives within ``timeout`` seconds (None: wait
        forever). Raises ``StopIteration`` once the stream is closed."""
    def next_batch(self, max: int = 1024, timeout: Optional[float] = None) -> List[Event]:
        """Up to ``max`` events: those ready, or waits for some up to ``timeout`` seconds (then
        ``[]``; None: wait forever). Raises ``StopIteration`` once the stream is closed."""
    def poll_batch(self, max: int = 1024) -> Optional[List[Event]]:
        """The events ready now (maybe ``[]``), without waiting; None once the stream has
        ended."""
    def next_batch_async(self, max: int = 1024) -> Awaitable[Optional[List[Event]]]:
        """Awaitable of the next non-empty batch (up to ``max`` events), or None once the stream
        has ended."""
    def close(self, ack_delivered: bool = False) -> None:
        """Closes the stream (blocking): stops receiving, hands unread durable events back for
        redelivery, and flushes acknowledgements. With ``ack_delivered`` (and ``auto_ack``), the
        events already handed over are acknowledged; otherwise they are redelivered.
        Idempotent."""
    def close_async(self, ack_delivered: bool = False) -> Awaitable[None]:
        """Awaitable version of :meth:`close`."""
    def __enter__(self) -> "EventStream": ...
    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]] = None,
        _exc: Optional[BaseException] = None,
        _tb: Optional[TracebackType] = None,
    ) -> Literal[False]:
        """Closes; under ``auto_ack``, acknowledges what was handed over unless an exception is
        leaving the ``with`` block. Never swallows the exception."""
    @property
    def stream(self) -> str:
        """The stream name, e.g. ``ORCH_EVENTS``."""
    @property
    def consumer(self) -> str:
        """The consumer's name: the durable name, or the server's name of the ordered
        consumer."""
    @property
    def durable(self) -> bool:
        """True for a durable (acknowledged) stream."""
    @property
    def subject(self) -> str:
        """The subject filter, e.g. ``orch.evt.>``."""
    @property
    def closed(self) -> bool:
        """True once closed."""
    @property
    def buffered(self) -> int:
        """Events received and not yet handed to Python."""
    def __repr__(self) -> str: ...


@final
class MessageStream:
    """A core NATS subscription (``Connection.subscribe_messages``): ``(subject, payload)``
    tuples in the order they arrive. Core NATS keeps nothing, so only what is published while
    subscribed comes; a reader too slow for a busy subject loses messages (the server drops them).
    A subscription the NATS server refuses (its user's permissions) ends the stream: the next read
    raises ``PermissionDenied``. Close it (or use ``with``) to unsubscribe."""

    def __iter__(self) -> Iterator[Tuple[str, bytes]]: ...
    def __next__(self) -> Tuple[str, bytes]:
        """The next message; waits as long as it takes. ``StopIteration`` once closed."""
    def next(self, timeout: Optional[float] = None) -> Optional[Tuple[str, bytes]]:
        """The next message, or None if none arrives within ``timeout`` seconds (None: wait
        forever). Raises ``StopIteration`` once the stream is closed."""
    def next_async(self) -> Awaitable[Optional[Tuple[str, bytes]]]:
        """Awaitable of the next message, or None once the stream has ended."""
    def close(self) -> None:
        """Unsubscribes; what was received and not read is dropped. Idempotent."""
    def close_async(self) -> Awaitable[None]:
        """Awaitable version of :meth:`close`."""
    def __enter__(self) -> "MessageStream": ...
    def __exit__(
        self,
        _exc_type: Optional[Type[BaseException]] = None,
        _exc: Optional[BaseException] = None,
        _tb: Optional[TracebackType] = None,
    ) -> Literal[False]:
        """Closes. Never swallows the exception."""
    @property
    def subjects(self) -> List[str]:
        """The subjects subscribed to."""
    @property
    def closed(self) -> bool:
        """True once closed."""
    def __repr__(self) -> str: ...
