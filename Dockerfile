# syntax=docker/dockerfile:1
FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
# etcd-client's build needs protoc: .cargo/config.toml points it at tools/protoc.
COPY .cargo ./.cargo
COPY tools ./tools
RUN cargo build --release --locked --bin switchyard

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends curl ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --home /var/lib/switchyard --create-home switchyard \
    && install -d -o switchyard -g switchyard /var/lib/switchyard/data
COPY --from=build /src/target/release/switchyard /usr/local/bin/switchyard
# The container config: listeners on 0.0.0.0, the compose stack's three mock masters.
# Mount your own file over it (docker run -v $PWD/switchyard.toml:/etc/switchyard/switchyard.toml:ro).
COPY deploy/switchyard.toml /etc/switchyard/switchyard.toml
USER switchyard
WORKDIR /var/lib/switchyard
ENV SWITCHYARD_CONFIG=/etc/switchyard/switchyard.toml
# The queue (queue.path = "data/queue") and the audit trail live here: keep it on a
# volume so accepted messages survive the container.
VOLUME ["/var/lib/switchyard/data"]
# A config of your own must bind the listeners to 0.0.0.0 too: 127.0.0.1 inside a
# container cannot be reached from outside it.
EXPOSE 8080 9090
# Liveness, not readiness: /health is 503 while no master is eligible, exactly when
# switchyard is holding messages in its queue; /livez answers while the process does.
# With admin_tls_cert set, check https://127.0.0.1:9090/livez with --cacert instead.
HEALTHCHECK --interval=10s --timeout=2s --start-period=5s --retries=3 \
    CMD curl -fsS http://127.0.0.1:9090/livez || exit 1
ENTRYPOINT ["switchyard"]
CMD ["run"]
