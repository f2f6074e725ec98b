# nunchi-collector image, with the dashboard's browser bundle and the default rules.
# Build from the repository root:
#   docker build -f docker/collector.Dockerfile -t nunchi-collector .
#   docker run -p 9300:9300 -v nunchi-data:/var/lib/nunchi-collector nunchi-collector
FROM rust:1-bookworm AS build
WORKDIR /src
RUN rustup target add wasm32-unknown-unknown
COPY . .
RUN cargo build --release --locked -p nunchi-collector \
    && scripts/build-dashboard

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /var/lib/nunchi-collector nunchi \
    && mkdir -p /var/lib/nunchi-collector && chown nunchi /var/lib/nunchi-collector
COPY --from=build /src/target/release/nunchi-collector /usr/local/bin/nunchi-collector
COPY --from=build /src/target/dashboard/pkg /usr/local/share/nunchi/dashboard/pkg
COPY collector/rules/default.yml /etc/nunchi/rules/default.yml
USER nunchi
ENV NUNCHI_COLLECTOR_LISTEN=0.0.0.0:9300 \
    NUNCHI_COLLECTOR_DATA_DIR=/var/lib/nunchi-collector \
    NUNCHI_COLLECTOR_DASHBOARD_ASSETS=/usr/local/share/nunchi/dashboard/pkg \
    NUNCHI_COLLECTOR_RULES=/etc/nunchi/rules/default.yml
EXPOSE 9300
ENTRYPOINT ["/usr/local/bin/nunchi-collector"]
