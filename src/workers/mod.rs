//! Durable background loops. Each claims rows from the database, does the work, and marks it
//! done; each has one step its loop repeats (`run_once`; the callback worker's `start_due`
//! starts deliveries without waiting for them, so a slow endpoint holds up nothing).

pub mod bookings;
pub mod callbacks;
pub mod reports;
pub mod sla;
pub mod slack_outbox;

pub use bookings::{Bookings, Bucket};
pub use callbacks::CallbackWorker;
pub use reports::ReportWorker;
pub use sla::SlaWorker;
pub use slack_outbox::{Lease, SlackOutbox};
