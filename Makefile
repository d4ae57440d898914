# Developer entry points. "make" alone lists the targets.
# Each target's "## text" is its line in "make help".

SHELL := /bin/bash
.DEFAULT_GOAL := help

# Local state (venv, dev/test data); same default as scripts/lib.sh.
ORCH_LOCAL ?= $(CURDIR)/.local
export ORCH_LOCAL

# Extra arguments for the test runner or the engine, e.g. make test ARGS='-E test(registry)',
# make engine ARGS='--dry-run --verbose'
ARGS ?=

# The NATS that "make dev" starts (scripts/dev.sh: ORCH_DEV_NATS_PORT, 4222 by default), as the
# engine's user that "make dev" made (scripts/nats-auth.sh).
DEV_NATS_URL ?= $(shell cat "$(ORCH_LOCAL)/dev/nats-auth/engine.url" 2>/dev/null || echo nats://127.0.0.1:$(or $(ORCH_DEV_NATS_PORT),4222))

.PHONY: help dev dev-ha test bench engine prod deps dashboard fmt lint clean-local stop

help: ## List the targets
	@echo "Targets:"
	@grep -E '^[a-z][a-z-]*:.*## ' $(MAKEFILE_LIST) | \
		awk -F':.*## ' '{ printf "  make %-12s %s\n", $$1, $$2 }'

dev: ## Run the orchestrator locally with its own NATS + PostgreSQL (Ctrl-C stops all)
	scripts/dev.sh

dev-ha: ## Three orchestrator replicas on a 3-node NATS cluster + PostgreSQL (Ctrl-C stops all)
	scripts/dev-ha.sh

test: ## Run all tests (shared test PostgreSQL; ARGS='...' goes to the runner)
	scripts/test.sh $(ARGS)

bench: ## Run the benchmarks (scripts/bench.sh); PARTS="ttl_detection scale" runs some
	bash scripts/bench.sh $(PARTS)

engine: ## Build the Python bridge, run its example attention engine against "make dev" (ARGS='...')
	bash scripts/bridge.sh
	"$(ORCH_LOCAL)/venv/bin/python" bridge-py/examples/attention_engine.py --nats-url "$(DEV_NATS_URL)" $(ARGS)

prod: ## Release build, and the Docker image if a Docker engine is running
	cargo build --release -p orchestrator
	@if docker info >/dev/null 2>&1; then \
		docker compose build; \
		echo "make prod: image built; start the stack with: docker compose up -d"; \
	else \
		echo "make prod: release binary: target/release/orchestrator"; \
		echo "make prod: Docker image build SKIPPED: no Docker engine is running ('docker info' failed)."; \
		echo "make prod: on a machine with Docker: docker compose build && docker compose up -d"; \
	fi

dashboard: ## Build the dashboard into dashboard/dist (make dev and make test do it too)
	scripts/dashboard.sh

deps: ## Install/check local dependencies (nats-server venv, PostgreSQL binaries)
	scripts/deps.sh

fmt: ## Format all Rust code
	cargo fmt --all

lint: ## Clippy on the whole workspace, warnings are errors
	cargo clippy --workspace --all-targets -- -D warnings

stop: ## Stop the dev stacks' managed services, dev NATS/PostgreSQL (and the test PostgreSQL)
	@# Managed services outlive the orchestrator; its agent's --cleanup stops them.
	-if [ -x target/debug/orchestrator ]; then target/debug/orchestrator agent --cleanup --log warn \
		--log-dir "$(ORCH_LOCAL)/dev/agent-logs"; fi
	scripts/nats.sh stop "$(ORCH_LOCAL)/dev/nats"
	scripts/pg.sh stop "$(ORCH_LOCAL)/dev/pg"
	@# make dev-ha's replicas (left running when its terminal went), their services, NATS and PostgreSQL.
	scripts/dev-ha.sh stop
	scripts/pg.sh stop "$(ORCH_LOCAL)/test/pg"

clean-local: ## Stop dev/test servers and delete .local (venv, all dev/test data)
	-if [ -x target/debug/orchestrator ]; then target/debug/orchestrator agent --cleanup --log warn \
		--log-dir "$(ORCH_LOCAL)/dev/agent-logs"; fi
	-scripts/nats.sh stop "$(ORCH_LOCAL)/dev/nats"
	-scripts/dev-ha.sh stop
	@# "remove" also deletes clusters relocated to /var/tmp/orch-pg (root runs).
	-scripts/pg.sh remove "$(ORCH_LOCAL)/dev/pg"
	-scripts/pg.sh remove "$(ORCH_LOCAL)/dev-ha/pg"
	-scripts/pg.sh remove "$(ORCH_LOCAL)/test/pg"
	rm -rf "$(ORCH_LOCAL)"
