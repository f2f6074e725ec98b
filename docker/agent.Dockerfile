# nunchi-agent image. Build from the repository root:
#   docker build -f docker/agent.Dockerfile -t nunchi-agent .
# Run with the host's PID namespace and network so /proc shows the host, not the container:
#   docker run --pid=host --network=host -v nunchi-buffer:/var/lib/nunchi-agent \
#     nunchi-agent --push-url http://collector:9300/api/v1/write
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p nunchi-agent

FROM debian:bookworm-slim
RUN useradd --system --uid 10001 --home-dir /var/lib/nunchi-agent nunchi \
    && mkdir -p /var/lib/nunchi-agent && chown nunchi /var/lib/nunchi-agent
COPY --from=build /src/target/release/nunchi-agent /usr/local/bin/nunchi-agent
USER nunchi
ENV NUNCHI_AGENT_BUFFER_DIR=/var/lib/nunchi-agent \
    NUNCHI_AGENT_LISTEN=0.0.0.0:9101
EXPOSE 9101
ENTRYPOINT ["/usr/local/bin/nunchi-agent"]
