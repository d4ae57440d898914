"""The reference engine (bridge-py/examples/attention_engine.py) against a real stack: a service
that keeps crashing gets more attention, visibly in the orchestrator's API."""

from __future__ import annotations

import subprocess
import sys

from harness import ROOT, SLEEPER, eventually

ENGINE = ROOT / "bridge-py" / "examples" / "attention_engine.py"

CRASHING = f"""
[services.flaky]
command = "{SLEEPER}"
args = ["--exit-after", "300ms", "--exit-code", "3"]
restart = {{ policy = "always", backoff = "200ms" }}

[services.steady]
command = "{SLEEPER}"
"""


def test_the_engine_raises_the_priority_of_a_crashing_service(stack):
    """The engine runs as the shipped ``engine`` NATS user: what it needs is within that role."""
    stack.apply(CRASHING)
    # Let it crash a few times before the engine starts: it replays its window at start-up.
    eventually(lambda: stack.services()["flaky"]["restarts"] >= 2, "flaky crashes and restarts", timeout=30)
    done = subprocess.run(
        [sys.executable, str(ENGINE), "--nats-url", stack.user_url("engine"), "--duration", "8", "--tick", "1",
         "--min-interval", "1", "--window", "60"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    status, flaky = stack.http("GET", "/api/v1/priorities/flaky?history=5")
    assert status == 200, flaky
    assert flaky["priority"]["effective"] > 50, (flaky, done.stderr)
    adjustment = flaky["priority"]["adjustment"]
    assert adjustment["source"] == "engine:attention"
    assert "crash" in adjustment["reason"], adjustment
    assert "flaky: priority 50 ->" in done.stderr + done.stdout
    # The steady service is left alone.
    status, steady = stack.http("GET", "/api/v1/priorities/steady")
    assert status == 200 and steady["priority"].get("adjustment") is None, steady
