//! Durable background loops. Each claims rows from the database, does the work, and marks it
//! done; each has one step (`run_once`; the callback worker's `start_due` starts deliveries
//! without waiting for them, so a slow endpoint holds up nothing) that the one loop of
//! [`driver::drive`] repeats.

pub mod bookings;
pub mod callbacks;
pub mod driver;
pub mod reports;
pub mod sla;
pub mod slack_outbox;

pub use bookings::{Bookings, Bucket};
pub use callbacks::CallbackWorker;
pub use reports::ReportWorker;
pub use sla::SlaWorker;
pub use slack_outbox::{Lease, SlackOutbox};
