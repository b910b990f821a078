//! The OpenAPI description (`GET /api/openapi.json`) against the live api:
//! schemathesis (PyPI; scripts/test.sh installs it in a virtual environment
//! and names it in `SCHEMATHESIS`) generates requests for every operation
//! from the description, valid and invalid, and checks that no answer is a
//! server error and that every answer's status, content type and body are
//! ones the description allows. The endless SSE stream is left out (a
//! request to it never ends); the feed's answers are tested in feed.rs.

use std::time::Duration;

use serde_json::Value;

use crate::helpers::{spawn_app_with, Options, DEADLINE};

/// Cases per operation, and the seed: the same requests every run.
const MAX_EXAMPLES: &str = "100";
const SEED: &str = "20261206";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_description_names_every_endpoint_and_only_them() {
    let app = spawn_app_with(Options::default()).await;
    let res = app
        .http
        .get(app.url("/api/openapi.json"))
        .timeout(DEADLINE)
        .send()
        .await
        .expect("GET /api/openapi.json");
    assert_eq!(res.status(), 200);
    assert!(res.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
    let doc: Value = res.json().await.expect("a JSON document");
    assert_eq!(doc["openapi"], "3.1.0");
    let mut operations: Vec<String> = doc["paths"]
        .as_object()
        .expect("paths")
        .iter()
        .flat_map(|(path, ops)| {
            ops.as_object()
                .expect("operations")
                .keys()
                .map(move |method| format!("{} {path}", method.to_uppercase()))
        })
        .collect();
    operations.sort();
    // Every endpoint of docs/API.md's table but the pages for browsers.
    let expected = [
        "DELETE /api/messages/{id}",
        "DELETE /api/users/{user}/following/{target}",
        "GET /api/feed",
        "GET /api/health",
        "GET /api/messages",
        "GET /api/messages/{id}",
        "GET /api/openapi.json",
        "GET /api/ready",
        "GET /api/status",
        "GET /api/users/{user}",
        "GET /api/users/{user}/followers",
        "GET /api/users/{user}/following",
        "GET /api/users/{user}/following/{target}",
        "GET /metrics",
        "POST /api/messages",
        "PUT /api/users/{user}/following/{target}",
    ];
    assert_eq!(operations, expected);
    // And each is served: a path the description names is never an unknown one.
    for op in &operations {
        let (method, path) = op.split_once(' ').expect("METHOD path");
        let path = path
            .replace("{id}", "00000000-0000-4000-8000-000000000000")
            .replace("{user}", "alice")
            .replace("{target}", "bob");
        let res = app
            .http
            .request(
                method.parse().expect("a method"),
                app.url(&format!("{path}?history=0")),
            )
            .timeout(DEADLINE)
            .send()
            .await
            .expect("the api answers");
        let status = res.status();
        assert_ne!(status, 405, "{op} is served");
        if status == 404 {
            let body: Value = res.json().await.expect("a JSON error");
            assert_ne!(body["error"], "not_found", "{op} is served");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_answer_outside_the_description() {
    let app = spawn_app_with(Options {
        // The fuzzer posts far more than a person: the post limits must not
        // turn its cases into 429s.
        env: vec![
            ("POST_RATE_PER_MINUTE", "1000000".into()),
            ("POST_RATE_BURST", "1000000".into()),
        ],
        ..Options::default()
    })
    .await;
    let program = std::env::var("SCHEMATHESIS").unwrap_or_else(|_| "schemathesis".into());
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("schemathesis-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("a working directory");
    let run = tokio::process::Command::new(&program)
        .current_dir(&dir)
        .args([
            "run",
            &app.url("/api/openapi.json"),
            "--checks",
            "all",
            // Rules across inputs that a description cannot state (`home`
            // with `user_id`, a user following themselves) make some
            // schema-valid requests rightly refused.
            "--exclude-checks",
            "positive_data_acceptance",
            "--exclude-path",
            "/api/feed",
            "--max-examples",
            MAX_EXAMPLES,
            "--seed",
            SEED,
            // One: CPython 3.11's parser is not thread-safe, and hypothesis
            // parses its own filters (seen: "AST constructor recursion
            // depth mismatch" with two workers).
            "--workers",
            "1",
            "--request-timeout",
            "30",
            "--generation-database",
            "none",
            "--phases",
            "examples,coverage,fuzzing",
            "--no-color",
        ])
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(900), run)
        .await
        .expect("schemathesis ends within 15 minutes")
        .unwrap_or_else(|e| panic!("{program} (schemathesis; scripts/test.sh installs it): {e}"));
    std::fs::remove_dir_all(&dir).ok();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{text}");
    assert!(
        out.status.success(),
        "schemathesis found answers outside the description (above)"
    );
}
