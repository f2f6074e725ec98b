# feed-app image (the watched service) with its load generator, feed-loadgen.
# Build from the repository root:
#   docker build -f docker/feed-app.Dockerfile -t nunchi-feed-app .
#   docker run -p 8080:8080 nunchi-feed-app
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p nunchi-feed-app

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /var/lib/feed-app feed \
    && mkdir -p /var/lib/feed-app && chown feed /var/lib/feed-app
COPY --from=build /src/target/release/feed-app /usr/local/bin/feed-app
COPY --from=build /src/target/release/feed-loadgen /usr/local/bin/feed-loadgen
USER feed
WORKDIR /var/lib/feed-app
ENV FEED_APP_LISTEN=0.0.0.0:8080
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/feed-app"]
