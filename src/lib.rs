//! countersign: a Slack-first approval gateway for AI agents.
//!
//! The crate is a library with a thin binary (`src/main.rs`). Tests start the very same server
//! through [`app::run`] on a port-0 listener, so what is tested is what ships.

pub mod addresses;
pub mod app;
pub mod audit;
pub mod auth;
pub mod autonomy;
pub mod budgets;
pub mod callbacks;
pub mod canonical;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod demo;
pub mod domain;
pub mod engine;
pub mod format;
pub mod http;
pub mod limits;
pub mod links;
pub mod manifest;
pub mod policy;
pub mod registry;
pub mod report;
pub mod sandbox;
pub mod secrets;
pub mod slack;
pub mod stepup;
pub mod store;
pub mod telemetry;
pub mod workers;
