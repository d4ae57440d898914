#!/usr/bin/env bash
# "make bench": the benchmarks, against real nats-server and PostgreSQL started by the benchmark
# itself (JetStream file storage and PostgreSQL with their default durability: no fsync shortcuts).
# Figures are printed and written as JSON to target/bench/<name>.json.
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

case "${1:-}" in
-h | --help)
    cat <<'USAGE'
Usage: scripts/bench.sh [PART...]

Runs the benchmarks (release build). PART limits the run to some of:
  registry:
    baseline        raw JetStream async publish rate of the command payload (the ceiling)
    commands        registry commands end to end: throughput, latency, CPU split
    heartbeats      heartbeats absorbed from 100,000 live instances, orchestrator CPU
    cold_start      time until serving with 100,000 instances in PostgreSQL, RSS per instance
  health:
    ttl_detection   SIGKILL of a process beating every second: time to the committed expiry event
    http_detection  an HTTP check target switches to 500: time to the committed critical event
    scale           10,000 heartbeating instances and 10,000 HTTP checks at 1s for two minutes:
                    false positives, checks per second, scheduling drift
  lifecycle:
    dag_startup           200 real processes in a 10-level dependency graph: wall time against the
                          known critical path, overhead per service, speed-up over a serial start
    dag_startup_notify    the same graph with readiness by notification (sd_notify READY=1) instead
                          of a polled readiness check
    independent_launches  500 real processes without dependencies: launches per second, ready times
  priority:
    runaway_engine        registry round trips (p50/p99) alone, then under 10,000 priority changes per
                          second from a runaway engine: the slowdown against the 1.5x target
  cluster:
    failover              3 replicas, 10,000 heartbeating instances, 200 commands/s: the leader killed
                          20 times; time to the new leader's first commit and to an HTTP write through
                          a standby (p50/p99), commands lost or applied twice, false expiries, restarts
    upgrade               200 managed services; the orchestrator's binary replaced and started again:
                          services restarted (target 0) and the time until all are adopted
  workflows:
    workflow_steps        no-op steps in one execution: a 1,000-step fan-out/fan-in and a 200-step chain;
                          steps per second and the time from "could start" to "started" per step (p50/p99)
    cron_precision        1,000 schedules firing every second for 120 s: lateness (p50/p99), firings
                          missed and doubled; then on 2 replicas with the leader killed half-way
    waiting_executions    10,000 executions each in a 1 h wait: orchestrator RSS and idle CPU, time to
                          start them all
  resources:
    placement             the pure scheduler: 10,000 replicas onto 1,000 simulated nodes, bin-packed and
                          spread; placements per second and the decision time per replica (p50/p99)
    node_loss             3 standalone agents, 60 replicas spread over them; one agent SIGKILLed: time
                          until its node is down, and until its replicas run on the others
  logs:
    logs                  100 services writing 20,000 lines each on one standalone agent: lines per
                          second followed (a NATS subscriber, the HTTP follow), the agent's CPU, and
                          searches over what is retained (p50/p99, MB/s scanned)
  bridge (Python, orch_bridge built in release):
    bridge_events         events per second a Python consumer receives as typed objects, against the
                          pure-Python nats-py client on the same pre-filled stream
    priority_round_trip   Python sets a priority and waits for its event: p50/p99 over 1,000+ changes
Figures: stdout and target/bench/*.json; the orchestrator's log: target/bench/orchestrator.log.
USAGE
    exit 0
    ;;
esac

"$ROOT/scripts/deps.sh"
# Benchmarks measure the real thing: never the test-only "no fsync" PostgreSQL mode.
unset ORCH_PG_FAST
export ORCH_NATS_SERVER="$NATS_SERVER"
cd "$ROOT"
log "building and running the benchmarks (release); this takes a few minutes"
registry=() health=() lifecycle=() priority=() cluster=() workflows=() resources=() node_loss=() logs=() bridge=()
for part in "$@"; do
    case "$part" in
    baseline | commands | heartbeats | cold_start) registry+=("$part") ;;
    ttl_detection | http_detection | scale) health+=("$part") ;;
    dag_startup | dag_startup_notify | independent_launches) lifecycle+=("$part") ;;
    runaway_engine) priority+=("$part") ;;
    failover | upgrade) cluster+=("$part") ;;
    workflow_steps | cron_precision | waiting_executions) workflows+=("$part") ;;
    placement) resources+=("$part") ;;
    node_loss) node_loss+=("$part") ;;
    logs) logs+=("$part") ;;
    bridge_events | priority_round_trip) bridge+=("$part") ;;
    *) die "unknown benchmark part '$part' (see scripts/bench.sh --help)" ;;
    esac
done
if [ $# -eq 0 ] || [ ${#registry[@]} -gt 0 ]; then
    cargo bench -p orchestrator --bench registry -- "${registry[@]}"
fi
if [ $# -eq 0 ] || [ ${#health[@]} -gt 0 ]; then
    cargo bench -p orchestrator --bench health -- "${health[@]}"
fi
if [ $# -eq 0 ] || [ ${#lifecycle[@]} -gt 0 ]; then
    cargo bench -p orchestrator --bench lifecycle -- "${lifecycle[@]}"
fi
if [ $# -eq 0 ] || [ ${#priority[@]} -gt 0 ]; then
    cargo bench -p orchestrator --bench priority -- "${priority[@]}"
fi
if [ $# -eq 0 ] || [ ${#cluster[@]} -gt 0 ]; then
    cargo bench -p orchestrator --bench cluster -- "${cluster[@]}"
fi
if [ $# -eq 0 ] || [ ${#workflows[@]} -gt 0 ]; then
    cargo bench -p orchestrator --bench workflows -- "${workflows[@]}"
fi
if [ $# -eq 0 ] || [ ${#resources[@]} -gt 0 ]; then
    cargo bench -p orchestrator --bench placement -- "${resources[@]}"
fi
if [ $# -eq 0 ] || [ ${#node_loss[@]} -gt 0 ]; then
    cargo bench -p orchestrator --bench node_loss
fi
if [ $# -eq 0 ] || [ ${#logs[@]} -gt 0 ]; then
    cargo bench -p orchestrator --bench logs
fi
if [ $# -eq 0 ] || [ ${#bridge[@]} -gt 0 ]; then
    "$ROOT/scripts/bridge.sh" --release
    # The same build as the benches above (same features): nothing is compiled twice.
    cargo build --release -p orchestrator --bins --benches
    "$BRIDGE_PYTHON" "$ROOT/bridge-py/bench/bench.py" "${bridge[@]}"
fi
