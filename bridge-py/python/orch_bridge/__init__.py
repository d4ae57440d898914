"""orch_bridge: the Python client of the orchestrator, on a Rust core.

It streams the orchestrator's events (CloudEvents on NATS JetStream) into Python as typed
:class:`Event` objects, and sends commands back, above all service priorities, so that an AI
engine can steer where attention goes. Two clients with the same methods: :class:`Client`
(blocking, thread-safe) and :class:`AsyncClient` (asyncio). See bridge-py/README.md.
"""

from ._core import DEFAULT_PRIORITY, MAX_PRIORITY, Event, EventStream, __version__
from ._client import DEFAULT_URL, AsyncClient, AsyncEventStream, Client
from ._errors import (
    ConflictError,
    GuardrailRefused,
    NotFoundError,
    OrchConnectionError,
    OrchError,
    OrchTimeoutError,
    RateLimited,
    UnavailableError,
    ValidationError,
)
from ._types import (
    Adjustment,
    Change,
    ClusterStatus,
    GuardView,
    HoldRelease,
    Instance,
    Leader,
    PriorityChange,
    PriorityDetail,
    PriorityList,
    PriorityView,
    Replica,
    RestartResult,
    Service,
    ServiceHealth,
    ServicePage,
)

__all__ = [
    "__version__",
    "DEFAULT_URL",
    "DEFAULT_PRIORITY",
    "MAX_PRIORITY",
    "Client",
    "AsyncClient",
    "AsyncEventStream",
    "Event",
    "EventStream",
    "OrchError",
    "OrchConnectionError",
    "OrchTimeoutError",
    "ValidationError",
    "NotFoundError",
    "ConflictError",
    "UnavailableError",
    "GuardrailRefused",
    "RateLimited",
    "Adjustment",
    "Change",
    "ClusterStatus",
    "GuardView",
    "HoldRelease",
    "Instance",
    "Leader",
    "PriorityChange",
    "PriorityDetail",
    "PriorityList",
    "PriorityView",
    "Replica",
    "RestartResult",
    "Service",
    "ServiceHealth",
    "ServicePage",
]
