"""Nodes from the bridge (protocol.md §17) against a real nats-server and orchestrator: the
embedded agent's node as the inventory lists it, one node by name and the typed errors, the
typed events of a node joining and going down, a service lost with its node, and a service
preempted by one of higher priority; with the sync and the asyncio client."""

from __future__ import annotations

import asyncio
from datetime import datetime
from types import SimpleNamespace

import pytest

import orch_bridge
from orch_bridge import (
    Allocation,
    AsyncClient,
    Client,
    Node,
    NodeEvent,
    NotFoundError,
    OrchError,
    Resources,
    ServiceLost,
    ServicePreempted,
    ValidationError,
    resource_event,
)

from harness import SLEEPER, Agent, eventually, typed_events

# The embedded agent's node (`serve --node`, `local` by default) with a capacity of its own, so
# that what the inventory shows does not depend on the machine the tests run on.
NODE_FLAGS = ("--node-cpu", "4000", "--node-memory", "8192", "--reserve-cpu", "500", "--reserve-memory", "512",
              "--label", "zone=a", "--label", "disk=ssd")  # fmt: skip


def portless(name: str, extra: str = "") -> str:
    """A manifest entry of an ``orch-sleeper`` service without a port (nodes on one machine
    share the ports), ready as soon as it runs."""
    return (
        f"\n[services.{name}]\n"
        f'command = "{SLEEPER}"\n'
        'args = ["--ready-after", "0ms"]\n'
        'grace_period = "2s"\n'
        f"{extra}\n"
    )


def ready_node(client, name: str) -> Node:
    """The node ``name`` once the inventory lists it ready."""
    return eventually(
        lambda: next((n for n in client.nodes() if n.name == name and n.ready), None),
        f"node {name} is listed ready",
    )


def test_the_embedded_agents_node_is_listed_and_its_joining_arrives_typed(make_stack):
    stack = make_stack(*NODE_FLAGS)
    # The shipped engine user may read the inventory (protocol.md §17.3).
    with Client.connect(stack.user_url("engine"), timeout=10) as client:
        local = ready_node(client, "local")
        assert isinstance(local, Node)
        assert (local.status, local.ready) == ("ready", True)
        assert local.capacity == Resources(4000, 8192)
        assert local.reserved == Resources(500, 512)
        assert local.allocatable == Resources(3500, 7680)
        assert (local.allocated, local.free) == (Resources(0, 0), Resources(3500, 7680)), "nothing runs there yet"
        assert local.allocations == [] and local.services == []
        assert local.labels == {"zone": "a", "disk": "ssd"}
        assert local.enforcement in ("cgroup_v2", "cgroup_v1", "unlimited", "none")
        assert 0.0 <= local.cpu_used <= 1.0 and 0.0 <= local.memory_used <= 1.0
        assert local.agent_version == orch_bridge.__version__, "the agent and the bridge come from one workspace"
        for at in (local.since, local.last_seen, local.agent_started):
            assert isinstance(at, datetime) and at.tzinfo is not None
        assert local.since <= local.last_seen
        assert local.raw["name"] == "local"

        one = client.node("local")
        assert (one.name, one.status, one.capacity, one.labels) == ("local", "ready", local.capacity, local.labels)
        assert one.last_seen >= local.last_seen

        # A node that never reported; a name that is no node name (the bridge's check, then the
        # orchestrator's own, sent raw).
        with pytest.raises(NotFoundError) as missing:
            client.node("n9")
        assert (missing.value.code, missing.value.field) == ("not_found", "name")
        assert "n9" in missing.value.message
        with pytest.raises(ValidationError) as bad:
            client.node("Not A Node")
        assert bad.value.field == "name"
        with pytest.raises(ValidationError) as remote:
            client.request("resource", "node", {"name": "Not A Node"})
        assert remote.value.field == "name"

        # The node joined with the agent's first report: its event is in the stream.
        with client.events("orch.evt.resource.>", deliver="all") as stream:
            (joined,) = typed_events(stream, resource_event, lambda found: found, "the node_joined event of local")
        assert isinstance(joined, NodeEvent)
        assert (joined.kind, joined.node, joined.status, joined.ready) == ("node_joined", "local", "ready", True)
        assert joined.reason == "first report"
        assert (joined.capacity, joined.labels, joined.services) == (local.capacity, local.labels, [])
        assert joined.last_seen <= local.last_seen
        assert joined.id and joined.time is not None and joined.principal == "orchestrator"

    async def main():
        async with await AsyncClient.connect(stack.user_url("observer"), timeout=10) as client:
            (listed,) = await client.nodes()
            assert (listed.name, listed.status, listed.allocatable) == ("local", "ready", Resources(3500, 7680))
            assert (await client.node("local")).labels == {"zone": "a", "disk": "ssd"}
            with pytest.raises(NotFoundError):
                await client.node("n9")

    asyncio.run(asyncio.wait_for(main(), 60))


def test_a_service_placed_on_the_node_is_allocated_there_and_one_of_higher_priority_preempts_it(make_stack):
    stack = make_stack("--node-cpu", "1000", "--node-memory", "4096", "--reserve-cpu", "0", "--reserve-memory", "0",
                       "--node-heartbeat", "200ms")  # fmt: skip
    with Client.connect(stack.url) as client:
        ready_node(client, "local")
        low = portless("batch", "priority = 10\nresources = { cpu = 600, memory = 64 }")
        stack.apply(low)
        batch = stack.wait_states({"batch": "ready"})["batch"]
        assert batch["node"] == "local" and batch["placement"].startswith("placed on local"), batch

        # The agent reports the process; what is allocated and free adds up from its allocations.
        local = eventually(
            lambda: next((n for n in client.nodes() if n.name == "local" and n.services == ["batch"]), None),
            "the node reports batch",
        )
        (allocation,) = local.allocations
        assert isinstance(allocation, Allocation) and isinstance(allocation.resources, Resources)
        assert (allocation.service, allocation.pid) == ("batch", batch["pid"])
        assert local.allocated == allocation.resources
        assert local.free == Resources(1000 - local.allocated.cpu, 4096 - local.allocated.memory)

        # api (priority 90) does not fit beside batch (priority 10): batch is stopped for it.
        with client.events("orch.evt.resource.>") as stream:
            stack.apply(low + portless("api", "priority = 90\nresources = { cpu = 600 }"))
            found = typed_events(stream, resource_event, lambda f: any(isinstance(e, ServicePreempted) for e in f), "the preemption")
        (preempted,) = [e for e in found if isinstance(e, ServicePreempted)]
        assert (preempted.service, preempted.priority) == ("batch", 10)
        assert (preempted.by, preempted.by_priority, preempted.node) == ("api", 90, "local")
        assert "batch" in preempted.reason and preempted.budget_left >= 0
        assert preempted.id and preempted.time is not None

        services = stack.wait_states({"api": "ready", "batch": "pending"})
        assert services["api"]["node"] == "local"
        waiting = services["batch"]
        assert waiting.get("node") is None, f"a service that waits for a node has none: {waiting}"
        assert waiting["placement"].startswith("pending: no node fits"), waiting
        assert waiting["reason"].startswith("waiting for a node"), waiting
        eventually(
            lambda: client.node("local").services == ["api"],
            "the node reports api alone",
        )


def test_a_node_whose_agent_stops_goes_down_and_its_replicas_are_lost(make_stack):
    stack = make_stack("--node-down-after", "1s", "--node-heartbeat", "100ms", nodes=["n2"])
    agent = Agent(stack, "n2", cpu=2000, memory=2048, labels=["zone=b"])
    try:
        with Client.connect(stack.url) as client:
            n2 = ready_node(client, "n2")
            assert (n2.capacity, n2.labels) == (Resources(2000, 2048), {"zone": "b"})
            stack.apply(portless("batch", 'count = 2\nconstraints = ["zone == b"]'))
            services = stack.wait_states({"batch-0": "ready", "batch-1": "ready"})
            for name in ("batch-0", "batch-1"):
                assert (services[name]["node"], services[name]["replica_of"]) == ("n2", "batch"), services[name]
            pids = {name: services[name]["pid"] for name in ("batch-0", "batch-1")}
            eventually(lambda: sorted(client.node("n2").services) == ["batch-0", "batch-1"], "n2 reports both")

            with client.events("orch.evt.resource.>") as stream:
                agent.kill()

                def complete(found):
                    lost = {e.service for e in found if isinstance(e, ServiceLost)}
                    return lost == {"batch-0", "batch-1"} and any(isinstance(e, NodeEvent) for e in found)

                found = typed_events(stream, resource_event, complete, "n2 down and its replicas lost")
            (down,) = [e for e in found if isinstance(e, NodeEvent)]
            assert (down.kind, down.node, down.status, down.ready) == ("node_down", "n2", "down", False)
            assert down.reason.startswith("silent for") and "node-down time 1s" in down.reason, down.reason
            assert sorted(down.services) == ["batch-0", "batch-1"], "what its last report named"
            for lost in (e for e in found if isinstance(e, ServiceLost)):
                assert (lost.replica_of, lost.node, lost.pid) == ("batch", "n2", pids[lost.service]), lost
                assert lost.reason

            assert client.node("n2").status == "down"
            # No other node has the label: the replicas wait, with no node, saying why.
            services = stack.wait_states({"batch-0": "pending", "batch-1": "pending"})
            for name in ("batch-0", "batch-1"):
                assert services[name].get("node") is None, services[name]
                assert "zone == b" in services[name]["placement"], services[name]
    finally:
        agent.close()


def test_resource_events_are_typed_from_any_event():
    """``NodeEvent``, ``ServiceLost`` and ``ServicePreempted`` type their events, leave others
    alone, and refuse data that does not have the protocol's shape (no servers needed)."""
    assert orch_bridge._core.NODE_EVENT_KINDS == ("node_joined", "node_down", "node_up")

    def event(type_, data):
        return SimpleNamespace(type=type_, data=data, id="e1", time=None, principal="orchestrator")

    up = NodeEvent.from_event(event("io.orch.resource.node_up.v1", {
        "node": "n2", "status": "ready", "reason": "reported again", "last_seen": "2026-12-04T12:00:00Z",
        "capacity": {"cpu": 2000, "memory": 1024}, "labels": {"zone": "b"}, "services": ["api-1"],
    }))  # fmt: skip
    assert up is not None and (up.kind, up.node, up.ready, up.services) == ("node_up", "n2", True, ["api-1"])
    assert up.capacity == Resources(2000, 1024) and up.capacity.fits(Resources(500, 1024))

    lost = resource_event(event("io.orch.resource.lost.v1", {
        "service": "api-1", "replica_of": "api", "node": "n3", "pid": 4242, "reason": "n3 went down",
    }))  # fmt: skip
    assert lost == ServiceLost("api-1", "api", "n3", 4242, "n3 went down", "e1", None, "orchestrator")
    alone = ServiceLost.from_event(event("io.orch.resource.lost.v1", {"service": "db", "node": "n3", "reason": "x"}))
    assert alone is not None and (alone.replica_of, alone.pid) == (None, None)

    preempted = resource_event(event("io.orch.resource.preempted.v1", {
        "service": "batch", "priority": 10, "by": "api", "by_priority": 90, "node": "n2",
        "reason": "batch (10) stopped for api (90)", "budget_left": 4,
    }))  # fmt: skip
    assert isinstance(preempted, ServicePreempted) and (preempted.by, preempted.budget_left) == ("api", 4)

    # Other events, node pressure included, are no typed resource event; each class takes only
    # its own kind.
    for other in (
        event("io.orch.lifecycle.crashed.v1", {"service": "db"}),
        event("io.orch.resource.pressure_high.v1", {"node": "local"}),
        event("io.orch.workflow.started.v1", {"workflow": "w"}),
    ):
        assert resource_event(other) is None
    assert ServiceLost.from_event(event("io.orch.resource.node_down.v1", {})) is None
    assert NodeEvent.from_event(event("io.orch.resource.lost.v1", {})) is None

    for type_, data in (
        ("io.orch.resource.node_down.v1", {"node": "n2"}),
        ("io.orch.resource.lost.v1", {"node": "n2"}),
        ("io.orch.resource.preempted.v1", {"service": "batch"}),
    ):
        with pytest.raises(OrchError) as bad:
            resource_event(event(type_, data))
        assert bad.value.code == "bad_reply"
    with pytest.raises(OrchError) as bad:
        Node.list_from_json({"nodes": [{"name": "n2"}]})
    assert bad.value.code == "bad_reply"
