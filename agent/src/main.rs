//! `nunchi-agent` binary: parses the command line, sets up logging, runs the agent until
//! SIGTERM or Ctrl-C.

use anyhow::Context;
use clap::Parser;
use nunchi_agent::config::Cli;

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // Log filter from NUNCHI_LOG, e.g. `info` or `debug,hyper=info` (default `info`).
    nunchi_cli::init_logging("NUNCHI_LOG", &[]);
    let config = match cli.resolve() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("nunchi-agent: {e}");
            std::process::exit(2);
        }
    };
    if cli.check_config {
        print!(
            "{}",
            toml::to_string(&config).context("cannot print the configuration")?
        );
        return Ok(());
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let (tx, rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!("signal received");
            let _ = tx.send(true);
        });
        nunchi_agent::run(config, rx)
            .await
            .context("nunchi-agent failed")
    })
}

async fn wait_for_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops the agent");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
