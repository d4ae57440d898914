"""What priorities set from Python change in the orchestrator: the start-up order among ready
services, the order of recovery, and which services are shed under node pressure."""

from __future__ import annotations

import json
import os
import signal
import time

from orch_bridge import Client

from harness import eventually, sleeper

ALWAYS = 'restart = { policy = "always", backoff = "300ms" }'


def collect(stream, until, what, timeout=30.0):
    """Events of ``stream`` until ``until(events)`` holds."""
    events = []
    deadline = time.monotonic() + timeout
    while not until(events):
        left = deadline - time.monotonic()
        assert left > 0, f"not within {timeout}s: {what} (got {[(e.service, e.kind) for e in events]})"
        event = stream.next(timeout=left)
        if event is not None:
            events.append(event)
    return events


def starts(events, among):
    return [e.service for e in events if e.kind == "starting" and e.service in among]


def test_engine_priorities_order_start_up_and_recovery(stack):
    names = ("low", "mid", "high")
    manifest = "max_parallel = 1\n" + "".join(
        sleeper(name, f"priority = {p}\n{ALWAYS}", ready_after="300ms") for name, p in zip(names, (10, 50, 90))
    )
    with Client.connect(stack.url) as client:
        # Before the manifest exists: an operator baseline and an engine adjustment turn the
        # manifest's order around.
        client.set_priority_policy("low", baseline=95, reason="most important now", source="operator:ops")
        client.set_priority("high", 5, reason="least important now")
        with client.events("orch.evt.lifecycle.>") as events:
            stack.apply(manifest)
            seen = collect(events, lambda es: len(starts(es, names)) == 3, "three start-ups")
            assert starts(seen, names) == ["low", "mid", "high"]
        services = stack.wait_states({n: "ready" for n in names})
        assert services["low"]["priority"] == 95, "the API shows the effective priority"

        # Recovery: turn it around again and kill all three; after the first restart took the
        # only slot, the others follow the new priorities.
        client.set_priority("high", 99, reason="most important after all")
        client.set_priority_policy("low", baseline=1, reason="least important now", source="operator:ops")
        eventually(lambda: stack.services()["high"]["priority"] == 99, "the controller sees the new priority")
        with client.events("orch.evt.lifecycle.>") as events:
            for name in names:
                os.kill(services[name]["pid"], signal.SIGKILL)
            seen = collect(events, lambda es: len(starts(es, names)) == 3, "three restarts")
        order = starts(seen, names)
        priority = {"high": 99, "mid": 50, "low": 1}
        assert order[1:] == sorted(order[1:], key=lambda s: -priority[s]), order


def test_sheddable_services_are_shed_lowest_priority_first_and_restored(make_stack, tmp_path):
    pressure = tmp_path / "pressure.json"

    def write(memory):
        pressure.write_text(json.dumps({"cpu": 0.1, "memory": memory}))

    write(0.2)
    stack = make_stack(
        "--pressure-file", str(pressure), "--pressure-interval", "50ms", "--shed-memory", "0.9",
        "--shed-step", "200ms", "--shed-restore-after", "500ms",
    )  # fmt: skip
    manifest = (
        sleeper("s10", "priority = 10\nsheddable = true")
        + sleeper("s50", "priority = 50\nsheddable = true")
        + sleeper("s90", "priority = 90\nsheddable = true")
        + sleeper("keep", "priority = 1")
    )
    stack.apply(manifest)
    all_ready = {"s10": "ready", "s50": "ready", "s90": "ready", "keep": "ready"}
    stack.wait_states(all_ready)
    with Client.connect(stack.url) as client:
        # The engine lowers s90 below the others: it goes first.
        client.set_priority("s90", 5, reason="batch work, can wait")
        eventually(lambda: stack.services()["s90"]["priority"] == 5, "the controller sees the new priority")

        with client.events("orch.evt.>") as events:
            write(0.95)
            shed = collect(events, lambda es: sum(e.kind == "shed" for e in es) == 3, "three services shed")
            assert [e.data["service"] for e in shed if e.kind == "shed"] == ["s90", "s10", "s50"]
            first = next(e for e in shed if e.kind == "shed")
            assert first.type == "io.orch.lifecycle.shed.v1"
            assert "memory 95% >= 90%" in first.data["reason"]
            assert any(e.type == "io.orch.resource.pressure_high.v1" for e in shed)
            services = stack.wait_states({"s10": "stopped", "s50": "stopped", "s90": "stopped", "keep": "ready"})
            assert services["s10"]["reason"].startswith("shed:")

            write(0.2)
            back = collect(events, lambda es: sum(e.kind == "restored" for e in es) == 3, "three services restored")
            assert [e.data["service"] for e in back if e.kind == "restored"] == ["s50", "s10", "s90"]
        stack.wait_states(all_ready)
