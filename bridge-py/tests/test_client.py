"""The blocking client against a real nats-server and orchestrator: priorities and their
guardrails, events, services, restarts, the cluster's status, every exception kind, threads and
Ctrl-C."""

from __future__ import annotations

import signal
import threading
import time
from datetime import datetime, timedelta, timezone

import pytest

import orch_bridge
from orch_bridge import (
    Client,
    ConflictError,
    GuardrailRefused,
    NotFoundError,
    OrchConnectionError,
    OrchError,
    OrchTimeoutError,
    PermissionDenied,
    RateLimited,
    UnavailableError,
    ValidationError,
)

from harness import eventually, free_port, in_thread, sleeper


def take(stream, count, what, timeout=20.0, where=lambda e: True):
    """The next ``count`` events of ``stream`` that satisfy ``where``."""
    found = []
    deadline = time.monotonic() + timeout
    while len(found) < count:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"not within {timeout}s: {what} (got {[e.type for e in found]})")
        event = stream.next(timeout=left)
        if event is not None and where(event):
            found.append(event)
    return found


def test_set_priority_returns_what_was_applied_and_its_event_arrives_typed(stack):
    with Client.connect(stack.url) as client:
        with client.events("orch.evt.priority.>") as events:
            change = client.set_priority("api", 80, reason="error rate rising", source="engine:test", ttl=600)
            assert isinstance(change, orch_bridge.PriorityChange)
            assert (change.outcome, change.effective, change.held) == ("applied", 80, False)
            assert change.change.previous == 50 and change.change.requested == 80
            assert change.priority.adjustment.source == "engine:test"
            # Over NATS the principal is the NATS user the subject names (the client names its
            # URL's user, and NATS allows it no other); `source` is the caller's own words.
            principals = (change.change.principal, change.priority.adjustment.principal)
            assert principals == ("nats:operator", "nats:operator")
            assert change.change.count == 1, "a record of one request"
            counted = orch_bridge.Change.from_json({**change.change.raw, "outcome": "refused", "count": 7})
            assert counted.count == 7, "a counted refusal stands for its requests"
            assert change.priority.adjustment.expires_at > datetime.now(timezone.utc)

            (event,) = take(events, 1, "the priority event")
            assert isinstance(event, orch_bridge.Event)
            assert event.id == change.change.id, "the change's id is its event's id"
            assert event.type == "io.orch.priority.applied.v1"
            assert event.subject == "orch.evt.priority.api.applied"
            assert (event.domain, event.service, event.kind) == ("priority", "api", "applied")
            assert event.source == "/orchestrator"
            assert event.principal == "nats:operator"
            assert event.time.tzinfo is not None
            # The event's time is the change's, written to the microsecond.
            assert abs((event.time - change.change.at).total_seconds()) < 0.001
            assert isinstance(event.data, dict)
            assert (event.data["effective"], event.data["reason"]) == (80, "error rate rising")
            assert event.to_dict()["data"] == event.data
            assert not event.ackable

        detail = client.get_priority("api", history=5)
        assert detail.priority.effective == 80
        assert [c.id for c in detail.history] == [change.change.id]
        listed = client.list_priorities().by_service()
        assert listed["api"].effective == 80
        cleared = client.clear_priority("api", reason="calm again", source="engine:test")
        assert (cleared.change.action, cleared.effective) == ("clear", 50)
        assert client.get_priority("api").priority.adjustment is None


def test_guardrails_clamp_pin_and_rate_limit_and_every_change_is_audited(make_stack):
    stack = make_stack("--priority-rate-limit", "3")
    with Client.connect(stack.url) as client:
        capped = client.set_priority_policy("api", max=70, reason="cap", source="operator:ops")
        assert capped.priority.max == 70
        clamped = client.set_priority("api", 90, reason="hot")
        assert (clamped.outcome, clamped.change.requested, clamped.effective) == ("clamped", 90, 70)
        assert "bounds 0-70" in clamped.change.detail

        client.set_priority("web", 80, reason="hot")
        pinned = client.set_priority_policy("web", pinned=True, baseline=40, reason="hands off")
        assert (pinned.priority.pinned, pinned.effective) == (True, 40)
        with pytest.raises(GuardrailRefused) as refused:
            client.set_priority("web", 90, reason="hot")
        assert type(refused.value) is GuardrailRefused
        assert refused.value.code == "refused" and "pinned" in refused.value.message

        for value in (60, 65):
            client.set_priority("api", value, reason="steady")
        with pytest.raises(RateLimited) as limited:
            client.set_priority("api", 20, reason="again")
        assert limited.value.code == "rate_limited"
        assert limited.value.retry_after == 60.0, "the rate window: when the service may change again"
        assert refused.value.retry_after is None, "a pin says nothing of when to retry"
        assert isinstance(limited.value, GuardrailRefused), "a rate limit is a guardrail's refusal"

        history = client.get_priority("api", history=10).history
        assert [c.outcome for c in history] == ["refused", "applied", "applied", "clamped", "applied"]
        assert history[0].guardrail == "rate_limited"
        assert client.get_priority("web", history=10).history[0].guardrail == "pinned"

        outcomes = [e.kind for e in take(client.events("orch.evt.priority.>", deliver="all"), 8, "all changes")]
        assert outcomes.count("refused") == 2 and outcomes.count("clamped") == 1


def test_a_mass_change_is_held_until_released(make_stack):
    stack = make_stack("--priority-mass-min", "2", "--priority-mass-share", "0")
    with Client.connect(stack.url) as client:
        with client.events("orch.evt.system.>") as alarms:
            for service in ("a", "b"):
                assert client.set_priority(service, 80, reason="hot").outcome == "applied"
            held = client.set_priority("c", 90, reason="hot")
            assert (held.held, held.change.guardrail, held.effective) == (True, "mass_change", 50)
            (alarm,) = take(alarms, 1, "the hold alarm", where=lambda e: e.kind == "priority_hold_started")
            assert alarm.type == "io.orch.system.priority_hold_started.v1"
            assert client.list_priorities().guard.holding

            released = client.release_hold(reason="looked right", source="operator:ops")
            assert [(c.service, c.effective) for c in released.changes] == [("c", 90)]
            assert not released.guard.holding
            (ended,) = take(alarms, 1, "the end of the hold", where=lambda e: e.kind == "priority_hold_ended")
            assert ended.data["ended_by"] == "released by operator:ops"
        assert client.get_priority("c").priority.effective == 90


def test_holds_lapse_and_adjustments_expire(make_stack):
    stack = make_stack("--priority-mass-min", "1", "--priority-mass-share", "0", "--priority-mass-window", "1s")
    with Client.connect(stack.url) as client:
        with client.events("orch.evt.priority.>") as events:
            burst = client.set_priority("a", 90, reason="burst", ttl=0.5)
            assert burst.change.expires_at is not None
            assert client.set_priority("b", 70, reason="hot").outcome == "held"
            seen = take(events, 2, "expiry and drop", where=lambda e: e.kind in ("expired", "dropped"))
            assert sorted((e.service, e.kind) for e in seen) == [("a", "expired"), ("b", "dropped")]
            expired = next(e for e in seen if e.kind == "expired")
            assert (expired.data["previous"], expired.data["effective"]) == (90, 50)
        assert client.get_priority("a").priority.effective == 50
        assert client.get_priority("b").priority.effective == 50
        assert client.set_priority("b", 70, reason="hot").outcome == "applied", "the hold is over"


def test_services_their_health_and_a_restart(stack):
    stack.register("web-1", "web", tags=["blue"], version="1.2.0")
    stack.register("web-2", "web")
    stack.register("db-1", "db")
    with Client.connect(stack.url) as client:
        page = client.list_services(name="web")
        assert [i.id for i in page.items] == ["web-1", "web-2"] and page.next is None
        assert page.items[0].tags == ["blue"] and page.items[0].version == "1.2.0"
        assert page.items[0].registered_at.tzinfo is not None
        assert [i.id for i in client.list_services(limit=1).items] == ["db-1"]
        assert {i.id for i in client.instances()} == {"web-1", "web-2", "db-1"}
        assert [i.id for i in client.list_services(tags=["blue"]).items] == ["web-1"]

        health = eventually(lambda: client.service_health("web"), "web's health is tracked")
        assert health.service == "web" and len(health.instances) == 2
        service = client.get_service("web")
        assert service.name == "web" and [i.id for i in service.instances] == ["web-1", "web-2"]
        assert service.state == service.health.state
        with pytest.raises(NotFoundError):
            client.get_service("ghost")

        stack.apply(sleeper("worker"))
        pid = stack.wait_states({"worker": "ready"})["worker"]["pid"]
        with client.events("orch.evt.lifecycle.worker.>") as events:
            result = client.restart("worker")
            assert (result.service, result.restarting) == ("worker", True)
            take(events, 1, "worker ready again", where=lambda e: e.kind == "ready")
        assert stack.services()["worker"]["pid"] != pid
        with pytest.raises(NotFoundError) as missing:
            client.restart("ghost")
        assert missing.value.field == "service"


REPLICATED = {
    "mode": "replicated",
    "answered_by": "b",
    "leader": {"replica": "a", "term": 3, "since": "2026-12-04T05:00:00Z", "expires_at": "2026-12-04T05:00:05Z"},
    "replicas": [
        {"name": "a", "http_url": "http://10.0.0.1:8080", "version": "0.1.0", "role": "leader",
         "started_at": "2026-12-04T04:59:58Z", "seen_at": "2026-12-04T05:00:04Z"},
        {"name": "b", "http_url": "http://10.0.0.2:8080", "version": "0.1.0", "role": "standby",
         "started_at": "2026-12-04T04:59:59Z", "seen_at": "2026-12-04T05:00:04.250Z"},
        {"name": "c", "http_url": "http://10.0.0.3:8080", "version": "0.0.9", "role": "gone",
         "started_at": "2026-12-04T04:00:00Z", "seen_at": "2026-12-04T04:30:00Z"},
    ],
}  # fmt: skip


def test_cluster_status_of_an_orchestrator_alone_and_of_replicas(stack):
    with Client.connect(stack.url) as client:
        alone = client.cluster_status()
        assert isinstance(alone, orch_bridge.ClusterStatus)
        assert (alone.mode, alone.answered_by, alone.leader, alone.replicas) == ("single", None, None, [])
        assert alone.raw["mode"] == "single" and "answered_by" not in alone.raw, alone.raw
        # Alone, no replica ever claims a lease: no leadership events.
        with client.events("orch.evt.cluster.>", deliver="all") as events:
            assert events.next(timeout=0.5) is None

    # What a replica answers (protocol.md §15.2), typed.
    group = orch_bridge.ClusterStatus.from_json(REPLICATED)
    assert (group.mode, group.answered_by) == ("replicated", "b")
    leader = group.leader
    assert isinstance(leader, orch_bridge.Leader)
    assert (leader.replica, leader.term) == ("a", 3)
    assert leader.since == datetime(2026, 12, 4, 5, 0, 0, tzinfo=timezone.utc)
    assert leader.expires_at - leader.since == timedelta(seconds=5)
    assert all(isinstance(r, orch_bridge.Replica) for r in group.replicas)
    assert [(r.name, r.role) for r in group.replicas] == [("a", "leader"), ("b", "standby"), ("c", "gone")]
    standby = group.replicas[1]
    assert (standby.http_url, standby.version) == ("http://10.0.0.2:8080", "0.1.0")
    assert standby.seen_at == datetime(2026, 12, 4, 5, 0, 4, 250_000, tzinfo=timezone.utc)
    assert standby.started_at.tzinfo is not None
    assert group.raw is REPLICATED
    # During a failover no lease runs.
    assert orch_bridge.ClusterStatus.from_json({**REPLICATED, "leader": None}).leader is None
    # A reply the bridge cannot read says so.
    with pytest.raises(OrchError) as bad:
        orch_bridge.ClusterStatus.from_json({**REPLICATED, "leader": {"replica": "a", "term": 3}})
    assert bad.value.code == "bad_reply"
    with pytest.raises(OrchError) as bad:
        unreadable = {**REPLICATED["replicas"][0], "seen_at": "yesterday"}
        orch_bridge.ClusterStatus.from_json({**REPLICATED, "replicas": [unreadable]})
    assert bad.value.code == "bad_reply"


def test_every_exception_kind(private_cluster, make_stack):
    # Connection: nothing listens there.
    with pytest.raises(OrchConnectionError) as refused:
        Client.connect(f"nats://127.0.0.1:{free_port()}", timeout=1)
    assert isinstance(refused.value, ConnectionError) and isinstance(refused.value, OrchError)

    stack = make_stack(database_url=private_cluster.url)
    client = Client.connect(stack.url, timeout=10)

    # Validation, before anything is sent and by the orchestrator, naming the field.
    with pytest.raises(ValidationError) as bad:
        client.set_priority("api", 101, reason="too much")
    assert (bad.value.field, bad.value.code) == ("value", "validation_failed")
    assert isinstance(bad.value, ValueError)
    with pytest.raises(ValidationError) as bad:
        client.request("priority", "set", {"service": "api", "value": 1, "source": "e", "reason": "r", "colour": 1})
    assert bad.value.field == "colour"
    with pytest.raises(ValidationError) as bad:
        client.events("orch.cmd.>")
    assert bad.value.field == "subject"
    with pytest.raises(ValidationError):
        client.events(start_time=datetime.now())  # naive: ambiguous

    # Not found, and an unknown request.
    with pytest.raises(NotFoundError):
        client.service_health("ghost")
    with pytest.raises(NotFoundError) as unknown:
        client.request("priority", "explode")
    assert unknown.value.code == "unknown_command"

    # Conflict: a durable consumer that exists with another filter.
    client.events("orch.evt.health.>", durable="engine").close()
    with pytest.raises(ConflictError):
        client.events("orch.evt.priority.>", durable="engine")
    assert client.delete_durable("engine") and not client.delete_durable("engine")

    # Refused by a guardrail: test_guardrails_clamp_pin_and_rate_limit_and_every_change_is_audited.

    # Timeout: the orchestrator is frozen (SIGSTOP) and cannot answer.
    with stack.orchestrator.frozen():
        # Frozen, it never answers: only the timeout can end this call.
        with pytest.raises(OrchTimeoutError) as late:
            client.list_priorities(timeout=0.5)
        assert isinstance(late.value, TimeoutError) and late.value.code == "timeout"

    # Unavailable: PostgreSQL is down, so the change cannot be committed.
    private_cluster.stop()
    with pytest.raises(UnavailableError) as unavailable:
        client.set_priority("api", 70, reason="while the database is down")
    assert unavailable.value.code == "unavailable"
    private_cluster.start()
    eventually(lambda: _applied(client), "changes commit again once PostgreSQL is back", timeout=60, interval=0.5)

    # A closed client says so.
    client.close()
    with pytest.raises(OrchConnectionError) as closed:
        client.list_priorities()
    assert "closed" in closed.value.message


def _applied(client):
    try:
        return client.set_priority("api", 70, reason="database back").outcome == "applied"
    except UnavailableError:
        return False


def test_events_from_a_start_time(stack):
    with Client.connect(stack.url) as client:
        client.set_priority("early", 60, reason="before")
        # The event reaches the stream through the outbox relay, a moment after the commit: wait
        # until it is stored before taking the start time, so it lies before it however slow.
        with client.events("orch.evt.priority.>", deliver="all") as stored:
            take(stored, 1, "the earlier change is stored", where=lambda e: e.service == "early")
        time.sleep(0.05)
        since = datetime.now(timezone.utc)
        time.sleep(0.05)
        client.set_priority("late", 60, reason="after")
        with client.events("orch.evt.priority.>", start_time=since) as events:
            (event,) = take(events, 1, "the later change")
            assert event.service == "late"
            assert events.next(timeout=0.5) is None, "nothing before the start time"
        with client.events("orch.evt.priority.>", start_time=since - timedelta(minutes=5)) as events:
            assert [e.service for e in take(events, 2, "both changes")] == ["early", "late"]


def test_one_client_from_many_threads(stack):
    with Client.connect(stack.url) as client:
        errors, results = [], []
        lock = threading.Lock()
        with client.events("orch.evt.priority.>") as events:

            def work(n):
                try:
                    for i in range(5):
                        change = client.set_priority(f"svc-{n}-{i}", 60 + i, reason=f"thread {n}")
                        with lock:
                            results.append(change.change.id)
                except Exception as e:  # noqa: BLE001 - reported below
                    with lock:
                        errors.append(e)

            threads = [in_thread(lambda n=n: work(n)) for n in range(8)]
            for thread in threads:
                thread.join(60)
            assert not errors, errors
            assert len(set(results)) == 40
            received = {e.id for e in take(events, 40, "every change's event")}
            assert received == set(results)


@pytest.fixture
def sigint_raises():
    """Python raises KeyboardInterrupt on SIGINT only if SIGINT was not ignored when it started,
    and a shell ignores it for what it runs in the background without job control: the handler
    is installed for the test, whatever started the suite, and put back after it."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_ctrl_c_interrupts_a_blocking_wait(stack, sigint_raises):
    with Client.connect(stack.url) as client:
        with client.events("orch.evt.priority.nobody.>") as events:
            main = threading.main_thread().ident
            timer = threading.Timer(0.3, lambda: signal.pthread_kill(main, signal.SIGINT))
            timer.start()
            with pytest.raises(KeyboardInterrupt):
                events.next()  # waits forever without the signal
        # The client still works after the interruption.
        assert client.list_priorities().guard.holding is False


def test_the_shipped_nats_users_bound_what_a_client_may_do(stack):
    """The stack's NATS has the users of scripts/nats-auth.sh (as make dev and compose): no
    anonymous client; the engine may set priorities but not change an operator's policy."""
    with pytest.raises(OrchConnectionError):
        Client.connect(stack.nats.url, timeout=2)
    with Client.connect(stack.user_url("engine"), timeout=2) as engine:
        assert engine.set_priority("api", 70, reason="busy", source="engine:test").effective == 70
        # NATS refuses the publish and tells the connection asynchronously; the bridge raises it
        # at once (not after the timeout), and nothing reaches the orchestrator.
        with pytest.raises(PermissionDenied) as refused:
            engine.set_priority_policy("api", pinned=True, reason="not the engine's to pin")
        assert refused.value.code == "forbidden" and "priority.policy" in refused.value.message
    status, api = stack.http("GET", "/api/v1/priorities/api")
    assert status == 200 and api["priority"]["pinned"] is False, api
