//! The API as the bot sees it: one call, with failures sorted into
//! "retry later" and "our request was wrong".

use std::time::Duration;

use serde::Deserialize;

use crate::token::Signer;

/// Why a post did not go through.
#[derive(Debug, thiserror::Error)]
pub enum PostError {
    /// The API is down, overloaded or its broker is: back off and retry.
    #[error("API unavailable")]
    Unavailable(#[source] reqwest::Error),
    #[error("API answered {status}; retry later")]
    RetryLater {
        status: u16,
        retry_after: Option<Duration>,
    },
    /// No token could be signed (a bug: the claims always encode).
    #[error("could not sign a token")]
    Token(#[source] jsonwebtoken::errors::Error),
    /// The API rejected the post: a bug in the generator, never retried.
    #[error("API rejected the post with {status}: {body}")]
    Rejected { status: u16, body: String },
}

#[derive(Debug, Deserialize)]
pub struct Accepted {
    pub id: String,
    pub created_at: String,
}

#[derive(Clone)]
pub struct ApiClient {
    http: reqwest::Client,
    url: String,
    users_url: String,
    signer: Option<Signer>,
}

impl ApiClient {
    pub fn new(api_url: &str) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(15))
            .connect_timeout(Duration::from_secs(3))
            .build()?;
        Ok(ApiClient {
            http,
            url: format!("{api_url}/api/messages"),
            users_url: format!("{api_url}/api/users"),
            signer: None,
        })
    }

    /// Signs a token for each post's user (for an api with `AUTH_JWT_SECRET`).
    pub fn with_jwt_secret(mut self, secret: Option<&str>) -> Self {
        self.signer = secret.map(Signer::new);
        self
    }

    /// Posts one message; `Ok` means the API answered 202. Every attempt of
    /// one message must carry the same `idempotency_key`: then a retry after
    /// a 503 or a lost connection is stored once, whatever became of the
    /// earlier attempts.
    pub async fn post(
        &self,
        user_id: &str,
        content: &str,
        idempotency_key: &str,
    ) -> Result<Accepted, PostError> {
        let mut req = self
            .http
            .post(&self.url)
            .header("Idempotency-Key", idempotency_key)
            .json(&serde_json::json!({ "user_id": user_id, "content": content }));
        if let Some(signer) = &self.signer {
            req = req.bearer_auth(signer.token(user_id).map_err(PostError::Token)?);
        }
        // Without the URL: it may hold credentials, and it is the same every time.
        let res = req
            .send()
            .await
            .map_err(|e| PostError::Unavailable(e.without_url()))?;
        let status = res.status();
        if status.as_u16() == 202 {
            return res
                .json()
                .await
                .map_err(|e| PostError::Unavailable(e.without_url()));
        }
        if status.is_server_error() || status.as_u16() == 429 {
            let retry_after = res
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok())
                .map(Duration::from_secs);
            return Err(PostError::RetryLater {
                status: status.as_u16(),
                retry_after,
            });
        }
        let body = res.text().await.unwrap_or_default();
        Err(PostError::Rejected {
            status: status.as_u16(),
            body,
        })
    }

    /// Makes `user_id` follow `target`; `Ok` means the API answered 204.
    pub async fn follow(&self, user_id: &str, target: &str) -> Result<(), PostError> {
        let mut req = self
            .http
            .put(format!("{}/{user_id}/following/{target}", self.users_url));
        if let Some(signer) = &self.signer {
            req = req.bearer_auth(signer.token(user_id).map_err(PostError::Token)?);
        }
        let res = req
            .send()
            .await
            .map_err(|e| PostError::Unavailable(e.without_url()))?;
        let status = res.status().as_u16();
        match status {
            204 => Ok(()),
            429 | 500..=599 => Err(PostError::RetryLater {
                status,
                retry_after: None,
            }),
            _ => Err(PostError::Rejected {
                status,
                body: res.text().await.unwrap_or_default(),
            }),
        }
    }

    /// Deletes one of `user_id`'s own messages; `Ok` means the API answered
    /// 202. A `404` (the post is still on its way) is a `RetryLater`.
    pub async fn delete(&self, user_id: &str, id: &str) -> Result<(), PostError> {
        let mut req = self.http.delete(format!("{}/{id}", self.url));
        if let Some(signer) = &self.signer {
            req = req.bearer_auth(signer.token(user_id).map_err(PostError::Token)?);
        }
        let res = req
            .send()
            .await
            .map_err(|e| PostError::Unavailable(e.without_url()))?;
        let status = res.status().as_u16();
        match status {
            202 => Ok(()),
            404 | 429 | 500..=599 => Err(PostError::RetryLater {
                status,
                retry_after: None,
            }),
            _ => Err(PostError::Rejected {
                status,
                body: res.text().await.unwrap_or_default(),
            }),
        }
    }
}
