# syntax=docker/dockerfile:1
# Production image of the orchestrator: "make prod" or "docker compose build".

# --- dashboard --------------------------------------------------------------------
FROM node:20-bookworm-slim AS dashboard
WORKDIR /src/dashboard
COPY dashboard/package.json dashboard/package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY dashboard ./
# The build generates the dashboard's wire types from the API's document (../docs/openapi.json).
COPY docs/openapi.json /src/docs/openapi.json
RUN npm run build

# --- build ----------------------------------------------------------------------
FROM rust:1-bookworm AS builder
WORKDIR /src
# The whole workspace is needed for cargo to load it (bridge-py is a member);
# migrations/ are compiled into the binary.
COPY Cargo.toml Cargo.lock ./
COPY orchestrator orchestrator
COPY bridge-py bridge-py
COPY migrations migrations
# Cache mounts keep the crate registry and build artefacts between builds; the
# binary is copied out of the cached target dir in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p orchestrator --bin orchestrator --bin orch-shim \
    && cp target/release/orchestrator target/release/orch-shim /usr/local/bin/

# --- runtime --------------------------------------------------------------------
FROM debian:bookworm-slim
# ca-certificates for TLS to NATS/PostgreSQL; curl for the HEALTHCHECK.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/*
RUN groupadd --system --gid 10001 orch \
    && useradd --system --uid 10001 --gid orch --home-dir /nonexistent --no-create-home \
        --shell /usr/sbin/nologin orch \
    && install -d -o orch -g orch /var/lib/orchestrator
COPY --from=builder /usr/local/bin/orchestrator /usr/local/bin/orchestrator
# The embedded agent runs each managed service under this small shim (beside the binary).
COPY --from=builder /usr/local/bin/orch-shim /usr/local/bin/orch-shim
# The dashboard's built files, served at / by the orchestrator.
COPY --from=dashboard /src/dashboard/dist /usr/share/orchestrator/dashboard

# Configuration comes from the environment; ORCH_NATS_URL, ORCH_DATABASE_URL
# and API tokens (ORCH_API_KEYS, ORCH_API_KEYS_FILE or ORCH_JWT_*) must be given
# at run time (see docker-compose.yml): the production profile refuses to start
# with an open API.
# The embedded agent's state (managed services' logs and their shims' records) goes to a
# directory the unprivileged user owns; mount a volume there to keep it across containers.
ENV ORCH_HTTP_ADDR=0.0.0.0:8080 \
    ORCH_LOG_FORMAT=json \
    ORCH_PROFILE=production \
    ORCH_DASHBOARD_DIR=/usr/share/orchestrator/dashboard \
    ORCH_AGENT_LOG_DIR=/var/lib/orchestrator/agent-logs

WORKDIR /var/lib/orchestrator

USER orch
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD curl -fsS http://127.0.0.1:8080/healthz || exit 1
ENTRYPOINT ["orchestrator"]
CMD ["serve"]
