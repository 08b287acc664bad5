//! The SQL of both backends, written once. Each table family's file implements its storage
//! trait (`store/families.rs`) for SQLite and for PostgreSQL from one body; what differs between
//! the two databases sits in each backend's `dialect.rs`, named alike, and what differs in how
//! values are stored is hidden by the column types here ([`Timestamp`]; booleans are `bool` on
//! both). Both speak `$N` placeholders (sqlx's SQLite driver maps `$N` to argument N).
//!
//! Why a macro and not generic functions: sqlx's generic API needs, at every function, bounds
//! that Rust does not carry over from a trait (`for<'c> &'c mut DB::Connection: Executor<'c>`,
//! one `Encode + Type` bound per bound value's type, `ColumnIndex` for rows…); the trait impls
//! would read as bounds. [`backends!`] instead compiles one body twice, once per backend, each
//! type-checked against that backend's concrete types, with no forwarding layer in between.

/// Compiles `body` once per backend, into a module `sqlite` and a module `postgres` in which
/// `Backend` is that backend's store, `Conn` its connection type and `dialect` its dialect
/// module; everything the enclosing file imports is in scope too.
macro_rules! backends {
    ($($body:tt)*) => {
        /// The family for SQLite.
        pub(in crate::store) mod sqlite {
            #[allow(unused_imports)]
            use super::*;
            #[allow(unused_imports)]
            use crate::store::sqlite::{SqliteStore as Backend, dialect};
            #[allow(dead_code)]
            type Conn = sqlx::SqliteConnection;

            $($body)*
        }

        /// The family for PostgreSQL.
        pub(in crate::store) mod postgres {
            #[allow(unused_imports)]
            use super::*;
            #[allow(unused_imports)]
            use crate::store::postgres::{PostgresStore as Backend, dialect};
            #[allow(dead_code)]
            type Conn = sqlx::PgConnection;

            $($body)*
        }
    };
}

mod agents;
mod audit;
pub(in crate::store) mod batch;
mod lease;
mod maintenance;
mod outbox;
pub(in crate::store) mod proposals;
pub(in crate::store) mod reports;
pub(in crate::store) mod step_up;
mod timers;
mod timestamp;
pub(in crate::store) mod webhooks;

pub(in crate::store) use timestamp::{BadTimestamp, Timestamp, optional_timestamp, timestamp};
