//! `persist-ceiling`: how many batches a second the worker's transaction
//! (`Store::persist`: idempotent insert plus the one sequence counter row)
//! commits against this database, at batch sizes 1, 10, 100 and 500, with
//! one writer and with several at once (several instances' workers contend
//! for the counter row). The capacity model in docs/PERFORMANCE.md starts
//! from these figures.
//!
//! Creates a database of its own next to `DATABASE_URL`'s (and drops it at
//! the end), so it never touches the feed's data.
//!
//! ```text
//! DATABASE_URL=postgresql://postgres:<password>@127.0.0.1:55432/feed persist-ceiling --seconds 5
//! ```

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use tokio_postgres::NoTls;

use feed_api::config::Settings;
use feed_api::message::{Command, Message};
use feed_api::store::Store;

/// The worker's transaction alone, at several batch sizes.
#[derive(Parser)]
#[command(name = "persist-ceiling", about)]
struct Args {
    /// Seconds per measurement.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Batch sizes to measure.
    #[arg(long, value_delimiter = ',', default_value = "1,10,100,500")]
    batches: Vec<usize>,
    /// Concurrent writers to measure (each its own connection).
    #[arg(long, value_delimiter = ',', default_value = "1,4")]
    writers: Vec<usize>,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("persist-ceiling: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn with_database(url: &str, db: &str) -> anyhow::Result<String> {
    // The query may hold paths (`sslrootcert=/…`): split it off first.
    let (path, query) = match url.split_once('?') {
        Some((path, query)) => (path, format!("?{query}")),
        None => (url, String::new()),
    };
    let (base, _) = path
        .rsplit_once('/')
        .ok_or_else(|| anyhow::anyhow!("DATABASE_URL has no database path"))?;
    Ok(format!("{base}/{db}{query}"))
}

async fn admin(url: &str, sql: &str) -> anyhow::Result<()> {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await?;
    let driver = tokio::spawn(connection);
    client.batch_execute(sql).await?;
    drop(client);
    let _ = driver.await;
    Ok(())
}

async fn run() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut settings = Settings::from_env()?;
    let db = format!("feed_persist_ceiling_{}", std::process::id());
    let base = settings.database.url.clone();
    admin(&base, &format!("CREATE DATABASE {db}")).await?;
    settings.database.url = with_database(&base, &db)?;
    settings.database.pool_size = args.writers.iter().copied().max().unwrap_or(1);
    let result = measure(&args, &settings).await;
    // PostgreSQL 13+ closes lingering sessions with FORCE; CockroachDB has no
    // such option (and drops a database that is still connected to).
    if admin(&base, &format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
        .await
        .is_err()
    {
        admin(&base, &format!("DROP DATABASE IF EXISTS {db}")).await?;
    }
    result
}

async fn measure(args: &Args, settings: &Settings) -> anyhow::Result<()> {
    let store = Store::new(&settings.database)?;
    store.migrate().await?;
    for &writers in &args.writers {
        for &batch in &args.batches {
            let commits = Arc::new(AtomicU64::new(0));
            let until = Instant::now() + Duration::from_secs(args.seconds);
            let mut tasks = Vec::new();
            for w in 0..writers {
                let store = store.clone();
                let commits = commits.clone();
                tasks.push(tokio::spawn(async move {
                    let mut latencies = Vec::new();
                    while Instant::now() < until {
                        let messages: Vec<Command> = (0..batch)
                            .map(|i| {
                                Message::new(&format!("writer{w}"), &format!("persist ceiling {i}"))
                                    .map(Command::Post)
                            })
                            .collect::<Result<_, _>>()?;
                        let started = Instant::now();
                        store.persist(&messages).await?;
                        latencies.push(started.elapsed());
                        commits.fetch_add(1, Ordering::Relaxed);
                    }
                    anyhow::Ok(latencies)
                }));
            }
            let mut latencies = Vec::new();
            for task in tasks {
                latencies.extend(task.await??);
            }
            latencies.sort();
            let n = commits.load(Ordering::Relaxed);
            let secs = args.seconds as f64;
            let p = |q: f64| {
                let i = ((latencies.len() as f64 * q).ceil() as usize)
                    .clamp(1, latencies.len().max(1))
                    - 1;
                latencies.get(i).map_or(0.0, |d| d.as_secs_f64() * 1000.0)
            };
            println!(
                "{}",
                serde_json::json!({
                    "writers": writers,
                    "batch": batch,
                    "commits_per_s": (n as f64 / secs).round(),
                    "messages_per_s": (n as f64 * batch as f64 / secs).round(),
                    "commit_p50_ms": (p(0.5) * 100.0).round() / 100.0,
                    "commit_p99_ms": (p(0.99) * 100.0).round() / 100.0,
                })
            );
        }
    }
    Ok(())
}
