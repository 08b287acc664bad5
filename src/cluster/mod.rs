//! What replicas share through Redis (`redis_url`), each with an in-process fallback used when
//! Redis is not configured or cannot be reached: the agents' rate limits (`crate::limits`), the
//! per-channel Slack posting budget, wake-ups of long-polls and workers, dedup keys and the user
//! group cache. All of it may be lost: the database holds every decision, row and timer.

mod dedup;
mod redis_link;
mod wakeups;

pub use dedup::SeenKeys;
pub use redis_link::{CALL_TIMEOUT, RedisError, RedisLink};
pub use wakeups::{POLL_WHILE_DEGRADED, Wake, WakeTarget, Wakeups};
