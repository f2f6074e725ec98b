//! `feed-app`: the news-feed service. Parses flags, connects the database and cache, and
//! serves HTTP until SIGTERM or Ctrl-C.

use anyhow::Context;
use clap::Parser;
use nunchi_feed_app::{AppState, FeedConfig, app};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = FeedConfig::parse();
    nunchi_cli::init_logging("FEED_APP_LOG", &[]);
    let listen = config.listen;
    let backend = if config.database_url.starts_with("sqlite") {
        "sqlite"
    } else {
        "postgres"
    };
    let cache = if config.redis_url.is_some() {
        "redis"
    } else {
        "in-process"
    };
    let state = AppState::build(config)
        .await
        .context("cannot start feed-app")?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    tracing::info!(%listen, database = backend, cache, "feed-app serving");
    axum::serve(listener, app(state))
        .with_graceful_shutdown(shutdown())
        .await
        .context("server failed")?;
    Ok(())
}

async fn shutdown() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = term => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
