//! One line per change of a proposal's diff, as a reviewer reads it: `field: before → after`,
//! with the difference spelled out for numbers (`+$4,500`, `+10 pts`) and additions and removals
//! marked. Returns rich text in which every agent-supplied part is a literal run.

use serde_json::Value;

use super::escape::truncate;
use super::rich::Paragraph;
use crate::domain::Change;
use crate::format::grouped;

/// Longest rendering of one value on a card.
const VALUE_CHARS: usize = 200;

/// How a field's numbers read: money in a currency, percentages, or plain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unit<'a> {
    Money(&'a str),
    Percent,
    Plain,
}

fn unit_of<'a>(path: &str, currency: Option<&'a str>) -> Unit<'a> {
    let leaf = path
        .rsplit(['.', '/'])
        .next()
        .unwrap_or(path)
        .to_ascii_lowercase();
    if leaf.contains("percent") || leaf.ends_with("pct") || leaf.ends_with("rate") {
        return Unit::Percent;
    }
    const MONEY: &[&str] = &[
        "amount",
        "price",
        "cost",
        "total",
        "arr",
        "mrr",
        "acv",
        "tcv",
        "revenue",
        "budget",
        "fee",
        "balance",
        "credit",
        "refund",
        "discount_amount",
        "value",
    ];
    match currency {
        Some(currency) if MONEY.iter().any(|m| leaf.contains(m)) => Unit::Money(currency),
        _ => Unit::Plain,
    }
}

fn symbol(currency: &str) -> String {
    match currency.to_ascii_uppercase().as_str() {
        "USD" => "$".into(),
        "EUR" => "€".into(),
        "GBP" => "£".into(),
        "JPY" => "¥".into(),
        other => format!("{} ", truncate(other, 5)),
    }
}

fn number(value: f64, unit: Unit<'_>) -> String {
    match unit {
        Unit::Money(currency) => {
            let sign = if value < 0.0 { "-" } else { "" };
            format!("{sign}{}{}", symbol(currency), grouped(value.abs()))
        }
        Unit::Percent => format!("{}%", grouped(value)),
        Unit::Plain => grouped(value),
    }
}

fn delta(before: f64, after: f64, unit: Unit<'_>) -> String {
    let change = after - before;
    let sign = if change >= 0.0 { "+" } else { "−" };
    let magnitude = change.abs();
    match unit {
        Unit::Money(currency) => format!("{sign}{}{}", symbol(currency), grouped(magnitude)),
        Unit::Percent => format!("{sign}{} pts", grouped(magnitude)),
        Unit::Plain => format!("{sign}{}", grouped(magnitude)),
    }
}

/// A value as shown on the card: literal text, or (for objects and arrays) literal code.
fn shown(paragraph: Paragraph, value: &Value, unit: Unit<'_>, strike: bool) -> Paragraph {
    let (text, code) = match value {
        Value::Number(n) => (
            n.as_f64()
                .map_or_else(|| n.to_string(), |f| number(f, unit)),
            false,
        ),
        Value::String(s) if s.is_empty() => ("(empty)".to_owned(), false),
        Value::String(s) => (format!("“{}”", truncate(s, VALUE_CHARS)), false),
        Value::Null => ("null".to_owned(), false),
        other => (truncate(&other.to_string(), VALUE_CHARS), true),
    };
    match (code, strike) {
        (true, _) => paragraph.code(text),
        (false, true) => paragraph.strike(text),
        (false, false) => paragraph.text(text),
    }
}

/// One change as a line of rich text.
pub fn line(change: &Change, currency: Option<&str>) -> Paragraph {
    let unit = unit_of(&change.path, currency);
    let path = truncate(&change.path, 120);
    match (&change.before, &change.after) {
        (None, Some(after)) => {
            let line = Paragraph::new().text("➕ ").code(path).text(": ");
            shown(line, after, unit, false).text(" (added)")
        }
        (Some(before), None) => {
            let line = Paragraph::new().text("➖ ").code(path).text(": ");
            shown(line, before, unit, true).text(" (removed)")
        }
        (Some(before), Some(after)) => {
            let line = Paragraph::new().text("• ").code(path).text(": ");
            let line = shown(line, before, unit, false).text(" → ");
            let mut line = shown(line, after, unit, false);
            if let (Some(b), Some(a)) = (before.as_f64(), after.as_f64())
                && a != b
            {
                line = line.text(" (").bold(delta(b, a, unit)).text(")");
            }
            line
        }
        (None, None) => Paragraph::new().text("• ").code(path),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// The line as mrkdwn would style it, to read the styles in an assertion.
    fn line(change: &Change, currency: Option<&str>) -> String {
        super::line(change, currency).styled_preview()
    }

    fn change(path: &str, before: Option<Value>, after: Option<Value>) -> Change {
        Change {
            path: path.into(),
            before,
            after,
        }
    }

    #[test]
    fn money_and_percentages_show_their_difference() {
        let amount = change("amount", Some(json!(45000)), Some(json!(49500)));
        assert_eq!(
            line(&amount, Some("USD")),
            "• `amount`: $45,000 → $49,500 (*+$4,500*)"
        );
        let cut = change(
            "opportunity.amount",
            Some(json!(45000)),
            Some(json!(40500.5)),
        );
        assert_eq!(
            line(&cut, Some("EUR")),
            "• `opportunity.amount`: €45,000 → €40,500.5 (*−€4,499.5*)"
        );
        let discount = change("discount_percent", Some(json!(5)), Some(json!(15)));
        assert_eq!(
            line(&discount, Some("USD")),
            "• `discount_percent`: 5% → 15% (*+10 pts*)"
        );
        let seats = change("seats", Some(json!(1200)), Some(json!(1000)));
        assert_eq!(line(&seats, None), "• `seats`: 1,200 → 1,000 (*−200*)");
    }

    #[test]
    fn additions_removals_and_text() {
        assert_eq!(
            line(&change("tags", None, Some(json!("hot"))), None),
            "➕ `tags`: “hot” (added)"
        );
        assert_eq!(
            line(&change("owner", Some(json!("bob")), None), None),
            "➖ `owner`: ~“bob”~ (removed)"
        );
        assert_eq!(
            line(
                &change("stage", Some(json!("Prospect")), Some(json!(null))),
                None
            ),
            "• `stage`: “Prospect” → null"
        );
    }

    #[test]
    fn agent_text_is_literal_everywhere() {
        let hostile = change(
            "<!here>`x*",
            Some(json!("<@U1> *bold*")),
            Some(json!({"a": "<!channel>"})),
        );
        let paragraph = super::line(&hostile, Some("<b>"));
        let value = serde_json::to_value(crate::slack::rich::block(paragraph)).unwrap();
        let runs = value["elements"][0]["elements"].as_array().unwrap().clone();
        assert!(runs.iter().all(|r| r["type"] == "text"), "{runs:?}");
        assert!(
            runs.iter()
                .any(|r| r["text"] == "<!here>`x*" && r["style"]["code"] == true)
        );
        assert!(runs.iter().any(|r| r["text"] == "“<@U1> *bold*”"));
    }
}
