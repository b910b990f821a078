//! Settings that would turn a protection off, or print a secret, stop the
//! binary at start-up with an error naming the variable.

use std::process::Stdio;
use std::time::Duration;

/// Runs `feed-api` with `vars` and returns its exit code and standard error.
async fn start_with(vars: &[(&str, &str)]) -> (Option<i32>, String) {
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_feed-api"))
        .env_clear()
        // Nothing listens here: had the settings been accepted, the api
        // would wait for its database instead of exiting.
        .env("DATABASE_URL", "postgresql://feed@127.0.0.1:9/feed")
        .env("KAFKA_BROKERS", "127.0.0.1:9")
        .env("PORT", "0")
        .envs(vars.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn feed-api");
    let out = tokio::time::timeout(Duration::from_secs(20), child.wait_with_output())
        .await
        .expect("the api refuses at once")
        .expect("wait");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// What is tried, the variables set, the variable the refusal must name, and
/// a secret it must not print.
type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, &'a str, Option<&'a str>);

#[tokio::test]
async fn settings_that_fail_open_stop_the_start_naming_the_variable() {
    let short = "a-secret-of-31-bytes-0123456789";
    let cases: Vec<Case> = vec![
        (
            "empty secret",
            vec![("AUTH_JWT_SECRET", "")],
            "AUTH_JWT_SECRET",
            None,
        ),
        (
            "short secret",
            vec![("AUTH_JWT_SECRET", short)],
            "AUTH_JWT_SECRET",
            Some(short),
        ),
        (
            "a public key that is not one",
            vec![(
                "AUTH_JWT_PUBLIC_KEY",
                "-----BEGIN PUBLIC KEY-----\nnot a key\n-----END PUBLIC KEY-----",
            )],
            "AUTH_JWT_PUBLIC_KEY",
            Some("not a key"),
        ),
        (
            "a required feed without a key",
            vec![("AUTH_FEED", "required")],
            "AUTH_FEED",
            None,
        ),
        (
            "a database URL that does not parse",
            vec![(
                "DATABASE_URL",
                "postgresql://feed:hunter2-password@db/feed?sslmode=sometimes",
            )],
            "DATABASE_URL",
            Some("hunter2-password"),
        ),
    ];
    for (what, vars, variable, secret) in cases {
        let (code, stderr) = start_with(&vars).await;
        println!("{what}: exit {code:?}: {}", stderr.trim());
        assert_eq!(code, Some(2), "{what}: refused at start-up");
        assert!(stderr.contains(variable), "{what}: names {variable}");
        if let Some(secret) = secret {
            assert!(
                !stderr.contains(secret),
                "{what}: the secret is not printed"
            );
        }
    }
}
