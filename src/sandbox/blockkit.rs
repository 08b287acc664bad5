//! Slack's Block Kit limits, enforced the way Slack enforces them: a message or view that breaks
//! one is refused whole, with an error naming the JSON pointer of the offending value. The
//! sandbox answers `invalid_blocks` with these errors, so a card that would fail in production
//! fails in the tests; the card renderer's own tests call [`message_blocks`] directly.
//!
//! The numbers are the table in `slack-facts.md`. Lengths are counted in characters, as Slack
//! counts them.

use std::collections::HashSet;

use serde_json::Value;

/// Blocks in one message.
pub const MESSAGE_BLOCKS: usize = 50;
/// Blocks in one modal.
pub const VIEW_BLOCKS: usize = 100;
/// Serialized size of a whole view.
pub const VIEW_BYTES: usize = 250_000;

/// One broken rule, in Slack's wording: `"must be less than 151 characters [json-pointer:/blocks/0/text/text]"`.
pub type Violation = String;

/// Checks a message's `blocks` array.
pub fn message_blocks(blocks: &Value) -> Result<(), Vec<Violation>> {
    let mut check = Checker::default();
    check.blocks(blocks, "/blocks", MESSAGE_BLOCKS, false);
    check.finish()
}

/// Checks a modal view (`views.open`, `views.update`, `views.push`). Problems with its blocks
/// are `invalid_blocks`; problems with the view itself are `invalid_arguments` in Slack, so they
/// come back separately.
pub fn view(view: &Value) -> Result<(), ViewProblem> {
    let mut check = Checker::default();
    if serde_json::to_vec(view).map_or(0, |bytes| bytes.len()) > VIEW_BYTES {
        check.fail("/view", &format!("must be less than {VIEW_BYTES} bytes"));
    }
    if view.get("type").and_then(Value::as_str) != Some("modal") {
        check.fail("/view/type", "must be \"modal\"");
    }
    match view.get("title") {
        Some(title) => check.text(title, "/view/title", 24, Some("plain_text")),
        None => check.fail("/view/title", "is required"),
    }
    for key in ["submit", "close"] {
        if let Some(text) = view.get(key) {
            check.text(text, &format!("/view/{key}"), 24, Some("plain_text"));
        }
    }
    check.string_at(view, "private_metadata", "/view", 3000);
    check.string_at(view, "callback_id", "/view", 255);
    check.string_at(view, "external_id", "/view", 255);
    let arguments = std::mem::take(&mut check.violations);
    check.blocks(
        view.get("blocks").unwrap_or(&Value::Null),
        "/view/blocks",
        VIEW_BLOCKS,
        true,
    );
    match (arguments.is_empty(), check.violations.is_empty()) {
        (true, true) => Ok(()),
        (false, _) => Err(ViewProblem::Arguments(arguments)),
        (true, false) => Err(ViewProblem::Blocks(check.violations)),
    }
}

/// Why a view was refused, split the way Slack's error names split it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ViewProblem {
    /// `invalid_arguments`: the view's own fields.
    Arguments(Vec<Violation>),
    /// `invalid_blocks`: its blocks.
    Blocks(Vec<Violation>),
}

#[derive(Default)]
struct Checker {
    violations: Vec<Violation>,
}

impl Checker {
    fn finish(self) -> Result<(), Vec<Violation>> {
        if self.violations.is_empty() {
            Ok(())
        } else {
            Err(self.violations)
        }
    }

    fn fail(&mut self, pointer: &str, rule: &str) {
        self.violations
            .push(format!("{rule} [json-pointer:{pointer}]"));
    }

    fn too_long(&mut self, pointer: &str, limit: usize) {
        self.fail(
            pointer,
            &format!("must be less than {} characters", limit + 1),
        );
    }

    fn blocks(&mut self, blocks: &Value, at: &str, max: usize, in_view: bool) {
        let Some(blocks) = blocks.as_array() else {
            self.fail(at, "must be an array");
            return;
        };
        if blocks.len() > max {
            self.fail(at, &format!("must have at most {max} items"));
        }
        let mut block_ids = HashSet::new();
        for (i, block) in blocks.iter().enumerate() {
            let at = format!("{at}/{i}");
            if let Some(id) = block.get("block_id") {
                self.string(id, &format!("{at}/block_id"), 255);
                if let Some(id) = id.as_str()
                    && !block_ids.insert(id.to_owned())
                {
                    self.fail(&format!("{at}/block_id"), "must be unique");
                }
            }
            self.block(block, &at, in_view);
        }
    }

    fn block(&mut self, block: &Value, at: &str, in_view: bool) {
        let kind = block.get("type").and_then(Value::as_str).unwrap_or("");
        match kind {
            "header" => self.required_text(block, "text", at, 150, Some("plain_text")),
            "section" => self.section(block, at),
            "divider" => {}
            "context" => {
                let elements = self.array(block, "elements", at, 10, true);
                for (i, element) in elements.iter().enumerate() {
                    let at = format!("{at}/elements/{i}");
                    match element.get("type").and_then(Value::as_str) {
                        Some("image") => self.image_fields(element, &at),
                        _ => self.text(element, &at, 3000, None),
                    }
                }
            }
            "actions" => {
                let elements = self.array(block, "elements", at, 25, true);
                self.elements(&elements, &format!("{at}/elements"));
            }
            "image" => {
                self.image_fields(block, at);
                if let Some(title) = block.get("title") {
                    self.text(title, &format!("{at}/title"), 2000, Some("plain_text"));
                }
            }
            "input" if in_view => {
                self.required_text(block, "label", at, 2000, Some("plain_text"));
                if let Some(hint) = block.get("hint") {
                    self.text(hint, &format!("{at}/hint"), 2000, Some("plain_text"));
                }
                match block.get("element") {
                    Some(element) => self.element(element, &format!("{at}/element")),
                    None => self.fail(&format!("{at}/element"), "is required"),
                }
            }
            "rich_text" => {}
            _ => self.fail(&format!("{at}/type"), "must be a valid block type"),
        }
    }

    fn section(&mut self, block: &Value, at: &str) {
        let text = block.get("text");
        if let Some(text) = text {
            self.text(text, &format!("{at}/text"), 3000, None);
        }
        let fields = match block.get("fields") {
            Some(_) => self.array(block, "fields", at, 10, false),
            None => Vec::new(),
        };
        for (i, field) in fields.iter().enumerate() {
            self.text(field, &format!("{at}/fields/{i}"), 2000, None);
        }
        if text.is_none() && fields.is_empty() {
            self.fail(at, "must provide text or fields");
        }
        if let Some(accessory) = block.get("accessory") {
            self.element(accessory, &format!("{at}/accessory"));
        }
    }

    fn elements(&mut self, elements: &[Value], at: &str) {
        let mut action_ids = HashSet::new();
        for (i, element) in elements.iter().enumerate() {
            if let Some(id) = element.get("action_id").and_then(Value::as_str)
                && !action_ids.insert(id.to_owned())
            {
                self.fail(&format!("{at}/{i}/action_id"), "must be unique");
            }
            self.element(element, &format!("{at}/{i}"));
        }
    }

    fn element(&mut self, element: &Value, at: &str) {
        if let Some(id) = element.get("action_id") {
            self.string(id, &format!("{at}/action_id"), 255);
        }
        match element.get("type").and_then(Value::as_str).unwrap_or("") {
            "button" => {
                self.required_text(element, "text", at, 75, Some("plain_text"));
                self.string_at(element, "value", at, 2000);
                self.string_at(element, "url", at, 3000);
                if let Some(style) = element.get("style").and_then(Value::as_str)
                    && !matches!(style, "primary" | "danger")
                {
                    self.fail(&format!("{at}/style"), "must be primary or danger");
                }
                if let Some(confirm) = element.get("confirm") {
                    self.confirm(confirm, &format!("{at}/confirm"));
                }
            }
            "image" => self.image_fields(element, at),
            "plain_text_input" => {
                self.string_at(element, "initial_value", at, 3000);
                if let Some(max) = element.get("max_length").and_then(Value::as_u64)
                    && max > 3000
                {
                    self.fail(&format!("{at}/max_length"), "must be at most 3000");
                }
            }
            "static_select" | "radio_buttons" | "checkboxes" => {
                let options = self.array(element, "options", at, 100, true);
                for (i, option) in options.iter().enumerate() {
                    let at = format!("{at}/options/{i}");
                    self.required_text(option, "text", &at, 75, None);
                    self.string_at(option, "value", &at, 150);
                }
            }
            "overflow" | "datepicker" | "users_select" | "conversations_select" => {}
            _ => self.fail(&format!("{at}/type"), "must be a valid element type"),
        }
    }

    fn confirm(&mut self, confirm: &Value, at: &str) {
        self.required_text(confirm, "title", at, 100, Some("plain_text"));
        self.required_text(confirm, "text", at, 300, None);
        self.required_text(confirm, "confirm", at, 30, Some("plain_text"));
        self.required_text(confirm, "deny", at, 30, Some("plain_text"));
    }

    fn image_fields(&mut self, image: &Value, at: &str) {
        if image.get("image_url").is_none() && image.get("slack_file").is_none() {
            self.fail(&format!("{at}/image_url"), "is required");
        }
        self.string_at(image, "image_url", at, 3000);
        match image.get("alt_text") {
            Some(alt) => self.string(alt, &format!("{at}/alt_text"), 2000),
            None => self.fail(&format!("{at}/alt_text"), "is required"),
        }
    }

    /// A composition text object: `{type: plain_text|mrkdwn, text}`.
    fn text(&mut self, text: &Value, at: &str, max: usize, only: Option<&str>) {
        let kind = text.get("type").and_then(Value::as_str);
        match (kind, only) {
            (Some(kind), Some(only)) if kind != only => {
                self.fail(&format!("{at}/type"), &format!("must be {only}"));
            }
            (Some("plain_text" | "mrkdwn"), _) => {}
            _ => self.fail(&format!("{at}/type"), "must be plain_text or mrkdwn"),
        }
        match text.get("text") {
            Some(Value::String(s)) if s.is_empty() => {
                self.fail(&format!("{at}/text"), "must be more than 0 characters");
            }
            Some(value) => self.string(value, &format!("{at}/text"), max),
            None => self.fail(&format!("{at}/text"), "is required"),
        }
    }

    fn required_text(
        &mut self,
        parent: &Value,
        key: &str,
        at: &str,
        max: usize,
        only: Option<&str>,
    ) {
        match parent.get(key) {
            Some(text) => self.text(text, &format!("{at}/{key}"), max, only),
            None => self.fail(&format!("{at}/{key}"), "is required"),
        }
    }

    fn string(&mut self, value: &Value, at: &str, max: usize) {
        match value.as_str() {
            Some(s) if s.chars().count() > max => self.too_long(at, max),
            Some(_) => {}
            None => self.fail(at, "must be a string"),
        }
    }

    fn string_at(&mut self, parent: &Value, key: &str, at: &str, max: usize) {
        if let Some(value) = parent.get(key) {
            self.string(value, &format!("{at}/{key}"), max);
        }
    }

    fn array(
        &mut self,
        parent: &Value,
        key: &str,
        at: &str,
        max: usize,
        required: bool,
    ) -> Vec<Value> {
        let at = format!("{at}/{key}");
        match parent.get(key) {
            Some(Value::Array(items)) => {
                if items.len() > max {
                    self.fail(&at, &format!("must have at most {max} items"));
                }
                if required && items.is_empty() {
                    self.fail(&at, "must have at least 1 item");
                }
                items.clone()
            }
            Some(_) => {
                self.fail(&at, "must be an array");
                Vec::new()
            }
            None => {
                if required {
                    self.fail(&at, "is required");
                }
                Vec::new()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn button(text: &str) -> Value {
        json!({"type": "button", "text": {"type": "plain_text", "text": text}, "action_id": text})
    }

    #[test]
    fn a_typical_card_passes() {
        let blocks = json!([
            {"type": "header", "text": {"type": "plain_text", "text": "Apply 15% discount"}},
            {"type": "section", "text": {"type": "mrkdwn", "text": "*Who* agent"},
             "fields": [{"type": "mrkdwn", "text": "a"}, {"type": "plain_text", "text": "b"}]},
            {"type": "divider"},
            {"type": "context", "elements": [{"type": "mrkdwn", "text": "rule"}]},
            {"type": "actions", "block_id": "decide", "elements": [button("approve"), button("reject")]}
        ]);
        assert_eq!(message_blocks(&blocks), Ok(()));
    }

    /// Long for a reason: a table of every Block Kit limit with the pointer its error names,
    /// checked in one loop; each row is one case.
    #[test]
    fn each_limit_is_enforced_with_its_pointer() {
        let long = |n| "x".repeat(n);
        let cases = [
            (
                json!([{"type": "header", "text": {"type": "plain_text", "text": long(151)}}]),
                "must be less than 151 characters [json-pointer:/blocks/0/text/text]",
            ),
            (
                json!([{"type": "header", "text": {"type": "mrkdwn", "text": "h"}}]),
                "must be plain_text [json-pointer:/blocks/0/text/type]",
            ),
            (
                json!([{"type": "section", "text": {"type": "mrkdwn", "text": long(3001)}}]),
                "must be less than 3001 characters [json-pointer:/blocks/0/text/text]",
            ),
            (
                json!([{"type": "section", "fields": vec![json!({"type": "mrkdwn", "text": "f"}); 11]}]),
                "must have at most 10 items [json-pointer:/blocks/0/fields]",
            ),
            (
                json!([{"type": "section", "fields": [{"type": "mrkdwn", "text": long(2001)}]}]),
                "must be less than 2001 characters [json-pointer:/blocks/0/fields/0/text]",
            ),
            (
                json!([{"type": "actions", "elements": [button(&long(76))]}]),
                "must be less than 76 characters [json-pointer:/blocks/0/elements/0/text/text]",
            ),
            (
                json!([{"type": "actions", "elements": vec![button("b"); 1].into_iter().chain((0..25).map(|i| button(&format!("b{i}")))).collect::<Vec<_>>()}]),
                "must have at most 25 items [json-pointer:/blocks/0/elements]",
            ),
            (
                json!([{"type": "context", "elements": vec![json!({"type": "mrkdwn", "text": "c"}); 11]}]),
                "must have at most 10 items [json-pointer:/blocks/0/elements]",
            ),
            (
                json!([{"type": "divider", "block_id": long(256)}]),
                "must be less than 256 characters [json-pointer:/blocks/0/block_id]",
            ),
            (
                json!([{"type": "divider", "block_id": "a"}, {"type": "divider", "block_id": "a"}]),
                "must be unique [json-pointer:/blocks/1/block_id]",
            ),
            (
                json!([{"type": "actions", "elements": [button("same"), button("same")]}]),
                "must be unique [json-pointer:/blocks/0/elements/1/action_id]",
            ),
            (
                json!([{"type": "actions", "elements": [{"type": "button", "text": {"type": "plain_text", "text": "b"}, "value": long(2001)}]}]),
                "must be less than 2001 characters [json-pointer:/blocks/0/elements/0/value]",
            ),
            (
                json!([{"type": "actions", "elements": [{"type": "button", "text": {"type": "plain_text", "text": "b"}, "url": long(3001)}]}]),
                "must be less than 3001 characters [json-pointer:/blocks/0/elements/0/url]",
            ),
            (
                json!([{"type": "actions", "elements": [{"type": "button", "text": {"type": "plain_text", "text": "b"},
               "confirm": {"title": {"type": "plain_text", "text": long(101)}, "text": {"type": "mrkdwn", "text": "t"},
                           "confirm": {"type": "plain_text", "text": "y"}, "deny": {"type": "plain_text", "text": long(31)}}}]}]),
                "must be less than 101 characters [json-pointer:/blocks/0/elements/0/confirm/title/text]",
            ),
            (
                json!([{"type": "section", "text": {"type": "mrkdwn", "text": ""}}]),
                "must be more than 0 characters [json-pointer:/blocks/0/text/text]",
            ),
            (
                json!([{"type": "marquee"}]),
                "must be a valid block type [json-pointer:/blocks/0/type]",
            ),
            (
                json!([{"type": "input", "label": {"type": "plain_text", "text": "l"}, "element": {"type": "plain_text_input"}}]),
                "must be a valid block type [json-pointer:/blocks/0/type]",
            ),
        ];
        for (blocks, expected) in cases {
            let violations = message_blocks(&blocks).expect_err(expected);
            assert_eq!(violations[0], expected, "{blocks}");
        }
        let fifty_one = Value::Array(vec![json!({"type": "divider"}); 51]);
        assert_eq!(
            message_blocks(&fifty_one),
            Err(vec![
                "must have at most 50 items [json-pointer:/blocks]".to_owned()
            ])
        );
        assert_eq!(
            message_blocks(&Value::Array(vec![json!({"type": "divider"}); 50])),
            Ok(())
        );
    }

    #[test]
    fn limits_count_characters_not_bytes() {
        let header =
            json!([{"type": "header", "text": {"type": "plain_text", "text": "é".repeat(150)}}]);
        assert_eq!(message_blocks(&header), Ok(()));
    }

    #[test]
    fn views_are_checked_for_their_own_fields_and_their_blocks() {
        let modal = |title: &str, metadata: usize, blocks: Value| {
            json!({"type": "modal", "title": {"type": "plain_text", "text": title},
                   "submit": {"type": "plain_text", "text": "Reject"},
                   "private_metadata": "m".repeat(metadata), "blocks": blocks})
        };
        let input = json!([{"type": "input", "block_id": "reason", "label": {"type": "plain_text", "text": "Why?"},
                             "element": {"type": "plain_text_input", "action_id": "text", "multiline": true}}]);
        assert_eq!(view(&modal("Reject", 3000, input.clone())), Ok(()));
        assert_eq!(
            view(&modal(&"t".repeat(25), 0, input.clone())),
            Err(ViewProblem::Arguments(vec![
                "must be less than 25 characters [json-pointer:/view/title/text]".into()
            ]))
        );
        assert!(matches!(
            view(&modal("t", 3001, input)),
            Err(ViewProblem::Arguments(_))
        ));
        assert!(matches!(
            view(&modal(
                "t",
                0,
                Value::Array(vec![json!({"type": "divider"}); 101])
            )),
            Err(ViewProblem::Blocks(_))
        ));
    }
}
