"""The reference engine (bridge-py/examples/attention_engine.py) against a real stack: a service
that keeps crashing gets more attention, visibly in the orchestrator's API, and the remediation
workflow (bridge-py/examples/remediate-crashes.toml) started for it."""

from __future__ import annotations

import signal
import subprocess
import sys

from orch_bridge import Client

from harness import ROOT, SLEEPER, eventually

ENGINE = ROOT / "bridge-py" / "examples" / "attention_engine.py"
REMEDIATE_CRASHES = ROOT / "bridge-py" / "examples" / "remediate-crashes.toml"

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


def test_the_engine_starts_the_remediation_workflow_for_a_service_that_keeps_crashing(stack, tmp_path):
    """Three crashes of ``flaky`` within the window: the engine, as the shipped ``engine`` NATS
    user, starts the shipped ``remediate-crashes`` workflow for it, once (the cooldown), and for
    no other service."""
    status, stored = stack.http(
        "PUT", "/api/v1/workflows/remediate-crashes", REMEDIATE_CRASHES.read_text(), "application/toml"
    )
    assert status == 201 and stored["version"] == 1, stored
    stack.apply(CRASHING)
    log = tmp_path / "engine.log"
    with open(log, "w") as out:
        engine = subprocess.Popen(
            [sys.executable, str(ENGINE), "--nats-url", stack.user_url("engine"), "--tick", "1",
             "--remediate-crashes", "3", "--remediate-window", "120", "--remediate-cooldown", "600"],
            stdout=out, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
    try:
        with Client.connect(stack.url) as client:

            def remediations(service):
                return [e for e in client.executions("remediate-crashes") if e.inputs.get("service") == service]

            (execution,) = eventually(lambda: remediations("flaky"), "the engine starts a remediation", timeout=60)
            assert (execution.trigger, execution.created_by) == ("manual", "nats:engine"), execution
            assert (execution.queue, execution.priority, execution.version) == ("remediation", 80, 1)
            assert execution.inputs["crashes"] >= 3, execution.inputs
            assert set(execution.steps) == {"restart", "ready", "raise"}
            # The orchestrator took it up: its first step ran.
            eventually(lambda: client.execution(execution.id).steps["restart"].attempt >= 1, "the restart step runs")
    finally:
        engine.send_signal(signal.SIGTERM)
        try:
            engine.wait(30)
        except subprocess.TimeoutExpired:
            engine.kill()
            engine.wait()
    output = log.read_text()
    assert engine.returncode == 0, output
    with Client.connect(stack.url) as client:
        assert len(remediations("flaky")) == 1, "at most one per cooldown"
        assert remediations("steady") == []
    assert f"flaky: {execution.inputs['crashes']} crashes within 2 min: started the workflow remediate-crashes" in output
