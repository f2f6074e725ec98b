//! `nunchi-collector` binary: parses the command line, sets up logging, runs the
//! collector until SIGTERM or Ctrl-C.

use anyhow::Context;
use clap::Parser;
use nunchi_collector::config::Cli;

// Ingest allocates and frees many small strings per request from several threads;
// mimalloc keeps that off the glibc allocator's contended, consolidating paths.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // Log filter from NUNCHI_LOG, e.g. `info` or `debug,sqlx=warn` (default `info`).
    nunchi_cli::init_logging("NUNCHI_LOG", &[("sqlx", tracing::Level::WARN)]);
    let config = match cli.resolve() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("nunchi-collector: {e}");
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
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let (tx, rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
            tokio::select! {
                _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending::<()>().await } } => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            tracing::info!("signal received; flushing and stopping");
            let _ = tx.send(true);
        });
        nunchi_collector::run(config, rx).await.context("nunchi-collector failed")
    })
}
