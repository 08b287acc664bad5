//! [`Timestamp`]: how an instant is stored, so that binding and reading one is the same code on
//! both backends.
//!
//! SQLite has no time type: it keeps the text [`format_timestamp`] writes (fixed width, UTC,
//! microseconds), which sorts as the instants do, so `<=` and `ORDER BY` on it are time order.
//! PostgreSQL keeps a `timestamptz`. Both formats are what the migrations already hold: this type
//! changes how the code says it, not what is stored.

use chrono::{DateTime, Utc};
use sqlx::decode::Decode;
use sqlx::encode::{Encode, IsNull};
use sqlx::error::BoxDynError;
use sqlx::postgres::{PgArgumentBuffer, PgTypeInfo, PgValueRef, Postgres};
use sqlx::sqlite::{Sqlite, SqliteArgumentsBuffer, SqliteTypeInfo, SqliteValueRef};
use sqlx::{ColumnIndex, Row, Type};

use crate::clock::{format_timestamp, parse_timestamp};
use crate::store::StoreError;

/// An instant as a column value: text on SQLite, `timestamptz` on PostgreSQL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(in crate::store) struct Timestamp(pub DateTime<Utc>);

impl From<Timestamp> for DateTime<Utc> {
    fn from(at: Timestamp) -> Self {
        at.0
    }
}

/// A stored SQLite time that does not parse: damaged data, reported as
/// [`StoreError::Corrupt`] (see `From<sqlx::Error>`), as the text-reading code did before.
#[derive(Debug, thiserror::Error)]
#[error("{text:?}: {error}")]
pub(in crate::store) struct BadTimestamp {
    text: String,
    error: chrono::ParseError,
}

impl Type<Sqlite> for Timestamp {
    fn type_info() -> SqliteTypeInfo {
        <String as Type<Sqlite>>::type_info()
    }

    fn compatible(ty: &SqliteTypeInfo) -> bool {
        <String as Type<Sqlite>>::compatible(ty)
    }
}

impl Encode<'_, Sqlite> for Timestamp {
    fn encode_by_ref(&self, buf: &mut SqliteArgumentsBuffer) -> Result<IsNull, BoxDynError> {
        Encode::<Sqlite>::encode(format_timestamp(self.0), buf)
    }
}

impl<'r> Decode<'r, Sqlite> for Timestamp {
    fn decode(value: SqliteValueRef<'r>) -> Result<Self, BoxDynError> {
        let text = <&str as Decode<Sqlite>>::decode(value)?;
        parse_timestamp(text).map(Timestamp).map_err(|error| {
            Box::new(BadTimestamp {
                text: text.to_owned(),
                error,
            }) as BoxDynError
        })
    }
}

impl Type<Postgres> for Timestamp {
    fn type_info() -> PgTypeInfo {
        <DateTime<Utc> as Type<Postgres>>::type_info()
    }

    fn compatible(ty: &PgTypeInfo) -> bool {
        <DateTime<Utc> as Type<Postgres>>::compatible(ty)
    }
}

impl Encode<'_, Postgres> for Timestamp {
    fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
        Encode::<Postgres>::encode_by_ref(&self.0, buf)
    }

    fn size_hint(&self) -> usize {
        Encode::<Postgres>::size_hint(&self.0)
    }
}

impl<'r> Decode<'r, Postgres> for Timestamp {
    fn decode(value: PgValueRef<'r>) -> Result<Self, BoxDynError> {
        <DateTime<Utc> as Decode<Postgres>>::decode(value).map(Timestamp)
    }
}

/// Reads a time column of either backend's row.
pub(in crate::store) fn timestamp<R: Row>(
    row: &R,
    column: &str,
) -> Result<DateTime<Utc>, StoreError>
where
    for<'r> Timestamp: Decode<'r, R::Database> + Type<R::Database>,
    for<'c> &'c str: ColumnIndex<R>,
{
    Ok(row.try_get::<Timestamp, _>(column)?.0)
}

/// Reads a time column that may be NULL.
pub(in crate::store) fn optional_timestamp<R: Row>(
    row: &R,
    column: &str,
) -> Result<Option<DateTime<Utc>>, StoreError>
where
    for<'r> Timestamp: Decode<'r, R::Database> + Type<R::Database>,
    for<'c> &'c str: ColumnIndex<R>,
{
    Ok(row.try_get::<Option<Timestamp>, _>(column)?.map(|at| at.0))
}
