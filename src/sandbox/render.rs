//! Block Kit → HTML for the sandbox page. Rendered here rather than in the browser so the one
//! place that turns untrusted text into markup is Rust with tests; every string goes through
//! [`escape_html`] or [`mrkdwn::to_html`]. Buttons carry their action and block ids as data
//! attributes for the page's script.

use std::fmt::Write;

use serde_json::Value;

use super::mrkdwn::{self, escape_html};
use super::state::Message;
use super::workspace::{BOT_USER, Workspace};

fn str_at<'a>(value: &'a Value, key: &str) -> &'a str {
    value.get(key).and_then(Value::as_str).unwrap_or("")
}

/// A text object (`plain_text` or `mrkdwn`).
fn text(object: Option<&Value>, workspace: &Workspace) -> String {
    let Some(object) = object else {
        return String::new();
    };
    let body = str_at(object, "text");
    if str_at(object, "type") == "mrkdwn" {
        mrkdwn::to_html(body, workspace)
    } else {
        escape_html(body)
    }
}

fn safe_url(url: &str) -> Option<String> {
    (url.starts_with("https://") || url.starts_with("http://") || url.starts_with("/sandbox/"))
        .then(|| escape_html(url))
}

/// A list of blocks.
pub fn blocks(blocks: &Value, workspace: &Workspace) -> String {
    let mut html = String::new();
    for block in blocks.as_array().into_iter().flatten() {
        html.push_str(&self::block(block, workspace));
    }
    html
}

/// One block as HTML: one function per block type, as Slack draws each differently.
fn block(block: &Value, w: &Workspace) -> String {
    let block_id = escape_html(str_at(block, "block_id"));
    match str_at(block, "type") {
        "header" => format!(
            "<h3 class=\"bk-header\">{}</h3>",
            text(block.get("text"), w)
        ),
        "divider" => "<hr class=\"bk-divider\">".into(),
        "section" => section_block(block, &block_id, w),
        "context" => context_block(block, w),
        "actions" => actions_block(block, &block_id, w),
        "image" => image_block(block, w),
        "input" => input_block(block, &block_id, w),
        "rich_text" => rich_text_block(block, w),
        other => format!(
            "<div class=\"bk-unknown\">[{} block]</div>",
            escape_html(other)
        ),
    }
}

/// A block's `elements`, none when absent.
fn elements(block: &Value) -> impl Iterator<Item = &Value> {
    block
        .get("elements")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

fn section_block(block: &Value, block_id: &str, w: &Workspace) -> String {
    let mut html = String::from("<div class=\"bk-section\"><div class=\"bk-section-body\">");
    if block.get("text").is_some() {
        let _ = write!(
            html,
            "<div class=\"bk-text\">{}</div>",
            text(block.get("text"), w)
        );
    }
    if let Some(fields) = block.get("fields").and_then(Value::as_array) {
        html.push_str("<div class=\"bk-fields\">");
        for field in fields {
            let _ = write!(
                html,
                "<div class=\"bk-field\">{}</div>",
                text(Some(field), w)
            );
        }
        html.push_str("</div>");
    }
    html.push_str("</div>");
    if let Some(accessory) = block.get("accessory") {
        let _ = write!(
            html,
            "<div class=\"bk-accessory\">{}</div>",
            element(accessory, block_id, w)
        );
    }
    html.push_str("</div>");
    html
}

fn context_block(block: &Value, w: &Workspace) -> String {
    let mut html = String::from("<div class=\"bk-context\">");
    for item in elements(block) {
        if str_at(item, "type") == "image" {
            html.push_str(&image(item, "bk-context-image"));
        } else {
            let _ = write!(html, "<span>{}</span>", text(Some(item), w));
        }
    }
    html.push_str("</div>");
    html
}

fn actions_block(block: &Value, block_id: &str, w: &Workspace) -> String {
    let mut html = String::from("<div class=\"bk-actions\">");
    for item in elements(block) {
        html.push_str(&element(item, block_id, w));
    }
    html.push_str("</div>");
    html
}

fn image_block(block: &Value, w: &Workspace) -> String {
    let title = block
        .get("title")
        .map(|t| text(Some(t), w))
        .unwrap_or_default();
    format!(
        "<figure class=\"bk-image\">{}<figcaption>{title}</figcaption></figure>",
        image(block, "")
    )
}

/// An input with its label, hint and a place for the error Slack would show; its form name is
/// `block_id::action_id`, as a view submission's state is keyed.
fn input_block(block: &Value, block_id: &str, w: &Workspace) -> String {
    let element = block.get("element").cloned().unwrap_or(Value::Null);
    let name = format!(
        "{}::{}",
        str_at(block, "block_id"),
        str_at(&element, "action_id")
    );
    let hint = block
        .get("hint")
        .map(|h| format!("<small>{}</small>", text(Some(h), w)))
        .unwrap_or_default();
    format!(
        "<div class=\"bk-input\" data-block-id=\"{block_id}\"><label>{}{}</label>{}{hint}<div class=\"bk-error\"></div></div>",
        text(block.get("label"), w),
        if block.get("optional").and_then(Value::as_bool) == Some(true) {
            " <small>(optional)</small>"
        } else {
            ""
        },
        input(&element, &escape_html(&name), w),
    )
}

fn rich_text_block(block: &Value, w: &Workspace) -> String {
    let mut html = String::from("<div class=\"bk-rich\">");
    for part in elements(block) {
        let inline = rich_inline(part, w);
        let _ = match str_at(part, "type") {
            "rich_text_quote" => write!(html, "<blockquote>{inline}</blockquote>"),
            "rich_text_preformatted" => write!(html, "<pre>{inline}</pre>"),
            _ => write!(html, "<div class=\"bk-rich-section\">{inline}</div>"),
        };
    }
    html.push_str("</div>");
    html
}

/// A rich_text section's elements. Text runs are literal (escaped, never parsed as mrkdwn) and
/// styled only by their `style`.
fn rich_inline(part: &Value, w: &Workspace) -> String {
    let mut html = String::new();
    for item in part
        .get("elements")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        match str_at(item, "type") {
            "text" => {
                let mut run = escape_html(str_at(item, "text")).replace('\n', "<br>");
                let style = item.get("style").cloned().unwrap_or(Value::Null);
                for (flag, tag) in [
                    ("code", "code"),
                    ("strike", "s"),
                    ("italic", "i"),
                    ("bold", "b"),
                ] {
                    if style[flag] == true {
                        run = format!("<{tag}>{run}</{tag}>");
                    }
                }
                html.push_str(&run);
            }
            "user" => html.push_str(&mrkdwn::to_html(
                &format!("<@{}>", str_at(item, "user_id")),
                w,
            )),
            "usergroup" => html.push_str(&mrkdwn::to_html(
                &format!("<!subteam^{}>", str_at(item, "usergroup_id")),
                w,
            )),
            "emoji" => html.push_str(&mrkdwn::to_html(&format!(":{}:", str_at(item, "name")), w)),
            "date" => {
                let _ = write!(
                    html,
                    "<time data-unix=\"{}\">{}</time>",
                    escape_html(&item["timestamp"].to_string()),
                    escape_html(str_at(item, "fallback"))
                );
            }
            "link" => {
                let url = str_at(item, "url");
                let label = item.get("text").and_then(Value::as_str).unwrap_or(url);
                let _ = match safe_url(url) {
                    Some(href) => write!(
                        html,
                        "<a href=\"{href}\" target=\"_blank\" rel=\"noopener noreferrer\">{}</a>",
                        escape_html(label)
                    ),
                    None => write!(html, "{}", escape_html(label)),
                };
            }
            other => {
                let _ = write!(html, "[{}]", escape_html(other));
            }
        }
    }
    html
}

fn image(item: &Value, class: &str) -> String {
    match safe_url(str_at(item, "image_url")) {
        Some(src) => format!(
            "<img class=\"{class}\" src=\"{src}\" alt=\"{}\">",
            escape_html(str_at(item, "alt_text"))
        ),
        None => format!(
            "<span class=\"{class}\">[{}]</span>",
            escape_html(str_at(item, "alt_text"))
        ),
    }
}

/// An interactive element: buttons (with their confirm dialog, hidden until clicked).
fn element(item: &Value, block_id: &str, w: &Workspace) -> String {
    match str_at(item, "type") {
        "button" => {
            let style = match str_at(item, "style") {
                "primary" => " primary",
                "danger" => " danger",
                _ => "",
            };
            let label = text(item.get("text"), w);
            if let Some(url) = item.get("url").and_then(Value::as_str) {
                return match safe_url(url) {
                    Some(href) => format!(
                        "<a class=\"bk-button{style}\" href=\"{href}\" target=\"_blank\" rel=\"noopener noreferrer\">{label}</a>"
                    ),
                    None => format!("<span class=\"bk-button{style}\">{label}</span>"),
                };
            }
            let confirm = item.get("confirm").map(|c| {
                format!(
                    "<div class=\"bk-confirm\" hidden><h4>{}</h4><div>{}</div><button class=\"bk-confirm-deny\">{}</button><button class=\"bk-confirm-ok primary\">{}</button></div>",
                    text(c.get("title"), w), text(c.get("text"), w), text(c.get("deny"), w), text(c.get("confirm"), w)
                )
            }).unwrap_or_default();
            format!(
                "<span class=\"bk-button-wrap\"><button class=\"bk-button{style}\" data-action-id=\"{}\" data-block-id=\"{block_id}\">{label}</button>{confirm}</span>",
                escape_html(str_at(item, "action_id"))
            )
        }
        "image" => image(item, "bk-accessory-image"),
        other => format!("<span class=\"bk-unknown\">[{}]</span>", escape_html(other)),
    }
}

/// A modal's input element, named `block_id::action_id` for the page to collect.
fn input(element: &Value, name: &str, w: &Workspace) -> String {
    let options = || {
        element
            .get("options")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    match str_at(element, "type") {
        "plain_text_input" => {
            let placeholder = element
                .get("placeholder")
                .map(|p| escape_html(str_at(p, "text")))
                .unwrap_or_default();
            let initial = escape_html(str_at(element, "initial_value"));
            if element.get("multiline").and_then(Value::as_bool) == Some(true) {
                format!(
                    "<textarea name=\"{name}\" placeholder=\"{placeholder}\">{initial}</textarea>"
                )
            } else {
                format!(
                    "<input type=\"text\" name=\"{name}\" placeholder=\"{placeholder}\" value=\"{initial}\">"
                )
            }
        }
        "static_select" => {
            let mut html = format!("<select name=\"{name}\"><option value=\"\">Choose…</option>");
            for option in options() {
                let _ = write!(
                    html,
                    "<option value=\"{}\">{}</option>",
                    escape_html(str_at(&option, "value")),
                    text(option.get("text"), w)
                );
            }
            html.push_str("</select>");
            html
        }
        kind @ ("radio_buttons" | "checkboxes") => {
            let input_type = if kind == "radio_buttons" {
                "radio"
            } else {
                "checkbox"
            };
            let mut html = String::new();
            for option in options() {
                let _ = write!(
                    html,
                    "<label class=\"bk-option\"><input type=\"{input_type}\" name=\"{name}\" value=\"{}\"> {}</label>",
                    escape_html(str_at(&option, "value")),
                    text(option.get("text"), w)
                );
            }
            html
        }
        other => format!("<span class=\"bk-unknown\">[{}]</span>", escape_html(other)),
    }
}

/// One message as the page shows it.
pub fn message(message: &Message, reply_count: usize, w: &Workspace) -> String {
    let author = if message.user == BOT_USER {
        "countersign <span class=\"badge\">APP</span>".to_owned()
    } else {
        escape_html(
            w.users
                .get(&message.user)
                .map_or(message.user.as_str(), |u| u.name.as_str()),
        )
    };
    let mut html = format!(
        "<article class=\"msg{}\" data-channel=\"{}\" data-ts=\"{}\"><header><b>{author}</b> <time data-unix=\"{}\"></time>{}{}</header>",
        if message.ephemeral_for.is_some() {
            " ephemeral"
        } else {
            ""
        },
        escape_html(&message.channel),
        escape_html(&message.ts),
        escape_html(message.ts.split('.').next().unwrap_or("")),
        if message.edited.is_some() {
            " <small>(edited)</small>"
        } else {
            ""
        },
        if message.ephemeral_for.is_some() {
            " <small class=\"only-you\">Only visible to you</small>"
        } else {
            ""
        },
    );
    if message.blocks.as_array().is_some_and(|b| !b.is_empty()) {
        html.push_str(&blocks(&message.blocks, w));
    } else {
        let _ = write!(
            html,
            "<div class=\"bk-text\">{}</div>",
            mrkdwn::to_html(&message.text, w)
        );
    }
    for file in &message.files {
        let id = escape_html(file);
        let _ = write!(
            html,
            "<img class=\"file\" src=\"/sandbox/files/{id}\" alt=\"file {id}\">"
        );
    }
    if reply_count > 0 {
        let _ = write!(
            html,
            "<button class=\"thread-link\" data-thread=\"{}\">{reply_count} {}</button>",
            escape_html(&message.ts),
            if reply_count == 1 { "reply" } else { "replies" }
        );
    }
    html.push_str("</article>");
    html
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde_json::json;

    use super::*;

    fn workspace() -> Workspace {
        Workspace {
            team_id: "T".into(),
            team_name: "t".into(),
            users: BTreeMap::new(),
            channels: BTreeMap::new(),
            usergroups: BTreeMap::new(),
            bot_scopes: Vec::new(),
        }
    }

    #[test]
    fn renders_each_block_kind_and_keeps_ids_for_the_script() {
        let blocks = json!([
            {"type": "header", "text": {"type": "plain_text", "text": "Pay <b>invoice</b>"}},
            {"type": "section", "text": {"type": "mrkdwn", "text": "*Amount*"}, "fields": [{"type": "mrkdwn", "text": "x"}]},
            {"type": "divider"},
            {"type": "context", "elements": [{"type": "mrkdwn", "text": "ctx"}]},
            {"type": "actions", "block_id": "decide", "elements": [
                {"type": "button", "action_id": "approve", "style": "primary", "text": {"type": "plain_text", "text": "Approve"},
                 "confirm": {"title": {"type": "plain_text", "text": "Sure?"}, "text": {"type": "mrkdwn", "text": "Really"},
                             "confirm": {"type": "plain_text", "text": "Yes"}, "deny": {"type": "plain_text", "text": "No"}}},
                {"type": "button", "action_id": "open", "url": "javascript:alert(1)", "text": {"type": "plain_text", "text": "Open"}}
            ]}
        ]);
        let html = super::blocks(&blocks, &workspace());
        assert!(
            html.contains("<h3 class=\"bk-header\">Pay &lt;b&gt;invoice&lt;/b&gt;</h3>"),
            "{html}"
        );
        assert!(html.contains("<b>Amount</b>"));
        assert!(html.contains("data-action-id=\"approve\" data-block-id=\"decide\""));
        assert!(html.contains("<div class=\"bk-confirm\" hidden><h4>Sure?</h4>"));
        assert!(
            !html.contains("javascript:"),
            "unsafe link schemes are not rendered as links"
        );
    }

    #[test]
    fn modal_inputs_are_named_for_submission() {
        let blocks = json!([{"type": "input", "block_id": "reason", "label": {"type": "plain_text", "text": "Why"},
                             "element": {"type": "plain_text_input", "action_id": "text", "multiline": true,
                                         "initial_value": "</textarea><script>"}}]);
        let html = super::blocks(&blocks, &workspace());
        assert!(html.contains("<textarea name=\"reason::text\" placeholder=\"\">&lt;/textarea&gt;&lt;script&gt;</textarea>"), "{html}");
    }
}
