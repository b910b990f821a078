//! The bot: simulated users posting plausible tweets through the public API.
//!
//! Each user is a task of its own that posts, then sleeps for the interval
//! plus or minus a random jitter, so N users produce about N posts per
//! interval, spread out rather than in bursts. While the API is down or
//! answers 503, a user backs off exponentially and keeps going; a 4xx (our
//! own bug: the generator made an invalid post) is logged and skipped.

pub mod cli;
pub mod client;
pub mod config;
pub mod generator;
pub mod load;
pub mod poster;
pub mod readers;
pub mod token;

/// An error with its causes, for logs: `outer: inner: root`.
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        source = cause.source();
    }
    out
}

/// A URL as it may be logged: a password in it is printed as `***`.
pub fn shown_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            // Only fails for URLs that cannot have a password, which this one has.
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_url_is_shown_without_its_password() {
        assert_eq!(
            super::shown_url("http://bot:s3cret@api:8090"),
            "http://bot:***@api:8090/"
        );
        assert_eq!(super::shown_url("http://api:8090"), "http://api:8090");
    }
}
