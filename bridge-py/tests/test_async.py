"""The asyncio client: the same surface as the blocking one, on the event loop."""

from __future__ import annotations

import asyncio

import pytest

import orch_bridge
from orch_bridge import AsyncClient, ConflictError, GuardrailRefused, NotFoundError, OrchConnectionError, RateLimited
from orch_bridge import OrchTimeoutError, ValidationError

from harness import free_port, sleeper


def run(coroutine, timeout=60):
    return asyncio.run(asyncio.wait_for(coroutine, timeout))


async def take(events, count, where=lambda e: True, timeout=20):
    async def collect():
        found = []
        async for event in events:
            if where(event):
                found.append(event)
                if len(found) == count:
                    return found

    return await asyncio.wait_for(collect(), timeout)


def test_priorities_and_their_events(make_stack):
    stack = make_stack("--priority-rate-limit", "2")

    async def main():
        async with await AsyncClient.connect(stack.url) as client:
            async with await client.events("orch.evt.priority.>") as events:
                change = await client.set_priority("api", 75, reason="latency", source="engine:async")
                assert (change.outcome, change.effective) == ("applied", 75)
                (event,) = await take(events, 1)
                assert isinstance(event, orch_bridge.Event)
                assert (event.id, event.type) == (change.change.id, "io.orch.priority.applied.v1")
                assert event.data["source"] == "engine:async"

                # The loop stays free while requests are in flight: many at once.
                values = [await client.set_priority(f"s{i}", 60, reason="fan out") for i in range(3)]
                replies = await asyncio.gather(*(client.get_priority(f"s{i}") for i in range(3)))
                assert [r.priority.effective for r in replies] == [v.effective for v in values] == [60] * 3
                seen = await take(events, 3)
                assert sorted(e.service for e in seen) == ["s0", "s1", "s2"]

            await client.set_priority_policy("api", min=80, reason="floor", source="operator:ops")
            assert (await client.get_priority("api")).priority.effective == 80
            clamped = await client.set_priority("api", 10, reason="quiet")  # api's second change
            assert (clamped.outcome, clamped.effective) == ("clamped", 80)
            with pytest.raises(RateLimited):
                await client.set_priority("api", 10, reason="too often")
            await client.set_priority_policy("pinned", pinned=True, reason="hands off")
            with pytest.raises(GuardrailRefused):
                await client.set_priority("pinned", 10, reason="try")
            cleared = await client.clear_priority("s0", reason="done")
            assert cleared.effective == 50
            listed = await client.list_priorities()
            assert listed.by_service()["s1"].effective == 60 and not listed.guard.holding
            released = await client.release_hold(reason="nothing held")
            assert released.changes == []

    run(main())


def test_services_restart_and_errors(stack):
    stack.register("api-1", "api")
    stack.apply(sleeper("worker"))
    stack.wait_states({"worker": "ready"})

    async def main():
        with pytest.raises(OrchConnectionError):
            await AsyncClient.connect(f"nats://127.0.0.1:{free_port()}", timeout=1)
        client = await AsyncClient.connect(stack.url)
        page = await client.list_services(name="api")
        assert [i.id for i in page.items] == ["api-1"]
        assert [i.id for i in await client.instances(name="api")] == ["api-1"]
        service = await client.get_service("api")
        assert service.health.service == "api"
        assert (await client.service_health("api")).counts
        assert (await client.restart("worker")).restarting
        alone = await client.cluster_status()
        assert isinstance(alone, orch_bridge.ClusterStatus)
        assert (alone.mode, alone.answered_by, alone.leader, alone.replicas) == ("single", None, None, [])
        with pytest.raises(NotFoundError):
            await client.restart("ghost")
        with pytest.raises(ValidationError) as bad:
            await client.set_priority("api", -1, reason="below")
        assert bad.value.field == "value"
        with stack.orchestrator.frozen():  # it cannot answer
            with pytest.raises(OrchTimeoutError):
                await client.list_services(timeout=0.5)
        (await client.events("orch.evt.health.>", durable="async-engine")).stream.close()
        with pytest.raises(ConflictError):
            await client.events("orch.evt.lifecycle.>", durable="async-engine")
        assert await client.delete_durable("async-engine")
        assert await client.request("priority", "list")
        await client.close()
        assert client.closed
        with pytest.raises(OrchConnectionError):
            await client.list_priorities()

    run(main())


def test_durable_async_stream_resumes_where_acks_ended(stack):
    async def main():
        client = await AsyncClient.connect(stack.url)
        # A short ack wait (5 s): an event the server was delivering when the first stream closed cannot
        # be handed back and comes again only after it (the rest are handed back at once).
        events = await client.events("orch.evt.priority.>", durable="resumer", deliver="all", ack_wait=5.0)
        for i in range(4):
            await client.set_priority(f"d{i}", 70, reason="mark")
        first = await take(events, 2)
        for event in first:
            assert event.ackable
            event.ack()
        await events.close()
        again = await client.events("orch.evt.priority.>", durable="resumer", ack_wait=5.0)
        rest = await take(again, 2)
        assert [e.service for e in first] == ["d0", "d1"]
        # Handed back unacknowledged at close: redelivered (JetStream does not promise the order).
        assert sorted(e.service for e in rest) == ["d2", "d3"]
        for event in rest:
            event.ack()
        await again.close()
        await client.close()

    run(main())
