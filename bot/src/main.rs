//! `feed-bot`: simulated users posting through the public API.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use clap::Parser as _;
use feed_bot::cli::{Cli, Command};
use feed_bot::client::ApiClient;
use feed_bot::generator;
use feed_bot::load::args::LoadArgs;
use feed_bot::poster::{run_user, Counters, Shutdown};
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .init();

    let cli = Cli::parse();
    let bot = match cli.command {
        Some(Command::Load(args)) => return load_main(args).await,
        Some(Command::Readers(args)) => return readers_main(args).await,
        None => cli.bot,
    };
    let settings = match bot.settings() {
        Ok(s) => Arc::new(s),
        Err(e) => {
            eprintln!("feed-bot: configuration error: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let client = match ApiClient::new(&settings.api_url) {
        Ok(c) => c.with_jwt_secret(settings.jwt_secret.as_deref()),
        Err(e) => {
            eprintln!("feed-bot: cannot build the HTTP client: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    tracing::info!(api = %feed_bot::shown_url(&settings.api_url), users = settings.users, interval_s = settings.interval.as_secs_f64(), jitter_s = settings.jitter.as_secs_f64(), "bot starting");

    let shutdown = Shutdown::default();
    let counters = Arc::new(Counters::default());
    let names = generator::user_names(settings.users);
    let mut users = tokio::task::JoinSet::new();
    users.spawn(feed_bot::poster::build_follow_graph(
        names.clone(),
        client.clone(),
        settings.clone(),
        shutdown.clone(),
    ));
    for name in names {
        users.spawn(run_user(
            name,
            client.clone(),
            settings.clone(),
            counters.clone(),
            shutdown.clone(),
        ));
    }
    let stop = shutdown.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("signal received; stopping");
        stop.cancel();
    });
    while users.join_next().await.is_some() {}
    tracing::info!(
        posted = counters.posted.load(Ordering::Relaxed),
        failed = counters.failed.load(Ordering::Relaxed),
        "bot stopped"
    );
    std::process::ExitCode::SUCCESS
}

/// `feed-bot load ...`: one load run, then the report (table, and JSON with `--json`).
async fn load_main(args: LoadArgs) -> std::process::ExitCode {
    let shutdown = Shutdown::default();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        stop.cancel();
    });
    let json_path = args.json.clone();
    match feed_bot::load::run(args, shutdown).await {
        Ok(report) => {
            println!("{}", report.table());
            let json = match serde_json::to_string_pretty(&report) {
                Ok(json) => json,
                Err(e) => {
                    eprintln!("feed-bot load: could not encode the report: {e}");
                    return std::process::ExitCode::FAILURE;
                }
            };
            if let Some(path) = json_path {
                if let Err(e) = std::fs::write(&path, &json) {
                    eprintln!("feed-bot load: could not write {}: {e}", path.display());
                    return std::process::ExitCode::FAILURE;
                }
            }
            println!("{json}");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("feed-bot load: {}", feed_bot::chain(&e));
            std::process::ExitCode::FAILURE
        }
    }
}

/// `feed-bot readers ...`: until a signal, then the report as JSON.
async fn readers_main(args: feed_bot::readers::ReadersArgs) -> std::process::ExitCode {
    let readers = match args.readers().await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("feed-bot readers: {}", feed_bot::chain(&e));
            return std::process::ExitCode::from(2);
        }
    };
    let stop = tokio_util::sync::CancellationToken::new();
    let stopping = stop.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        stopping.cancel();
    });
    let report = readers.run(stop).await;
    match serde_json::to_string(&report) {
        Ok(json) => {
            println!("{json}");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("feed-bot readers: could not encode the report: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn wait_for_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for SIGTERM");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term.recv() => {},
    }
}
