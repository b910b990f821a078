//! Command line of `feed-bot load`.

use std::path::PathBuf;
use std::time::Duration;

use crate::config::seconds;

/// What one load run does.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "feed-bot load")]
pub struct LoadArgs {
    /// Base URL of the api
    #[arg(long, env = "API_URL", default_value = "http://localhost:8090", value_parser = base_url)]
    pub url: String,
    /// Posts per second in total (0: as fast as the connections allow)
    #[arg(long, default_value_t = 0.0, value_parser = rate)]
    pub rate: f64,
    /// Concurrent POST connections
    #[arg(long, default_value_t = 16, value_parser = at_least_one)]
    pub connections: usize,
    /// How long to post, in seconds
    #[arg(long, default_value = "10", value_parser = seconds)]
    pub duration: Duration,
    /// SSE clients held on /api/feed (history=0) during the run
    #[arg(long, default_value_t = 1)]
    pub clients: usize,
    /// An api instance for the SSE clients (repeat to spread them) [default: --url]
    #[arg(long = "feed-url", value_parser = base_url)]
    pub feed_urls: Vec<String>,
    /// How long to wait after the last post for clients to receive everything, in seconds
    #[arg(long, default_value = "15", value_parser = seconds)]
    pub drain: Duration,
    /// Distinct user ids the posts rotate through
    #[arg(long, default_value_t = 50, value_parser = at_least_one)]
    pub users: usize,
    /// GET this path instead of posting (measures the HTTP stack, e.g. /api/health)
    #[arg(long)]
    pub get: Option<String>,
    /// Also write the JSON report to this file
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Sign an HS256 token per user with this secret (the api's AUTH_JWT_SECRET)
    #[arg(long, env = "AUTH_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
    /// Home streams instead of the global feed: client i reads ?home= of
    /// the (i mod N)-th of the posting users, after the run has made each
    /// of those N follow --follows others (0: the global feed)
    #[arg(long, default_value_t = 0)]
    pub home_readers: usize,
    /// Accounts each home reader follows (Zipf-skewed, as the bot's graph)
    #[arg(long, default_value_t = 20)]
    pub follows: usize,
    /// Make no follows: read back those an earlier run made
    #[arg(long)]
    pub keep_follows: bool,
}

impl LoadArgs {
    /// The instances the SSE clients connect to.
    pub fn feed_targets(&self) -> Vec<String> {
        if self.feed_urls.is_empty() {
            vec![self.url.clone()]
        } else {
            self.feed_urls.clone()
        }
    }
}

fn base_url(value: &str) -> Result<String, String> {
    if value.starts_with("http://") || value.starts_with("https://") {
        Ok(value.trim_end_matches('/').to_owned())
    } else {
        Err("must start with http:// or https://".to_owned())
    }
}

fn rate(value: &str) -> Result<f64, String> {
    match value.parse::<f64>() {
        Ok(r) if r.is_finite() && r >= 0.0 => Ok(r),
        _ => Err("must be a number of posts per second, 0 or more".to_owned()),
    }
}

fn at_least_one(value: &str) -> Result<usize, String> {
    match value.parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err("must be a whole number, at least 1".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;

    fn parse(s: &str) -> Result<LoadArgs, clap::Error> {
        LoadArgs::try_parse_from(std::iter::once("load").chain(s.split_whitespace()))
    }

    #[test]
    fn parses_flags() {
        let a =
            parse("--rate 100 --connections 4 --duration 2.5 --clients 1000 --feed-url http://b/")
                .expect("valid");
        assert_eq!(a.rate, 100.0);
        assert_eq!(a.connections, 4);
        assert_eq!(a.duration, Duration::from_millis(2500));
        assert_eq!(a.clients, 1000);
        assert_eq!(a.feed_targets(), vec!["http://b".to_owned()]);
        assert_eq!(
            parse("").expect("defaults").feed_targets(),
            vec![a.url.clone()]
        );
    }

    #[test]
    fn rejects_nonsense() {
        assert!(parse("--rate -1").is_err());
        assert!(parse("--connections 0").is_err());
        assert!(parse("--bogus 1").is_err());
        assert!(parse("--rate").is_err());
        assert!(parse("--url localhost:8090").is_err());
        assert!(parse("--home-readers x").is_err());
    }
}
