//! The pages a person opens: the live feed (`GET /`) and the status page
//! (`GET /status`), plain HTML, CSS and JavaScript from `api/site/`,
//! compiled into the binary so the service needs no files and no network
//! at run time.
//!
//! Every answer carries a strict Content-Security-Policy (scripts, styles
//! and connections from this origin only, no inline script), so even a
//! rendering bug could not run someone's posted text as code; the pages
//! themselves only ever set text. `Cache-Control: no-cache` with an `ETag`
//! lets browsers keep a copy and revalidate it, so a new release is seen
//! at the next load.

use std::sync::LazyLock;

use actix_web::http::header::{self, HeaderValue};
use actix_web::{web, HttpRequest, HttpResponse};
use sha2::{Digest, Sha256};

/// One embedded file.
pub struct Asset {
    pub path: &'static str,
    content_type: &'static str,
    body: &'static str,
    etag: LazyLock<String>,
}

macro_rules! asset {
    ($path:literal, $file:literal, $type:literal) => {
        Asset {
            path: $path,
            content_type: $type,
            body: include_str!(concat!("../site/", $file)),
            etag: LazyLock::new(|| etag(include_str!(concat!("../site/", $file)))),
        }
    };
}

/// The feed page.
pub static FEED_PAGE: Asset = asset!("/", "index.html", "text/html; charset=utf-8");
/// The status page.
pub static STATUS_PAGE: Asset = asset!("/status", "status.html", "text/html; charset=utf-8");
/// Scripts and styles of both pages.
pub static FILES: [Asset; 3] = [
    asset!(
        "/assets/feed.js",
        "feed.js",
        "text/javascript; charset=utf-8"
    ),
    asset!(
        "/assets/status.js",
        "status.js",
        "text/javascript; charset=utf-8"
    ),
    asset!("/assets/site.css", "site.css", "text/css; charset=utf-8"),
];

const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'self'; \
     frame-ancestors 'none'";

fn etag(body: &str) -> String {
    let digest = Sha256::digest(body.as_bytes());
    let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("\"{hex}\"")
}

/// Answers `GET`/`HEAD` for `asset`: `304` when the browser's copy is current.
pub fn serve(asset: &'static Asset, req: &HttpRequest) -> HttpResponse {
    let etag = asset.etag.as_str();
    let fresh = req
        .headers()
        .get_all(header::IF_NONE_MATCH)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        // If-None-Match compares weakly: a proxy that compresses marks the
        // tag weak (`W/"…"`), and it still names this content.
        .map(|tag| tag.trim())
        .any(|tag| tag == "*" || tag.strip_prefix("W/").unwrap_or(tag) == etag);
    let mut res = if fresh {
        HttpResponse::NotModified()
    } else {
        HttpResponse::Ok()
    };
    res.insert_header((header::ETAG, etag))
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header((
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        ))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"));
    if fresh {
        return res.finish();
    }
    res.content_type(asset.content_type).body(asset.body)
}

/// A handler serving `asset`.
pub fn handler(asset: &'static Asset) -> actix_web::Route {
    web::to(move |req: HttpRequest| async move { serve(asset, &req) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_link_only_files_that_are_served() {
        for page in [&FEED_PAGE, &STATUS_PAGE] {
            assert_eq!(page.content_type, "text/html; charset=utf-8");
            for link in page
                .body
                .split(['"', '\''])
                .filter(|s| s.starts_with("/assets/"))
            {
                assert!(
                    FILES.iter().any(|f| f.path == link),
                    "{} links {link}, which is not served",
                    page.path
                );
            }
        }
    }

    #[test]
    fn etags_differ_by_content_and_are_quoted() {
        assert_ne!(*FEED_PAGE.etag, *STATUS_PAGE.etag);
        assert!(FEED_PAGE.etag.starts_with('"') && FEED_PAGE.etag.ends_with('"'));
    }
}
