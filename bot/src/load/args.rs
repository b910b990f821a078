//! Command line of `feed-bot load`.

use std::time::Duration;

/// What one load run does.
#[derive(Debug, Clone)]
pub struct LoadArgs {
    /// Base URL of the api (default: `API_URL` or `http://localhost:8090`).
    pub url: String,
    /// Posts per second in total; 0 posts as fast as the connections allow.
    pub rate: f64,
    /// Concurrent POST connections.
    pub connections: usize,
    /// How long to post.
    pub duration: Duration,
    /// SSE clients held on `/api/feed` (history=0) during the run.
    pub clients: usize,
    /// How long to wait after the last post for clients to receive everything.
    pub drain: Duration,
    /// Distinct user ids the posts rotate through.
    pub users: usize,
    /// `GET` this path instead of posting (e.g. `/api/health`, to measure the HTTP stack).
    pub get: Option<String>,
    /// Write the JSON report here as well.
    pub json: Option<String>,
    /// Several api instances: clients are spread over them, posts go to the first.
    pub feed_urls: Vec<String>,
}

pub const USAGE: &str =
    "usage: feed-bot load [--url URL] [--rate N] [--connections N] [--duration SECS]
                     [--clients N] [--feed-url URL]... [--drain SECS] [--users N]
                     [--get PATH] [--json FILE]

  --rate N          posts per second in total (0 = as fast as possible; default 0)
  --connections N   concurrent POST connections (default 16)
  --duration SECS   how long to post (default 10)
  --clients N       SSE clients held on /api/feed during the run (default 1)
  --feed-url URL    api instance for the SSE clients (repeat to spread them; default --url)
  --drain SECS      wait for delivery after the last post (default 15)
  --users N         distinct user ids (default 50)
  --get PATH        GET PATH instead of posting (measures the HTTP stack, e.g. /api/health)
  --json FILE       also write the report as JSON to FILE";

impl LoadArgs {
    pub fn parse(args: &[String], default_url: &str) -> Result<LoadArgs, String> {
        let mut out = LoadArgs {
            url: default_url.to_owned(),
            rate: 0.0,
            connections: 16,
            duration: Duration::from_secs(10),
            clients: 1,
            drain: Duration::from_secs(15),
            users: 50,
            get: None,
            json: None,
            feed_urls: Vec::new(),
        };
        let mut it = args.iter();
        while let Some(flag) = it.next() {
            let mut value = || {
                it.next()
                    .cloned()
                    .ok_or_else(|| format!("{flag} needs a value"))
            };
            let number = |v: String| {
                v.parse::<f64>()
                    .map_err(|_| format!("{flag}: {v:?} is not a number"))
            };
            match flag.as_str() {
                "--url" => out.url = value()?.trim_end_matches('/').to_owned(),
                "--rate" => out.rate = number(value()?)?,
                "--connections" => out.connections = number(value()?)? as usize,
                "--duration" => out.duration = Duration::from_secs_f64(number(value()?)?),
                "--clients" => out.clients = number(value()?)? as usize,
                "--feed-url" => out
                    .feed_urls
                    .push(value()?.trim_end_matches('/').to_owned()),
                "--drain" => out.drain = Duration::from_secs_f64(number(value()?)?),
                "--users" => out.users = number(value()?)? as usize,
                "--get" => out.get = Some(value()?),
                "--json" => out.json = Some(value()?),
                "-h" | "--help" => return Err(USAGE.to_owned()),
                other => return Err(format!("unknown option {other:?}\n{USAGE}")),
            }
        }
        if out.rate < 0.0 || !out.rate.is_finite() {
            return Err("--rate must be 0 or more".into());
        }
        if out.connections == 0 || out.users == 0 {
            return Err("--connections and --users must be at least 1".into());
        }
        if out.feed_urls.is_empty() {
            out.feed_urls.push(out.url.clone());
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<LoadArgs, String> {
        let args: Vec<String> = s.split_whitespace().map(str::to_owned).collect();
        LoadArgs::parse(&args, "http://localhost:8090")
    }

    #[test]
    fn parses_flags() {
        let a =
            parse("--rate 100 --connections 4 --duration 2.5 --clients 1000 --feed-url http://b/")
                .unwrap();
        assert_eq!(a.rate, 100.0);
        assert_eq!(a.connections, 4);
        assert_eq!(a.duration, Duration::from_millis(2500));
        assert_eq!(a.clients, 1000);
        assert_eq!(a.feed_urls, vec!["http://b".to_owned()]);
    }

    #[test]
    fn rejects_nonsense() {
        assert!(parse("--rate -1").is_err());
        assert!(parse("--connections 0").is_err());
        assert!(parse("--bogus 1").is_err());
        assert!(parse("--rate").is_err());
    }
}
