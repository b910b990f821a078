//! A lean SSE client for load runs: raw HTTP/1.0 over TCP (the body is the
//! event stream itself, no chunking), so thousands of them fit in one
//! process. It only looks for the run's marker in each `data:` line.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

/// What one client saw.
#[derive(Debug, Default)]
pub struct ClientLog {
    /// `(message number, nanoseconds since the run started)` per received event.
    pub arrivals: Vec<(u32, u64)>,
    pub connected: bool,
    pub lagged: bool,
    /// The home reader (an index into the run's users), for a home stream.
    pub home: Option<usize>,
    pub error: Option<String>,
}

/// Shared live counters for the progress line.
#[derive(Default)]
pub struct ClientCounters {
    pub connected: AtomicUsize,
    pub events: AtomicU64,
}

/// A feed client's target that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("{0}: only http:// is supported for feed clients")]
    Scheme(String),
    #[error("{url}: could not resolve the host")]
    Lookup {
        url: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}: the host has no address")]
    NoAddress(String),
}

/// Resolves `http://host:port` into a socket address and a Host header.
pub async fn resolve(url: &str) -> Result<(SocketAddr, String), ResolveError> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| ResolveError::Scheme(url.to_owned()))?;
    let host = rest.split('/').next().unwrap_or(rest).to_owned();
    let with_port = if host.contains(':') {
        host.clone()
    } else {
        format!("{host}:80")
    };
    let addr = tokio::net::lookup_host(&with_port)
        .await
        .map_err(|source| ResolveError::Lookup {
            url: url.to_owned(),
            source,
        })?
        .next()
        .ok_or_else(|| ResolveError::NoAddress(url.to_owned()))?;
    Ok((addr, host))
}

/// Holds one feed connection until `stop`, recording the run's messages:
/// the global feed, or the home stream of `home` (`(index, user id)`).
pub async fn run(
    addr: SocketAddr,
    host: String,
    home: Option<(usize, String)>,
    marker: Arc<str>,
    start: Instant,
    stop: CancellationToken,
    counters: Arc<ClientCounters>,
) -> ClientLog {
    let mut log = ClientLog {
        home: home.as_ref().map(|(i, _)| *i),
        ..ClientLog::default()
    };
    let query = match &home {
        Some((_, user)) => format!("history=0&home={user}"),
        None => "history=0".to_owned(),
    };
    let stream = match TcpStream::connect(addr).await {
        Ok(s) => s,
        Err(e) => {
            log.error = Some(format!("connect: {e}"));
            return log;
        }
    };
    let mut reader = BufReader::with_capacity(16 * 1024, stream);
    let request = format!(
        "GET /api/feed?{query} HTTP/1.0\r\nHost: {host}\r\nAccept: text/event-stream\r\n\r\n"
    );
    if let Err(e) = reader.get_mut().write_all(request.as_bytes()).await {
        log.error = Some(format!("request: {e}"));
        return log;
    }
    let mut line = String::new();
    let mut in_head = true;
    loop {
        line.clear();
        let read = tokio::select! {
            _ = stop.cancelled() => break,
            read = reader.read_line(&mut line) => read,
        };
        match read {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => {
                log.error = Some(format!("read: {e}"));
                break;
            }
        }
        if in_head {
            if line.starts_with("HTTP/") && !line.contains(" 200 ") {
                log.error = Some(format!("status: {}", line.trim()));
                break;
            }
            if line == "\r\n" || line == "\n" {
                in_head = false;
                log.connected = true;
                counters.connected.fetch_add(1, Ordering::Relaxed);
            }
            continue;
        }
        if let Some(data) = line.strip_prefix("data: ") {
            if let Some(n) = message_number(data, &marker) {
                log.arrivals.push((n, start.elapsed().as_nanos() as u64));
                counters.events.fetch_add(1, Ordering::Relaxed);
            }
        } else if line.starts_with("event: lagged") {
            log.lagged = true;
        }
    }
    if log.connected {
        counters.connected.fetch_sub(1, Ordering::Relaxed);
    }
    log
}

/// The number in `"content":"<marker> <n> ..."`, if this event is one of the run's.
pub fn message_number(data: &str, marker: &str) -> Option<u32> {
    let at = data.find(marker)?;
    let rest = &data[at + marker.len()..];
    let digits: &str = rest.split(|c: char| !c.is_ascii_digit()).next()?;
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_marker() {
        let data = r#"{"id":"x","user_id":"u","content":"load ab12 417 Hot take: coffee","created_at":"t"}"#;
        assert_eq!(message_number(data, "load ab12 "), Some(417));
        assert_eq!(message_number(data, "load zz99 "), None);
    }
}
