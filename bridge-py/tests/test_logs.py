"""Services' output from the bridge, against a real nats-server and orchestrator: a replicated
service prints a line every 100 ms; ``logs`` finds lines with a filter across its units,
``follow_logs`` receives new lines live (sync and asyncio clients); the engine may do neither."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone

import pytest

from harness import eventually
from orch_bridge import AsyncClient, Client, LogLine, NotFoundError, PermissionDenied, ServiceLogs, ValidationError

TICKER = (
    "[services.ticker]\n"
    'command = "/bin/sh"\n'
    "args = [\"-c\", \"i=0; while true; do echo line $i; i=$((i+1)); sleep 0.1; done\"]\n"
    "count = 2\n"
    'grace_period = "1s"\n'
)
UNITS = {"ticker-0", "ticker-1"}


def start_ticker(stack) -> None:
    stack.apply(TICKER)
    stack.wait_states({"ticker-0": "ready", "ticker-1": "ready"})


def test_logs_finds_lines_and_follow_receives_new_ones(stack):
    start_ticker(stack)
    with Client.connect(stack.url) as client:
        found = eventually(
            lambda: (lambda r: r if len({line.unit for line in r.lines}) == 2 else None)(
                client.logs("ticker", contains="line 1", limit=50)
            ),
            "lines of both units containing 'line 1'",
        )
        assert isinstance(found, ServiceLogs) and found.service == "ticker"
        assert all(isinstance(line, LogLine) and "line 1" in line.text for line in found.lines), found.lines
        assert {line.unit for line in found.lines} == UNITS and {u.unit for u in found.units} == UNITS
        assert all(line.stream == "stdout" and line.node and line.time.tzinfo is not None for line in found.lines)
        assert [line.time for line in found.lines] == sorted(line.time for line in found.lines)
        assert client.logs("ticker", stream="stderr").lines == []
        assert len(client.logs("ticker", regex=r"^line [0-9]+$", limit=3).lines) == 3
        with pytest.raises(ValidationError) as both:
            client.logs("ticker", contains="a", regex="b")
        assert both.value.field == "regex"
        with pytest.raises(ValidationError) as naive:
            client.logs("ticker", since=datetime.now())
        assert naive.value.field == "since"
        with pytest.raises(NotFoundError):
            client.follow_logs("nothing")

        subscribed = datetime.now(timezone.utc)
        with client.follow_logs("ticker", contains="line") as lines:
            assert sorted(lines.source.subjects) == ["orch.log.*.ticker-0", "orch.log.*.ticker-1"]
            units = set()
            while units != UNITS:
                line = lines.next(timeout=30)
                assert line is not None, f"no new line within 30 s (got lines of {units})"
                assert line.text.startswith("line ") and line.stream == "stdout", line
                assert line.time >= subscribed - timedelta(seconds=1), (line, subscribed)
                units.add(line.unit)
        assert lines.closed

    with Client.connect(stack.user_url("observer")) as observer:
        assert observer.logs("ticker", limit=1).lines


def test_async_logs_and_follow(stack):
    start_ticker(stack)

    async def run():
        async with await AsyncClient.connect(stack.url) as client:
            async with await client.follow_logs("ticker", regex=r"^line [0-9]*7$") as lines:
                line = await asyncio.wait_for(lines.__anext__(), 30)
            found = await client.logs("ticker", contains="7", limit=5)
            return line, found

    line, found = asyncio.run(run())
    assert line.unit in UNITS and line.text.endswith("7"), line
    assert found.lines and all("7" in x.text for x in found.lines)


def test_the_engine_may_not_read_services_output(stack):
    start_ticker(stack)
    with Client.connect(stack.user_url("engine")) as engine:
        with pytest.raises(PermissionDenied):
            engine.logs("ticker")
        lines = engine.follow_logs("ticker")
        with pytest.raises(PermissionDenied):
            lines.next(timeout=30)
        lines.close()
