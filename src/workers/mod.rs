//! Durable background loops. Each claims rows from the database, does the work, and marks it
//! done; each has a `run_once` that tests call to step it deterministically.

pub mod slack_outbox;

pub use slack_outbox::SlackOutbox;
