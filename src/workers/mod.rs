//! Durable background loops. Each claims rows from the database, does the work, and marks it
//! done; each has a `run_once` that tests call to step it deterministically.

pub mod callbacks;
pub mod channel_budget;
pub mod reports;
pub mod sla;
pub mod slack_outbox;

pub use callbacks::CallbackWorker;
pub use channel_budget::ChannelBudget;
pub use reports::ReportWorker;
pub use sla::SlaWorker;
pub use slack_outbox::SlackOutbox;
