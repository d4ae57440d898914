"""The exceptions of orch_bridge: one hierarchy under :class:`OrchError`.

Every exception carries ``code`` (machine-readable, from the orchestrator's error object or the
bridge's own), ``message`` (for people), ``field`` (the offending field, or None) and
``retry_after`` (seconds the orchestrator asked to wait before retrying, or None). The Rust core
raises them through :func:`_make`, the one place where a code picks a class.
"""

from __future__ import annotations

from typing import Dict, Optional, Type

__all__ = [
    "OrchError",
    "OrchConnectionError",
    "OrchTimeoutError",
    "ValidationError",
    "NotFoundError",
    "ConflictError",
    "UnavailableError",
    "GuardrailRefused",
    "RateLimited",
    "PermissionDenied",
]


class OrchError(Exception):
    """Base of every error of the bridge.

    Attributes:
        code: machine-readable code, e.g. ``validation_failed``, ``refused``, ``timeout``.
        message: what went wrong, in words.
        field: the field to blame (``value``, ``service``, ``subject``...), or None.
        retry_after: seconds the orchestrator asked the caller to wait before retrying (a
            ``rate_limited`` change: the rate window; ``unavailable``), or None.
    """

    code: str
    message: str
    field: Optional[str]
    retry_after: Optional[float]

    def __init__(
        self, message: str, code: str = "internal", field: Optional[str] = None, retry_after: Optional[float] = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.field = field
        self.retry_after = retry_after

    def __str__(self) -> str:
        where = f" (field {self.field!r})" if self.field else ""
        return f"{self.message}{where} [{self.code}]"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, code={self.code!r}, field={self.field!r})"

    def __reduce__(self):  # keeps code and field across pickling (multiprocessing)
        return (type(self), (self.message, self.code, self.field, self.retry_after))


class OrchConnectionError(OrchError, ConnectionError):
    """NATS is unreachable, the client is closed, or the orchestrator does not answer on the
    subject (no responders: it is not running, or uses another subject prefix)."""


class OrchTimeoutError(OrchError, TimeoutError):
    """No reply within the timeout. The request may still have taken effect."""


class ValidationError(OrchError, ValueError):
    """The request was refused for what it contains: codes ``malformed_payload``,
    ``validation_failed`` and ``payload_too_large`` from the orchestrator, and the same checks
    made by the bridge before sending. ``field`` names the culprit."""


class NotFoundError(OrchError, LookupError):
    """What the request names does not exist (``not_found``), or the orchestrator does not know
    the request at all (``unknown_command``: an older orchestrator)."""


class ConflictError(OrchError):
    """The request conflicts with the current state (``conflict``), e.g. restarting a service
    that is starting, or a durable consumer that exists with another filter."""


class UnavailableError(OrchError):
    """The orchestrator cannot serve the request now (``unavailable``: PostgreSQL down, shutting
    down, an agent not answering). Retrying later is safe."""


class GuardrailRefused(OrchError):
    """A priority guardrail refused the change (``refused``), e.g. the service is pinned by an
    operator. The refusal is also published as an ``io.orch.priority.refused.v1`` event."""


class RateLimited(GuardrailRefused):
    """Too many changes of one service within the rate window (``rate_limited``); retry later."""


class PermissionDenied(OrchError, PermissionError):
    """The request is not allowed to the caller (``forbidden``): above all, the NATS server
    refused to carry it because the connection's user may not publish on its subject (e.g. the
    shipped ``engine`` user cancelling an execution or deciding an approval, which are the
    ``operator``'s). Raised as soon as the server says so; the orchestrator never saw the
    request. ``unauthorized`` (no or wrong credentials) is raised as this class too."""


_BY_CODE: Dict[str, Type[OrchError]] = {
    "connection": OrchConnectionError,
    "timeout": OrchTimeoutError,
    "malformed_payload": ValidationError,
    "validation_failed": ValidationError,
    "payload_too_large": ValidationError,
    "not_found": NotFoundError,
    "unknown_command": NotFoundError,
    "conflict": ConflictError,
    "unavailable": UnavailableError,
    "refused": GuardrailRefused,
    "rate_limited": RateLimited,
    "forbidden": PermissionDenied,
    "unauthorized": PermissionDenied,
}


def _make(code: str, message: str, field: Optional[str], retry_after: Optional[float] = None) -> OrchError:
    """The exception for an error code (used by the Rust core)."""
    return _BY_CODE.get(code, OrchError)(message, code, field, retry_after)
