//! The monitoring files against the real things (docs/OPERATIONS.md,
//! "Alerts"): `promtool` checks and unit-tests `monitoring/alerts.yml`;
//! Debian's `prometheus` (installed by scripts/test.sh) scrapes a test api,
//! loads the alert rules, and answers every PromQL expression of
//! `monitoring/dashboard.json`; the key `feed_*` series are scraped and move
//! after a post.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;

use crate::helpers::{eventually_within, spawn_app};

fn monitoring() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../monitoring")
}

/// Runs `promtool ARGS` in `monitoring/`; panics with its output unless it succeeds.
fn promtool(args: &[&str]) {
    let out = std::process::Command::new("promtool")
        .args(args)
        .current_dir(monitoring())
        .output()
        .expect("promtool (Debian's prometheus package; scripts/test.sh installs it)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("promtool {}: {}", args.join(" "), text.trim());
    assert!(out.status.success(), "promtool {args:?} failed: {text}");
}

/// A Prometheus of the test's own, killed when dropped.
struct Prometheus {
    child: std::process::Child,
    url: String,
    http: reqwest::Client,
    _dir: tempdir::Dir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

impl Prometheus {
    /// Scrapes `target` every second, with the alert rules loaded.
    fn start(target: &str) -> Prometheus {
        let dir = tempdir::Dir::new();
        let rules = monitoring().join("alerts.yml");
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {}\nscrape_configs:\n  - job_name: feed-api\n    metrics_path: /metrics\n    static_configs:\n      - targets: [\"{target}\"]\n",
            rules.display()
        );
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, config).expect("write the config");
        let port = crate::process::free_port();
        let child = std::process::Command::new("prometheus")
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus (Debian's prometheus package; scripts/test.sh installs it)");
        Prometheus {
            child,
            url: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::new(),
            _dir: dir,
        }
    }

    /// `GET /api/v1/<path>` with `query`; the parsed answer, or `None` while
    /// Prometheus is not up.
    async fn api(&self, path: &str, query: &[(&str, &str)]) -> Option<Value> {
        let url =
            reqwest::Url::parse_with_params(&format!("{}/api/v1/{path}", self.url), query).ok()?;
        let res = self
            .http
            .get(url)
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .ok()?;
        res.json().await.ok()
    }

    /// The value of an instant query that returns one sample.
    async fn value(&self, expr: &str) -> Option<f64> {
        let answer = self.api("query", &[("query", expr)]).await?;
        answer["data"]["result"][0]["value"][1]
            .as_str()?
            .parse()
            .ok()
    }
}

/// A temporary directory of the test's own.
mod tempdir {
    use std::path::{Path, PathBuf};

    pub struct Dir(PathBuf);

    impl Dir {
        pub fn new() -> Dir {
            let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
                .join(format!("prometheus-{}", uuid::Uuid::new_v4().simple()));
            std::fs::create_dir_all(&path).expect("a temporary directory");
            Dir(path)
        }

        pub fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            std::fs::remove_dir_all(&self.0).ok();
        }
    }
}

#[test]
fn the_alert_rules_are_valid_and_their_unit_tests_pass() {
    promtool(&["check", "rules", "alerts.yml"]);
    promtool(&["test", "rules", "alerts.test.yml"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_prometheus_scrapes_the_api_loads_the_alerts_and_answers_the_dashboard() {
    let app = spawn_app().await;
    let target = app.app.api.address.trim_start_matches("http://").to_owned();
    let prometheus = Prometheus::start(&target);

    // The target is scraped, the exposition parsed.
    let up = eventually_within(Duration::from_secs(60), || async {
        (prometheus.value(r#"up{job="feed-api"}"#).await? == 1.0).then_some(())
    })
    .await;
    assert!(up.is_some(), "Prometheus scrapes the api");
    for series in [
        "feed_ingest_posts_accepted_total",
        "feed_sse_clients_connected",
        "feed_sse_clients_max",
        r#"feed_worker_dead_letters_total{cause="undecodable"}"#,
        r#"feed_limits_refused_total{limit="post_rate"}"#,
        "feed_broadcast_last_released_seq",
        "process_resident_memory_bytes",
    ] {
        let value = prometheus.value(series).await;
        println!("{series} = {value:?}");
        assert!(value.is_some(), "{series} is scraped");
    }

    // They move after a post.
    let id = app.post_message("prom", "scraped").await;
    app.env.wait_persisted(&id).await;
    let moved = eventually_within(Duration::from_secs(60), || async {
        let accepted = prometheus.value("feed_ingest_posts_accepted_total").await?;
        let persisted = prometheus
            .value("feed_worker_messages_persisted_total")
            .await?;
        let released = prometheus.value("feed_broadcast_last_released_seq").await?;
        (accepted >= 1.0 && persisted >= 1.0 && released >= 1.0)
            .then_some((accepted, persisted, released))
    })
    .await;
    println!("after a post (accepted, persisted, released): {moved:?}");
    assert!(moved.is_some(), "the series move after a post");

    // The alert rules load and evaluate.
    let rules = eventually_within(Duration::from_secs(30), || async {
        let answer = prometheus.api("rules", &[]).await?;
        let rules: Vec<Value> = answer["data"]["groups"]
            .as_array()?
            .iter()
            .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
            .collect();
        (!rules.is_empty() && rules.iter().all(|r| r["health"] == "ok")).then_some(rules)
    })
    .await
    .expect("the alert rules are loaded and evaluated without error");
    println!("{} alert rules loaded, all healthy", rules.len());
    assert_eq!(rules.len(), 8);

    // Every expression of the dashboard, with Grafana's variables put in.
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(monitoring().join("dashboard.json")).expect("dashboard.json"),
    )
    .expect("dashboard.json is JSON");
    let mut checked = 0;
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().expect("targets") {
            let expr = target["expr"]
                .as_str()
                .expect("expr")
                .replace("$__rate_interval", "1m")
                .replace("$__interval", "15s");
            let answer = prometheus
                .api("query", &[("query", &expr)])
                .await
                .expect("an answer");
            assert_eq!(
                answer["status"], "success",
                "panel {:?}: {expr}: {answer}",
                panel["title"]
            );
            checked += 1;
        }
    }
    println!("{checked} dashboard expressions evaluated without error");
    assert!(checked >= 20);
    drop(prometheus);
    app.app.stop().await;
}
