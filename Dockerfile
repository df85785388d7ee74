# syntax=docker/dockerfile:1
FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
RUN cargo build --release --locked --bin switchyard

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends curl ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --home /var/lib/switchyard --create-home switchyard \
    && install -d -o switchyard -g switchyard /var/lib/switchyard/data
COPY --from=build /src/target/release/switchyard /usr/local/bin/switchyard
COPY config/switchyard.toml /etc/switchyard/switchyard.toml
USER switchyard
WORKDIR /var/lib/switchyard
ENV SWITCHYARD_CONFIG=/etc/switchyard/switchyard.toml
# The queue (queue.path = "data/queue") and the audit trail live here: keep it on a
# volume so accepted messages survive the container.
VOLUME ["/var/lib/switchyard/data"]
# Inside a container the listeners must bind all interfaces: set server.listen and
# server.admin_listen to 0.0.0.0:8080 / 0.0.0.0:9090 in the mounted config.
EXPOSE 8080 9090
# Liveness, not readiness: /health is 503 while no master is eligible, exactly when
# switchyard is holding messages in its queue; /livez answers while the process does.
# With admin_tls_cert set, check https://127.0.0.1:9090/livez with --cacert instead.
HEALTHCHECK --interval=10s --timeout=2s --start-period=5s --retries=3 \
    CMD curl -fsS http://127.0.0.1:9090/livez || exit 1
ENTRYPOINT ["switchyard"]
CMD ["run"]
