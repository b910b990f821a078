//! The feed service: HTTP in, Kafka, worker, database, Kafka, broadcaster,
//! SSE out. docs/ARCHITECTURE.md describes the flow and its guarantees.
//!
//! - [`ingest`]: `POST /api/messages` validates and queues on `events-to-process`.
//! - [`worker`]: consumes `events-to-process`, persists through [`store`],
//!   republishes on `events-processed`.
//! - [`broadcast`]: every instance reads `events-processed` and releases
//!   messages in sequence order to its clients.
//! - [`feed`]: `GET /api/feed` (SSE) and `GET /api/messages` (pages).
//! - [`site`]: the live page (`GET /`) and the status page (`GET /status`,
//!   fed by [`status`]).
//! - [`health`], [`config`], [`startup`]: the rest of the service.

pub mod auth;
pub mod broadcast;
pub mod config;
pub mod connection;
pub mod cursor;
pub mod dead_letter;
pub mod error;
pub mod feed;
pub mod health;
pub mod ingest;
pub mod kafka;
pub mod limits;
pub mod message;
pub mod metrics;
pub mod observe;
pub mod redact;
pub mod retry;
pub mod server;
pub mod site;
pub mod startup;
pub mod state;
pub mod status;
pub mod store;
pub mod telemetry;
pub mod worker;
