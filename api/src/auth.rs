//! Optional token authentication (docs/SECURITY.md): with `AUTH_JWT_SECRET`
//! (HS256) or `AUTH_JWT_PUBLIC_KEY` (PEM, RS256 or ES256), a post needs
//! `Authorization: Bearer <JWT>` and the token's `sub` is the poster. With
//! `AUTH_FEED=required` the feed needs a token too, in `?access_token=` or
//! the `access_token` cookie, because an `EventSource` cannot set headers.
//!
//! Verified with the `jsonwebtoken` crate, one algorithm per deployment (the
//! one the key is for): a token naming another algorithm, `none` included,
//! is refused. `exp` and `sub` are required.

use actix_web::http::header;
use actix_web::HttpRequest;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use crate::config::AuthSettings;
use crate::message::UserId;

/// The query parameter and cookie that carry a feed token.
pub const ACCESS_TOKEN: &str = "access_token";

/// How tokens are checked.
pub struct Auth {
    key: DecodingKey,
    validation: Validation,
    /// The feed needs a token too (`AUTH_FEED=required`).
    pub feed_required: bool,
    /// `AUTH_MODERATOR_CLAIM` and `AUTH_MODERATOR_ROLE`.
    moderator_claim: String,
    moderator_role: String,
}

/// The token of `Authorization: Bearer <JWT>`.
fn bearer(req: &HttpRequest) -> Result<&str, AuthError> {
    req.headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or(AuthError::Missing)
}

#[derive(Deserialize)]
struct Claims {
    /// Optional here so that a token without one is refused for that, by
    /// name, rather than as malformed.
    #[serde(default)]
    sub: Option<String>,
    /// The other claims: the moderator claim is read from them.
    #[serde(flatten)]
    other: serde_json::Map<String, serde_json::Value>,
}

/// Who asks to delete a message, when tokens are on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deleter {
    /// The token's `sub`: the author may delete their own messages.
    pub user: UserId,
    /// The token's moderator claim holds the moderator role: may delete any.
    pub moderator: bool,
}

impl Deleter {
    /// May this deleter delete a message of `author`?
    pub fn may_delete(&self, author: &UserId) -> bool {
        self.moderator || self.user == *author
    }
}

/// Why a token was refused. The message names the reason, never the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("a token is required: Authorization: Bearer <JWT>")]
    Missing,
    #[error("the token has expired")]
    Expired,
    #[error("the token's signature is not valid")]
    BadSignature,
    #[error("the token's algorithm is not the one this service accepts")]
    Algorithm,
    #[error("the token is malformed")]
    Malformed,
    #[error("the token lacks a required claim ({0})")]
    MissingClaim(String),
    #[error("the token's subject is not a valid user_id")]
    Subject,
    #[error("the token is for another audience (aud)")]
    WrongAudience,
    #[error("the token is from another issuer (iss)")]
    WrongIssuer,
    #[error("the token is not valid yet (nbf)")]
    NotYetValid,
}

/// The token checks of one deployment: off (no key configured) or on.
pub struct Tokens(Option<Auth>);

impl Tokens {
    pub fn new(auth: Option<Auth>) -> Self {
        Tokens(auth)
    }

    /// The poster a request's bearer token names; `None` when tokens are off.
    pub fn poster(&self, req: &HttpRequest) -> Result<Option<UserId>, AuthError> {
        self.0.as_ref().map(|auth| auth.poster(req)).transpose()
    }

    /// Who a `DELETE` request's bearer token names; `None` when tokens are off
    /// (then anyone may delete, as anyone may post as anyone).
    pub fn deleter(&self, req: &HttpRequest) -> Result<Option<Deleter>, AuthError> {
        self.0.as_ref().map(|auth| auth.deleter(req)).transpose()
    }

    /// With `AUTH_FEED=required`, a reader (feed, pages) must present a valid token.
    pub fn check_reader(&self, req: &HttpRequest) -> Result<(), AuthError> {
        self.reader(req).map(|_| ())
    }

    /// The reader a feed or pages request's token names, when
    /// `AUTH_FEED=required` (`None` when reads are public).
    pub fn reader(&self, req: &HttpRequest) -> Result<Option<UserId>, AuthError> {
        match &self.0 {
            Some(auth) if auth.feed_required => auth.reader(req).map(Some),
            _ => Ok(None),
        }
    }
}

impl AuthError {
    /// The error code of a `401` for this refusal (posts, the feed, pages).
    pub fn code(&self) -> crate::error::ErrorCode {
        match self {
            AuthError::Missing => crate::error::ErrorCode::MissingToken,
            _ => crate::error::ErrorCode::InvalidToken,
        }
    }
}

/// The `WWW-Authenticate` of every `401` (RFC 6750).
pub const CHALLENGE: (header::HeaderName, &str) = (header::WWW_AUTHENTICATE, "Bearer");

/// True when the token's header names an algorithm other than `ours`,
/// including ones `jsonwebtoken` cannot even parse (`none`): such a token is
/// refused for its algorithm, not as malformed. Only read on the refusal path.
fn names_another_algorithm(token: &str, ours: Algorithm) -> bool {
    use base64::Engine as _;
    let Some(header) = token.split('.').next() else {
        return false;
    };
    let Ok(bytes) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(header) else {
        return false;
    };
    let Ok(header) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
        return false;
    };
    header["alg"]
        .as_str()
        .is_some_and(|alg| alg != format!("{ours:?}"))
}

/// A key that cannot be used, named for the variable that holds it.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct KeyError(pub String);

impl Auth {
    /// `None` when authentication is off (no key configured).
    pub fn from_settings(settings: &AuthSettings) -> Result<Option<Auth>, KeyError> {
        let (key, algorithm) = match (&settings.jwt_secret, &settings.jwt_public_key) {
            (None, None) => return Ok(None),
            (Some(secret), None) => (
                DecodingKey::from_secret(secret.as_bytes()),
                Algorithm::HS256,
            ),
            (None, Some(pem)) => {
                if let Ok(key) = DecodingKey::from_rsa_pem(pem.as_bytes()) {
                    (key, Algorithm::RS256)
                } else if let Ok(key) = DecodingKey::from_ec_pem(pem.as_bytes()) {
                    (key, Algorithm::ES256)
                } else {
                    return Err(KeyError(
                        "AUTH_JWT_PUBLIC_KEY is not an RSA or P-256 EC public key in PEM".into(),
                    ));
                }
            }
            (Some(_), Some(_)) => {
                return Err(KeyError(
                    "set AUTH_JWT_SECRET or AUTH_JWT_PUBLIC_KEY, not both".into(),
                ))
            }
        };
        let mut validation = Validation::new(algorithm);
        validation.leeway = settings.leeway.as_secs();
        validation.set_required_spec_claims(&["exp", "sub"]);
        validation.validate_nbf = true;
        // Tokens from an identity provider carry `aud` (and `iss`): checked
        // when configured, otherwise accepted rather than refused.
        match &settings.audience {
            Some(aud) => validation.set_audience(&[aud]),
            None => validation.validate_aud = false,
        }
        if let Some(iss) = &settings.issuer {
            validation.set_issuer(&[iss]);
        }
        Ok(Some(Auth {
            key,
            validation,
            feed_required: settings.feed_required,
            moderator_claim: settings.moderator_claim.clone(),
            moderator_role: settings.moderator_role.clone(),
        }))
    }

    /// The poster a token names.
    pub fn verify(&self, token: &str) -> Result<UserId, AuthError> {
        self.claims(token).map(|(user, _)| user)
    }

    /// The user a token names, and its other claims.
    fn claims(
        &self,
        token: &str,
    ) -> Result<(UserId, serde_json::Map<String, serde_json::Value>), AuthError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation).map_err(
            |e| match e.kind() {
                ErrorKind::ExpiredSignature => AuthError::Expired,
                ErrorKind::InvalidSignature => AuthError::BadSignature,
                ErrorKind::InvalidAlgorithm
                | ErrorKind::InvalidAlgorithmName
                | ErrorKind::UnsupportedAlgorithm => AuthError::Algorithm,
                ErrorKind::MissingRequiredClaim(claim) => AuthError::MissingClaim(claim.clone()),
                ErrorKind::InvalidAudience => AuthError::WrongAudience,
                ErrorKind::InvalidIssuer => AuthError::WrongIssuer,
                ErrorKind::ImmatureSignature => AuthError::NotYetValid,
                _ if names_another_algorithm(token, self.validation.algorithms[0]) => {
                    AuthError::Algorithm
                }
                _ => AuthError::Malformed,
            },
        )?;
        let sub = data
            .claims
            .sub
            .ok_or_else(|| AuthError::MissingClaim("sub".into()))?;
        let user = UserId::parse(&sub).map_err(|_| AuthError::Subject)?;
        Ok((user, data.claims.other))
    }

    /// The poster of a request with `Authorization: Bearer <JWT>`.
    pub fn poster(&self, req: &HttpRequest) -> Result<UserId, AuthError> {
        self.verify(bearer(req)?)
    }

    /// The deleter of a request with `Authorization: Bearer <JWT>`: its
    /// user, and whether the moderator claim (`AUTH_MODERATOR_CLAIM`, an
    /// array of strings) holds the moderator role (`AUTH_MODERATOR_ROLE`).
    pub fn deleter(&self, req: &HttpRequest) -> Result<Deleter, AuthError> {
        let (user, claims) = self.claims(bearer(req)?)?;
        let moderator = claims
            .get(&self.moderator_claim)
            .and_then(serde_json::Value::as_array)
            .is_some_and(|roles| {
                roles
                    .iter()
                    .any(|r| r.as_str() == Some(&self.moderator_role))
            });
        Ok(Deleter { user, moderator })
    }

    /// The reader of a feed or pages request: the token in `?access_token=`,
    /// else the `access_token` cookie, else `Authorization: Bearer`.
    pub fn reader(&self, req: &HttpRequest) -> Result<UserId, AuthError> {
        let from_query =
            actix_web::web::Query::<std::collections::HashMap<String, String>>::from_query(
                req.query_string(),
            )
            .ok()
            .and_then(|q| q.get(ACCESS_TOKEN).cloned());
        let token = from_query
            .or_else(|| req.cookie(ACCESS_TOKEN).map(|c| c.value().to_owned()))
            .filter(|t| !t.is_empty());
        match token {
            Some(token) => self.verify(&token),
            None => self.poster(req),
        }
    }
}
