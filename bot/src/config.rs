//! The bot's settings: flags, or the environment variables named in
//! docs/CONFIGURATION.md (`clap` reads both, so `--help` lists every
//! variable with its default, and an invalid value is refused naming it:
//! each flag's value name is its variable).

use std::time::Duration;

/// The settings of `feed-bot` (without a subcommand).
#[derive(Debug, Clone, clap::Args)]
pub struct BotArgs {
    /// Base URL of the api [default: http://API_HOST:API_PORT]
    #[arg(long, env = "API_URL", value_name = "API_URL")]
    pub api_url: Option<String>,
    /// Host of the api, when API_URL is not set
    #[arg(
        long,
        env = "API_HOST",
        value_name = "API_HOST",
        default_value = "localhost"
    )]
    pub api_host: String,
    /// Port of the api, when API_URL is not set
    #[arg(
        long,
        env = "API_PORT",
        value_name = "API_PORT",
        default_value_t = 8090
    )]
    pub api_port: u16,
    /// Simulated users
    #[arg(long, env = "BOT_USERS", value_name = "BOT_USERS", default_value_t = 3,
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub users: u32,
    /// Seconds between two posts of one user
    #[arg(long, env = "BOT_INTERVAL_SECS", value_name = "BOT_INTERVAL_SECS", default_value = "10",
          value_parser = seconds)]
    pub interval: Duration,
    /// Random spread (±) around the interval, in seconds; at most the interval
    #[arg(long, env = "BOT_JITTER_SECS", value_name = "BOT_JITTER_SECS", default_value = "2",
          value_parser = seconds)]
    pub jitter: Duration,
    /// Percent of its own posts each user deletes again, one turn later
    #[arg(long, env = "BOT_DELETE_PERCENT", value_name = "BOT_DELETE_PERCENT", default_value_t = 5,
          value_parser = clap::value_parser!(u8).range(0..=100))]
    pub delete_percent: u8,
    /// Accounts each user follows at start (Zipf-skewed: a few are followed by many)
    #[arg(long, env = "BOT_FOLLOWS", value_name = "BOT_FOLLOWS", default_value_t = 5,
          value_parser = clap::value_parser!(u32).range(0..=5000))]
    pub follows: u32,
    /// Stop after this many posts in total [default: unlimited]
    #[arg(long, env = "BOT_MAX_POSTS", value_name = "BOT_MAX_POSTS")]
    pub max_posts: Option<u64>,
    /// Sign an HS256 token per user with this secret (the api's AUTH_JWT_SECRET)
    #[arg(
        long,
        env = "AUTH_JWT_SECRET",
        value_name = "AUTH_JWT_SECRET",
        hide_env_values = true
    )]
    pub jwt_secret: Option<String>,
}

/// Settings that parse but do not fit together.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("API_URL={0:?} must start with http:// or https://")]
    ApiUrl(String),
    #[error("BOT_JITTER_SECS ({jitter:?}) must not exceed BOT_INTERVAL_SECS ({interval:?})")]
    JitterAboveInterval {
        jitter: Duration,
        interval: Duration,
    },
}

/// What the bot runs with.
#[derive(Debug, Clone)]
pub struct BotSettings {
    /// Base URL of the api, without a trailing slash.
    pub api_url: String,
    pub users: usize,
    pub interval: Duration,
    pub jitter: Duration,
    pub max_posts: Option<u64>,
    /// Percent of its posts a user deletes again.
    pub delete_percent: u8,
    /// Accounts each user follows.
    pub follows: usize,
    /// Secret to sign tokens with, when the api requires them.
    pub jwt_secret: Option<String>,
}

impl BotArgs {
    pub fn settings(self) -> Result<BotSettings, SettingsError> {
        let api_url = match self.api_url {
            Some(url) => url.trim_end_matches('/').to_owned(),
            None => format!("http://{}:{}", self.api_host, self.api_port),
        };
        if !(api_url.starts_with("http://") || api_url.starts_with("https://")) {
            return Err(SettingsError::ApiUrl(crate::shown_url(&api_url)));
        }
        if self.jitter > self.interval {
            return Err(SettingsError::JitterAboveInterval {
                jitter: self.jitter,
                interval: self.interval,
            });
        }
        Ok(BotSettings {
            api_url,
            users: self.users as usize,
            interval: self.interval,
            jitter: self.jitter,
            max_posts: self.max_posts,
            delete_percent: self.delete_percent,
            follows: self.follows as usize,
            jwt_secret: self.jwt_secret,
        })
    }
}

/// A number of seconds from 0 to 86400, fractions allowed.
pub fn seconds(value: &str) -> Result<Duration, String> {
    match value.trim().parse::<f64>() {
        Ok(s) if s.is_finite() && (0.0..=86_400.0).contains(&s) => Ok(Duration::from_secs_f64(s)),
        _ => Err("must be a number of seconds from 0 to 86400".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;
    use crate::cli::Cli;

    fn parse(args: &[&str]) -> Result<BotArgs, clap::Error> {
        let argv = std::iter::once("feed-bot").chain(args.iter().copied());
        Cli::try_parse_from(argv).map(|cli| cli.bot)
    }

    #[test]
    fn defaults_match_the_original_bot() {
        let s = parse(&[]).expect("defaults").settings().expect("valid");
        assert_eq!(s.api_url, "http://localhost:8090");
        assert_eq!(s.users, 3);
        assert_eq!(s.interval, Duration::from_secs(10));
        assert_eq!(s.jitter, Duration::from_secs(2));
        assert_eq!(s.max_posts, None);
    }

    #[test]
    fn host_and_port_build_the_url() {
        let s = parse(&["--api-host", "api", "--api-port", "9000"])
            .expect("valid")
            .settings()
            .expect("valid");
        assert_eq!(s.api_url, "http://api:9000");
    }

    #[test]
    fn invalid_values_name_the_variable() {
        for (flag, value, var) in [
            ("--users", "0", "BOT_USERS"),
            ("--users", "many", "BOT_USERS"),
            ("--interval", "-1", "BOT_INTERVAL_SECS"),
            ("--api-port", "99999", "API_PORT"),
            ("--max-posts", "lots", "BOT_MAX_POSTS"),
            ("--follows", "5001", "BOT_FOLLOWS"),
        ] {
            let arg = format!("{flag}={value}");
            let err = parse(&[&arg]).expect_err(flag).to_string();
            assert!(err.contains(var), "{flag} {value}: {err}");
        }
        let err = parse(&["--jitter", "20"])
            .expect("parses")
            .settings()
            .expect_err("jitter");
        assert!(err.to_string().contains("BOT_JITTER_SECS"), "{err}");
        let err = parse(&["--api-url", "localhost:8090"])
            .expect("parses")
            .settings()
            .expect_err("scheme");
        assert!(err.to_string().contains("API_URL"), "{err}");
    }
}
