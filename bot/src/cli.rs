//! The command line of `feed-bot`: the bot by default, `feed-bot load` for
//! one load-generator run.

use crate::config::BotArgs;
use crate::load::args::LoadArgs;

#[derive(Debug, clap::Parser)]
#[command(
    name = "feed-bot",
    version,
    about = "Simulated users posting through the feed's public API; `feed-bot load` is the load generator",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub bot: BotArgs,
}

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// One load run: posts at a fixed rate or as fast as possible, SSE
    /// clients counting every delivery, then a report (table and JSON).
    Load(LoadArgs),
    /// Feed clients that reconnect as a browser's EventSource does, until
    /// SIGINT or SIGTERM; then a JSON report of the statuses they met.
    Readers(crate::readers::ReadersArgs),
}
