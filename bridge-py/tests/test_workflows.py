"""Workflows from the bridge (protocol.md §16) against a real nats-server and orchestrator:
starting executions and following them to their end, over requests and over the events stream;
listing them, schedules and queues; approvals decided with a signal; cancelling; the typed errors
of bad requests; and what the shipped ``engine`` NATS user may not do."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import datetime, timezone
from types import SimpleNamespace

import pytest

import orch_bridge
from orch_bridge import (
    AsyncClient,
    Client,
    ConflictError,
    Execution,
    NotFoundError,
    OrchError,
    PermissionDenied,
    QueueStats,
    Schedule,
    StepState,
    ValidationError,
    WorkflowEvent,
)

from harness import eventually

HELLO = """
[workflow]
name = "hello"
queue = "greetings"
priority = 60

[inputs.who]
required = true

[inputs.times]
default = 2

[steps.pause]
kind = "wait"
duration = "10ms"
"""

DEPLOY = """
[workflow]
name = "deploy"

[steps.ask]
kind = "approval"
timeout = "1h"

[steps.roll]
kind = "wait"
duration = "10ms"
needs = ["ask"]
"""

NIGHTLY = """
[workflow]
name = "nightly"
queue = "batch"

[[schedule]]
cron = "0 3 1 1 *"
timezone = "Europe/Berlin"
overlap = "skip"
catch_up = "skip"

[steps.pause]
kind = "wait"
duration = "10ms"
"""


def put_workflow(stack, name: str, text: str) -> dict:
    """Stores a definition through the HTTP API (admin; the test orchestrator has no tokens)."""
    status, reply = stack.http("PUT", f"/api/v1/workflows/{name}", text, "application/toml")
    assert status in (200, 201), reply
    return reply


def workflow_events(stream, execution_id: str, timeout: float = 30.0):
    """The typed events of one execution, up to and including the one that ends it."""
    found = []
    deadline = time.monotonic() + timeout
    while not (found and found[-1].ended):
        left = deadline - time.monotonic()
        assert left > 0, f"not within {timeout}s: the end of {execution_id} (got {[e.kind for e in found]})"
        event = stream.next(timeout=left)
        typed = None if event is None else WorkflowEvent.from_event(event)
        if typed is not None and typed.execution_id == execution_id:
            found.append(typed)
    return found


def waiting_for_approval(client, execution_id: str, step: str = "ask") -> Execution:
    return eventually(
        lambda: (lambda e: e if e.steps[step].status == "running" else None)(client.execution(execution_id)),
        f"{step} of {execution_id} waits for a decision",
    )


def ended(client, execution_id: str) -> Execution:
    return eventually(
        lambda: (lambda e: e if e.ended else None)(client.execution(execution_id)),
        f"{execution_id} ends",
        timeout=30,
    )


def test_a_workflow_started_from_the_bridge_runs_to_its_end_and_its_events_arrive_typed(stack):
    put_workflow(stack, "hello", HELLO)
    with Client.connect(stack.url) as client:
        with client.events("orch.evt.workflow.hello.>") as stream:
            started = client.start_workflow("hello", {"who": "bridge"})
            assert isinstance(started, Execution)
            assert (started.workflow, started.version, started.status) == ("hello", 1, "queued")
            assert (started.queue, started.priority, started.trigger) == ("greetings", 60, "manual")
            assert started.created_by == "nats:operator", "the NATS user, as authenticated"
            assert started.inputs == {"who": "bridge", "times": 2}, "the default fills in"
            assert started.steps["pause"] == StepState("pending", 0, None, None, None, None)
            assert isinstance(started.created_at, datetime) and started.created_at.tzinfo is not None
            assert not started.ended and started.finished_at is None

            events = workflow_events(stream, started.id)
        kinds = [e.kind for e in events]
        assert kinds == ["started", "step_started", "step_succeeded", "succeeded"], kinds
        assert all((e.workflow, e.version) == ("hello", 1) for e in events)
        assert (events[0].status, events[-1].status) == ("running", "succeeded")
        assert (events[1].step, events[1].attempt) == ("pause", 1)
        assert events[0].time is not None and events[0].id

        done = client.execution(started.id)
        assert (done.id, done.status, done.ended) == (started.id, "succeeded", True)
        assert done.started_at is not None and done.finished_at is not None
        pause = done.steps["pause"]
        assert (pause.status, pause.attempt, pause.error) == ("succeeded", 1, None)
        assert isinstance(pause.started_at, datetime) and pause.started_at.tzinfo == timezone.utc
        assert "waited_until" in pause.output
        assert done.raw["id"] == started.id

        # Listing: the newest first, of one workflow or all, at most `limit`.
        second = client.start_workflow("hello", {"who": "again", "times": 5})
        listed = client.executions("hello")
        assert [e.id for e in listed] == [second.id, started.id]
        assert all(isinstance(e, Execution) for e in listed)
        assert [e.id for e in client.executions(limit=1)] == [second.id]
        assert client.executions("nightly") == []
        ended(client, second.id)


def test_schedules_and_queues(stack):
    put_workflow(stack, "nightly", NIGHTLY)
    put_workflow(stack, "hello", HELLO)
    with Client.connect(stack.url) as client:
        (schedule,) = client.schedules()
        assert isinstance(schedule, Schedule)
        assert (schedule.workflow, schedule.index, schedule.version) == ("nightly", 0, 1)
        assert (schedule.cron, schedule.timezone) == ("0 3 1 1 *", "Europe/Berlin")
        assert (schedule.overlap, schedule.catch_up, schedule.last_fired_at) == ("skip", "skip", None)
        assert schedule.next_fire_at > datetime.now(timezone.utc)

        execution = client.start_workflow("hello", {"who": "queues"})
        ended(client, execution.id)
        queues = {q.queue: q for q in client.queues()}
        greetings = queues["greetings"]
        assert isinstance(greetings, QueueStats)
        assert (greetings.waiting, greetings.running, greetings.succeeded) == (0, 0, 1), greetings
        assert (greetings.failed, greetings.cancelled) == (0, 0)
        assert greetings.wait_p50_ms is not None and greetings.wait_p50_ms >= 0


def test_an_approval_is_decided_with_a_signal_and_the_engine_may_not_decide_it(stack):
    put_workflow(stack, "deploy", DEPLOY)
    with Client.connect(stack.url) as operator, Client.connect(stack.user_url("engine"), timeout=10) as engine:
        # The engine may start and read workflows...
        execution = engine.start_workflow("deploy")
        assert execution.created_by == "nats:engine"
        waiting = waiting_for_approval(engine, execution.id)
        assert waiting.status == "running" and waiting.steps["roll"].status == "pending"
        assert [e.id for e in engine.executions("deploy")] == [execution.id]
        assert engine.schedules() == [] and isinstance(engine.queues(), list)

        # ...but not decide an approval, nor cancel: NATS refuses to carry the request, and the
        # bridge says so as soon as the server does (a timeout would be OrchTimeoutError),
        # naming the request and the user.
        with pytest.raises(PermissionDenied) as refused:
            engine.signal_execution(execution.id, "ask", "approve")
        assert isinstance(refused.value, PermissionError) and refused.value.code == "forbidden"
        assert "workflow.signal" in refused.value.message and "engine" in refused.value.message
        with pytest.raises(PermissionDenied):
            engine.cancel_execution(execution.id)
        assert operator.execution(execution.id).steps["ask"].status == "running", "nothing reached it"

        # Bad decisions name the field: the bridge's own checks, then the orchestrator's.
        with pytest.raises(ValidationError) as bad:
            operator.signal_execution(execution.id, "ask", "maybe")  # type: ignore[arg-type]
        assert bad.value.field == "decision"
        with pytest.raises(ValidationError) as bad:
            operator.signal_execution(execution.id, "roll", "approve")
        assert bad.value.field == "step" and "approval" in bad.value.message
        with pytest.raises(NotFoundError) as missing:
            operator.signal_execution(execution.id, "nope", "approve")
        assert missing.value.field == "step"
        with pytest.raises(ValidationError) as bad:
            operator.signal_execution(execution.id, "ask", "approve", comment="x" * 1025)
        assert bad.value.field == "comment"

        decided = operator.signal_execution(uuid.UUID(execution.id), "ask", "approve", comment="ship it")
        ask = decided.steps["ask"]
        assert ask.status == "succeeded", decided
        assert ask.output == {"decision": "approve", "by": "nats:operator", "comment": "ship it"}
        done = ended(operator, execution.id)
        assert done.status == "succeeded" and done.steps["roll"].status == "succeeded"
        with pytest.raises(ConflictError):
            operator.signal_execution(execution.id, "ask", "approve")

        # A rejection fails the step (kind `rejected`) and the execution.
        second = operator.start_workflow("deploy")
        waiting_for_approval(operator, second.id)
        operator.signal_execution(second.id, "ask", "reject", comment="not today")
        failed = ended(operator, second.id)
        assert failed.status == "failed", failed
        assert failed.steps["ask"].error is not None and failed.steps["ask"].error.kind == "rejected"
        assert "not today" in failed.steps["ask"].error.message
        assert failed.steps["roll"].status in ("pending", "cancelled", "skipped")


def test_an_execution_is_cancelled_and_its_event_says_by_whom(stack):
    put_workflow(stack, "deploy", DEPLOY)
    with Client.connect(stack.url) as client:
        with client.events("orch.evt.workflow.deploy.>") as stream:
            execution = client.start_workflow("deploy")
            waiting_for_approval(client, execution.id)
            cancelled = client.cancel_execution(execution.id)
            assert (cancelled.status, cancelled.ended) == ("cancelled", True)
            assert "nats:operator" in cancelled.reason
            events = workflow_events(stream, execution.id)
        assert events[-1].kind == "cancelled" and "nats:operator" in events[-1].reason
        assert events[-1].status == "cancelled"
        with pytest.raises(ConflictError):
            client.cancel_execution(execution.id)
        assert client.execution(execution.id).steps["ask"].status == "cancelled"
        # A cancelled execution is retried as a new one, from what did not run.
        retried = client.retry_execution(execution.id)
        assert (retried.status, retried.trigger) == ("queued", f"retry:{execution.id}")
        assert retried.id != execution.id
        waiting_for_approval(client, retried.id)
        assert client.cancel_execution(retried.id).status == "cancelled"
        with pytest.raises(ValidationError) as bad:
            client.retry_execution(execution.id, "middle")
        assert bad.value.field == "from"


def test_bad_requests_raise_typed_errors_naming_the_field(stack):
    put_workflow(stack, "hello", HELLO)
    with Client.connect(stack.url) as client:
        # The orchestrator's checks of the inputs, against the definition.
        with pytest.raises(ValidationError) as unknown:
            client.start_workflow("hello", {"who": "x", "whom": "y"})
        assert (unknown.value.field, unknown.value.code) == ("inputs.whom", "validation_failed")
        assert "who" in unknown.value.message, "it says which inputs the workflow takes"
        with pytest.raises(ValidationError) as missing:
            client.start_workflow("hello")
        assert missing.value.field == "inputs.who"
        with pytest.raises(NotFoundError):
            client.start_workflow("nobody")
        # The bridge's own, before anything is sent.
        with pytest.raises(ValidationError) as bad:
            client.start_workflow("Not A Name")
        assert bad.value.field == "workflow"
        with pytest.raises(ValidationError) as bad:
            client.start_workflow("hello", ["who"])  # type: ignore[arg-type]
        assert bad.value.field == "inputs"
        with pytest.raises(ValidationError) as bad:
            client.start_workflow("hello", {"who": object()})
        assert bad.value.field == "inputs.who"
        with pytest.raises(ValidationError) as bad:
            client.execution("not-a-uuid")
        assert bad.value.field == "id"
        with pytest.raises(ValidationError) as bad:
            client.executions(limit=0)
        assert bad.value.field == "limit"
        with pytest.raises(NotFoundError):
            client.execution(uuid.uuid4())
        with pytest.raises(NotFoundError):
            client.cancel_execution(str(uuid.uuid4()))
        # The same refusal from the orchestrator itself (its error reply headers), sent raw.
        with pytest.raises(ValidationError) as remote:
            client.request("workflow", "get", {"id": "not-a-uuid"})
        assert remote.value.field == "id"
        with pytest.raises(ValidationError) as remote:
            client.request("workflow", "run", {"workflow": "hello", "inputs": 3})
        assert remote.value.field == "inputs"


def test_workflow_events_are_typed_from_any_event():
    """``WorkflowEvent.from_event`` types workflow events, leaves others alone, and refuses data
    that does not have the protocol's shape (no servers needed)."""
    assert set(orch_bridge._core.WORKFLOW_EVENT_KINDS) == {
        "started", "step_started", "step_succeeded", "step_retrying", "step_failed", "step_skipped",
        "compensation_started", "succeeded", "failed", "cancelled",
    }  # fmt: skip

    def event(type_, data):
        return SimpleNamespace(type=type_, data=data, id="e1", time=None, principal="nats:x")

    assert WorkflowEvent.from_event(event("io.orch.lifecycle.crashed.v1", {"service": "db"})) is None
    retrying = WorkflowEvent.from_event(event("io.orch.workflow.step_retrying.v1", {
        "execution_id": "x", "workflow": "w", "version": 2, "status": "running", "step": "call",
        "attempt": 1, "error": "timeout", "next_at": "2026-12-04T05:20:00Z",
    }))  # fmt: skip
    assert retrying is not None and (retrying.kind, retrying.step, retrying.attempt) == ("step_retrying", "call", 1)
    assert retrying.next_at == datetime(2026, 12, 4, 5, 20, tzinfo=timezone.utc) and not retrying.ended
    with pytest.raises(OrchError) as bad:
        WorkflowEvent.from_event(event("io.orch.workflow.failed.v1", {"workflow": "w"}))
    assert bad.value.code == "bad_reply"


def test_the_async_client_runs_workflows(stack):
    put_workflow(stack, "deploy", DEPLOY)

    async def main():
        async with await AsyncClient.connect(stack.url) as client:
            execution = await client.start_workflow("deploy")
            while (await client.execution(execution.id)).steps["ask"].status != "running":
                await asyncio.sleep(0.05)  # polling the state, with a deadline below
            decided = await client.signal_execution(execution.id, "ask", "approve")
            assert decided.steps["ask"].status == "succeeded"
            while not (await client.execution(execution.id)).ended:
                await asyncio.sleep(0.05)
            assert [e.status for e in await client.executions("deploy", 10)] == ["succeeded"]
            assert await client.schedules() == []
            assert {q.queue for q in await client.queues()} == {"default"}
            other = await client.start_workflow("deploy")
            assert (await client.cancel_execution(other.id)).status == "cancelled"
            with pytest.raises(ValidationError) as bad:
                await client.start_workflow("deploy", {"nope": 1})
            assert bad.value.field == "inputs.nope"
        async with await AsyncClient.connect(stack.user_url("engine"), timeout=10) as engine:
            with pytest.raises(PermissionDenied):
                await engine.cancel_execution(execution.id)

    asyncio.run(asyncio.wait_for(main(), 60))
