//! The `feed-api` binary: settings from the environment, then the application.

use feed_api::config::{ConfigError, LogFormat, Settings};
use feed_api::startup::{shutdown_signal, Application};
use feed_api::telemetry;

#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// With the system allocator and `trim` (the default): glibc keeps freed
/// memory for reuse and gives little of it back on its own (a storm of
/// connects, once gone, left all of its growth behind); this hands it back
/// every 10 s (docs/PERFORMANCE.md, "The allocator").
#[cfg(all(feature = "trim", not(any(feature = "mimalloc", feature = "jemalloc"))))]
fn spawn_trim() {
    tokio::spawn(async {
        let mut every = tokio::time::interval(std::time::Duration::from_secs(10));
        loop {
            every.tick().await;
            // SAFETY: malloc_trim only returns unused pages of the heap.
            unsafe { libc::malloc_trim(0) };
        }
    });
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let vars = std::env::vars().collect();
    let format = match LogFormat::from_env(&vars) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("feed-api: configuration error: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    telemetry::init(format);
    #[cfg(all(feature = "trim", not(any(feature = "mimalloc", feature = "jemalloc"))))]
    spawn_trim();
    let settings = match Settings::from_vars(&vars) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("configuration error: {e}");
            eprintln!("feed-api: configuration error: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let result = async {
        let app = Application::build(settings).await?;
        app.run_until_stopped(shutdown_signal()).await
    }
    .await;
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        // A setting only the application could check (a key that does not parse).
        Err(e) if e.downcast_ref::<ConfigError>().is_some() => {
            tracing::error!("configuration error: {e}");
            eprintln!("feed-api: configuration error: {e}");
            std::process::ExitCode::from(2)
        }
        Err(e) => {
            tracing::error!(error = ?e, "feed-api failed");
            std::process::ExitCode::FAILURE
        }
    }
}
