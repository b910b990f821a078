//! Traces across the pipeline (docs/OPERATIONS.md, "Traces"): an api with
//! `OTEL_EXPORTER_OTLP_ENDPOINT` set exports its spans over OTLP/HTTP to a
//! receiver of the test's own, which decodes them with the official
//! protobufs (`opentelemetry-proto`). One posted message makes one trace:
//! `ingest` (continuing the request's `traceparent`), `persist` under it and
//! `release` under that, and the worker's `transaction` span links to it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::{web, App, HttpResponse, HttpServer};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message as _;

use crate::helpers::{eventually_within, spawn_app_with, Options, DEADLINE};

/// One span as the receiver got it.
#[derive(Debug, Clone)]
struct Received {
    name: String,
    trace_id: String,
    span_id: String,
    parent_span_id: String,
    /// (trace id, span id) of each link.
    links: Vec<(String, String)>,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

type Spans = Arc<Mutex<Vec<Received>>>;

/// An OTLP/HTTP receiver (`POST /v1/traces`, protobuf) on a port of its own.
async fn receiver() -> (String, Spans, actix_web::dev::ServerHandle) {
    let spans: Spans = Arc::default();
    let kept = spans.clone();
    let server = HttpServer::new(move || {
        let kept = kept.clone();
        App::new().route(
            "/v1/traces",
            web::post().to(move |body: web::Bytes| {
                let kept = kept.clone();
                async move {
                    let Ok(request) = ExportTraceServiceRequest::decode(body) else {
                        return HttpResponse::BadRequest().finish();
                    };
                    let mut kept = kept.lock().expect("not poisoned");
                    for span in request
                        .resource_spans
                        .iter()
                        .flat_map(|r| &r.scope_spans)
                        .flat_map(|s| &s.spans)
                    {
                        kept.push(Received {
                            name: span.name.clone(),
                            trace_id: hex(&span.trace_id),
                            span_id: hex(&span.span_id),
                            parent_span_id: hex(&span.parent_span_id),
                            links: span
                                .links
                                .iter()
                                .map(|l| (hex(&l.trace_id), hex(&l.span_id)))
                                .collect(),
                        });
                    }
                    HttpResponse::Ok()
                        .content_type("application/x-protobuf")
                        .body(ExportTraceServiceResponse::default().encode_to_vec())
                }
            }),
        )
    })
    .workers(1)
    .bind(("127.0.0.1", 0))
    .expect("bind the receiver");
    let port = server.addrs()[0].port();
    let server = server.run();
    let handle = server.handle();
    tokio::spawn(server);
    (format!("http://127.0.0.1:{port}"), spans, handle)
}

/// The spans of trace `trace_id` once it has `ingest`, `persist` and `release`.
async fn whole_trace(spans: &Spans, trace_id: &str) -> Vec<Received> {
    eventually_within(Duration::from_secs(60), || async {
        let trace: Vec<Received> = spans
            .lock()
            .expect("not poisoned")
            .iter()
            .filter(|s| s.trace_id == trace_id)
            .cloned()
            .collect();
        ["ingest", "persist", "release"]
            .iter()
            .all(|name| trace.iter().any(|s| s.name == *name))
            .then_some(trace)
    })
    .await
    .unwrap_or_else(|| {
        panic!(
            "trace {trace_id} gets ingest, persist and release; received: {:#?}",
            spans.lock().expect("not poisoned")
        )
    })
}

fn only<'a>(trace: &'a [Received], name: &str) -> &'a Received {
    let found: Vec<&Received> = trace.iter().filter(|s| s.name == name).collect();
    assert_eq!(found.len(), 1, "one {name} span in {trace:#?}");
    found[0]
}

/// `persist` under `ingest`, `release` under `persist`, and the batch's
/// `transaction` linked to `ingest`.
fn assert_one_way(trace: &[Received], all: &Spans) {
    let (ingest, persist, release) = (
        only(trace, "ingest"),
        only(trace, "persist"),
        only(trace, "release"),
    );
    assert_eq!(
        persist.parent_span_id, ingest.span_id,
        "persist under ingest"
    );
    assert_eq!(
        release.parent_span_id, persist.span_id,
        "release under persist"
    );
    let (link_trace, link_span) = persist
        .links
        .first()
        .expect("persist links its transaction");
    let all = all.lock().expect("not poisoned");
    let transaction = all
        .iter()
        .find(|s| s.name == "transaction" && &s.trace_id == link_trace && &s.span_id == link_span)
        .expect("the linked transaction span is exported");
    assert!(
        transaction
            .links
            .contains(&(ingest.trace_id.clone(), ingest.span_id.clone())),
        "the transaction links the message's ingest"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_posted_message_makes_one_trace_from_ingest_to_release() {
    let (endpoint, spans, receiver) = receiver().await;
    let app = spawn_app_with(Options {
        env: vec![("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)],
        ..Options::default()
    })
    .await;

    // A request that carries a trace: the message's spans continue it.
    let trace_id = uuid::Uuid::new_v4().simple().to_string();
    let caller_span = &uuid::Uuid::new_v4().simple().to_string()[..16];
    let res = app
        .http
        .post(app.url("/api/messages"))
        .timeout(DEADLINE)
        .header("Content-Type", "application/json")
        .header("traceparent", format!("00-{trace_id}-{caller_span}-01"))
        .body(r#"{"user_id":"tracer","content":"followed all the way"}"#)
        .send()
        .await
        .expect("POST");
    assert_eq!(res.status(), 202);
    let trace = whole_trace(&spans, &trace_id).await;
    println!(
        "spans of the caller's trace: {:?}",
        trace.iter().map(|s| &s.name).collect::<Vec<_>>()
    );
    assert_eq!(
        only(&trace, "ingest").parent_span_id,
        caller_span,
        "ingest continues the caller's span"
    );
    assert_one_way(&trace, &spans);

    // A request without one: the api starts a trace.
    let id = app.post_message("tracer", "a trace of its own").await;
    app.env.wait_persisted(&id).await;
    let started = eventually_within(Duration::from_secs(60), || async {
        let all = spans.lock().expect("not poisoned").clone();
        all.iter()
            .filter(|s| s.name == "ingest" && s.trace_id != trace_id && s.parent_span_id.is_empty())
            .map(|s| s.trace_id.clone())
            .find(|t| {
                ["persist", "release"]
                    .iter()
                    .all(|n| all.iter().any(|s| &s.trace_id == t && s.name == *n))
            })
    })
    .await
    .expect("a post without traceparent starts a trace with ingest, persist and release");
    assert_one_way(&whole_trace(&spans, &started).await, &spans);
    receiver.stop(false).await;
}
