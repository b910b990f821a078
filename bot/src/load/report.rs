//! The end-of-run report: a table for people, JSON for scripts.

use std::collections::BTreeMap;

use serde::Serialize;

/// Latency percentiles in milliseconds.
#[derive(Debug, Default, Serialize, Clone, Copy)]
pub struct Percentiles {
    pub samples: usize,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Percentiles {
    /// From samples in nanoseconds (sorted in place).
    pub fn from_nanos(samples: &mut [u64]) -> Percentiles {
        if samples.is_empty() {
            return Percentiles::default();
        }
        samples.sort_unstable();
        let at = |q: f64| {
            let i = ((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len()) - 1;
            samples[i] as f64 / 1e6
        };
        Percentiles {
            samples: samples.len(),
            p50_ms: at(0.50),
            p90_ms: at(0.90),
            p99_ms: at(0.99),
            max_ms: samples[samples.len() - 1] as f64 / 1e6,
        }
    }
}

/// Delivery to the feed clients.
#[derive(Debug, Default, Serialize)]
pub struct Delivery {
    pub clients: usize,
    pub clients_connected: usize,
    pub clients_lagged: usize,
    pub client_errors: usize,
    /// Acknowledged messages a client never received, summed over clients.
    pub missed_total: u64,
    pub clients_with_missed: usize,
    pub max_missed_per_client: u64,
    /// Messages a client received more than once, summed over clients.
    pub duplicates_total: u64,
    /// Messages a home stream received whose author its reader does not
    /// follow, summed over clients (always 0 on the global feed).
    pub unwanted_total: u64,
    pub events_received: u64,
    pub end_to_end: Percentiles,
}

#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub mode: String,
    pub url: String,
    pub duration_s: f64,
    pub target_rate: f64,
    pub connections: usize,
    pub requests_sent: u64,
    pub accepted: u64,
    pub errors: BTreeMap<String, u64>,
    /// Accepted requests per second over the posting period.
    pub throughput_per_s: f64,
    pub request_latency: Percentiles,
    pub delivery: Option<Delivery>,
}

fn row(out: &mut String, name: &str, value: String) {
    out.push_str(&format!("  {name:<34} {value}\n"));
}

fn pct(p: &Percentiles) -> String {
    format!(
        "p50 {:.1} ms  p90 {:.1} ms  p99 {:.1} ms  max {:.1} ms  (n={})",
        p.p50_ms, p.p90_ms, p.p99_ms, p.max_ms, p.samples
    )
}

impl Report {
    pub fn table(&self) -> String {
        let mut out = String::new();
        out.push_str(&format!("\n== load report: {} {}\n", self.mode, self.url));
        row(&mut out, "duration", format!("{:.1} s", self.duration_s));
        let target = if self.target_rate > 0.0 {
            format!("{:.0}/s", self.target_rate)
        } else {
            "as fast as possible".into()
        };
        row(&mut out, "target rate", target);
        row(&mut out, "connections", self.connections.to_string());
        row(&mut out, "requests sent", self.requests_sent.to_string());
        row(&mut out, "accepted (2xx)", self.accepted.to_string());
        let errors = if self.errors.is_empty() {
            "none".into()
        } else {
            self.errors
                .iter()
                .map(|(k, v)| format!("{k}: {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        row(&mut out, "errors", errors);
        row(
            &mut out,
            "throughput",
            format!("{:.1}/s", self.throughput_per_s),
        );
        row(&mut out, "request latency", pct(&self.request_latency));
        if let Some(d) = &self.delivery {
            row(
                &mut out,
                "feed clients (connected)",
                format!("{} ({})", d.clients, d.clients_connected),
            );
            row(
                &mut out,
                "clients lagged / errors",
                format!("{} / {}", d.clients_lagged, d.client_errors),
            );
            row(&mut out, "events received", d.events_received.to_string());
            row(
                &mut out,
                "missed (total, clients, max)",
                format!(
                    "{}, {}, {}",
                    d.missed_total, d.clients_with_missed, d.max_missed_per_client
                ),
            );
            row(&mut out, "received twice", d.duplicates_total.to_string());
            row(
                &mut out,
                "from authors not followed",
                d.unwanted_total.to_string(),
            );
            row(&mut out, "end-to-end latency", pct(&d.end_to_end));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_known_samples() {
        let mut v: Vec<u64> = (1..=100).map(|ms| ms * 1_000_000).collect();
        let p = Percentiles::from_nanos(&mut v);
        assert_eq!(p.p50_ms, 50.0);
        assert_eq!(p.p90_ms, 90.0);
        assert_eq!(p.p99_ms, 99.0);
        assert_eq!(p.max_ms, 100.0);
        assert_eq!(Percentiles::from_nanos(&mut []).samples, 0);
    }
}
