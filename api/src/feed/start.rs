//! Where a stream starts: the pure decision between resuming after a cursor
//! and starting afresh (with `event: reset` when a cursor was refused),
//! tested without a database.

/// Why a fresh stream begins with `event: reset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reset {
    /// The `Last-Event-ID` header is not a cursor at all.
    Invalid,
    /// A cursor beyond any this feed has issued.
    Unknown,
    /// A cursor older than the resume window.
    TooOld,
}

impl Reset {
    pub const ALL: [Reset; 3] = [Reset::Invalid, Reset::Unknown, Reset::TooOld];

    pub fn reason(self) -> &'static str {
        match self {
            Reset::Invalid => "cursor_invalid",
            Reset::Unknown => "cursor_unknown",
            Reset::TooOld => "cursor_too_old",
        }
    }

    pub fn message(self) -> &'static str {
        match self {
            Reset::Invalid => {
                "the Last-Event-ID header is not a cursor of this feed; starting afresh"
            }
            Reset::Unknown => "the cursor is not one this feed has issued; starting afresh",
            Reset::TooOld => "the cursor is older than the resume window; starting afresh",
        }
    }
}

/// How a stream starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// Exactly the messages after this cursor, then live.
    Resume(i64),
    /// History, then live; after a reset notice when there is one.
    Fresh(Option<Reset>),
}

/// Decides how a stream starts. `cursor` is the client's (header or
/// parameter), `unusable_header` a header that was not a cursor, `max` the
/// highest committed sequence number (asked only when there is a cursor),
/// `window` how far back a cursor may point (`FEED_RESUME_WINDOW`).
pub fn decide(cursor: Option<i64>, unusable_header: bool, max: Option<i64>, window: i64) -> Start {
    match (cursor, max) {
        (Some(after), Some(max)) if after > max => Start::Fresh(Some(Reset::Unknown)),
        (Some(after), Some(max)) if max - after > window => Start::Fresh(Some(Reset::TooOld)),
        (Some(after), Some(_)) => Start::Resume(after),
        _ if unusable_header => Start::Fresh(Some(Reset::Invalid)),
        _ => Start::Fresh(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_resumes_inside_the_window_and_resets_outside_it() {
        assert_eq!(decide(None, false, None, 10), Start::Fresh(None));
        assert_eq!(decide(Some(5), false, Some(9), 10), Start::Resume(5));
        assert_eq!(
            decide(Some(9), false, Some(9), 10),
            Start::Resume(9),
            "the newest"
        );
        assert_eq!(
            decide(Some(0), false, Some(10), 10),
            Start::Resume(0),
            "exactly the window"
        );
        assert_eq!(
            decide(Some(0), false, Some(11), 10),
            Start::Fresh(Some(Reset::TooOld))
        );
        assert_eq!(
            decide(Some(10), false, Some(9), 10),
            Start::Fresh(Some(Reset::Unknown))
        );
        assert_eq!(
            decide(Some(1), false, Some(0), 10),
            Start::Fresh(Some(Reset::Unknown)),
            "an empty feed"
        );
        assert_eq!(
            decide(None, true, None, 10),
            Start::Fresh(Some(Reset::Invalid))
        );
        // A usable `?last_event_id=` wins over nothing; an unusable header leaves no cursor.
        assert_eq!(decide(Some(3), false, Some(3), 0), Start::Resume(3));
    }

    #[test]
    fn each_reset_has_its_reason() {
        for (reset, reason) in [
            (Reset::Invalid, "cursor_invalid"),
            (Reset::Unknown, "cursor_unknown"),
            (Reset::TooOld, "cursor_too_old"),
        ] {
            assert_eq!(reset.reason(), reason);
            assert!(reset.message().ends_with("starting afresh"));
        }
    }
}
