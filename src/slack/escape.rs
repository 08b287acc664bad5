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

/// Cuts text to at most `max` characters, marking the cut with an ellipsis.
pub fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut cut: String = text.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn truncation_counts_characters() {
        assert_eq!(truncate("héllo", 5), "héllo");
        assert_eq!(truncate("héllo!", 5), "héll…");
    }
}
