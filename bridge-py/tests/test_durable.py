"""Durable streams: a consumer that resumes after its process restarts, with explicit acks."""

from __future__ import annotations

import json

from orch_bridge import Client

from harness import run_python

# One process of an engine: reads up to N events of the durable consumer, acknowledges the first
# ACK of them, prints what it saw, and exits without closing anything (as a crash would).
ENGINE = """
import json, os, sys
from orch_bridge import Client
url, n, ack = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
client = Client.connect(url)
stream = client.events("orch.evt.priority.>", durable="engine", deliver="all", ack_wait=1.0)
seen = []
for event in stream:
    seen.append([event.data["service"], event.deliveries])
    if len(seen) <= ack:
        event.ack()
    if len(seen) == n:
        break
if ack:
    client.close()  # flushes the acks; the unacked events stay with the server
print(json.dumps(seen))
sys.stdout.flush()
os._exit(0)
"""


def engine(stack, n, ack):
    done = run_python(ENGINE, stack.url, str(n), str(ack))
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_a_durable_consumer_resumes_after_its_process_restarts(stack):
    with Client.connect(stack.url) as client:
        for i in range(6):
            client.set_priority(f"svc{i}", 60 + i, reason="mark")

    # The first process handles svc0..svc2 and acknowledges only svc0 and svc1.
    first = engine(stack, 3, 2)
    assert first == [["svc0", 1], ["svc1", 1], ["svc2", 1]]
    # The next process resumes after the last acknowledged event: svc2 again (not acked, so
    # redelivered once its ack wait passed), then what it never saw.
    second = engine(stack, 4, 4)
    assert [service for service, _ in second] == ["svc2", "svc3", "svc4", "svc5"]
    assert second[0][1] == 2, "svc2 is a redelivery"
    # Everything is acknowledged now: a third process sees only what is new.
    with Client.connect(stack.url) as client:
        client.set_priority("svc6", 70, reason="after the restarts")
    assert engine(stack, 1, 1) == [["svc6", 1]]


def test_auto_ack_acknowledges_what_the_loop_has_handled(stack):
    with Client.connect(stack.url) as client:
        for i in range(3):
            client.set_priority(f"a{i}", 60, reason="mark")
        # A short ack wait (5 s): an event in flight when the first stream closes comes again after it.
        with client.events("orch.evt.priority.>", durable="auto", deliver="all", auto_ack=True, ack_wait=5.0) as events:
            assert events.next(timeout=10).data["service"] == "a0"
            assert events.next(timeout=10).data["service"] == "a1"
        # Leaving the block acknowledged a0 and a1 (handed over); a2 comes again.
        with client.events("orch.evt.priority.>", durable="auto", auto_ack=True, ack_wait=5.0) as events:
            assert events.next(timeout=10).data["service"] == "a2"
            assert events.next(timeout=0.5) is None
