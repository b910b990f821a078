//! The api as a separate process (the real binary), for tests that kill it,
//! restart it or measure it, and a feed client that reconnects like a browser.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;

use crate::helpers::{Api, TestEnv};

/// A running `feed-api` process.
pub struct ApiProcess {
    pub api: Api,
    pub name: String,
    port: u16,
    vars: HashMap<String, String>,
    child: Option<Child>,
    pub log: PathBuf,
}

/// A port for an api process, which keeps it across restarts. Taken below
/// the kernel's ephemeral range, where nothing that binds port 0 (the
/// in-process apps, every client socket) can land on it between a stop and
/// a restart; a counter keeps two processes of one run apart.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let ephemeral_low: u16 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse().ok())
        .unwrap_or(32768);
    let low = 10_000u16;
    let span = ephemeral_low.saturating_sub(low).max(1);
    // Runs of this binary at once (a developer's and CI's) start apart.
    let start = (std::process::id() % u32::from(span)) as u16;
    for _ in 0..span {
        let offset = (start + NEXT.fetch_add(1, Ordering::Relaxed)) % span;
        let port = low + offset;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port below {ephemeral_low}");
}

impl ApiProcess {
    /// Starts the binary in `env` and waits until it is ready.
    pub async fn start(env: &TestEnv, name: &str, extra: &[(&'static str, String)]) -> ApiProcess {
        let port = free_port();
        let mut vars = env.vars(extra);
        vars.insert("PORT".into(), port.to_string());
        vars.entry("RUST_LOG".into())
            .or_insert_with(|| "info".into());
        let log =
            PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("{}-{name}.log", env.db_name));
        let mut p = ApiProcess {
            api: Api::new(format!("http://127.0.0.1:{port}")),
            name: name.to_owned(),
            port,
            vars,
            child: None,
            log,
        };
        p.launch().await;
        p
    }

    async fn launch(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log file");
        let err = log.try_clone().expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_feed-api"))
            .env_clear()
            .envs(&self.vars)
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(err))
            .kill_on_drop(true)
            .spawn()
            .expect("spawn feed-api");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(res) = self.api.http.get(self.api.url("/api/ready")).send().await {
                if res.status() == 200 {
                    return;
                }
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!(
                    "{} exited during start-up ({status}); see {}",
                    self.name,
                    self.log.display()
                );
            }
            assert!(
                Instant::now() < deadline,
                "{} not ready in 60 s; see {}",
                self.name,
                self.log.display()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().and_then(Child::id).expect("running")
    }

    /// SIGKILL: no shutdown at all.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().await.expect("SIGKILL");
        }
    }

    /// SIGTERM, then waits for the exit; returns the exit status and how long it took.
    pub async fn terminate(&mut self) -> (std::process::ExitStatus, Duration) {
        let mut child = self.child.take().expect("running");
        let pid = child.id().expect("pid").to_string();
        let started = Instant::now();
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill");
        assert!(sent.success(), "SIGTERM sent");
        let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
            .await
            .expect("the process exits after SIGTERM")
            .expect("wait");
        (status, started.elapsed())
    }

    /// Asserts that the last shutdown kept to its own budget: it completed,
    /// and no step of it ran out of time (the api logs each that did).
    pub fn assert_shutdown_in_budget(&self, took: Duration) {
        let log = std::fs::read_to_string(&self.log).expect("log");
        println!("{}: SIGTERM to exit {took:?}", self.name);
        assert!(
            log.contains("shutdown complete"),
            "{}: the shutdown completed",
            self.name
        );
        for late in ["did not stop in time", "producer flush incomplete"] {
            assert!(
                !log.contains(late),
                "{}: {late:?} in {}",
                self.name,
                self.log.display()
            );
        }
    }

    /// Starts the process again, on the same port.
    pub async fn restart(&mut self) {
        assert!(self.child.is_none(), "stop it first");
        self.launch().await;
    }

    /// Resident memory in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).expect("proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS")
    }

    /// Open file descriptors (sockets included).
    pub fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .expect("proc fd")
            .count()
    }

    /// The accepted connections this process holds open on its HTTP port:
    /// its socket descriptors whose TCP entry has that local port and is not
    /// the listener, and those with no entry in any of the kernel's socket
    /// tables (a connection the peer reset is gone from them while the
    /// process still holds its descriptor). Unlike the whole descriptor count
    /// this does not move with the database pool or the broker's
    /// connections, whose entries name other ports.
    pub fn client_sockets(&self) -> usize {
        let pid = self.pid();
        let inodes: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
            .expect("proc fd")
            .filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
            .filter_map(|target| {
                let target = target.to_string_lossy().into_owned();
                Some(
                    target
                        .strip_prefix("socket:[")?
                        .strip_suffix(']')?
                        .to_owned(),
                )
            })
            .collect();
        let port = format!(":{:04X}", self.port);
        let mut on_port = std::collections::HashSet::new();
        let mut known = std::collections::HashSet::new();
        for table in ["tcp", "tcp6", "udp", "udp6", "unix"] {
            let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")) else {
                continue;
            };
            for line in text.lines().skip(1) {
                let fields: Vec<&str> = line.split_whitespace().collect();
                // unix: ..., inode (the 7th); tcp and udp: sl, local address,
                // remote address, state, ..., inode (the 10th).
                let inode = if table == "unix" {
                    fields.get(6)
                } else {
                    fields.get(9)
                };
                let Some(inode) = inode else { continue };
                known.insert((*inode).to_owned());
                if table.starts_with("tcp") && fields[1].ends_with(&port) && fields[3] != "0A" {
                    on_port.insert((*inode).to_owned());
                }
            }
        }
        inodes
            .iter()
            .filter(|inode| on_port.contains(*inode) || !known.contains(*inode))
            .count()
    }
}

/// What a reconnecting feed client saw.
#[derive(Debug, Default, Clone)]
pub struct Received {
    /// `(cursor, message id)` in arrival order, across reconnects.
    pub messages: Vec<(i64, String)>,
    /// `(cursor, deleted message's id)` of `delete` events, in arrival order.
    pub deletions: Vec<(i64, String)>,
    /// The cursors of both kinds together, in arrival order.
    pub cursors: Vec<i64>,
    pub connections: usize,
    pub lagged: usize,
    pub resets: usize,
}

/// A feed client that reconnects with `Last-Event-ID` whenever its stream
/// ends or its instance is gone, like a browser's EventSource.
pub struct ResumingClient {
    pub label: String,
    state: Arc<Mutex<Received>>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl ResumingClient {
    /// Connects to `api` (and keeps reconnecting) until stopped. Returns once
    /// the first connection is open, so the test can post after that.
    pub async fn start(label: &str, api: Api, query: &'static str) -> ResumingClient {
        let state = Arc::new(Mutex::new(Received::default()));
        let stop = CancellationToken::new();
        let (opened_tx, opened_rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(run_client(
            api,
            query,
            state.clone(),
            stop.clone(),
            opened_tx,
        ));
        tokio::time::timeout(Duration::from_secs(30), opened_rx)
            .await
            .expect("the feed opens")
            .expect("client task alive");
        ResumingClient {
            label: label.to_owned(),
            state,
            stop,
            task,
        }
    }

    pub fn count(&self) -> usize {
        self.state.lock().expect("lock").messages.len()
    }

    /// What has arrived so far.
    pub fn received(&self) -> Received {
        self.state.lock().expect("lock").clone()
    }

    pub fn lagged(&self) -> usize {
        self.state.lock().expect("lock").lagged
    }

    pub async fn finish(self) -> (String, Received) {
        self.stop.cancel();
        if let Err(e) = self.task.await {
            panic!("client {} failed: {e}", self.label);
        }
        let got = self.state.lock().expect("lock").clone();
        (self.label, got)
    }
}

async fn run_client(
    api: Api,
    query: &'static str,
    state: Arc<Mutex<Received>>,
    stop: CancellationToken,
    opened: tokio::sync::oneshot::Sender<()>,
) {
    let mut opened = Some(opened);
    let mut last: Option<String> = None;
    let mut wait = Duration::ZERO;
    while !stop.is_cancelled() {
        // After `event: unavailable`, the stream's `retry:` as an EventSource would.
        if !wait.is_zero() {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(std::mem::take(&mut wait)) => {}
            }
        }
        let Some(mut feed) = api.try_feed(query, last.as_deref()).await else {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(Duration::from_millis(100)) => continue,
            }
        };
        state.lock().expect("lock").connections += 1;
        if let Some(tx) = opened.take() {
            // An error only means `start` stopped waiting (and failed the test).
            tx.send(()).ok();
        }
        loop {
            let ev = tokio::select! {
                _ = stop.cancelled() => None,
                ev = feed.next_within(Duration::from_secs(3600)) => ev,
            };
            let Some(ev) = ev else { break };
            let mut got = state.lock().expect("lock");
            match ev.event.as_deref() {
                Some("message") => {
                    let cursor = ev.id.clone().expect("message events have an id");
                    let id = ev.json()["id"].as_str().expect("id").to_owned();
                    let seq = cursor.parse().expect("numeric cursor");
                    got.messages.push((seq, id));
                    got.cursors.push(seq);
                    last = Some(cursor);
                }
                Some("delete") => {
                    let cursor = ev.id.clone().expect("delete events have an id");
                    let id = ev.json()["id"].as_str().expect("id").to_owned();
                    let seq = cursor.parse().expect("numeric cursor");
                    got.deletions.push((seq, id));
                    got.cursors.push(seq);
                    last = Some(cursor);
                }
                Some("lagged") => {
                    got.lagged += 1;
                    // Like an EventSource, resume from the lagged event's id.
                    if let Some(id) = &ev.id {
                        last = Some(id.clone());
                    }
                }
                Some("reset") => got.resets += 1,
                Some("unavailable") => {
                    let ms = ev.json()["retry_ms"].as_u64().unwrap_or(1000);
                    wait = Duration::from_millis(ms);
                }
                _ => {}
            }
        }
    }
}
