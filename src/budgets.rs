//! Budgets on what policy may auto-approve for an agent (its manifest's `budgets`): one
//! proposal's amount, and per UTC day and month the auto-approved amount and count. An
//! auto-approval that would overrun one becomes a review, and the verdict names the budget.
//!
//! Usage is read from the database just before the verdict, outside the writing transaction:
//! auto-approvals submitted at the same instant may together overrun a cap by what is in flight.

use chrono::{DateTime, Datelike, TimeZone, Utc};

use crate::manifest::{BudgetCap, Budgets};

/// What an agent has had auto-approved so far in the current day and month.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Usage {
    pub day_amount: f64,
    pub day_count: u64,
    pub month_amount: f64,
    pub month_count: u64,
}

/// The starts of the UTC day and month `now` is in.
pub fn periods(now: DateTime<Utc>) -> (DateTime<Utc>, DateTime<Utc>) {
    let day = now
        .date_naive()
        .and_hms_opt(0, 0, 0)
        .expect("midnight exists");
    let month = day.with_day(1).expect("the first exists");
    (Utc.from_utc_datetime(&day), Utc.from_utc_datetime(&month))
}

/// Why auto-approving one more proposal of `amount` would overrun a budget, if it would.
pub fn overrun(budgets: &Budgets, amount: Option<f64>, usage: &Usage) -> Option<String> {
    if let (Some(cap), Some(amount)) = (budgets.per_proposal, amount)
        && amount > cap
    {
        return Some(format!(
            "{} is over the per-proposal auto-approval cap of {}",
            money(amount),
            money(cap)
        ));
    }
    let check = |period: &str, cap: &Option<BudgetCap>, spent: f64, count: u64| {
        let cap = cap.as_ref()?;
        if let (Some(limit), Some(amount)) = (cap.amount, amount)
            && spent + amount > limit
        {
            return Some(format!(
                "the {period} auto-approved amount would reach {} (cap {}; {} used)",
                money(spent + amount),
                money(limit),
                money(spent)
            ));
        }
        if let Some(limit) = cap.count
            && count + 1 > limit
        {
            return Some(format!(
                "the {period} cap of {limit} auto-approved proposals is used up"
            ));
        }
        None
    };
    check("daily", &budgets.daily, usage.day_amount, usage.day_count).or_else(|| {
        check(
            "monthly",
            &budgets.monthly,
            usage.month_amount,
            usage.month_count,
        )
    })
}

fn money(amount: f64) -> String {
    crate::format::grouped(amount)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budgets() -> Budgets {
        Budgets {
            per_proposal: Some(500.0),
            daily: Some(BudgetCap {
                amount: Some(1000.0),
                count: Some(3),
            }),
            monthly: Some(BudgetCap {
                amount: Some(5000.0),
                count: None,
            }),
        }
    }

    #[test]
    fn each_cap_is_named_when_it_would_be_overrun() {
        let none = Usage::default();
        assert_eq!(overrun(&budgets(), Some(500.0), &none), None);
        assert!(
            overrun(&budgets(), Some(500.01), &none)
                .unwrap()
                .contains("per-proposal auto-approval cap of 500")
        );
        let spent = Usage {
            day_amount: 800.0,
            day_count: 1,
            month_amount: 800.0,
            month_count: 1,
        };
        let daily = overrun(&budgets(), Some(250.0), &spent).unwrap();
        assert_eq!(
            daily,
            "the daily auto-approved amount would reach 1,050 (cap 1,000; 800 used)"
        );
        let counted = Usage {
            day_count: 3,
            ..Usage::default()
        };
        assert!(
            overrun(&budgets(), None, &counted)
                .unwrap()
                .contains("daily cap of 3")
        );
        let month = Usage {
            month_amount: 4900.0,
            ..Usage::default()
        };
        assert!(
            overrun(&budgets(), Some(200.0), &month)
                .unwrap()
                .contains("monthly")
        );
        assert_eq!(overrun(&Budgets::default(), Some(1e12), &month), None);
    }

    #[test]
    fn periods_are_utc_day_and_month() {
        let now = "2026-11-21T13:45:00Z".parse().unwrap();
        let (day, month) = periods(now);
        assert_eq!(
            day,
            "2026-11-21T00:00:00Z".parse::<DateTime<Utc>>().unwrap()
        );
        assert_eq!(
            month,
            "2026-11-01T00:00:00Z".parse::<DateTime<Utc>>().unwrap()
        );
        assert_eq!(money(1234567.5), "1,234,567.5");
    }
}
