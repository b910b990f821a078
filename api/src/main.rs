//! The `feed-api` binary: settings from the environment, then the application.

use feed_api::config::{ConfigError, LogFormat, Settings};
use feed_api::startup::{shutdown_signal, Application};
use feed_api::telemetry;

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
