//! Slack mrkdwn → safe HTML, for the sandbox page. Everything is HTML-escaped first; the only
//! markup that comes out is what this module writes. Control sequences (`<@U…>`, `<!here>`,
//! `<url|label>`) are rendered the way Slack renders them, so a countersign bug that lets an
//! agent's `<!channel>` through shows up on the page as a live @channel, as it would in Slack.

use std::sync::LazyLock;

use regex::Regex;

use super::workspace::Workspace;

pub use crate::http::html::escape as escape_html;

/// Slack's own three escapes, undone (the text is HTML-escaped again right after).
fn unescape_slack(text: &str) -> String {
    text.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

static CONTROL: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"<([^<>]*)>").expect("valid"));
static CODE: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"`([^`\n]+)`").expect("valid"));
static BOLD: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(^|[\s(>])\*([^*\n]*[^*\s])\*").expect("valid"));
static ITALIC: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(^|[\s(>])_([^_\n]*[^_\s])_").expect("valid"));
static STRIKE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(^|[\s(>])~([^~\n]*[^~\s])~").expect("valid"));
static EMOJI: LazyLock<Regex> = LazyLock::new(|| Regex::new(r":([a-z0-9_+-]+):").expect("valid"));

/// Renders mrkdwn as HTML.
pub fn to_html(text: &str, workspace: &Workspace) -> String {
    let mut out = String::new();
    let mut last = 0;
    for control in CONTROL.captures_iter(text) {
        let whole = control.get(0).expect("group 0");
        out.push_str(&format_plain(&text[last..whole.start()]));
        out.push_str(&render_control(&control[1], workspace));
        last = whole.end();
    }
    out.push_str(&format_plain(&text[last..]));
    out.replace('\n', "<br>")
}

/// Plain stretches: escaped, then bold/italic/strike/code/emoji. The escaped text holds no `<`,
/// so wrapping parts of it in tags cannot open any other markup.
fn format_plain(text: &str) -> String {
    let escaped = escape_html(&unescape_slack(text));
    let mut pieces = Vec::new();
    let mut last = 0;
    for code in CODE.captures_iter(&escaped) {
        let whole = code.get(0).expect("group 0");
        pieces.push(emphasis(&escaped[last..whole.start()]));
        pieces.push(format!("<code>{}</code>", &code[1]));
        last = whole.end();
    }
    pieces.push(emphasis(&escaped[last..]));
    pieces.concat()
}

fn emphasis(text: &str) -> String {
    let text = BOLD.replace_all(text, "$1<b>$2</b>");
    let text = ITALIC.replace_all(&text, "$1<i>$2</i>");
    let text = STRIKE.replace_all(&text, "$1<s>$2</s>");
    EMOJI
        .replace_all(&text, |c: &regex::Captures| {
            emoji(&c[1]).map_or_else(|| c[0].to_owned(), str::to_owned)
        })
        .into_owned()
}

fn emoji(name: &str) -> Option<&'static str> {
    Some(match name {
        "white_check_mark" => "✅",
        "x" => "❌",
        "hourglass_flowing_sand" => "⏳",
        "hourglass" => "⌛",
        "no_entry_sign" => "🚫",
        "warning" => "⚠️",
        "lock" => "🔒",
        "bell" => "🔔",
        "rotating_light" => "🚨",
        "memo" => "📝",
        "moneybag" => "💰",
        "robot_face" => "🤖",
        "bust_in_silhouette" => "👤",
        "link" => "🔗",
        "busts_in_silhouette" => "👥",
        "chart_with_upwards_trend" => "📈",
        "email" => "📧",
        _ => return None,
    })
}

fn render_control(inner: &str, workspace: &Workspace) -> String {
    let (target, label) = match inner.split_once('|') {
        Some((target, label)) => (target, Some(label)),
        None => (inner, None),
    };
    let mention =
        |class: &str, text: &str| format!("<span class=\"{class}\">{}</span>", escape_html(text));
    if let Some(user) = target.strip_prefix('@') {
        let name = workspace
            .users
            .get(user)
            .map_or(label.unwrap_or(user), |u| u.name.as_str());
        return mention("mention", &format!("@{name}"));
    }
    if let Some(channel) = target.strip_prefix('#') {
        let name = workspace
            .channels
            .get(channel)
            .map_or(label.unwrap_or(channel), |c| c.name.as_str());
        return mention("mention", &format!("#{name}"));
    }
    if let Some(special) = target.strip_prefix('!') {
        if let Some(group) = special.strip_prefix("subteam^") {
            let handle = workspace
                .usergroups
                .get(group)
                .map_or(label.unwrap_or(group), |g| g.handle.as_str());
            return mention("mention broadcast", &format!("@{handle}"));
        }
        if let Some(date) = special.strip_prefix("date^") {
            let seconds = date.split('^').next().unwrap_or_default();
            let fallback = label.map_or_else(|| seconds.to_owned(), unescape_slack);
            return format!(
                "<time data-unix=\"{}\">{}</time>",
                escape_html(seconds),
                escape_html(&fallback)
            );
        }
        let word = special.split('^').next().unwrap_or(special);
        return mention("mention broadcast", &format!("@{word}"));
    }
    let url = unescape_slack(target);
    let text = label.map_or_else(|| url.clone(), unescape_slack);
    if url.starts_with("http://") || url.starts_with("https://") || url.starts_with("mailto:") {
        format!(
            "<a href=\"{}\" target=\"_blank\" rel=\"noopener noreferrer\">{}</a>",
            escape_html(&url),
            escape_html(&text)
        )
    } else {
        escape_html(&text)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::sandbox::workspace::User;

    fn workspace() -> Workspace {
        let mut users = BTreeMap::new();
        users.insert(
            "U1".to_owned(),
            User {
                id: "U1".into(),
                name: "priya".into(),
                real_name: "Priya".into(),
                email: "p@x".into(),
                is_admin: false,
                deleted: false,
                is_bot: false,
            },
        );
        Workspace {
            team_id: "T".into(),
            team_name: "t".into(),
            users,
            channels: BTreeMap::new(),
            usergroups: BTreeMap::new(),
            bot_scopes: Vec::new(),
        }
    }

    #[test]
    fn formatting_and_control_sequences() {
        let w = workspace();
        assert_eq!(
            to_html("*Bold* and _it_ ~no~ `c*d`", &w),
            "<b>Bold</b> and <i>it</i> <s>no</s> <code>c*d</code>"
        );
        assert_eq!(
            to_html("hi <@U1>", &w),
            "hi <span class=\"mention\">@priya</span>"
        );
        assert_eq!(
            to_html("<!here>", &w),
            "<span class=\"mention broadcast\">@here</span>"
        );
        assert_eq!(
            to_html("<https://acme.example/x?a=1&amp;b=2|the deal>", &w),
            "<a href=\"https://acme.example/x?a=1&amp;b=2\" target=\"_blank\" rel=\"noopener noreferrer\">the deal</a>"
        );
        assert_eq!(to_html("a\nb :white_check_mark:", &w), "a<br>b ✅");
        assert_eq!(
            to_html("<!date^1800000000^{date_short}|2027-01-15>", &w),
            "<time data-unix=\"1800000000\">2027-01-15</time>"
        );
    }

    #[test]
    fn nothing_from_the_text_becomes_markup() {
        let w = workspace();
        // What countersign sends for hostile agent text: Slack's three escapes.
        let escaped = "&lt;img src=x onerror=alert(1)&gt; &lt;!channel&gt; &amp;lt;script&amp;gt;";
        let html = to_html(escaped, &w);
        assert_eq!(
            html,
            "&lt;img src=x onerror=alert(1)&gt; &lt;!channel&gt; &amp;lt;script&amp;gt;"
        );
        assert!(!html.contains('<') || html.matches('<').count() == 0);
        // Raw quotes and a javascript: link are inert.
        assert_eq!(
            to_html("<javascript:alert(1)|click \"me\">", &w),
            "click &quot;me&quot;"
        );
        assert_eq!(
            to_html("\" onmouseover='x'", &w),
            "&quot; onmouseover=&#39;x&#39;"
        );
    }
}
