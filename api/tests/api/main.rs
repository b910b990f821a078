//! Integration tests: the real api on a random port, against the real broker
//! (Tansu or Kafka) and a real PostgreSQL, over real HTTP. `scripts/test.sh`
//! starts both; each test gets its own database, topics and consumer group,
//! so tests run in parallel and can be re-run.

// A test walks through one scenario from top to bottom; the 80-line bound
// (clippy.toml) is for the service's code.
#![allow(clippy::too_many_lines)]

mod auth;
mod bot;
mod broker;
mod contract;
mod deletion;
mod faults;
mod feed;
mod follows;
mod health;
mod helpers;
mod idempotency;
mod limits;
mod metrics;
mod monitoring;
mod pages;
mod poison;
mod post;
mod process;
mod settings;
mod site;
mod storm;
mod traces;
mod worker;
