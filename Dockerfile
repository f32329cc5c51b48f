# syntax=docker/dockerfile:1
# Builds the Turnstone binaries (turnstone-api, turnstone-worker, turnstone-llmsim) into one small runtime image.
#   docker build -t turnstone .
#   docker run turnstone                      # API (needs DATABASE_URL, TURNSTONE_MASTER_KEY)
#   docker run turnstone turnstone-worker     # a worker

# ---- toolchain + cargo-chef (dependency-layer caching) -------------------------------------------
FROM rust:1.95-bookworm AS chef
RUN cargo install cargo-chef --locked --version 0.1.77
WORKDIR /src
# apalis-postgres' sqlx macros (bench crate) must never go online at build time.
ENV SQLX_OFFLINE=true CARGO_TERM_COLOR=never

# ---- recipe: the dependency graph only (changes only when manifests/lockfile change) ------------
FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

# ---- build: dependencies first (cached layer), then the workspace -------------------------------
FROM chef AS builder
COPY --from=planner /src/recipe.json recipe.json
RUN cargo chef cook --release --bins --recipe-path recipe.json
COPY . .
RUN cargo build --release --locked --workspace --bins \
 && mkdir -p /out \
 && cp target/release/turnstone-api target/release/turnstone-worker target/release/turnstone-llmsim /out/

# ---- runtime ------------------------------------------------------------------------------------
FROM debian:bookworm-slim AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 turnstone \
 && useradd --system --uid 10001 --gid turnstone --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin turnstone
COPY --from=builder /out/turnstone-api /out/turnstone-worker /out/turnstone-llmsim /usr/local/bin/
USER turnstone:turnstone
WORKDIR /tmp
ENV TURNSTONE_API_ADDR=0.0.0.0:8080 \
    TURNSTONE_LLMSIM_ADDR=0.0.0.0:8090 \
    RUST_LOG=info
EXPOSE 8080 8090
# Workers drain on SIGTERM; give them time (docker stop -t / compose stop_grace_period).
STOPSIGNAL SIGTERM
CMD ["turnstone-api"]
