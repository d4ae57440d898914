"""The reference engine's remediation (bridge-py/examples/attention_engine.py), without servers:
the pure decision (``CrashRemediator``: N crashes within a window, at most once per cooldown per
service), and the glue that starts the workflow through a client, whose failures are logged and
never raised. The engine against a real orchestrator is in test_engine.py."""

from __future__ import annotations

import logging
import sys
import threading
from datetime import datetime, timezone
from types import SimpleNamespace

import pytest

import orch_bridge

from harness import ROOT

sys.path.insert(0, str(ROOT / "bridge-py" / "examples"))
import attention_engine as ae  # noqa: E402

CRASHED = "io.orch.lifecycle.crashed.v1"


def crashes(remediator, service, times, prefix="e"):
    for i, at in enumerate(times):
        remediator.observe(f"{prefix}{service}{i}", service, at=at, now=at)


def test_a_remediation_is_due_after_n_crashes_within_the_window():
    r = ae.CrashRemediator(threshold=3, window=600, cooldown=600)
    crashes(r, "db", [1000.0, 1100.0])
    assert r.due(now=1100.0) == []
    crashes(r, "db", [1200.0], prefix="x")
    assert r.due(now=1200.0) == [ae.Remediation("db", 3, 1000.0, 1200.0)]
    assert r.due(now=1200.0)[0].inputs() == {"service": "db", "crashes": 3}
    # Spread over more than the window, they do not add up.
    spread = ae.CrashRemediator(threshold=3, window=600, cooldown=600)
    crashes(spread, "db", [1000.0, 1400.0, 1700.0])
    assert spread.due(now=1700.0) == []


def test_at_most_once_per_cooldown_and_used_crashes_do_not_count_again():
    r = ae.CrashRemediator(threshold=3, window=600, cooldown=300)
    crashes(r, "db", [1000.0, 1010.0, 1020.0])
    assert [d.service for d in r.due(now=1020.0)] == ["db"]
    r.started("db", now=1020.0)
    crashes(r, "db", [1030.0, 1040.0, 1050.0], prefix="b")
    assert r.due(now=1100.0) == [], "cooling down"
    # After the cooldown: only the crashes since the last remediation count.
    assert r.due(now=1320.0) == [ae.Remediation("db", 3, 1030.0, 1050.0)]
    r.started("db", now=1320.0)
    crashes(r, "db", [1330.0], prefix="c")
    assert r.due(now=1700.0) == [], "one crash since the last remediation"


def test_services_are_independent_and_duplicates_or_old_crashes_are_ignored():
    r = ae.CrashRemediator(threshold=2, window=60, cooldown=600)
    assert r.observe("e1", "db", at=100.0, now=100.0)
    assert not r.observe("e1", "db", at=100.0, now=101.0), "the same event (a replay) counts once"
    assert not r.observe("e2", "db", at=10.0, now=101.0), "older than the window"
    assert not r.observe("e3", "_system", at=100.0, now=101.0)
    assert not r.observe("e4", None, at=100.0, now=101.0)
    assert r.observe("e5", "api", at=101.0, now=101.0)
    assert r.due(now=101.0) == []
    assert r.observe("e6", "api", at=None, now=102.0), "no time: now"
    assert [d.service for d in r.due(now=102.0)] == ["api"]
    r.prune(now=500.0)
    assert r.due(now=500.0) == [] and r.crashes("api", now=500.0) == []
    with pytest.raises(ValueError):
        ae.CrashRemediator(threshold=0)


class FakeClient:
    """Records ``start_workflow`` calls; raises ``error`` when given."""

    def __init__(self, error=None):
        self.error = error
        self.calls = []

    def start_workflow(self, name, inputs=None):
        self.calls.append((name, inputs))
        if self.error is not None:
            raise self.error
        return SimpleNamespace(id="0190b1b2-3c4d-7e5f-8a9b-0c1d2e3f4a5b", status="queued", inputs=inputs)


def engine_with(client, *argv):
    args = ae.parse_args(list(argv))
    args.stop = threading.Event()
    remediator = ae.CrashRemediator(args.remediate_crashes, args.remediate_window, args.remediate_cooldown)
    return ae.Engine(client, args, ae.AttentionScorer(window=args.window), remediator)


def crash_event(i, service, at):
    return SimpleNamespace(id=f"c{i}", type=CRASHED, domain="lifecycle", service=service, kind="crashed",
                           data={"service": service, "state": "crashed"},
                           time=datetime.fromtimestamp(at, tz=timezone.utc))  # fmt: skip


def test_the_engine_starts_the_workflow_once_per_cooldown(caplog):
    client = FakeClient()
    engine = engine_with(client, "--remediate-workflow", "fix-it", "--remediate-cooldown", "100")
    now = 10_000.0
    for i in range(3):
        assert engine.observe(crash_event(i, "db", now + i), now + i)
    with caplog.at_level(logging.INFO, logger="attention-engine"):
        engine.remediate(now + 3)
        engine.remediate(now + 4)
    assert client.calls == [("fix-it", {"service": "db", "crashes": 3})]
    assert engine.remediations == 1
    assert "db: 3 crashes within 10 min: started the workflow fix-it" in caplog.text


@pytest.mark.parametrize(
    "error, logged",
    [
        (orch_bridge.NotFoundError("no workflow \"remediate-crashes\"", "not_found"), "is not defined"),
        (orch_bridge.PermissionDenied("refused", "forbidden"), "may not start workflows"),
        (orch_bridge.OrchTimeoutError("late", "timeout"), "could not be started"),
        (RuntimeError("a bug"), "could not start the remediation"),
    ],
)
def test_a_workflow_that_cannot_be_started_is_logged_never_raised(caplog, error, logged):
    client = FakeClient(error)
    engine = engine_with(client)
    now = 10_000.0
    for i in range(3):
        engine.observe(crash_event(i, "db", now + i), now + i)
    with caplog.at_level(logging.INFO, logger="attention-engine"):
        engine.remediate(now + 3)
        engine.remediate(now + 10)  # within the cooldown: not tried again
    assert client.calls == [("remediate-crashes", {"service": "db", "crashes": 3})]
    assert engine.remediations == 0
    assert logged in caplog.text


def test_dry_run_and_no_remediation():
    client = FakeClient()
    engine = engine_with(client, "--dry-run")
    for i in range(3):
        engine.observe(crash_event(i, "db", 100.0 + i), 100.0 + i)
    engine.remediate(103.0)
    assert client.calls == []
    args = ae.parse_args(["--no-remediation"])
    assert args.no_remediation and ae._span(args) == args.window
    assert ae._span(ae.parse_args(["--window", "60", "--remediate-window", "120"])) == 120
    with pytest.raises(SystemExit):
        ae.parse_args(["--remediate-workflow", "Not A Name"])
