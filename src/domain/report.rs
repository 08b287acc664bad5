//! What the store keeps about SLA reports, and the shapes the reports' configuration takes:
//! plain values, so that configuration and storage need nothing of the reporting code.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

pub use super::digest::DigestSchedule;

/// How far back a report looks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub enum Period {
    #[serde(rename = "7d")]
    Week,
    #[serde(rename = "30d")]
    Month,
    #[serde(rename = "90d")]
    Quarter,
}

impl Period {
    pub fn days(self) -> i64 {
        match self {
            Period::Week => 7,
            Period::Month => 30,
            Period::Quarter => 90,
        }
    }

    pub fn duration(self) -> chrono::Duration {
        chrono::Duration::days(self.days())
    }
}

impl fmt::Display for Period {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}d", self.days())
    }
}

impl FromStr for Period {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "7d" => Ok(Period::Week),
            "30d" => Ok(Period::Month),
            "90d" => Ok(Period::Quarter),
            other => Err(format!("`{other}` is not a period: use 7d, 30d or 90d")),
        }
    }
}

/// A report owed to a role channel (a row of `report_posts`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportPost {
    /// Zero until stored.
    pub id: i64,
    /// One row per digest slot and role, or per slash command.
    pub dedupe: String,
    pub role: String,
    pub channel: String,
    pub period: Period,
    /// The window ends here: the digest's slot, or when the command was given.
    pub as_of: DateTime<Utc>,
    /// Who asked, for a slash command; `None` for the weekly digest.
    pub requested_by: Option<String>,
    /// Earlier attempts that failed.
    pub attempts: i32,
}
