//! The process's own figures (`process_resident_memory_bytes`,
//! `process_open_fds`, `process_cpu_seconds_total`), read from `/proc/self`
//! at scrape time, so they cost nothing between scrapes (Linux; elsewhere
//! they are left out).

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// `process_resident_memory_bytes`, `process_open_fds` and
/// `process_cpu_seconds_total`, read from `/proc/self` at scrape time
/// (Linux; elsewhere they are left out).
#[derive(Debug)]
pub struct ProcessCollector;

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(p) = process_figures() else {
            return Ok(());
        };
        encode_one(
            &mut encoder,
            "process_resident_memory_bytes",
            "resident memory",
            &ConstGauge::new(p.resident_bytes),
        )?;
        encode_one(
            &mut encoder,
            "process_open_fds",
            "open file descriptors",
            &ConstGauge::new(p.open_fds),
        )?;
        encode_one(
            &mut encoder,
            "process_cpu_seconds",
            "user and system CPU time",
            &ConstCounter::new(p.cpu_seconds),
        )?;
        Ok(())
    }
}

/// One unlabelled sample with its descriptor.
fn encode_one(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    metric: &impl EncodeMetric,
) -> Result<(), std::fmt::Error> {
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
}

struct ProcessFigures {
    resident_bytes: i64,
    open_fds: i64,
    cpu_seconds: f64,
}

fn process_figures() -> Option<ProcessFigures> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // utime and stime are fields 14 and 15 (1-based, `man 5 proc`); `fields[0]` is field 3.
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let rss_kib: i64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    let open_fds = std::fs::read_dir("/proc/self/fd").ok()?.count() as i64;
    Some(ProcessFigures {
        resident_bytes: rss_kib * 1024,
        open_fds,
        // Clock ticks are USER_HZ, 100 per second in Linux's ABI.
        cpu_seconds: ticks / 100.0,
    })
}
