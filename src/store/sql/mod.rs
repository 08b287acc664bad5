//! What the two SQL backends share: how values are stored ([`Timestamp`]).

mod timestamp;

pub(in crate::store) use timestamp::{BadTimestamp, Timestamp, optional_timestamp, timestamp};
