"""Rolling updates from the bridge against a real nats-server and orchestrator: a changed service
with an ``update`` block has its replicas replaced one at a time, and the bridge receives the
update's events typed (``RolloutEvent``), started, progressed and completed; with the asyncio
client, a version that crashes fails its update, and the last good version is applied again."""

from __future__ import annotations

import asyncio
from datetime import datetime
from types import SimpleNamespace

import pytest

import orch_bridge
from orch_bridge import AsyncClient, Client, OrchError, RolloutEvent

from harness import SLEEPER, eventually, typed_events


def api(version: str, min_healthy_time: str, healthy_deadline: str = "2m", args: str = "") -> str:
    """Two replicas of an ``orch-sleeper`` service without a port, ready as soon as they run,
    replaced one at a time; ``version`` changes their environment, so each is a changed service."""
    return (
        "\n[services.api]\n"
        f'command = "{SLEEPER}"\n'
        f'args = ["--ready-after", "0ms"{args}]\n'
        'grace_period = "2s"\n'
        "count = 2\n"
        f'env = {{ VERSION = "{version}" }}\n'
        f'update = {{ max_parallel = 1, min_healthy_time = "{min_healthy_time}", healthy_deadline = "{healthy_deadline}" }}\n'
    )


def test_a_changed_service_is_rolled_out_a_replica_at_a_time_with_typed_events(stack):
    first = stack.apply(api("1", "1s"))
    stack.wait_states({"api-0": "ready", "api-1": "ready"})
    with Client.connect(stack.url) as client:
        with client.events("orch.evt.lifecycle.>") as stream:
            second = stack.apply(api("2", "1s"))
            assert second["rolling"] == ["api-0", "api-1"], second
            found = typed_events(
                stream, RolloutEvent.from_event, lambda f: any(e.phase == "completed" for e in f), "the update completes", timeout=60.0
            )
    assert [e.phase for e in found] == ["started", "progressed", "completed"], found
    started, progressed, completed = found
    for e in found:
        assert isinstance(e, RolloutEvent)
        assert (e.service, e.version, e.from_version) == ("api", second["version"], first["version"])
        assert (e.revert_to, e.max_parallel, e.total, e.reason) == (first["version"], 1, 2, None), e
        assert e.kind == f"rollout_{e.phase}" and e.ended == (e.phase == "completed")
        assert isinstance(e.started_at, datetime) and e.started_at.tzinfo is not None
        assert e.started_at == started.started_at, "one update"
        assert e.id and e.time is not None
    assert len({e.id for e in found}) == 3
    # Nothing replaced yet when it starts; then one replica at a time, in order.
    assert (started.replaced, started.batch, started.remaining) == ([], [], ["api-0", "api-1"])
    assert (progressed.replaced, progressed.batch, progressed.remaining) == (["api-0"], ["api-1"], [])
    assert (completed.replaced, completed.batch, completed.remaining) == (["api-0", "api-1"], [], [])
    assert "rollouts" not in stack.http("GET", "/api/v1/stack")[1], "none in progress"


def test_a_crashing_version_fails_its_update_and_the_good_one_is_applied_again(stack):
    good = stack.apply(api("1", "1s"))
    stack.wait_states({"api-0": "ready", "api-1": "ready"})

    async def main():
        async with await AsyncClient.connect(stack.url, timeout=10) as client:
            async with await client.events("orch.evt.lifecycle.>") as events:
                # Version 2 crashes shortly after it starts, well within its minimum healthy time.
                bad = stack.apply(api("2", "1h", "2h", ', "--exit-after", "200ms", "--exit-code", "3"'))
                found = []
                async for event in events:
                    typed = RolloutEvent.from_event(event)
                    if typed is not None:
                        found.append(typed)
                    # The good version applied again, as a new version (an untyped event).
                    elif event.type == "io.orch.lifecycle.manifest_applied.v1" and event.data["version"] > bad["version"]:
                        return bad, found, event
        raise AssertionError("the stream ended")

    bad, found, reverted = asyncio.run(asyncio.wait_for(main(), 90))
    assert [(e.phase, e.version) for e in found] == [("started", bad["version"]), ("failed", bad["version"])], found
    failed = found[1]
    assert (failed.service, failed.from_version, failed.revert_to) == ("api", good["version"], good["version"])
    assert failed.ended and failed.kind == "rollout_failed"
    assert failed.reason is not None and failed.reason.startswith(f"api-0 crashed on version {bad['version']}"), failed
    assert (failed.replaced, failed.batch, failed.remaining) == ([], ["api-0"], ["api-1"]), "api-1 never touched"
    assert reverted.principal == "orchestrator"
    assert reverted.data["source"].startswith(f"auto-revert to version {good['version']}"), reverted.data

    def back():
        status, view = stack.http("GET", "/api/v1/stack")
        states = {s["name"]: s["state"] for s in view["services"]}
        return status == 200 and view["version"] == reverted.data["version"] and states == {"api-0": "ready", "api-1": "ready"}

    eventually(back, "api-0 runs the good version again")


def test_the_stack_shows_where_each_replica_runs_and_the_update_in_progress(stack):
    """``stack()`` types the applied stack: each replica with its node and placement, and a
    rolling update waiting out its minimum healthy time."""
    first = stack.apply(api("1", "1s"))
    stack.wait_states({"api-0": "ready", "api-1": "ready"})
    with Client.connect(stack.url) as client:
        old = client.stack().service("api-0").pid
        second = stack.apply(api("2", "1h", "2h"))

        def replacing():
            view = client.stack()
            api0 = view.service("api-0")
            return view if view.rollouts and api0.state == "ready" and api0.pid != old else None

        view = eventually(replacing, "api-0 replaced, waiting out its hour")
    assert view.version == second["version"] and view.desired == "up"
    (rollout,) = view.rollouts
    assert (rollout.service, rollout.version, rollout.from_version, rollout.revert_to) == (
        "api", second["version"], first["version"], first["version"],
    )  # fmt: skip
    assert (rollout.replaced, rollout.batch, rollout.remaining, rollout.total) == ([], ["api-0"], ["api-1"], 2)
    assert not rollout.failed
    replicas = view.replicas("api")
    assert [r.name for r in replicas] == ["api-0", "api-1"]
    for r in replicas:
        assert (r.service, r.replica_of, r.node, r.state) == ("api", "api", "local", "ready"), r
        assert r.placement is not None and r.placement.startswith("placed on local"), r
        assert r.pid is not None and r.since.tzinfo is not None
    with pytest.raises(KeyError):
        view.service("nope")


def test_rollout_events_are_typed_from_any_event():
    """``RolloutEvent`` types the four rollout events, leaves others alone, and refuses data that
    does not have the protocol's shape (no servers needed)."""
    assert orch_bridge._core.ROLLOUT_EVENT_KINDS == (
        "rollout_started", "rollout_progressed", "rollout_completed", "rollout_failed",
    )  # fmt: skip

    def event(type_, data):
        return SimpleNamespace(type=type_, data=data, id="e1", time=None, principal="orchestrator")

    data = {
        "service": "api", "version": 3, "from_version": 2, "revert_to": 2, "max_parallel": 1,
        "replaced": ["api-0"], "batch": ["api-1"], "remaining": ["api-2"], "started_at": "2026-12-04T12:00:00Z",
    }  # fmt: skip
    progressed = RolloutEvent.from_event(event("io.orch.lifecycle.rollout_progressed.v1", data))
    assert progressed is not None
    assert (progressed.phase, progressed.kind, progressed.service, progressed.version) == (
        "progressed", "rollout_progressed", "api", 3,
    )  # fmt: skip
    assert (progressed.from_version, progressed.revert_to, progressed.total, progressed.ended) == (2, 2, 3, False)
    assert (progressed.replaced, progressed.batch, progressed.remaining) == (["api-0"], ["api-1"], ["api-2"])
    assert progressed.started_at.isoformat() == "2026-12-04T12:00:00+00:00" and progressed.reason is None

    failed = RolloutEvent.from_event(
        event("io.orch.lifecycle.rollout_failed.v1", {**data, "revert_to": None, "reason": "api-1 crashed"})
    )
    assert failed is not None and (failed.phase, failed.ended, failed.revert_to) == ("failed", True, None)
    assert failed.reason == "api-1 crashed"

    for other in (
        event("io.orch.lifecycle.crashed.v1", {"service": "api-0"}),
        event("io.orch.lifecycle.manifest_applied.v1", {"version": 3}),
        event("io.orch.resource.preempted.v1", {"service": "api"}),
        event("io.orch.workflow.started.v1", {"workflow": "w"}),
    ):
        assert RolloutEvent.from_event(other) is None

    for bad in ({"service": "api"}, {**data, "started_at": "yesterday"}, {**data, "replaced": None}):
        with pytest.raises(OrchError) as refused:
            RolloutEvent.from_event(event("io.orch.lifecycle.rollout_started.v1", bad))
        assert refused.value.code == "bad_reply"
