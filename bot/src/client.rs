//! The API as the bot sees it: one call, with failures sorted into
//! "retry later" and "our request was wrong".

use std::time::Duration;

use serde::Deserialize;

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
        })
    }

    /// Posts one message; `Ok` means the API answered 202.
    pub async fn post(&self, user_id: &str, content: &str) -> Result<Accepted, PostError> {
        let res = self
            .http
            .post(&self.url)
            .json(&serde_json::json!({ "user_id": user_id, "content": content }))
            .send()
            .await
            .map_err(PostError::Unavailable)?;
        let status = res.status();
        if status.as_u16() == 202 {
            return res.json().await.map_err(PostError::Unavailable);
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
}
