//! `broker-ceiling`: the broker's own limits on this machine, measured with
//! the api's producer settings (`feed_api::kafka::Producer`, same
//! environment variables), as the reference for the pipeline's throughput.
//!
//! Produces `--messages` feed-sized records (up to `--in-flight` awaiting
//! their acknowledgement at once) to a fresh topic, then consumes them back,
//! and prints produce and consume rates and the ceiling they imply for the
//! pipeline, which needs two produces and one consume per message.
//!
//! ```text
//! KAFKA_BROKERS=127.0.0.1:9092 broker-ceiling --messages 20000 --in-flight 256
//! ```

use std::time::{Duration, Instant};

use futures_util::stream::{FuturesUnordered, StreamExt as _};
use rdkafka::consumer::{Consumer as _, StreamConsumer};

use feed_api::config::Settings;
use feed_api::kafka::{self, Producer};
use feed_api::message::{self, Message};

/// One produce in flight: its ack latency in nanoseconds and whether it succeeded.
type InFlight = std::pin::Pin<Box<dyn std::future::Future<Output = (u64, bool)> + Send>>;

fn arg(args: &[String], name: &str, default: usize) -> Result<usize, String> {
    match args.iter().position(|a| a == name) {
        None => Ok(default),
        Some(i) => args
            .get(i + 1)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| format!("{name} needs a whole number")),
    }
}

fn percentile(sorted: &[u64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i] as f64 / 1e6
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("broker-ceiling: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let messages = arg(&args, "--messages", 20_000)?;
    let in_flight = arg(&args, "--in-flight", 256)?.max(1);
    let mut settings = Settings::from_env().map_err(|e| e.to_string())?;
    // A topic of its own: never feed the running worker.
    let id = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
    settings.kafka.topic_to_process = format!("bench-{id}-ceiling");
    settings.kafka.topic_processed = format!("bench-{id}-ceiling-out");
    settings.kafka.topic_dead_letter = format!("bench-{id}-ceiling-dead");
    settings.kafka.partitions = 1;
    kafka::ensure_topics(&settings.kafka)
        .await
        .map_err(|e| e.to_string())?;
    let producer = Producer::new(&settings.kafka).map_err(|e| e.to_string())?;
    let topic = settings.kafka.topic_to_process.clone();

    let sample = Message::new(
        "ceiling_user_1",
        &"Benchmark tweet with a realistic length, hashtags and an emoji 🚀 #rustlang #kafka "
            .repeat(2),
    )
    .map_err(|e| e.to_string())?;
    let payload = message::encode(&sample);

    let (produce_rate, latencies, errors) =
        produce(&producer, &topic, &payload, messages, in_flight).await;

    let wanted = messages - errors;
    let (consume_rate, consumed) = consume(&settings, &id, &topic, wanted).await?;
    // Two produces and one consume per message, one after the other on the same broker.
    let pipeline = 1.0 / (2.0 / produce_rate + 1.0 / consume_rate);

    println!(
        "broker ceiling ({} messages of {} bytes, {} in flight, broker {})",
        messages,
        payload.len(),
        in_flight,
        settings.kafka.brokers
    );
    println!("  produce (acks=all): {produce_rate:.0} msg/s, ack latency p50 {:.1} ms p99 {:.1} ms max {:.1} ms, errors {errors}",
        percentile(&latencies, 0.5), percentile(&latencies, 0.99), percentile(&latencies, 1.0));
    println!("  consume:            {consume_rate:.0} msg/s ({consumed} read back)");
    println!("  pipeline ceiling (2 produces + 1 consume per message): {pipeline:.0} msg/s");
    println!(
        "{}",
        serde_json::json!({
            "messages": messages, "payload_bytes": payload.len(), "in_flight": in_flight,
            "produce_per_s": produce_rate, "consume_per_s": consume_rate, "pipeline_ceiling_per_s": pipeline,
            "produce_p50_ms": percentile(&latencies, 0.5), "produce_p99_ms": percentile(&latencies, 0.99),
            "errors": errors, "consumed": consumed,
        })
    );
    Ok(())
}

/// Produces `messages` copies of `payload`, up to `in_flight` awaiting their
/// acknowledgement at once; returns the rate, the sorted ack latencies and
/// the number of failed produces.
async fn produce(
    producer: &Producer,
    topic: &str,
    payload: &[u8],
    messages: usize,
    in_flight: usize,
) -> (f64, Vec<u64>, usize) {
    let started = Instant::now();
    let mut pending: FuturesUnordered<InFlight> = FuturesUnordered::new();
    let mut latencies = Vec::with_capacity(messages);
    let mut errors = 0usize;
    for _ in 0..messages {
        if pending.len() >= in_flight {
            if let Some((lat, ok)) = pending.next().await {
                latencies.push(lat);
                errors += usize::from(!ok);
            }
        }
        let producer = producer.clone();
        let topic = topic.to_owned();
        let payload = payload.to_vec();
        pending.push(Box::pin(async move {
            let t = Instant::now();
            let ok = producer
                .send(&topic, b"ceiling_user_1", &payload, &[])
                .await
                .is_ok();
            (t.elapsed().as_nanos() as u64, ok)
        }));
    }
    while let Some((lat, ok)) = pending.next().await {
        latencies.push(lat);
        errors += usize::from(!ok);
    }
    let produce_s = started.elapsed().as_secs_f64();
    latencies.sort_unstable();
    ((messages - errors) as f64 / produce_s, latencies, errors)
}

/// Reads `wanted` records of `topic` back from the start; returns the rate
/// and how many were read.
async fn consume(
    settings: &Settings,
    id: &str,
    topic: &str,
    wanted: usize,
) -> Result<(f64, usize), String> {
    let consumer: StreamConsumer =
        kafka::consumer_config(&settings.kafka, &format!("bench-{id}-reader"))
            .set("enable.auto.commit", "false")
            .create()
            .map_err(|e| e.to_string())?;
    consumer.subscribe(&[topic]).map_err(|e| e.to_string())?;
    let mut consumed = 0usize;
    let first = tokio::time::timeout(Duration::from_secs(30), consumer.recv()).await;
    let consume_started = Instant::now();
    if matches!(first, Ok(Ok(_))) {
        consumed = 1;
        while consumed < wanted {
            match tokio::time::timeout(Duration::from_secs(10), consumer.recv()).await {
                Ok(Ok(_)) => consumed += 1,
                _ => break,
            }
        }
    }
    let rate = consumed as f64 / consume_started.elapsed().as_secs_f64().max(1e-9);
    Ok((rate, consumed))
}
