"""The two clients: :class:`Client` (blocking) and :class:`AsyncClient` (asyncio), with the same
methods. Both are thin: the Rust core (``orch_bridge._core``) builds and checks each request, talks
to NATS, and raises the exceptions of :mod:`orch_bridge._errors`; this module picks the request and
turns the reply into the typed results of :mod:`orch_bridge._types`.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections import deque
from datetime import datetime, timezone
from typing import (
    Any,
    Awaitable,
    Callable,
    Deque,
    Dict,
    Generic,
    Iterable,
    List,
    Literal,
    Mapping,
    Optional,
    Sequence,
    TypeVar,
    Union,
)

from . import _core
from ._errors import NotFoundError, ValidationError
from ._types import (
    ClusterStatus,
    ConfigChange,
    ConfigEntry,
    ConfigHistory,
    ConfigList,
    ConfigSchema,
    LogLine,
    LogStream,
    ServiceLogs,
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

__all__ = ["Client", "AsyncClient", "AsyncEventStream", "Feed", "AsyncFeed", "DEFAULT_URL", "Decision", "ExecutionId"]

#: An approval's decision (``signal_execution``).
Decision = Literal["approve", "reject"]
#: An execution's id: its UUID as text (``Execution.id``), or a ``uuid.UUID``.
ExecutionId = Union[str, uuid.UUID]

DEFAULT_URL = "nats://127.0.0.1:4222"


def _aware(field: str, value: Any) -> datetime:
    """An aware datetime given by the caller (a naive one is refused: ambiguous)."""
    if not isinstance(value, datetime):
        raise ValidationError(f"{field} must be a datetime", "validation_failed", field)
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValidationError(
            f"{field} must be timezone-aware, e.g. datetime.now(timezone.utc) - timedelta(minutes=5)",
            "validation_failed",
            field,
        )
    return value


def _start_ns(start_time: Optional[datetime]) -> Optional[int]:
    """Nanoseconds since the epoch of an aware datetime (a naive one is refused: ambiguous)."""
    if start_time is None:
        return None
    start_time = _aware("start_time", start_time)
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


# -- the config store (protocol.md §18): the server's checks, so a bad key fails before sending ----

#: Longest config key (or prefix), in bytes; most dot-separated parts (the protocol crate's
#: ``KEY_MAX`` and ``KEY_TOKENS_MAX``).
CONFIG_KEY_MAX = 255
CONFIG_KEY_TOKENS_MAX = 16
_CONFIG_TOKEN = re.compile(r"[A-Za-z0-9_-]+")


def _config_path(field: str, path: Any, what: str = "key") -> str:
    """A config key (``web.db.url``) or prefix, checked like the orchestrator's ``validate_key``:
    dot-separated parts of ASCII letters, digits, ``_`` and ``-``."""
    if not isinstance(path, str):
        raise ValidationError(f"a {what} is text, not {type(path).__name__}", "validation_failed", field)
    if not path:
        raise ValidationError(f"a {what} must not be empty", "validation_failed", field)
    if len(path.encode()) > CONFIG_KEY_MAX:
        raise ValidationError(f"a {what} is at most {CONFIG_KEY_MAX} bytes", "validation_failed", field)
    tokens = path.split(".")
    if len(tokens) > CONFIG_KEY_TOKENS_MAX:
        raise ValidationError(
            f"a {what} has at most {CONFIG_KEY_TOKENS_MAX} dot-separated parts", "validation_failed", field
        )
    if not all(_CONFIG_TOKEN.fullmatch(t) for t in tokens):
        raise ValidationError(
            f"{path!r}: each dot-separated part of a {what} is 1 or more letters, digits, '_' or '-'",
            "validation_failed",
            field,
        )
    return path


def _config_prefix(prefix: Any) -> str:
    """A prefix of keys (whole parts); the empty prefix is every key."""
    return "" if prefix == "" else _config_path("prefix", prefix, "prefix")


def _under(key: str, prefix: str) -> bool:
    """Whether ``key`` is under ``prefix``, whole parts only (``web.db`` covers ``web.db`` and
    ``web.db.url``, not ``web.dbx``), as the orchestrator decides it."""
    return not prefix or key == prefix or key.startswith(prefix + ".")


def _revision(field: str, value: Any) -> Optional[int]:
    """A compare-and-set revision: None (any), 0 (only if absent) or a revision."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValidationError(f"{field} must be a revision (0 or more), not {value!r}", "validation_failed", field)
    return value


def _config_value(value: Any) -> Any:
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise ValidationError(f"not a JSON value: {e}", "validation_failed", "value") from None
    return value


def _config_events(prefix: str, events_prefix: str) -> str:
    """The events' subject filter of a watch of ``prefix``: the key's first part is a token of the
    subject (``<prefix>.evt.config.<first part>.<changed|deleted>``)."""
    return f"{events_prefix}.evt.config." + (f"{prefix.split('.')[0]}.>" if prefix else ">")


def _config_filter(prefix: str) -> Callable[[Any], List[ConfigChange]]:
    def convert(event: Any) -> List[ConfigChange]:
        change = ConfigChange.from_event(event)
        return [change] if change is not None and _under(change.key, prefix) else []

    return convert


# -- services' output (protocol.md §11, §12.7) ------------------------------------------------------

#: Most lines one ``logs`` request returns (the protocol crate's ``LOG_LINES_MAX``).
LOG_LINES_MAX = 10_000
#: Longest regular expression of a search, in bytes (``LOG_REGEX_MAX``).
LOG_REGEX_MAX = 1024


def _log_filter(stream: Optional[str], contains: Optional[str], regex: Optional[str]) -> None:
    """The checks the orchestrator makes of a search's filters."""
    if stream is not None and stream not in ("stdout", "stderr"):
        raise ValidationError(f"stream must be stdout or stderr, not {stream!r}", "validation_failed", "stream")
    if contains is not None and not isinstance(contains, str):
        raise ValidationError("contains must be text", "validation_failed", "contains")
    if regex is not None:
        if not isinstance(regex, str):
            raise ValidationError("regex must be text", "validation_failed", "regex")
        if contains is not None:
            raise ValidationError("give contains or regex, not both", "validation_failed", "regex")
        if len(regex.encode()) > LOG_REGEX_MAX:
            raise ValidationError(f"at most {LOG_REGEX_MAX} characters", "validation_failed", "regex")


def _time_text(field: str, value: Optional[datetime]) -> Optional[str]:
    return None if value is None else _aware(field, value).astimezone(timezone.utc).isoformat()


def _line_filter(
    stream: Optional[str], contains: Optional[str], regex: Optional[str]
) -> Callable[[Any], List[LogLine]]:
    """The lines of a ``(subject, payload)`` log batch that pass the filters, as the agent filters a
    search (the regular expression is Python's ``re``, searched anywhere in the line)."""
    _log_filter(stream, contains, regex)
    try:
        pattern = None if regex is None else re.compile(regex)
    except re.error as e:
        raise ValidationError(f"not a regular expression: {e}", "validation_failed", "regex") from None

    def convert(message: Any) -> List[LogLine]:
        _subject, payload = message
        lines = LogLine.list_from_batch(json.loads(payload))
        return [
            line
            for line in lines
            if (stream is None or line.stream == stream)
            and (contains is None or contains in line.text)
            and (pattern is None or pattern.search(line.text))
        ]

    return convert


def _log_subjects(prefix: str, service: str, stack: Stack) -> List[str]:
    """``<prefix>.log.*.<unit>`` of every unit of ``service`` (each replica, or the service)."""
    units = [s.name for s in stack.replicas(service)]
    if not units:
        raise NotFoundError(f"no managed service {service!r} in the applied stack", "not_found", "service")
    return [f"{prefix}.log.*.{unit}" for unit in units]


T = TypeVar("T")


class Feed(Generic[T]):
    """Typed items as they happen (:meth:`Client.config_watch`, :meth:`Client.follow_logs`): an
    iterator over an event stream or a subscription, each raw item turned into none or more typed
    ones. Iterate it (blocking; Ctrl-C interrupts; iteration ends once closed), or call
    ``next(timeout)``. Close it, or use ``with``."""

    def __init__(self, source: Any, convert: Callable[[Any], Iterable[T]]) -> None:
        self._source = source
        self._convert = convert
        self._ready: Deque[T] = deque()

    @property
    def source(self) -> Any:
        """The underlying ``EventStream`` or ``MessageStream``."""
        return self._source

    def __iter__(self) -> "Feed[T]":
        return self

    def __next__(self) -> T:
        while not self._ready:
            self._ready.extend(self._convert(next(self._source)))
        return self._ready.popleft()

    def next(self, timeout: Optional[float] = None) -> Optional[T]:
        """The next item, or None if none comes within ``timeout`` seconds (None: wait forever).
        Raises ``StopIteration`` once closed."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._ready:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            raw = self._source.next(left)
            if raw is None:
                return None
            self._ready.extend(self._convert(raw))
            if not self._ready and deadline is not None and time.monotonic() >= deadline:
                return None
        return self._ready.popleft()

    def close(self) -> None:
        """Stops receiving. Idempotent."""
        self._source.close()

    @property
    def closed(self) -> bool:
        return self._source.closed

    def __enter__(self) -> "Feed[T]":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncFeed(Generic[T]):
    """The asyncio face of a :class:`Feed`, for ``async for`` and ``async with``."""

    def __init__(
        self,
        source: Any,
        next_batch: Callable[[], Awaitable[Optional[List[Any]]]],
        close: Callable[[], Awaitable[None]],
        convert: Callable[[Any], Iterable[T]],
    ) -> None:
        self._source = source
        self._next_batch = next_batch
        self._close = close
        self._convert = convert
        self._ready: Deque[T] = deque()

    @property
    def source(self) -> Any:
        """The underlying ``AsyncEventStream`` or ``MessageStream``."""
        return self._source

    def __aiter__(self) -> "AsyncFeed[T]":
        return self

    async def __anext__(self) -> T:
        while not self._ready:
            batch = await self._next_batch()
            if batch is None:
                raise StopAsyncIteration
            for raw in batch:
                self._ready.extend(self._convert(raw))
        return self._ready.popleft()

    async def close(self) -> None:
        """Stops receiving. Idempotent."""
        await self._close()

    async def __aenter__(self) -> "AsyncFeed[T]":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def _async_messages(messages: "_core.MessageStream") -> Callable[[], Awaitable[Optional[List[Any]]]]:
    async def next_batch() -> Optional[List[Any]]:
        message = await messages.next_async()
        return None if message is None else [message]

    return next_batch


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

    # -- the config store (§18)

    @staticmethod
    def config_get(key):
        body = _json({"key": _config_path("key", key)})
        return _core.Request.raw("config", "get", body), ConfigEntry.from_json

    @staticmethod
    def config_put(key, value, revision):
        body = {"key": _config_path("key", key), "value": _config_value(value)}
        if revision is not None:
            body["revision"] = _revision("revision", revision)
        return _core.Request.raw("config", "put", json.dumps(body).encode()), ConfigChange.from_json

    @staticmethod
    def config_delete(key, revision):
        body = _json({"key": _config_path("key", key), "revision": _revision("revision", revision)})
        return _core.Request.raw("config", "delete", body), ConfigChange.from_json

    @staticmethod
    def config_list(prefix):
        body = json.dumps({"prefix": _config_prefix(prefix)}).encode()
        return _core.Request.raw("config", "list", body), ConfigList.from_json

    @staticmethod
    def config_history(key):
        body = _json({"key": _config_path("key", key)})
        return _core.Request.raw("config", "history", body), ConfigHistory.from_json

    @staticmethod
    def config_revert(key, to):
        if isinstance(to, bool) or not isinstance(to, int) or to < 1:
            raise ValidationError(f"to must be a revision (1 or more), not {to!r}", "validation_failed", "to")
        body = _json({"key": _config_path("key", key), "to": to})
        return _core.Request.raw("config", "revert", body), ConfigChange.from_json

    @staticmethod
    def config_schemas():
        return _core.Request.raw("config", "schemas", b"{}"), ConfigSchema.list_from_json

    @staticmethod
    def config_set_schema(prefix, schema):
        if not isinstance(schema, Mapping) and not isinstance(schema, bool):
            raise ValidationError("a schema is a JSON Schema object", "validation_failed", "schema")
        body = json.dumps({"prefix": _config_path("prefix", prefix, "prefix"), "schema": schema}).encode()
        return _core.Request.raw("config", "schema_put", body), ConfigSchema.from_json

    @staticmethod
    def config_clear_schema(prefix):
        body = _json({"prefix": _config_path("prefix", prefix, "prefix")})
        return _core.Request.raw("config", "schema_delete", body), lambda reply: None

    # -- services' output (§12.7)

    @staticmethod
    def logs(service, since, until, stream, contains, regex, limit):
        if not isinstance(service, str) or not service:
            raise ValidationError("service must be a service's name", "validation_failed", "service")
        _log_filter(stream, contains, regex)
        if limit is not None and (
            isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= LOG_LINES_MAX
        ):
            raise ValidationError(f"must be 1-{LOG_LINES_MAX}", "validation_failed", "limit")
        since_text, until_text = _time_text("since", since), _time_text("until", until)
        if since is not None and until is not None and until <= since:
            raise ValidationError("must be later than since", "validation_failed", "until")
        body = _json(
            {
                "service": service,
                "since": since_text,
                "until": until_text,
                "stream": stream,
                "contains": contains,
                "regex": regex,
                "limit": limit,
            }
        )
        return _core.Request.raw("lifecycle", "logs", body), ServiceLogs.from_json


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

    # -- the config store (protocol.md §18) --------------------------------------------------------

    def config_get(self, key: str, *, timeout: Optional[float] = None) -> ConfigEntry:
        """The current value and revision of the config key ``key`` (``web.db.url``).

        Raises:
            ValidationError: ``key`` is no key (field ``key``): dot-separated parts of letters,
                digits, ``_`` and ``-``, at most 255 bytes and 16 parts.
            NotFoundError: no such key (or it was deleted).
            PermissionDenied: the NATS user may not read the config store.
        """
        return self._call(_Requests.config_get(key), timeout)

    def config_put(
        self, key: str, value: Any, revision: Optional[int] = None, *, timeout: Optional[float] = None
    ) -> ConfigChange:
        """Sets ``key`` to the JSON value ``value`` (at most 64 KiB as JSON) and returns the
        recorded change, with this client's principal (``nats:<user>``). With ``revision``, only
        if the key's revision is still that one (compare-and-set; ``0``: only if the key does not
        exist).

        Raises:
            ConflictError: the key's revision is not ``revision`` (field ``revision``).
            ValidationError: a bad key, a value that is no JSON value or that the schema of the
                key's prefix refuses (field ``value``).
            PermissionDenied: the NATS user may not write the config store (only ``operator``
                of the shipped users may).
        """
        return self._call(_Requests.config_put(key, value, revision), timeout)

    def config_delete(
        self, key: str, revision: Optional[int] = None, *, timeout: Optional[float] = None
    ) -> ConfigChange:
        """Deletes ``key`` (its history stays); with ``revision``, only if its revision is still
        that one.

        Raises:
            NotFoundError: no such key.
            ConflictError: the key's revision is not ``revision`` (field ``revision``).
        """
        return self._call(_Requests.config_delete(key, revision), timeout)

    def config_list(self, prefix: str = "", *, timeout: Optional[float] = None) -> ConfigList:
        """The keys under ``prefix`` (whole parts: ``web.db`` lists ``web.db`` and ``web.db.url``,
        not ``web.dbx``; ``""``: every key), sorted, at most 1000 (``truncated`` says if more
        matched)."""
        return self._call(_Requests.config_list(prefix), timeout)

    def config_history(self, key: str, *, timeout: Optional[float] = None) -> ConfigHistory:
        """The recorded changes of ``key``, newest first, each with who made it and the values
        before and after.

        Raises:
            NotFoundError: the key never existed.
        """
        return self._call(_Requests.config_history(key), timeout)

    def config_revert(self, key: str, to: int, *, timeout: Optional[float] = None) -> ConfigChange:
        """Puts the value that revision ``to`` of ``key`` had again, as a new revision (op
        ``revert``, ``reverted_to`` = ``to``).

        Raises:
            NotFoundError: the key has no such revision (field ``to``), or never existed.
            ValidationError: that value is refused by the schema now in force.
        """
        return self._call(_Requests.config_revert(key, to), timeout)

    def config_schemas(self, *, timeout: Optional[float] = None) -> List[ConfigSchema]:
        """Every JSON Schema of the config store, by prefix."""
        return self._call(_Requests.config_schemas(), timeout)

    def config_set_schema(
        self, prefix: str, schema: Mapping[str, Any], *, timeout: Optional[float] = None
    ) -> ConfigSchema:
        """Sets the JSON Schema that every value written under ``prefix`` must satisfy (the
        longest covering prefix's schema applies; values already stored are not checked again).

        Raises:
            ValidationError: a bad prefix, or ``schema`` is no valid JSON Schema (field ``schema``).
        """
        return self._call(_Requests.config_set_schema(prefix, schema), timeout)

    def config_clear_schema(self, prefix: str, *, timeout: Optional[float] = None) -> None:
        """Removes the schema of ``prefix``.

        Raises:
            NotFoundError: ``prefix`` has no schema (field ``prefix``).
        """
        self._call(_Requests.config_clear_schema(prefix), timeout)

    def config_watch(self, prefix: str = "") -> Feed[ConfigChange]:
        """The changes of the keys under ``prefix`` (whole parts; ``""``: every key) as they
        happen, from now on, over HTTP or NATS alike: a :class:`Feed` of :class:`ConfigChange`
        (a delete has ``op`` ``delete``). It reads the events ``io.orch.config.changed.v1`` and
        ``io.orch.config.deleted.v1`` on ``<prefix>.evt.config.<first part of the key>.*``, so the
        NATS user needs the events stream, like :meth:`events`.

        Example::

            with client.config_watch("web.db") as changes:
                for change in changes:
                    print(change.key, change.op, change.value, change.principal)
        """
        prefix = _config_prefix(prefix)
        stream = self.events(_config_events(prefix, self.prefix))
        return Feed(stream, _config_filter(prefix))

    # -- services' output (protocol.md §12.7, §11) ------------------------------------------------

    def logs(
        self,
        service: str,
        *,
        since: Optional[datetime] = None,
        until: Optional[datetime] = None,
        stream: Optional[LogStream] = None,
        contains: Optional[str] = None,
        regex: Optional[str] = None,
        limit: Optional[int] = None,
        timeout: Optional[float] = None,
    ) -> ServiceLogs:
        """The last ``limit`` (1-10000, default 100) lines of a managed service's output that
        match every filter given, from each of its units (replicas, on whichever node runs them),
        oldest first (``<prefix>.req.lifecycle.logs``). ``since``/``until``: aware datetimes;
        ``stream``: ``"stdout"`` or ``"stderr"``; ``contains``: text the line contains
        (case-sensitive); ``regex``: a regular expression it matches (the orchestrator's syntax,
        Rust ``regex``; not with ``contains``).

        Raises:
            NotFoundError: no managed service of that name.
            ValidationError: a bad filter (the field names it).
            PermissionDenied: the NATS user may not read services' output (the shipped ``engine``
                may not; ``observer`` and ``operator`` may).
        """
        return self._call(_Requests.logs(service, since, until, stream, contains, regex, limit), timeout)

    def follow_logs(
        self,
        service: str,
        *,
        stream: Optional[LogStream] = None,
        contains: Optional[str] = None,
        regex: Optional[str] = None,
    ) -> Feed[LogLine]:
        """The lines a managed service writes from now on, live, as a :class:`Feed` of
        :class:`LogLine`, filtered like :meth:`logs` (``regex`` with Python's ``re`` here). It
        subscribes (core NATS) to ``<prefix>.log.*.<unit>`` of each unit the stack has for the
        service now (``web-0``, ``web-1`` for a replicated ``web``; the service itself for a
        service of one): replicas added later are not followed, and a reader too slow for the
        output loses lines (core NATS keeps nothing; :meth:`logs` finds them later).

        Raises:
            NotFoundError: no managed service of that name in the applied stack.
            PermissionDenied: (when the feed is read) the NATS user may not subscribe to
                ``<prefix>.log.>`` (the shipped ``engine`` may not).
        """
        convert = _line_filter(stream, contains, regex)
        subjects = _log_subjects(self.prefix, service, self.stack())
        return Feed(self._conn.subscribe_messages(subjects), convert)

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

    async def config_get(self, key: str, *, timeout: Optional[float] = None) -> ConfigEntry:
        """See :meth:`Client.config_get`."""
        return await self._call(_Requests.config_get(key), timeout)

    async def config_put(
        self, key: str, value: Any, revision: Optional[int] = None, *, timeout: Optional[float] = None
    ) -> ConfigChange:
        """See :meth:`Client.config_put`."""
        return await self._call(_Requests.config_put(key, value, revision), timeout)

    async def config_delete(
        self, key: str, revision: Optional[int] = None, *, timeout: Optional[float] = None
    ) -> ConfigChange:
        """See :meth:`Client.config_delete`."""
        return await self._call(_Requests.config_delete(key, revision), timeout)

    async def config_list(self, prefix: str = "", *, timeout: Optional[float] = None) -> ConfigList:
        """See :meth:`Client.config_list`."""
        return await self._call(_Requests.config_list(prefix), timeout)

    async def config_history(self, key: str, *, timeout: Optional[float] = None) -> ConfigHistory:
        """See :meth:`Client.config_history`."""
        return await self._call(_Requests.config_history(key), timeout)

    async def config_revert(self, key: str, to: int, *, timeout: Optional[float] = None) -> ConfigChange:
        """See :meth:`Client.config_revert`."""
        return await self._call(_Requests.config_revert(key, to), timeout)

    async def config_schemas(self, *, timeout: Optional[float] = None) -> List[ConfigSchema]:
        """See :meth:`Client.config_schemas`."""
        return await self._call(_Requests.config_schemas(), timeout)

    async def config_set_schema(
        self, prefix: str, schema: Mapping[str, Any], *, timeout: Optional[float] = None
    ) -> ConfigSchema:
        """See :meth:`Client.config_set_schema`."""
        return await self._call(_Requests.config_set_schema(prefix, schema), timeout)

    async def config_clear_schema(self, prefix: str, *, timeout: Optional[float] = None) -> None:
        """See :meth:`Client.config_clear_schema`."""
        await self._call(_Requests.config_clear_schema(prefix), timeout)

    async def config_watch(self, prefix: str = "") -> AsyncFeed[ConfigChange]:
        """See :meth:`Client.config_watch`; ``async with await client.config_watch(...)``."""
        prefix = _config_prefix(prefix)
        events = await self.events(_config_events(prefix, self.prefix))
        return AsyncFeed(events, events.next_batch, events.close, _config_filter(prefix))

    async def logs(
        self,
        service: str,
        *,
        since: Optional[datetime] = None,
        until: Optional[datetime] = None,
        stream: Optional[LogStream] = None,
        contains: Optional[str] = None,
        regex: Optional[str] = None,
        limit: Optional[int] = None,
        timeout: Optional[float] = None,
    ) -> ServiceLogs:
        """See :meth:`Client.logs`."""
        return await self._call(_Requests.logs(service, since, until, stream, contains, regex, limit), timeout)

    async def follow_logs(
        self,
        service: str,
        *,
        stream: Optional[LogStream] = None,
        contains: Optional[str] = None,
        regex: Optional[str] = None,
    ) -> AsyncFeed[LogLine]:
        """See :meth:`Client.follow_logs`; ``async with await client.follow_logs(...)``."""
        convert = _line_filter(stream, contains, regex)
        subjects = _log_subjects(self.prefix, service, await self.stack())
        messages = await self._conn.subscribe_messages_async(subjects)
        return AsyncFeed(messages, _async_messages(messages), messages.close_async, convert)

    async def request(self, domain: str, verb: str, body: Any = None, *, timeout: Optional[float] = None) -> Any:
        """See :meth:`Client.request`."""
        payload = json.dumps({} if body is None else body).encode()
        return await self._conn.call_async(_core.Request.raw(domain, verb, payload), timeout)
