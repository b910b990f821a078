//! The feed service: HTTP in, Kafka, worker, database, Kafka, broadcaster,
//! SSE out. docs/ARCHITECTURE.md describes the flow and its guarantees; the
//! README maps each concept to its file.
//!
//! - `ingest`: `POST /api/messages` validates and queues on `events-to-process`.
//! - `deletion`: `DELETE /api/messages/{id}` checks who may and queues the deletion there too.
//! - `worker`: consumes `events-to-process`, persists through [`store`],
//!   republishes on `events-processed` and hands each message to the local
//!   broadcaster.
//! - [`broadcast`]: every instance reads `events-processed` and releases
//!   messages in sequence order to its clients.
//! - `feed`: `GET /api/feed` (SSE) and `GET /api/messages` (pages).
//! - `follows`: who follows whom (`/api/users/...`); `home` keeps the home
//!   timelines' authors current on each instance.
//! - `site`: the live page (`GET /`) and the status page (`GET /status`,
//!   fed by `status`).
//! - `traces`: OpenTelemetry spans of a message's way (ingest, persist,
//!   release), exported over OTLP when `OTEL_EXPORTER_OTLP_ENDPOINT` is set.
//! - `openapi`: the OpenAPI 3.1 description at `GET /api/openapi.json`,
//!   derived from the handlers.
//! - `routes` and [`startup`]: which listener serves what, and the wiring.
//!
//! Modules are crate-private unless a binary or the integration tests use
//! them.

pub(crate) mod auth;
pub mod broadcast;
pub mod config;
pub(crate) mod connection;
pub(crate) mod cursor;
pub mod dead_letter;
pub(crate) mod deletion;
pub mod error;
pub(crate) mod features;
pub(crate) mod feed;
pub(crate) mod follows;
pub(crate) mod health;
pub(crate) mod home;
pub(crate) mod ingest;
pub mod kafka;
pub(crate) mod limits;
pub mod message;
pub(crate) mod metrics;
pub(crate) mod observe;
pub(crate) mod openapi;
pub(crate) mod redact;
pub(crate) mod retry;
pub(crate) mod routes;
pub(crate) mod server;
pub(crate) mod site;
pub mod startup;
pub(crate) mod status;
pub mod store;
pub mod telemetry;
pub(crate) mod traces;
pub(crate) mod worker;
