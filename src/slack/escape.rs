//! Text from agents is untrusted: before it goes into mrkdwn it is escaped exactly as Slack
//! asks (`&`, `<`, `>`), which disarms every control sequence (`<!channel>`, `<@U…>`,
//! `<https://evil|innocent label>`), since each one needs a literal `<`.

/// Escapes untrusted text for a mrkdwn field.
pub fn mrkdwn(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            _ => out.push(c),
        }
    }
    out
}

/// countersign's own mrkdwn made readable where Slack shows text as it is (a modal's field
/// error, a plain_text element): a date token shows its fallback (`2026-12-02 09:30 UTC`), a
/// mention `@U…`, a link `label (url)`, and escaped characters themselves again.
pub fn plain(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(open) = rest.find('<') {
        out.push_str(&rest[..open]);
        let Some(close) = rest[open..].find('>') else {
            out.push_str(&rest[open..]);
            rest = "";
            break;
        };
        let token = &rest[open + 1..open + close];
        let (target, label) = match token.split_once('|') {
            Some((target, label)) => (target, Some(label)),
            None => (token, None),
        };
        match (target.chars().next(), label) {
            (Some('!'), Some(label)) => out.push_str(label),
            (Some('!'), None) => out.push_str(target.trim_start_matches('!')),
            (Some('@' | '#'), _) => out.push_str(&format!("@{}", &target[1..])),
            (_, Some(label)) => out.push_str(&format!("{label} ({target})")),
            (_, None) => out.push_str(target),
        }
        rest = &rest[open + close + 1..];
    }
    out.push_str(rest);
    out.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// Untrusted text for the one place that must be mrkdwn, a message's notification fallback
/// `text`: escaped, and the four formatting characters mrkdwn cannot escape replaced by
/// look-alikes that format nothing (`*` ∗, `_` ˍ, `~` ∼, `` ` `` ˋ). Everywhere else agent text is
/// a literal rich_text run (see `slack::rich`).
pub fn inert(text: &str) -> String {
    mrkdwn(text)
        .replace('*', "∗")
        .replace('_', "ˍ")
        .replace('~', "∼")
        .replace('`', "ˋ")
}

/// Cuts text to at most `max` characters, marking the cut with an ellipsis.
pub fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut cut: String = text.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// Cuts mrkdwn (escaped text, possibly with countersign's own `<@U…>` or `<!date…>`) to at most
/// `max` characters without leaving half an entity (`&am…`) or half a control sequence (`<!da…`):
/// the cut backs off to before either.
pub fn fit(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut cut: String = text.chars().take(max.saturating_sub(1)).collect();
    let open_entity = cut.rfind('&').filter(|&at| !cut[at..].contains(';'));
    let open_control = cut.rfind('<').filter(|&at| !cut[at..].contains('>'));
    if let Some(at) = open_entity.into_iter().chain(open_control).min() {
        cut.truncate(at);
    }
    cut.push('…');
    cut
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_shows_dates_and_mentions_not_tokens() {
        let text = "Locked until <!date^1796203800^{date_short_pretty} at {time}|2026-12-02 09:30 UTC> by <@U0FIN001>: a &lt;b&gt; &amp; <https://x.example|docs>";
        assert_eq!(
            plain(text),
            "Locked until 2026-12-02 09:30 UTC by @U0FIN001: a <b> & docs (https://x.example)"
        );
        assert_eq!(plain("no tokens"), "no tokens");
        assert_eq!(plain("half <!da"), "half <!da");
    }

    #[test]
    fn control_sequences_lose_their_brackets() {
        assert_eq!(
            mrkdwn("<!channel> <@U1> <https://evil|bank> & co"),
            "&lt;!channel&gt; &lt;@U1&gt; &lt;https://evil|bank&gt; &amp; co"
        );
        // Already-escaped text is escaped again: it shows literally, as the agent wrote it.
        assert_eq!(mrkdwn("&lt;"), "&amp;lt;");
    }

    #[test]
    fn fitting_never_splits_an_entity_or_a_control_sequence() {
        let escaped = mrkdwn("R&D R&D");
        assert_eq!(escaped, "R&amp;D R&amp;D");
        assert_eq!(fit(&escaped, 12), "R&amp;D R…");
        assert_eq!(fit("ok <@U123> done", 8), "ok …");
        assert_eq!(fit("short", 10), "short");
        assert!(fit(&"&amp;".repeat(1000), 3000).chars().count() <= 3000);
    }

    #[test]
    fn truncation_counts_characters() {
        assert_eq!(truncate("héllo", 5), "héllo");
        assert_eq!(truncate("héllo!", 5), "héll…");
    }
}
