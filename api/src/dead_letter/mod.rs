//! The dead-letter topic, where the worker puts every record it can never
//! process, with headers saying why and where it came from:
//!
//! - [`format`](mod@format): the record's headers and how one is read back;
//! - `send`: the worker's side, a copy that always fits;
//! - [`tool`]: the operator's side, listing and replaying (docs/OPERATIONS.md).

pub mod format;
pub(crate) mod send;
pub mod tool;

pub use format::{header, Cause, DeadLetter};
pub use send::TRUNCATED_PAYLOAD_BYTES;
pub use tool::{list, read, replay, ToolError};
