"""Benchmarks of the Python bridge (``make bench``, parts ``bridge_events`` and
``priority_round_trip``), against a real nats-server, a private PostgreSQL (default durability)
and the orchestrator's release binary, all started here.

bridge_events
    The events stream is filled with N real-shaped CloudEvents (priority events, about 500 bytes
    each). Then a Python consumer reads all of them from the start as typed objects, touching
    each event's ``type``, ``time`` and ``data`` (so the dict is really built): once with
    orch_bridge, once with the pure-Python ``nats-py`` client doing the same work (a pull
    consumer, ``json.loads``, ``datetime.fromisoformat``, an object per event). Target: at
    least 100,000 events/s through orch_bridge.

priority_round_trip
    Python sets a priority and waits until the matching event (same id as the change) arrives
    back in Python on a live stream: p50/p99 over N changes, one at a time. Target: p99 under
    10 ms. The orchestrator runs with a rate limit high enough for one service to change N
    times (the guardrails still run on every change).

Figures are printed and written to target/bench/<part>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import sys
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from harness import ROOT, Cluster, Stack  # noqa: E402

import orch_bridge  # noqa: E402

RELEASE = ROOT / "target" / "release" / "orchestrator"
OUT = ROOT / "target" / "bench"
EVENTS_TARGET = 100_000.0
ROUND_TRIP_TARGET_MS = 10.0


def write_json(name: str, figures: dict) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    figures = dict(figures, benchmark=name, recorded_at=datetime.now(timezone.utc).isoformat(), cores=os.cpu_count())
    (OUT / f"{name}.json").write_text(json.dumps(figures, indent=2))


def percentile(sorted_values, q):
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# -- bridge_events -------------------------------------------------------------------------------


def sample_event(i: int) -> bytes:
    service = f"svc-{i % 1000}"
    return json.dumps(
        {
            "specversion": "1.0",
            "id": str(uuid.uuid4()),
            "type": "io.orch.priority.applied.v1",
            "source": "/orchestrator",
            "subject": service,
            "time": "2026-11-23T09:18:57.102486062Z",
            "datacontenttype": "application/json",
            "data": {
                "id": str(uuid.uuid4()),
                "service": service,
                "action": "set",
                "outcome": "applied",
                "requested": 70 + i % 30,
                "previous": 50,
                "effective": 70 + i % 30,
                "source": "engine:bench",
                "reason": "error rate above 2% for 5 minutes on 3 of 4 instances",
                "expires_at": "2026-11-23T09:23:57.102486062Z",
                "at": "2026-11-23T09:18:57.102486062Z",
            },
        }
    ).encode()


async def fill(url: str, count: int) -> None:
    """Publishes ``count`` events into the events stream (core publish, JetStream stores them;
    a flush every few thousand keeps the server's buffers in bounds)."""
    import nats

    nc = await nats.connect(url)
    js = nc.jetstream()
    payloads = [sample_event(i) for i in range(1000)]
    started = time.monotonic()
    for i in range(count):
        await nc.publish(f"orch.evt.priority.svc-{i % 1000}.applied", payloads[i % 1000])
        if i % 5000 == 4999:
            await nc.flush()
        if i % 100_000 == 99_999:
            print(f"  filled {i + 1:,} events ({time.monotonic() - started:.0f}s)", flush=True)
    await nc.flush()
    deadline = time.monotonic() + 120
    while (await js.stream_info("ORCH_EVENTS")).state.messages < count:
        if time.monotonic() > deadline:
            raise RuntimeError("the events stream did not store every event within 120s")
        await asyncio.sleep(0.1)
    await nc.close()


def consume_bridge(url: str, count: int, durable: Optional[str] = None) -> dict:
    """Live (ordered consumer) or, with ``durable``, through a durable consumer acking each event."""
    client = orch_bridge.Client.connect(url)
    cpu0, t0 = cpu_seconds(), time.perf_counter()
    seen = 0
    checksum = 0
    with client.events("orch.evt.priority.>", durable=durable, deliver="all", batch=4096) as events:
        while seen < count:
            for event in events.next_batch(4096, timeout=30):
                checksum += len(event.type) + event.time.microsecond + event.data["effective"]
                if durable:
                    event.ack()
                seen += 1
    elapsed, cpu = time.perf_counter() - t0, cpu_seconds() - cpu0
    client.close()
    return {"events": seen, "seconds": elapsed, "per_second": seen / elapsed, "cpu_seconds": cpu, "checksum": checksum}


class PyEvent:
    """What the nats-py baseline builds per event: the same typed object, in Python."""

    __slots__ = ("id", "type", "subject", "source", "time", "data")

    def __init__(self, subject: str, envelope: dict) -> None:
        self.id = envelope["id"]
        self.type = envelope["type"]
        self.subject = subject
        self.source = envelope["source"]
        # fromisoformat (3.11) takes at most microseconds: cut the nanoseconds.
        text = envelope["time"]
        self.time = datetime.fromisoformat(text[:26] + "+00:00")
        self.data = envelope.get("data")


async def consume_nats_py(url: str, count: int) -> dict:
    import nats
    from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

    nc = await nats.connect(url)
    js = nc.jetstream()
    config = ConsumerConfig(ack_policy=AckPolicy.NONE, deliver_policy=DeliverPolicy.ALL, max_ack_pending=-1)
    sub = await js.pull_subscribe("orch.evt.priority.>", stream="ORCH_EVENTS", config=config)
    cpu0, t0 = cpu_seconds(), time.perf_counter()
    seen = 0
    checksum = 0
    while seen < count:
        for msg in await sub.fetch(4096, timeout=30):
            event = PyEvent(msg.subject, json.loads(msg.data))
            checksum += len(event.type) + event.time.microsecond + event.data["effective"]
            seen += 1
    elapsed, cpu = time.perf_counter() - t0, cpu_seconds() - cpu0
    await nc.close()
    return {"events": seen, "seconds": elapsed, "per_second": seen / elapsed, "cpu_seconds": cpu, "checksum": checksum}


def bridge_events(stack: Stack, count: int) -> None:
    print(f"bridge_events: filling the events stream with {count:,} events", flush=True)
    # The events are the orchestrator's to publish; an engine reads them.
    asyncio.run(fill(stack.user_url("orchestrator"), count))
    engine = stack.user_url("engine")
    baseline = asyncio.run(consume_nats_py(engine, count))
    bridge = consume_bridge(engine, count)
    durable = consume_bridge(engine, count, durable="bench")
    assert bridge["checksum"] == baseline["checksum"] == durable["checksum"], "every consumer saw the same events"
    ratio = bridge["per_second"] / baseline["per_second"]
    met = bridge["per_second"] >= EVENTS_TARGET
    print(
        f"bridge_events   orch_bridge: {bridge['per_second']:,.0f} events/s as typed objects "
        f"({bridge['events']:,} in {bridge['seconds']:.2f}s, Python process CPU {bridge['cpu_seconds']:.2f}s)\n"
        f"                orch_bridge, durable consumer acking each event: {durable['per_second']:,.0f} events/s "
        f"(CPU {durable['cpu_seconds']:.2f}s)\n"
        f"                nats-py baseline: {baseline['per_second']:,.0f} events/s "
        f"({baseline['events']:,} in {baseline['seconds']:.2f}s, CPU {baseline['cpu_seconds']:.2f}s)\n"
        f"                speed-up {ratio:.1f}x; target >= {EVENTS_TARGET:,.0f} events/s: {'met' if met else 'NOT met'}",
        flush=True,
    )
    write_json(
        "bridge_events",
        {"events": count, "orch_bridge": bridge, "orch_bridge_durable": durable, "nats_py": baseline, "speedup": ratio, "target_met": met},
    )


# -- priority_round_trip -------------------------------------------------------------------------


def priority_round_trip(stack: Stack, count: int) -> None:
    client = orch_bridge.Client.connect(stack.user_url("engine"))
    round_trips, replies = [], []
    with client.events("orch.evt.priority.bench.>") as events:
        for i in range(-50, count):  # the first 50 warm up, unmeasured
            t0 = time.perf_counter()
            change = client.set_priority("bench", 40 + (i % 2) * 20, reason="round trip", source="engine:bench")
            t1 = time.perf_counter()
            while True:
                event = events.next(timeout=10)
                if event is None:
                    raise RuntimeError(f"no event for change {change.change.id} within 10s")
                if event.id == change.change.id:
                    break
            t2 = time.perf_counter()
            if i >= 0:
                replies.append((t1 - t0) * 1000)
                round_trips.append((t2 - t0) * 1000)
    client.close()
    round_trips.sort()
    replies.sort()
    p50, p99 = percentile(round_trips, 0.50), percentile(round_trips, 0.99)
    met = p99 < ROUND_TRIP_TARGET_MS
    print(
        f"priority_round_trip  set_priority to its event back in Python, {count:,} changes: "
        f"p50 {p50:.2f} ms, p99 {p99:.2f} ms, max {round_trips[-1]:.2f} ms, mean {statistics.mean(round_trips):.2f} ms\n"
        f"                     of which the reply (committed): p50 {percentile(replies, 0.5):.2f} ms, "
        f"p99 {percentile(replies, 0.99):.2f} ms\n"
        f"                     target p99 < {ROUND_TRIP_TARGET_MS:.0f} ms: {'met' if met else 'NOT met'}",
        flush=True,
    )
    write_json(
        "priority_round_trip",
        {
            "changes": count,
            "p50_ms": p50,
            "p99_ms": p99,
            "max_ms": round_trips[-1],
            "reply_p50_ms": percentile(replies, 0.5),
            "reply_p99_ms": percentile(replies, 0.99),
            "target_met": met,
        },
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("parts", nargs="*", metavar="PART", help="bridge_events and/or priority_round_trip (default both)")
    parser.add_argument("--events", type=int, default=300_000, help="events in the stream (default 300,000)")
    parser.add_argument("--changes", type=int, default=1_000, help="priority changes measured (default 1,000)")
    args = parser.parse_args()
    known = ["bridge_events", "priority_round_trip"]
    parts = args.parts or known
    for part in parts:
        if part not in known:
            parser.error(f"unknown part {part!r}; use {' or '.join(known)}")
    print(f"bridge benchmarks: orch_bridge {orch_bridge.__version__}, nats-server + PostgreSQL on this machine, "
          f"orchestrator release binary", flush=True)
    cluster = Cluster()
    try:
        for part in parts:
            flags = ["--priority-rate-limit", str(args.changes * 2)] if part == "priority_round_trip" else []
            stack = Stack(cluster.url, flags, binary=RELEASE)
            try:
                if part == "bridge_events":
                    bridge_events(stack, args.events)
                else:
                    priority_round_trip(stack, args.changes)
            finally:
                stack.close()
    finally:
        cluster.remove()
    print("figures written to target/bench/*.json")


if __name__ == "__main__":
    main()
