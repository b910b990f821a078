//! Feed cursors: the SSE `id:` of every message and the `before=` of pages.
//!
//! A cursor is the decimal form of the message's sequence number (`seq`),
//! which the worker assigns once, in commit order, and stores with the row.
//! So a message has the same cursor on every connection and every instance,
//! and cursors increase strictly in feed order. Clients must treat them as
//! opaque strings; only this module knows what is inside.

/// A cursor that is not one of ours.
#[derive(Debug, thiserror::Error)]
#[error("{0:?} is not a valid cursor")]
pub struct InvalidCursor(pub String);

/// The cursor of a sequence number.
pub fn encode(seq: i64) -> String {
    seq.to_string()
}

/// Parses a cursor back into a sequence number.
pub fn decode(cursor: &str) -> Result<i64, InvalidCursor> {
    let valid = !cursor.is_empty()
        && cursor.len() <= 19
        && cursor.bytes().all(|b| b.is_ascii_digit())
        && (cursor == "0" || !cursor.starts_with('0'));
    match cursor.parse::<i64>() {
        Ok(seq) if valid => Ok(seq),
        _ => Err(InvalidCursor(cursor.to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        for seq in [0, 1, 42, i64::MAX] {
            assert_eq!(decode(&encode(seq)).unwrap(), seq);
        }
    }

    #[test]
    fn rejects_foreign_strings() {
        for bad in [
            "",
            "-1",
            "+1",
            "01",
            "1.5",
            "abc",
            " 1",
            "99999999999999999999",
        ] {
            assert!(decode(bad).is_err(), "{bad:?} must be rejected");
        }
    }
}
