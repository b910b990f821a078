//! Tokens for an api that requires them (`AUTH_JWT_SECRET`): the bot and the
//! load generator sign an HS256 JWT per user, with that user as `sub` and an
//! expiry an hour ahead.

use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{EncodingKey, Header};
use serde::Serialize;

/// How long a signed token is valid.
const VALIDITY_SECS: u64 = 3600;

#[derive(Clone)]
pub struct Signer {
    key: EncodingKey,
}

#[derive(Serialize)]
struct Claims<'a> {
    sub: &'a str,
    exp: u64,
    iat: u64,
}

impl Signer {
    pub fn new(secret: &str) -> Self {
        Signer {
            key: EncodingKey::from_secret(secret.as_bytes()),
        }
    }

    /// A token naming `user_id`, valid for an hour.
    pub fn token(&self, user_id: &str) -> Result<String, jsonwebtoken::errors::Error> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        jsonwebtoken::encode(
            &Header::default(),
            &Claims {
                sub: user_id,
                exp: now + VALIDITY_SECS,
                iat: now,
            },
            &self.key,
        )
    }
}
