//! Bot settings from the environment (docs/CONFIGURATION.md).

use std::collections::HashMap;
use std::time::Duration;

/// A variable whose value we cannot use.
#[derive(Debug, thiserror::Error)]
#[error("invalid value for {var}={value:?}: {reason}")]
pub struct ConfigError {
    pub var: String,
    pub value: String,
    pub reason: String,
}

#[derive(Debug, Clone)]
pub struct BotSettings {
    /// Base URL of the API (`API_URL`, else `http://API_HOST:API_PORT`).
    pub api_url: String,
    /// Number of simulated users (`BOT_USERS`, default 3).
    pub users: usize,
    /// Time between two posts of one user (`BOT_INTERVAL_SECS`, default 10).
    pub interval: Duration,
    /// Random spread around the interval (`BOT_JITTER_SECS`, default 2).
    pub jitter: Duration,
    /// Stop after this many posts in total (`BOT_MAX_POSTS`, default unlimited).
    pub max_posts: Option<u64>,
}

impl BotSettings {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_vars(&std::env::vars().collect())
    }

    pub fn from_vars(vars: &HashMap<String, String>) -> Result<Self, ConfigError> {
        let get = |k: &str| vars.get(k).map(String::as_str).filter(|v| !v.is_empty());
        let invalid = |var: &str, reason: &str| ConfigError {
            var: var.to_owned(),
            value: get(var).unwrap_or_default().to_owned(),
            reason: reason.to_owned(),
        };
        let api_url = match get("API_URL") {
            Some(url) => url.trim_end_matches('/').to_owned(),
            None => {
                let host = get("API_HOST").unwrap_or("localhost");
                let port: u16 = match get("API_PORT") {
                    None => 8090,
                    Some(p) => p
                        .parse()
                        .map_err(|_| invalid("API_PORT", "must be a port number"))?,
                };
                format!("http://{host}:{port}")
            }
        };
        if !(api_url.starts_with("http://") || api_url.starts_with("https://")) {
            return Err(invalid("API_URL", "must start with http:// or https://"));
        }
        let users = match get("BOT_USERS") {
            None => 3,
            Some(v) => match v.parse::<usize>() {
                Ok(n) if (1..=100_000).contains(&n) => n,
                _ => return Err(invalid("BOT_USERS", "must be an integer from 1 to 100000")),
            },
        };
        let secs = |var: &str, default: f64| -> Result<Duration, ConfigError> {
            match get(var) {
                None => Ok(Duration::from_secs_f64(default)),
                Some(v) => match v.parse::<f64>() {
                    Ok(s) if s.is_finite() && (0.0..=86_400.0).contains(&s) => {
                        Ok(Duration::from_secs_f64(s))
                    }
                    _ => Err(invalid(var, "must be a number of seconds from 0 to 86400")),
                },
            }
        };
        let interval = secs("BOT_INTERVAL_SECS", 10.0)?;
        let jitter = secs("BOT_JITTER_SECS", 2.0)?;
        if jitter > interval {
            return Err(invalid(
                "BOT_JITTER_SECS",
                "must not exceed BOT_INTERVAL_SECS",
            ));
        }
        let max_posts = match get("BOT_MAX_POSTS") {
            None => None,
            Some(v) => Some(
                v.parse::<u64>()
                    .map_err(|_| invalid("BOT_MAX_POSTS", "must be a whole number"))?,
            ),
        };
        Ok(BotSettings {
            api_url,
            users,
            interval,
            jitter,
            max_posts,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_match_the_original_bot() {
        let s = BotSettings::from_vars(&vars(&[])).expect("defaults");
        assert_eq!(s.api_url, "http://localhost:8090");
        assert_eq!(s.users, 3);
        assert_eq!(s.interval, Duration::from_secs(10));
    }

    #[test]
    fn host_and_port_build_the_url() {
        let s = BotSettings::from_vars(&vars(&[("API_HOST", "api"), ("API_PORT", "9000")]))
            .expect("valid");
        assert_eq!(s.api_url, "http://api:9000");
    }

    #[test]
    fn invalid_values_name_the_variable() {
        for (var, value) in [
            ("BOT_USERS", "0"),
            ("BOT_USERS", "many"),
            ("BOT_INTERVAL_SECS", "-1"),
            ("BOT_JITTER_SECS", "20"),
            ("API_URL", "localhost:8090"),
            ("API_PORT", "99999"),
        ] {
            let err = BotSettings::from_vars(&vars(&[(var, value)])).expect_err(var);
            assert_eq!(err.var, var);
        }
    }
}
