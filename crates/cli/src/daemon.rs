//! What `teelog ship` and `teelog gateway` share as daemons: their own log on stderr, a runtime,
//! and a clean stop on SIGINT or SIGTERM.

use std::future::Future;

use anyhow::Context;

/// Logs at `level`, then runs `daemon` (given the shutdown signal) on a runtime of `name`
/// threads until it returns.
pub fn run<T, F: Future<Output = anyhow::Result<T>>>(
    name: &str,
    level: tracing::Level,
    daemon: impl FnOnce(std::pin::Pin<Box<dyn Future<Output = ()> + Send>>) -> F,
) -> anyhow::Result<T> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_max_level(level)
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name(name)
        .build()
        .context("cannot start the runtime")?;
    runtime.block_on(async {
        let shutdown = shutdown_signal().context("cannot install the signal handlers")?;
        daemon(Box::pin(shutdown)).await
    })
}

/// Installs the SIGINT and SIGTERM handlers now, before the daemon says it is ready, so that a
/// signal arriving at any moment afterwards stops it cleanly.
#[cfg(unix)]
fn shutdown_signal() -> std::io::Result<impl Future<Output = ()> + Send> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
    })
}

#[cfg(not(unix))]
fn shutdown_signal() -> std::io::Result<impl Future<Output = ()> + Send> {
    Ok(async {
        let _ = tokio::signal::ctrl_c().await;
    })
}
