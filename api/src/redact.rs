//! Credentials out of logs and errors: a connection string or URL as it may
//! be printed, with its password masked.
//!
//! Used wherever a URL that an operator wrote can reach a log line or an
//! error message (a refused `DATABASE_URL`, the tools' own output), so a
//! password never lands in a log store.

/// What a masked secret is printed as.
pub const MASK: &str = "***";

/// `s` with every password masked: the `user:password@` of a URL's
/// authority, a `password=` query parameter, and a `password=` of a libpq
/// key/value connection string (quoted or not). Everything else is kept, so
/// the printed value still says which host and database were meant.
pub fn url(s: &str) -> String {
    let masked = match s.find("://") {
        Some(scheme_end) => {
            let rest = &s[scheme_end + 3..];
            let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
            let (authority, tail) = rest.split_at(authority_end);
            let authority = match authority.rfind('@') {
                Some(at) => {
                    let (userinfo, hosts) = authority.split_at(at);
                    match userinfo.split_once(':') {
                        Some((user, _password)) => format!("{user}:{MASK}{hosts}"),
                        None => authority.to_owned(),
                    }
                }
                None => authority.to_owned(),
            };
            format!("{}{authority}{tail}", &s[..scheme_end + 3])
        }
        None => s.to_owned(),
    };
    mask_password_pairs(&masked)
}

/// Masks the value after every `password=` (case-insensitive), up to the
/// next `&`, white space or the closing quote of a quoted value.
fn mask_password_pairs(s: &str) -> String {
    const KEY: &str = "password=";
    let lower = s.to_ascii_lowercase();
    let mut out = String::with_capacity(s.len());
    let mut pos = 0;
    while let Some(found) = lower[pos..].find(KEY) {
        let value_start = pos + found + KEY.len();
        out.push_str(&s[pos..value_start]);
        let value = &s[value_start..];
        let value_len = if let Some(quoted) = value.strip_prefix('\'') {
            // libpq quoting: '...' with \' and \\ escapes.
            let mut escaped = false;
            let close = quoted
                .char_indices()
                .find(|&(_, c)| {
                    let end = c == '\'' && !escaped;
                    escaped = c == '\\' && !escaped;
                    end
                })
                .map_or(quoted.len(), |(i, _)| i + 1);
            1 + close
        } else {
            value
                .find(|c: char| c == '&' || c.is_whitespace())
                .unwrap_or(value.len())
        };
        out.push_str(MASK);
        pos = value_start + value_len;
    }
    out.push_str(&s[pos..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_masked_and_the_rest_kept() {
        let cases = [
            (
                "postgres://feed:s3cr%40t@db:5432/feed",
                "postgres://feed:***@db:5432/feed",
            ),
            (
                "postgresql://root@roach1:26257,roach2:26257/defaultdb?sslmode=disable",
                "postgresql://root@roach1:26257,roach2:26257/defaultdb?sslmode=disable",
            ),
            (
                "postgresql://u:p:q@h/db?password=other&sslmode=require",
                "postgresql://u:***@h/db?password=***&sslmode=require",
            ),
            (
                "host=db user=feed password=hunter2 dbname=feed",
                "host=db user=feed password=*** dbname=feed",
            ),
            (
                r"host=db password='it\'s secret' dbname=feed",
                "host=db password=*** dbname=feed",
            ),
            ("http://bot:token@api:8090/x", "http://bot:***@api:8090/x"),
            // An escaped backslash right before the closing quote.
            (
                r"host=db password='a\\' dbname=feed",
                "host=db password=*** dbname=feed",
            ),
            (
                r"password='one\'two' port=5432 password=three",
                "password=*** port=5432 password=***",
            ),
            ("http://api:8090", "http://api:8090"),
            ("not a url", "not a url"),
            ("", ""),
        ];
        for (input, want) in cases {
            assert_eq!(url(input), want, "{input}");
        }
    }

    #[test]
    fn a_password_containing_an_at_sign_is_masked_whole() {
        // The last `@` ends the user information.
        assert_eq!(url("postgres://u:a@b@host/db"), "postgres://u:***@host/db");
    }
}
