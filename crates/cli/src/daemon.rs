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
    // No colours: their escape sequences would be indistinguishable from ones in the input.
    tracing_subscriber::fmt().with_writer(|| EscapedStderr).with_ansi(false).with_max_level(level).init();
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

/// Standard error for the log: each event arrives as one write ending in its newline, and every
/// other control character in it is escaped, so that text from a client or a file can never
/// start a log line of its own.
struct EscapedStderr;

impl std::io::Write for EscapedStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        let (body, end) = text.strip_suffix('\n').map_or((&*text, ""), |body| (body, "\n"));
        let line = format!("{}{end}", teelog_core::display::escape_controls(body));
        std::io::stderr().lock().write_all(line.as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
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
