//! Slack's rate limits, in one place: the tier of every Web API method countersign calls (and
//! the sandbox serves), what Slack documents for each tier, and what countersign lets itself
//! spend. The sandbox enforces [`Tier::slack`]; countersign's [`super::SlackBudget`] spends from
//! [`Tier::ours`].
//!
//! Slack counts "per API method per app per workspace", in per-minute windows, and documents
//! tiers as lower bounds: Tier 1 "1+ per minute, a small amount of burst behavior is
//! tolerated", Tier 2 "20+ per minute, occasional bursts", Tier 3 "50+ per minute, sporadic
//! bursts welcome", Tier 4 "100+ per minute, generous burst behavior". chat.postMessage is
//! special: "1 message per second per channel, short bursts >1 allowed", plus a workspace-wide
//! cap Slack gives no number for (a 429 from it pauses the channel that met it, which is all a
//! caller can tell). Sources: docs.slack.dev/apis/web-api/rate-limits and each method's page.
//!
//! | method | tier | checked against |
//! |---|---|---|
//! | `chat.postMessage` | per channel: 1/s, short bursts | Slack's rate-limit page |
//! | `chat.update` | 3 | method page |
//! | `chat.postEphemeral` | 4 | slack-morphism 2.31.1's tier map |
//! | `chat.getPermalink` | special, "hundreds per minute": budgeted as 4 | method page |
//! | `views.open`, `views.update`, `views.push` | 4 | method page (open); slack-morphism (update, push) |
//! | `users.info` | 4 | slack-morphism |
//! | `users.lookupByEmail` | 3 | method page |
//! | `usergroups.users.list` | 2 | method page |
//! | `conversations.open`, `conversations.info` | 3 | slack-morphism |
//! | `files.getUploadURLExternal`, `files.completeUploadExternal` | 4 | method pages |
//! | `auth.test` | special, "hundreds per minute": budgeted as 4 | method page |
//! | `apps.connections.open` | 1 | method page |

use super::budget::Rate;

/// How Slack limits a method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Tier {
    One,
    Two,
    Three,
    Four,
    /// chat.postMessage: a bucket per channel, not per method.
    PerChannel,
}

/// Every method countersign calls or the sandbox serves, and its tier.
pub const METHODS: &[(&str, Tier)] = &[
    ("chat.postMessage", Tier::PerChannel),
    ("chat.update", Tier::Three),
    ("chat.postEphemeral", Tier::Four),
    ("chat.getPermalink", Tier::Four),
    ("views.open", Tier::Four),
    ("views.update", Tier::Four),
    ("views.push", Tier::Four),
    ("users.info", Tier::Four),
    ("users.lookupByEmail", Tier::Three),
    ("usergroups.users.list", Tier::Two),
    ("conversations.open", Tier::Three),
    ("conversations.info", Tier::Three),
    ("files.getUploadURLExternal", Tier::Four),
    ("files.completeUploadExternal", Tier::Four),
    ("auth.test", Tier::Four),
    ("apps.connections.open", Tier::One),
];

/// The tier of `method`, if it is one countersign knows.
pub fn of(method: &str) -> Option<Tier> {
    METHODS
        .iter()
        .find(|(name, _)| *name == method)
        .map(|(_, tier)| *tier)
}

impl Tier {
    /// What Slack documents: a minute's worth at once (Tier 1: a small burst of three), then
    /// the tier's rate. The sandbox refuses beyond this, as Slack would.
    pub const fn slack(self) -> Rate {
        match self {
            Tier::One => rate(3, 1),
            Tier::Two => rate(20, 20),
            Tier::Three => rate(50, 50),
            Tier::Four => rate(100, 100),
            Tier::PerChannel => rate(4, 60),
        }
    }

    /// What countersign spends: Slack's steady rate, but half its burst (Tier 1: two; a
    /// channel: three). With the same rate and a smaller burst, a lone countersign on the same
    /// clock as Slack's counter can never be refused by it; the margin is for other apps' and
    /// other replicas' calls, and for Slack counting in windows where we count a bucket.
    pub const fn ours(self) -> Rate {
        match self {
            Tier::One => rate(2, 1),
            Tier::Two => rate(10, 20),
            Tier::Three => rate(25, 50),
            Tier::Four => rate(50, 100),
            Tier::PerChannel => rate(3, 60),
        }
    }
}

impl Tier {
    /// `rate` for a Slack allowing `scale` times the documented tiers (`slack_tier_scale`).
    /// Slack documents tiers as minimums ("50+ per minute"); chat.postMessage's one a second
    /// per channel is stated as it is, and is never scaled.
    pub fn scaled(self, rate: Rate, scale: u32) -> Rate {
        match self {
            Tier::PerChannel => rate,
            _ => Rate {
                burst: rate.burst.saturating_mul(scale.max(1)),
                per_minute: rate.per_minute.saturating_mul(scale.max(1)),
            },
        }
    }
}

const fn rate(burst: u32, per_minute: u32) -> Rate {
    Rate { burst, per_minute }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ours_never_outspends_slacks() {
        for (method, tier) in METHODS {
            let (ours, slack) = (tier.ours(), tier.slack());
            assert!(ours.burst >= 1 && ours.burst <= slack.burst, "{method}");
            assert_eq!(ours.per_minute, slack.per_minute, "{method}");
        }
    }

    #[test]
    fn a_scale_multiplies_the_tiers_not_the_channel_pace() {
        assert_eq!(Tier::Three.scaled(Tier::Three.ours(), 20), rate(500, 1000));
        assert_eq!(
            Tier::PerChannel.scaled(Tier::PerChannel.ours(), 20),
            Tier::PerChannel.ours()
        );
        assert_eq!(Tier::Four.scaled(Tier::Four.slack(), 1), Tier::Four.slack());
    }

    #[test]
    fn every_method_is_listed_once() {
        for (method, _) in METHODS {
            let listed = METHODS.iter().filter(|(m, _)| m == method).count();
            assert_eq!(listed, 1, "{method}");
        }
        assert_eq!(of("chat.update"), Some(Tier::Three));
        assert_eq!(of("chat.delete"), None);
    }
}
