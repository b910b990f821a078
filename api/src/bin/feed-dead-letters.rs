//! `feed-dead-letters`: the operator's view of the dead-letter topic, and the
//! way to send a record back through the pipeline once what rejected it is
//! fixed. Reads the same environment variables as the api (`KAFKA_BROKERS`,
//! `TOPIC_EVENTS_DEAD_LETTER`, ...). docs/OPERATIONS.md walks through it.
//!
//! ```text
//! feed-dead-letters list                  # one JSON object per dead letter
//! feed-dead-letters replay --offset 3     # write record 3 back to its source topic
//! ```

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use feed_api::config::Settings;
use feed_api::dead_letter;
use feed_api::error::Chain;

#[derive(Parser)]
#[command(about = "Inspect and replay the feed's dead-letter topic")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Prints every dead letter as one JSON object a line, oldest first.
    List {
        /// Bytes of each payload to print.
        #[arg(long, default_value_t = 200)]
        preview: usize,
    },
    /// Writes one dead letter back to the topic it came from, with its key.
    Replay {
        /// Offset of the dead letter.
        #[arg(long)]
        offset: i64,
        /// Partition of the dead letter.
        #[arg(long, default_value_t = 0)]
        partition: i32,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let settings = match Settings::from_env() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("feed-dead-letters: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    let kafka = settings.kafka;
    match cli.command {
        Command::List { preview } => {
            let listed =
                tokio::task::spawn_blocking(move || dead_letter::list(&kafka, preview)).await;
            match listed {
                Ok(Ok(letters)) => {
                    for letter in &letters {
                        match serde_json::to_string(letter) {
                            Ok(line) => println!("{line}"),
                            Err(e) => eprintln!("feed-dead-letters: {e}"),
                        }
                    }
                    eprintln!("{} dead letter(s)", letters.len());
                    ExitCode::SUCCESS
                }
                Ok(Err(e)) => fail(&e),
                Err(e) => fail(&e),
            }
        }
        Command::Replay { offset, partition } => {
            match dead_letter::replay(&kafka, partition, offset).await {
                Ok((topic, p, o)) => {
                    println!("replayed dead letter {partition}/{offset} to {topic} partition {p} offset {o}");
                    ExitCode::SUCCESS
                }
                Err(e) => fail(&e),
            }
        }
    }
}

fn fail(e: &(dyn std::error::Error + 'static)) -> ExitCode {
    eprintln!("feed-dead-letters: {}", Chain(e));
    ExitCode::FAILURE
}
