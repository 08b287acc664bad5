//! `step_up: confirm`: the reviewer types a value taken from the action — the amount, the
//! record count, the recipient count or the target — proving they read what they approve.

use serde_json::Value;

use crate::domain::Proposal;

/// What the reviewer is asked to type, and the answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Challenge {
    /// "the amount (USD)", "the number of records"…
    pub asks_for: String,
    expected: Expected,
}

#[derive(Debug, Clone, PartialEq)]
enum Expected {
    Number(f64),
    Text(String),
}

fn number(value: Option<&Value>) -> Option<f64> {
    value.and_then(|v| v.as_f64().or_else(|| v.as_str()?.trim().parse().ok()))
}

/// The value to confirm for a proposal: its amount, record count, recipient count, number of
/// changes, or else the target's id (or, lacking one, the action).
pub fn challenge(proposal: &Proposal) -> Challenge {
    let content = &proposal.content;
    let params = &content.params;
    if let Some(amount) = number(params.get("amount")) {
        let currency = params
            .get("currency")
            .and_then(Value::as_str)
            .map(|c| format!(" ({c})"))
            .unwrap_or_default();
        return Challenge {
            asks_for: format!("the amount{currency}"),
            expected: Expected::Number(amount),
        };
    }
    if let Some(records) = number(params.get("record_count")) {
        return Challenge {
            asks_for: "the number of records".into(),
            expected: Expected::Number(records),
        };
    }
    let recipients = number(params.get("recipient_count")).or_else(|| {
        params
            .get("recipients")
            .and_then(Value::as_array)
            .map(|r| r.len() as f64)
    });
    if let Some(recipients) = recipients {
        return Challenge {
            asks_for: "the number of recipients".into(),
            expected: Expected::Number(recipients),
        };
    }
    if content.changes.len() > 1 {
        return Challenge {
            asks_for: "the number of changes".into(),
            expected: Expected::Number(content.changes.len() as f64),
        };
    }
    match &content.target {
        Some(target) => Challenge {
            asks_for: format!("the {} id", target.kind),
            expected: Expected::Text(target.id.clone()),
        },
        None => Challenge {
            asks_for: "the action".into(),
            expected: Expected::Text(content.action.to_string()),
        },
    }
}

impl Challenge {
    /// Does what the reviewer typed match? Numbers ignore grouping and currency signs
    /// (`$25,000` = `25000`); text ignores surrounding space and case.
    pub fn accepts(&self, typed: &str) -> bool {
        match &self.expected {
            Expected::Number(expected) => {
                let digits: String = typed
                    .chars()
                    .filter(|c| c.is_ascii_digit() || *c == '.' || *c == '-')
                    .collect();
                digits
                    .parse::<f64>()
                    .is_ok_and(|n| (n - expected).abs() < 1e-9)
            }
            Expected::Text(expected) => typed.trim().eq_ignore_ascii_case(expected.trim()),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn proposal(params: Value, changes: usize, target: Option<Value>) -> Proposal {
        let changes: Vec<Value> = (0..changes)
            .map(|n| json!({"path": format!("r{n}"), "after": n}))
            .collect();
        serde_json::from_value(json!({
            "id": "prop_01kaf3yq5x8m2n4p6r8t0v2w4y", "agent": "a", "status": "pending",
            "action": "crm.records.merge", "summary": "s", "changes": changes, "params": params,
            "target": target, "evidence": [], "data_classes": [], "metadata": {},
            "verdict": {"outcome": "needs_review", "rules": [], "reasons": [], "route": ["revops"],
                        "quorum": {"approvals": 1, "each_role": false}, "step_up": "confirm"},
            "created_at": "2026-11-21T09:00:00Z", "updated_at": "2026-11-21T09:00:00Z"
        }))
        .unwrap()
    }

    #[test]
    fn the_amount_comes_first_and_is_read_leniently() {
        let c = challenge(&proposal(
            json!({"amount": 25000, "currency": "USD", "record_count": 3}),
            0,
            None,
        ));
        assert_eq!(c.asks_for, "the amount (USD)");
        assert!(c.accepts("25000") && c.accepts("$25,000") && c.accepts(" 25,000.00 "));
        assert!(!c.accepts("2500") && !c.accepts("") && !c.accepts("twenty-five"));
    }

    #[test]
    fn then_records_recipients_changes_and_the_target() {
        assert_eq!(
            challenge(&proposal(json!({"record_count": 120}), 0, None)).asks_for,
            "the number of records"
        );
        let recipients = challenge(&proposal(json!({"recipients": ["a", "b"]}), 0, None));
        assert!(recipients.accepts("2"));
        assert!(challenge(&proposal(json!({}), 40, None)).accepts("40"));
        let target = challenge(&proposal(
            json!({}),
            1,
            Some(json!({"system": "crm", "type": "Account", "id": "ACME-42"})),
        ));
        assert_eq!(target.asks_for, "the Account id");
        assert!(target.accepts("acme-42 ") && !target.accepts("ACME-4"));
    }
}
