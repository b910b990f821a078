//! Traces across the pipeline (OpenTelemetry), exported over OTLP/HTTP when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` is set, and off otherwise.
//!
//! One posted message makes one trace: the POST's span (`ingest`, continuing
//! the request's W3C `traceparent` or starting a trace), the worker's
//! `persist` of it, and the `release` to clients by each instance's
//! broadcaster. The context travels in the `traceparent` header of the
//! Kafka records, on `events-to-process` to the worker and on
//! `events-processed` to every broadcaster. A worker transaction stores a
//! batch of messages of many traces: it gets a span of its own (`transaction`)
//! linked to each message's, and each message's `persist` links back to it.
//!
//! A released message's context reaches the broadcaster by the broker or,
//! for this instance's worker, by the local hand-over, which carries no
//! headers: the worker leaves it here by sequence number ([`Traces::persisted`])
//! and the release takes it ([`Traces::released`]). That table holds only
//! numbers not yet released, and at most [`PENDING_MAX`] of them.
//!
//! Off, every method returns at once: nothing is parsed, held or sent.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{
    Link, Span, SpanContext, SpanKind, TraceContextExt, Tracer, TracerProvider,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};

/// The record and request header that carries a span's context (W3C).
pub const TRACEPARENT: &str = "traceparent";

/// Contexts waiting for their release, at most: beyond it the lowest
/// numbers (the oldest) go, so a broadcaster that never releases some
/// numbers (dropped as never committed) cannot grow the table.
const PENDING_MAX: usize = 10_000;

/// How long the exporter may take for one request, and for the last flush.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);

/// This instance's tracer, or nothing.
#[derive(Default)]
pub struct Traces {
    on: Option<On>,
}

struct On {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
    propagator: TraceContextPropagator,
    /// Released-to-be sequence numbers and the context of their `persist`.
    pending: Mutex<BTreeMap<i64, Pending>>,
}

struct Pending {
    parent: SpanContext,
    since: SystemTime,
}

/// A span in progress: ends when dropped.
pub struct Started(Option<opentelemetry_sdk::trace::Span>);

impl Started {
    /// The `traceparent` to send on with the work this span hands on.
    pub fn traceparent(&self) -> Option<String> {
        self.0.as_ref().map(|span| traceparent(span.span_context()))
    }
}

impl Drop for Started {
    fn drop(&mut self) {
        if let Some(span) = &mut self.0 {
            span.end();
        }
    }
}

impl Traces {
    /// Traces that are off.
    pub fn off() -> Self {
        Traces::default()
    }

    /// Traces exported to the OTLP/HTTP collector at `endpoint` (the base
    /// URL, as `OTEL_EXPORTER_OTLP_ENDPOINT` gives it: `/v1/traces` is added).
    pub fn export_to(endpoint: &str) -> Result<Self, opentelemetry_otlp::ExporterBuildError> {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_endpoint(format!("{}/v1/traces", endpoint.trim_end_matches('/')))
            .with_timeout(EXPORT_TIMEOUT)
            .build()?;
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(
                opentelemetry_sdk::Resource::builder()
                    .with_service_name("feed-api")
                    .build(),
            )
            .build();
        Ok(Traces {
            on: Some(On {
                tracer: provider.tracer("feed-api"),
                provider,
                propagator: TraceContextPropagator::new(),
                pending: Mutex::default(),
            }),
        })
    }

    pub fn is_on(&self) -> bool {
        self.on.is_some()
    }

    /// The span of a POST, continuing the request's `traceparent` if it has
    /// a valid one (`traceparent` reads the request header's value; it is
    /// not called when traces are off).
    pub fn ingest<'a>(&self, traceparent: impl FnOnce() -> Option<&'a str>) -> Started {
        let Some(on) = &self.on else {
            return Started(None);
        };
        let parent = on.extract(traceparent());
        let span = on
            .tracer
            .span_builder("ingest")
            .with_kind(SpanKind::Server)
            .start_with_context(&on.tracer, &parent);
        Started(Some(span))
    }

    /// The worker's spans for a batch it has committed: a `transaction`
    /// linked to every message's trace, and a `persist` in each message's
    /// trace. `messages` are (the `traceparent` of its record, its sequence
    /// number). Returns the `traceparent` to republish each with, and
    /// leaves the contexts for this instance's release.
    pub fn persisted(
        &self,
        started: SystemTime,
        messages: &[(Option<&str>, i64)],
    ) -> Vec<Option<String>> {
        let Some(on) = &self.on else {
            return vec![None; messages.len()];
        };
        let parents: Vec<Context> = messages.iter().map(|(tp, _)| on.extract(*tp)).collect();
        let links = parents
            .iter()
            .map(|cx| cx.span().span_context().clone())
            .filter(SpanContext::is_valid)
            .map(Link::with_context)
            .collect();
        let mut transaction = on
            .tracer
            .span_builder("transaction")
            .with_kind(SpanKind::Consumer)
            .with_start_time(started)
            .with_links(links)
            .with_attributes([KeyValue::new("messages", messages.len() as i64)])
            // A root: a batch holds messages of many traces.
            .start_with_context(&on.tracer, &Context::new());
        let batch = transaction.span_context().clone();
        let mut republish = Vec::with_capacity(messages.len());
        for (cx, (_, seq)) in parents.iter().zip(messages) {
            let mut span = on
                .tracer
                .span_builder("persist")
                .with_kind(SpanKind::Consumer)
                .with_start_time(started)
                .with_links(vec![Link::with_context(batch.clone())])
                .with_attributes([KeyValue::new("seq", *seq)])
                .start_with_context(&on.tracer, cx);
            span.end();
            let context = span.span_context().clone();
            republish.push(Some(traceparent(&context)));
            on.wait_for_release(*seq, context);
        }
        transaction.end();
        republish
    }

    /// A record of `events-processed` arrived with `traceparent`: its
    /// release will continue that trace (unless this instance's worker left
    /// its context already).
    pub fn arrived(&self, seq: i64, traceparent: Option<&str>) {
        let Some(on) = &self.on else {
            return;
        };
        let cx = on.extract(traceparent);
        let context = cx.span().span_context().clone();
        if context.is_valid() {
            on.wait_for_release(seq, context);
        }
    }

    /// `seq` was released to this instance's clients: its `release` span,
    /// from the moment its context arrived to now.
    pub fn released(&self, seq: i64) {
        let Some(on) = &self.on else {
            return;
        };
        let found = {
            let mut pending = on.pending.lock().unwrap_or_else(|e| e.into_inner());
            // Released in order: nothing at or below `seq` is released again.
            let later = pending.split_off(&(seq + 1));
            let found = pending.remove(&seq);
            *pending = later;
            found
        };
        let Some(Pending { parent, since }) = found else {
            return;
        };
        let cx = Context::new().with_remote_span_context(parent);
        let mut span = on
            .tracer
            .span_builder("release")
            .with_kind(SpanKind::Producer)
            .with_start_time(since)
            .with_attributes([KeyValue::new("seq", seq)])
            .start_with_context(&on.tracer, &cx);
        span.end();
    }

    /// Sends what is left (at shutdown); blocks up to `within` (at most
    /// [`EXPORT_TIMEOUT`]), so the shutdown keeps its budget.
    pub fn shutdown(&self, within: Duration) {
        if let Some(on) = &self.on {
            if let Err(e) = on
                .provider
                .shutdown_with_timeout(within.min(EXPORT_TIMEOUT))
            {
                tracing::warn!(error = %e, "the last traces could not be exported");
            }
        }
    }
}

impl On {
    fn extract(&self, traceparent: Option<&str>) -> Context {
        match traceparent {
            Some(value) => self.propagator.extract(&One(value)),
            None => Context::new(),
        }
    }

    fn wait_for_release(&self, seq: i64, parent: SpanContext) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        pending.entry(seq).or_insert(Pending {
            parent,
            since: SystemTime::now(),
        });
        while pending.len() > PENDING_MAX {
            pending.pop_first();
        }
    }
}

/// The `traceparent` header of a Kafka record, if it has a readable one.
pub fn of_record(record: &impl rdkafka::Message) -> Option<&str> {
    use rdkafka::message::Headers;
    record
        .headers()?
        .iter()
        .find(|h| h.key == TRACEPARENT)
        .and_then(|h| std::str::from_utf8(h.value?).ok())
}

/// The W3C `traceparent` of a span.
fn traceparent(context: &SpanContext) -> String {
    let mut out = Carrier(None);
    TraceContextPropagator::new().inject_context(
        &Context::new().with_remote_span_context(context.clone()),
        &mut out,
    );
    out.0.unwrap_or_default()
}

/// A carrier of the one header the propagator reads.
struct One<'a>(&'a str);

impl Extractor for One<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        (key == TRACEPARENT).then_some(self.0)
    }

    fn keys(&self) -> Vec<&str> {
        vec![TRACEPARENT]
    }
}

/// A carrier that keeps the `traceparent` the propagator writes.
struct Carrier(Option<String>);

impl Injector for Carrier {
    fn set(&mut self, key: &str, value: String) {
        if key == TRACEPARENT {
            self.0 = Some(value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_costs_nothing_and_says_nothing() {
        let traces = Traces::off();
        let started = traces.ingest(|| panic!("off, the request's header is never read"));
        assert!(started.traceparent().is_none());
        assert_eq!(
            traces.persisted(SystemTime::now(), &[(None, 1)]),
            vec![None]
        );
        traces.arrived(1, None);
        traces.released(1);
    }
}
