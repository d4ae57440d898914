"""Fixtures of the bridge's tests; the servers themselves are in harness.py.

Each test that asks for ``stack`` (or calls ``make_stack``) gets its own nats-server with
JetStream, its own database and the orchestrator binary in a child process.
"""

from __future__ import annotations

import os
import signal
from typing import List, Optional, Sequence

import pytest

from harness import Cluster, Stack

# Every test ends within this many seconds, or fails saying so (never a hang).
TEST_DEADLINE = int(os.environ.get("ORCH_TEST_DEADLINE", "120"))

@pytest.fixture(scope="session")
def cluster_url():
    url = os.environ.get("ORCH_TEST_DATABASE_URL")
    if url:
        yield url
        return
    cluster = Cluster()
    try:
        yield cluster.url
    finally:
        cluster.remove()


@pytest.fixture
def private_cluster():
    """A PostgreSQL cluster of the test's own, which it may stop and start. Ask for it before
    ``make_stack`` so that it outlives the stacks using it."""
    cluster = Cluster()
    yield cluster
    cluster.remove()


@pytest.fixture
def make_stack(cluster_url):
    """``make_stack(*flags)``: a stack whose orchestrator gets these extra ``serve`` flags
    (``nodes=[...]``: the nodes standalone agents may serve)."""
    made: List[Stack] = []

    def make(*args: str, database_url: Optional[str] = None, nodes: Sequence[str] = ()) -> Stack:
        stack = Stack(cluster_url, list(args), database_url, nodes=nodes)
        made.append(stack)
        return stack

    yield make
    for stack in made:
        stack.close()


@pytest.fixture
def stack(make_stack) -> Stack:
    return make_stack()


# -- deadlines -----------------------------------------------------------------------------------


class Deadline(Exception):
    pass


@pytest.fixture(autouse=True)
def deadline(request):
    """Fails a test that runs past TEST_DEADLINE seconds (SIGALRM interrupts any blocking wait of
    the bridge, which checks signals every 100 ms)."""

    def expired(signum, frame):
        raise Deadline(f"{request.node.name} ran past its deadline of {TEST_DEADLINE}s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(TEST_DEADLINE)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)
