//! Slack work owed for a proposal. Kept as rows (the Slack outbox) so that a crash between a
//! change and its Slack message loses nothing: the worker finds the row and does the work.

use serde::{Deserialize, Serialize};

use super::ProposalId;

/// One thing to do in Slack: for a proposal, or (an announcement) for an agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SlackTask {
    /// Post the proposal's card in a routed role's channel.
    PostCard { role: String },
    /// Bring every posted copy of the card up to date (after a vote or a decision).
    RefreshCards,
    /// Say in each card's thread how this person voted.
    AnnounceVote { voter: String },
    /// Tell the person the agent acted for (when Slack knows them) how it was decided.
    NotifyRequester,
    /// An SLA reminder in each card's thread, mentioning who has not voted.
    Remind { mentions: Vec<String> },
    /// An escalation rung: a thread reply mentioning the target, a DM to each person, and a
    /// post in the target role's channel when the target is a role.
    Escalate {
        level: usize,
        label: String,
        users: Vec<String>,
        mentions: Vec<String>,
        channel: Option<String>,
    },
    /// Tell the agent's owner (by DM) that its callback could not be delivered.
    CallbackFailed {
        event: String,
        url: String,
        error: String,
    },
    /// Tell the proposal's role channels that a reviewer's step-up was locked while approving
    /// it (too many wrong codes: their Slack account may be in someone else's hands).
    LockoutAlert {
        user: String,
        until: chrono::DateTime<chrono::Utc>,
    },
    /// Tell the channels of the roles an agent's cards go to that its mode changed. Not about a
    /// proposal: its row names none.
    AnnounceControl { notice: super::ControlNotice },
}

impl SlackTask {
    /// Whether the task works on the posted cards (updates them, replies in their threads), and
    /// so must come after every post of them: run first, it would find no card to update or no
    /// thread to reply in, and a card posted later would show stale buttons or miss the reply.
    pub fn works_on_the_cards(&self) -> bool {
        matches!(
            self,
            Self::RefreshCards
                | Self::AnnounceVote { .. }
                | Self::Remind { .. }
                | Self::Escalate { .. }
        )
    }
}

/// A claimed outbox row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlackJob {
    pub id: i64,
    /// The proposal it is about; `None` for an agent's announcement.
    pub proposal_id: Option<ProposalId>,
    pub task: SlackTask,
    /// Earlier attempts that failed.
    pub attempts: i32,
}

/// Where a card was posted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PostedCard {
    pub role: String,
    pub channel: String,
    pub ts: String,
}
