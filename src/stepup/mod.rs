//! Step-up confirmation: the fresh factor a high-risk approval needs beyond a Slack click — a
//! typed value from the action (`confirm`) or a TOTP code from the reviewer's enrolled
//! authenticator (`totp`). Pure parts live here; the rules that use the store (readiness,
//! checking a code, lockout, enrollment) are the core's (`engine::step_up`), and Slack's modal and
//! commands are `slack::step_up`.

pub mod confirm;
pub mod token;
pub mod totp;
pub mod vault;

/// Wrong codes within [`FAILURE_WINDOW`] that lock a reviewer's step-up for [`LOCKOUT`].
pub const MAX_FAILURES: i64 = 5;
pub const FAILURE_WINDOW: chrono::Duration = chrono::Duration::minutes(15);
pub const LOCKOUT: chrono::Duration = chrono::Duration::minutes(15);
/// The audit reason of a TOTP code whose time step was spent already (found by the core's
/// check, or by the vote that spends it when two forms race).
pub const CODE_ALREADY_USED: &str = "code already used";
/// The audit reasons of a wrong TOTP code, and of the one that locks the reviewer out.
pub const WRONG_CODE: &str = "wrong code";
pub const WRONG_CODE_LOCKED_OUT: &str = "wrong code; locked out";
