//! Text that must show exactly as written: `rich_text` blocks. In mrkdwn, `&`, `<` and `>` can
//! be escaped but `*`, `_`, `~` and backticks cannot: an agent's rationale ending in
//! `*APPROVED*` would render bold. A rich_text `text` element is never parsed; countersign's
//! own styling (bold labels, code, dates, mentions) is explicit, element by element. So agent
//! text goes into [`Paragraph::text`] and nowhere else.

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use slack_morphism::prelude::SlackBlock;

use super::escape::truncate;

/// Inline content: literal text runs with explicit styles, mentions, dates and links.
#[derive(Debug, Default, Clone)]
pub struct Paragraph(Vec<Value>);

impl Paragraph {
    pub fn new() -> Self {
        Self::default()
    }

    /// Literal text: shown character for character, whatever it holds.
    pub fn text(mut self, text: impl AsRef<str>) -> Self {
        self.push_text(text.as_ref(), None);
        self
    }

    pub fn bold(mut self, text: impl AsRef<str>) -> Self {
        self.push_text(text.as_ref(), Some(json!({"bold": true})));
        self
    }

    pub fn code(mut self, text: impl AsRef<str>) -> Self {
        self.push_text(text.as_ref(), Some(json!({"code": true})));
        self
    }

    pub fn strike(mut self, text: impl AsRef<str>) -> Self {
        self.push_text(text.as_ref(), Some(json!({"strike": true})));
        self
    }

    /// A mention of a Slack user id countersign resolved or configured (never agent text).
    pub fn user(mut self, id: &str) -> Self {
        self.0.push(json!({"type": "user", "user_id": id}));
        self
    }

    /// A mention of a user group countersign configured.
    pub fn usergroup(mut self, id: &str) -> Self {
        self.0
            .push(json!({"type": "usergroup", "usergroup_id": id}));
        self
    }

    /// A time every reader sees in their own time zone.
    pub fn date(mut self, at: DateTime<Utc>) -> Self {
        self.0.push(json!({
            "type": "date",
            "timestamp": at.timestamp(),
            "format": "{date_short_pretty} at {time}",
            "fallback": at.format("%Y-%m-%d %H:%M UTC").to_string(),
        }));
        self
    }

    /// A link whose label is literal text (an agent's label cannot disguise the URL: callers
    /// put the real host in the label).
    pub fn link(mut self, url: &str, label: &str) -> Self {
        self.0
            .push(json!({"type": "link", "url": url, "text": truncate(label, 200)}));
        self
    }

    pub fn emoji(mut self, name: &str) -> Self {
        self.0.push(json!({"type": "emoji", "name": name}));
        self
    }

    pub fn newline(self) -> Self {
        self.text("\n")
    }

    /// Another paragraph's content appended.
    pub fn append(mut self, other: Paragraph) -> Self {
        self.0.extend(other.0);
        self
    }

    /// The paragraph as one string, styles marked mrkdwn-fashion (`*bold*`, `` `code` ``,
    /// `~strike~`), mentions as `<@U…>` and dates as their fallback: what a reader sees, for
    /// tests and logs. Never sent to Slack as mrkdwn.
    pub fn styled_preview(&self) -> String {
        let mut out = String::new();
        for element in &self.0 {
            let text = element["text"].as_str().unwrap_or_default();
            match element["type"].as_str() {
                Some("text") => {
                    let style = &element["style"];
                    let mark = if style["bold"] == true {
                        "*"
                    } else if style["code"] == true {
                        "`"
                    } else if style["strike"] == true {
                        "~"
                    } else {
                        ""
                    };
                    out.push_str(&format!("{mark}{text}{mark}"));
                }
                Some("user") => out.push_str(&format!(
                    "<@{}>",
                    element["user_id"].as_str().unwrap_or_default()
                )),
                Some("date") => out.push_str(element["fallback"].as_str().unwrap_or_default()),
                Some("emoji") => out.push_str(&format!(
                    ":{}:",
                    element["name"].as_str().unwrap_or_default()
                )),
                _ => out.push_str(text),
            }
        }
        out
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn push_text(&mut self, text: &str, style: Option<Value>) {
        if text.is_empty() {
            return;
        }
        let mut element = json!({"type": "text", "text": text});
        if let Some(style) = style {
            element["style"] = style;
        }
        self.0.push(element);
    }
}

/// A `rich_text` block: paragraphs and quotes, one under the other.
#[derive(Debug, Default)]
pub struct RichText(Vec<Value>);

impl RichText {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn paragraph(mut self, paragraph: Paragraph) -> Self {
        if !paragraph.is_empty() {
            self.0
                .push(json!({"type": "rich_text_section", "elements": paragraph.0}));
        }
        self
    }

    pub fn quote(mut self, paragraph: Paragraph) -> Self {
        if !paragraph.is_empty() {
            self.0
                .push(json!({"type": "rich_text_quote", "elements": paragraph.0}));
        }
        self
    }

    pub fn block(self) -> SlackBlock {
        serde_json::from_value(json!({"type": "rich_text", "elements": self.0}))
            .expect("a rich_text block of known elements deserializes")
    }
}

/// One paragraph as a block.
pub fn block(paragraph: Paragraph) -> SlackBlock {
    RichText::new().paragraph(paragraph).block()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_text_is_a_literal_run_and_styles_are_explicit() {
        let block = block(
            Paragraph::new()
                .bold("Why")
                .newline()
                .text("*APPROVED* <!here> _x_"),
        );
        let value = serde_json::to_value(&block).unwrap();
        let elements = &value["elements"][0]["elements"];
        assert_eq!(
            elements[0],
            json!({"type": "text", "text": "Why", "style": {"bold": true}})
        );
        assert_eq!(
            elements[2],
            json!({"type": "text", "text": "*APPROVED* <!here> _x_"})
        );
    }
}
