//! Who may post (tokens) and which origins may use the API (CORS).

use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

use crate::helpers::{spawn_app_with, Api, Options, TestEnv};
use crate::process::ApiProcess;

const SECRET: &str = "test-secret-of-at-least-32-bytes-long";

/// A key pair made for these tests only (P-256): the api gets the public half.
const EC_PRIVATE: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgmXhLDCHfWBTh1tIb
8dtqqYm/25knmINibs4b7QDYrvWhRANCAATvz8s/XQYt/MGyR9gW00OnE02aYP1M
JZNNHkdu6KKjiFF4B0gZLH98VzGbZQw29pgn6lQHWwj/YLwW/YfjgHk0
-----END PRIVATE KEY-----
";
const EC_PUBLIC: &str = "-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE78/LP10GLfzBskfYFtNDpxNNmmD9
TCWTTR5Hbuiio4hReAdIGSx/fFcxm2UMNvaYJ+pUB1sI/2C8Fv2H44B5NA==
-----END PUBLIC KEY-----
";

/// An RSA key pair made for these tests only: the api gets the public half.
const RSA_PRIVATE: &str = "-----BEGIN PRIVATE KEY-----
MIIEuwIBADANBgkqhkiG9w0BAQEFAASCBKUwggShAgEAAoIBAQCpT70DQw7UQl6u
b5cGYHQUDxaNWGCVk/yKTaWTrWIgiTHfnT7knbGny6CSwbBj3rp6z1UKiJNuZTZ0
Fc478eT7uZVbKpYolTjlPl6WFEF/XA9HC8sPqji6JW3MyUgi+DsikFg86LEXl+j0
/lM035kfw5g7u+A0APDIUADXKKZ0hYu68CgpDPIZ5xnKkZXXPC3QmTMMaP/3sNlH
9ZL1sqpZSAR0OW+wl1BFTD2G9dQPiACtbDkRaZ4lj8cwKK9mB3pSD9Ir6Uv6Rme2
gnWpVbvzZcqUfxx0vcgGC09MOhkV3HMJ77aY32xFW/xuHpO1ta+qjJ/OQObGHOhv
mY6KhoG5AgMBAAECgf96Rf1ZV6CU2t/C3SlS8Z6Z6hrTKfoEVUMrGGI4k7ulhqwi
jtTKm0jEHESXn4a9jSLKFIP6i0Y3GFsckzUms/7JIbGEjQYI/9O7oqq4uAzF87AI
pSBEEWedOAkmKyrPCjkwz0q5dTpvvT9tx5NoG+IqmpcfmLm5yJKVbLfA9Cav8pVZ
Dn2JIOBB5lr3FRf+hZo3OXE1Z6MCc0yK0lJhN2bBC07un4qCnSOMNzJkDe5LAG29
HfbetXXn3L4ZJHAQQMD6wgDqtN0sKfu1QaP+4gLEQ6VMGd0uX+FoQD2sztULBoDv
SNxLNIzxYvpq/7Vj2aCXEVi6fXbR71i6mg+jsMkCgYEA1OOpKZbUnUedR8dYGhby
hYipFtkfH9YgjjVgtYMwIf1ZFieZ269rUYI7OqIy2DZ333GZAmqJi9FP2nK4d0a1
6r/yQnU2Z058GBAsIgNkUncxvgjk+Ucb52IeOx5IfrKlic0cVv8XLxLUXaCdTPfw
/EXGypteRdOySxETISm3jXUCgYEAy5j4jkB1aY1EICMPM8YYTTkLlb+3FVQucbjF
+no8z4u/PO3NTz7W1D1iEl+NB9Q2EPofH1QEPetssDtOcVWVmM9J7WYhNmcLmpEB
JebTTY061HrPKH22TGtvGVvu20+Y/lOi5Yq5MLHobQ9oX/N93EqW6E5PdF9rAqb2
WWUbxrUCgYAitlRY4a0dUBYHJCvrZR56Q4Q+o3x9tm5sgauZLSDmCedCw4ZE2d+H
1NJPhy7/LjJxjpZCXJi84Y5Bsj79w9vZwR6BU5dhVNzLF6f6i88J20GTGOQs+TlF
iyweu5tafUqco4MhdEqVdF6IPa4oZK04lTAKzTab8B68OraBy8mQGQKBgQCSXuty
+Yxv0gvEPvBS/HvEKNrXUflB8D9jqr9KkE7ft0xJdX1BF6BC/c5f/ynZEwu7sNZn
I3PZQEPnfvuqJylhrsUrU11VS0fgW5dDtGr9OietUo1UQuyojCRXSuyx5svLLD3U
YKM7CuxaW9ViBh/aHBXZ9VLSCzdXtMkvA62wcQKBgBtqexDCQkPFle+hyxjkt1y5
GFRQSiuK608BPhAgkmWGWnRg45UcLdhy7g2/7GyZmaBDI1sx8ESiUZioD7yMazTG
5TJUyFItCqlI7tjXC7Jv2BdkcUQPynGiGzKsCtU6u2wbNtgS7u+xzBLT6ExS3yoJ
EYgdpEhIHrTfjxj3XQLJ
-----END PRIVATE KEY-----
";
const RSA_PUBLIC: &str = "-----BEGIN PUBLIC KEY-----
MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAqU+9A0MO1EJerm+XBmB0
FA8WjVhglZP8ik2lk61iIIkx350+5J2xp8ugksGwY966es9VCoiTbmU2dBXOO/Hk
+7mVWyqWKJU45T5elhRBf1wPRwvLD6o4uiVtzMlIIvg7IpBYPOixF5fo9P5TNN+Z
H8OYO7vgNADwyFAA1yimdIWLuvAoKQzyGecZypGV1zwt0JkzDGj/97DZR/WS9bKq
WUgEdDlvsJdQRUw9hvXUD4gArWw5EWmeJY/HMCivZgd6Ug/SK+lL+kZntoJ1qVW7
82XKlH8cdL3IBgtPTDoZFdxzCe+2mN9sRVv8bh6TtbWvqoyfzkDmxhzob5mOioaB
uQIDAQAB
-----END PUBLIC KEY-----
";

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

fn hs256(claims: &Value, secret: &str) -> String {
    jsonwebtoken::encode(
        &Header::default(),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("sign")
}

/// A token with `"alg": "none"` and no signature, as an attacker would send.
fn unsigned(claims: &Value) -> String {
    format!(
        "{}.{}.",
        base64_url(br#"{"alg":"none","typ":"JWT"}"#),
        base64_url(claims.to_string().as_bytes())
    )
}

fn base64_url(bytes: &[u8]) -> String {
    const TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(TABLE[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

async fn post(api: &Api, token: Option<&str>, body: Value) -> (u16, Value, Option<String>) {
    let mut req = api
        .http
        .post(api.url("/api/messages"))
        .header("Content-Type", "application/json")
        .body(body.to_string());
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let res = req.send().await.expect("POST reaches the app");
    let status = res.status().as_u16();
    let www = res
        .headers()
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    (status, res.json().await.expect("JSON body"), www)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_decide_who_may_post() {
    let app = spawn_app_with(Options {
        env: vec![
            ("AUTH_JWT_SECRET", SECRET.into()),
            ("AUTH_LEEWAY_SECS", "0".into()),
        ],
        ..Default::default()
    })
    .await;
    let valid = hs256(&json!({"sub": "uma", "exp": now() + 600}), SECRET);
    let cases: Vec<(&str, Option<String>, Value, u16, &str)> = vec![
        (
            "valid, user_id given",
            Some(valid.clone()),
            json!({"user_id": "uma", "content": "hi"}),
            202,
            "",
        ),
        (
            "valid, user_id from sub",
            Some(valid.clone()),
            json!({"content": "no user_id"}),
            202,
            "",
        ),
        (
            "sub differs from user_id",
            Some(valid.clone()),
            json!({"user_id": "vera", "content": "x"}),
            403,
            "forbidden_user",
        ),
        (
            "no Authorization header",
            None,
            json!({"user_id": "uma", "content": "x"}),
            401,
            "missing_token",
        ),
        (
            "expired",
            Some(hs256(&json!({"sub": "uma", "exp": now() - 120}), SECRET)),
            json!({"content": "x"}),
            401,
            "invalid_token",
        ),
        (
            "wrong signature",
            Some(hs256(
                &json!({"sub": "uma", "exp": now() + 600}),
                "another-secret-entirely-0123456789",
            )),
            json!({"content": "x"}),
            401,
            "invalid_token",
        ),
        (
            "alg none",
            Some(unsigned(&json!({"sub": "uma", "exp": now() + 600}))),
            json!({"content": "x"}),
            401,
            "invalid_token",
        ),
        (
            "no exp",
            Some(hs256(&json!({"sub": "uma"}), SECRET)),
            json!({"content": "x"}),
            401,
            "invalid_token",
        ),
        (
            "garbage",
            Some("not.a.jwt".into()),
            json!({"content": "x"}),
            401,
            "invalid_token",
        ),
    ];
    let mut accepted = Vec::new();
    for (what, token, body, status, code) in cases {
        let (got, json, www) = post(&app, token.as_deref(), body).await;
        println!("{what}: {got} {json}");
        assert_eq!(got, status, "{what}: {json}");
        if status == 202 {
            accepted.push(json["id"].as_str().expect("id").to_owned());
        } else {
            assert_eq!(json["error"], code, "{what}");
            assert!(!json["message"]
                .as_str()
                .unwrap_or_default()
                .contains(SECRET));
        }
        if status == 401 {
            assert_eq!(www.as_deref(), Some("Bearer"), "{what}: WWW-Authenticate");
        }
    }
    for id in &accepted {
        app.env.wait_persisted(id).await;
    }
    let users: Vec<String> = app
        .env
        .db
        .query("SELECT user_id FROM messages ORDER BY seq", &[])
        .await
        .expect("rows")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        users,
        vec!["uma", "uma"],
        "only the two valid posts, both as the token's subject"
    );
    // The feed stays public.
    let (status, _) = app.get_json("/api/messages?limit=1").await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_public_key_verifies_es256_tokens() {
    let app = spawn_app_with(Options {
        env: vec![("AUTH_JWT_PUBLIC_KEY", EC_PUBLIC.into())],
        ..Default::default()
    })
    .await;
    let key = EncodingKey::from_ec_pem(EC_PRIVATE.as_bytes()).expect("test key");
    let claims = json!({"sub": "wes", "exp": now() + 600});
    let es256 = jsonwebtoken::encode(&Header::new(Algorithm::ES256), &claims, &key).expect("sign");
    let (status, body, _) = post(&app, Some(&es256), json!({"content": "signed with ES256"})).await;
    assert_eq!(status, 202, "{body}");
    // An HS256 token made with the public key as its secret (the classic confusion) is refused.
    let confused = hs256(&claims, EC_PUBLIC);
    let (status, body, _) = post(&app, Some(&confused), json!({"content": "x"})).await;
    println!("ES256: 202; HS256 signed with the public key: {status} {body}");
    assert_eq!(status, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_required_feed_takes_the_token_in_the_query_or_a_cookie_and_never_logs_it() {
    let env = TestEnv::new(false).await;
    let process = ApiProcess::start(
        &env,
        "feed-auth",
        &[
            ("AUTH_JWT_SECRET", SECRET.into()),
            ("AUTH_FEED", "required".into()),
            (
                "RUST_LOG",
                "debug,librdkafka=warn,rdkafka=warn,tokio_postgres=info".into(),
            ),
        ],
    )
    .await;
    let api = &process.api;
    let token = hs256(&json!({"sub": "xena", "exp": now() + 600}), SECRET);
    let status = |res: reqwest::Response| res.status().as_u16();

    let without = status(
        api.http
            .get(api.url("/api/feed?history=0"))
            .send()
            .await
            .expect("feed"),
    );
    let with_query = api
        .http
        .get(api.url(&format!("/api/feed?history=0&access_token={token}")))
        .send()
        .await
        .expect("feed");
    let query_status = with_query.status().as_u16();
    let with_cookie = api
        .http
        .get(api.url("/api/feed?history=0"))
        .header("Cookie", format!("access_token={token}"))
        .send()
        .await
        .expect("feed");
    let cookie_status = with_cookie.status().as_u16();
    let bad = status(
        api.http
            .get(api.url("/api/feed?history=0&access_token=forged"))
            .send()
            .await
            .expect("feed"),
    );
    let pages = status(
        api.http
            .get(api.url(&format!("/api/messages?access_token={token}")))
            .send()
            .await
            .expect("pages"),
    );
    println!("feed without a token {without}, ?access_token= {query_status}, cookie {cookie_status}, forged {bad}; pages with a token {pages}");
    assert_eq!(
        (without, query_status, cookie_status, bad, pages),
        (401, 200, 200, 401, 200)
    );
    drop((with_query, with_cookie));
    // Every refusal names itself and carries the challenge, feed and pages alike.
    for (path, code) in [
        ("/api/feed?history=0", "missing_token"),
        ("/api/messages", "missing_token"),
        ("/api/feed?history=0&access_token=forged", "invalid_token"),
        ("/api/messages?access_token=forged", "invalid_token"),
    ] {
        let res = api.http.get(api.url(path)).send().await.expect("request");
        let status = res.status().as_u16();
        let challenge = res
            .headers()
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body: Value = res.json().await.expect("JSON error");
        println!("{path}: {status} {challenge:?} {body}");
        assert_eq!(status, 401, "{path}");
        assert_eq!(body["error"], code, "{path}");
        assert_eq!(
            challenge.as_deref(),
            Some("Bearer"),
            "{path}: WWW-Authenticate"
        );
    }

    let log = std::fs::read_to_string(&process.log).expect("log");
    assert!(log.contains("/api/feed"), "the requests were logged");
    assert!(!log.contains(&token), "the token never reaches the log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_answers_allowed_origins_only() {
    let app = spawn_app_with(Options {
        env: vec![("CORS_ALLOWED_ORIGINS", "https://feed.example".into())],
        ..Default::default()
    })
    .await;
    let preflight = |origin: &'static str| {
        app.http
            .request(reqwest::Method::OPTIONS, app.url("/api/feed"))
            .header("Origin", origin)
            .header("Access-Control-Request-Method", "GET")
            .header("Access-Control-Request-Headers", "last-event-id")
            .send()
    };
    let allowed = preflight("https://feed.example").await.expect("preflight");
    let h = allowed.headers().clone();
    println!(
        "preflight from the allowed origin: {} {:?}",
        allowed.status(),
        h
    );
    assert!(allowed.status().is_success());
    assert_eq!(h["access-control-allow-origin"], "https://feed.example");
    assert!(h["access-control-allow-headers"]
        .to_str()
        .expect("ascii")
        .to_lowercase()
        .contains("last-event-id"));
    assert_eq!(h["access-control-allow-credentials"], "true");

    let other = preflight("https://evil.example").await.expect("preflight");
    println!("preflight from another origin: {}", other.status());
    assert!(other.headers().get("access-control-allow-origin").is_none());

    let feed = app
        .http
        .get(app.url("/api/feed?history=0"))
        .header("Origin", "https://feed.example")
        .send()
        .await
        .expect("feed");
    assert_eq!(
        feed.headers()["access-control-allow-origin"],
        "https://feed.example"
    );
    let feed_other = app
        .http
        .get(app.url("/api/feed?history=0"))
        .header("Origin", "https://evil.example")
        .send()
        .await
        .expect("feed");
    println!("feed from another origin: {}", feed_other.status());
    assert!(feed_other
        .headers()
        .get("access-control-allow-origin")
        .is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_token_is_refused_for_what_is_wrong_with_it() {
    let app = spawn_app_with(Options {
        env: vec![
            ("AUTH_JWT_SECRET", SECRET.into()),
            ("AUTH_LEEWAY_SECS", "0".into()),
            ("AUTH_JWT_AUDIENCE", "feed-api".into()),
            ("AUTH_JWT_ISSUER", "https://id.example".into()),
        ],
        ..Default::default()
    })
    .await;
    let claims = |extra: Value| {
        let mut c = json!({"sub": "yuri", "exp": now() + 600, "aud": "feed-api", "iss": "https://id.example"});
        for (k, v) in extra.as_object().expect("object") {
            c[k] = v.clone();
        }
        c
    };
    let cases = [
        (
            "right audience and issuer",
            hs256(&claims(json!({})), SECRET),
            202,
            "",
        ),
        (
            "another audience",
            hs256(&claims(json!({"aud": "billing"})), SECRET),
            401,
            "audience",
        ),
        (
            "another issuer",
            hs256(&claims(json!({"iss": "https://evil.example"})), SECRET),
            401,
            "issuer",
        ),
        (
            "not valid yet",
            hs256(&claims(json!({"nbf": now() + 600})), SECRET),
            401,
            "not valid yet",
        ),
        ("alg none", unsigned(&claims(json!({}))), 401, "algorithm"),
    ];
    for (what, token, status, says) in cases {
        let (got, body, _) = post(&app, Some(&token), json!({"content": "x"})).await;
        println!("{what}: {got} {body}");
        assert_eq!(got, status, "{what}: {body}");
        if status == 401 {
            assert_eq!(body["error"], "invalid_token", "{what}");
            let message = body["message"].as_str().unwrap_or_default();
            assert!(message.contains(says), "{what}: {message:?} says {says:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rs256_leeway_a_missing_subject_and_the_rate_per_user() {
    let app = spawn_app_with(Options {
        env: vec![
            ("AUTH_JWT_PUBLIC_KEY", RSA_PUBLIC.into()),
            ("AUTH_LEEWAY_SECS", "60".into()),
            ("POST_RATE_PER_USER_PER_MINUTE", "1".into()),
            ("POST_RATE_PER_USER_BURST", "2".into()),
        ],
        ..Default::default()
    })
    .await;
    let key = EncodingKey::from_rsa_pem(RSA_PRIVATE.as_bytes()).expect("test key");
    let rs256 = |claims: Value| {
        jsonwebtoken::encode(&Header::new(Algorithm::RS256), &claims, &key).expect("sign")
    };
    let cases = [
        (
            "RS256, valid",
            rs256(json!({"sub": "rosa", "exp": now() + 600})),
            202,
            "",
        ),
        // Within the leeway either side of the clock: accepted.
        (
            "expired 30 s ago, leeway 60",
            rs256(json!({"sub": "rosa", "exp": now() - 30})),
            202,
            "",
        ),
        (
            "valid from 30 s on, leeway 60",
            rs256(json!({"sub": "tim", "exp": now() + 600, "nbf": now() + 30})),
            202,
            "",
        ),
        (
            "expired 120 s ago",
            rs256(json!({"sub": "rosa", "exp": now() - 120})),
            401,
            "expired",
        ),
        (
            "valid from 120 s on",
            rs256(json!({"sub": "rosa", "exp": now() + 600, "nbf": now() + 120})),
            401,
            "not valid yet",
        ),
        ("no sub", rs256(json!({"exp": now() + 600})), 401, "sub"),
        // rosa's third post in the minute: her own bucket (burst 2) is empty.
        (
            "rosa's third post",
            rs256(json!({"sub": "rosa", "exp": now() + 600})),
            429,
            "",
        ),
        (
            "another user meanwhile",
            rs256(json!({"sub": "uli", "exp": now() + 600})),
            202,
            "",
        ),
    ];
    for (what, token, status, says) in cases {
        let (got, body, _) = post(&app, Some(&token), json!({"content": "x"})).await;
        println!("{what}: {got} {body}");
        assert_eq!(got, status, "{what}: {body}");
        match status {
            401 => {
                assert_eq!(body["error"], "invalid_token", "{what}");
                let message = body["message"].as_str().unwrap_or_default();
                assert!(message.contains(says), "{what}: {message:?}");
            }
            429 => {
                assert_eq!(body["error"], "rate_limited", "{what}");
                assert!(
                    body["message"]
                        .as_str()
                        .unwrap_or_default()
                        .contains("by this user"),
                    "{what}: {body}"
                );
            }
            _ => {}
        }
    }
}
