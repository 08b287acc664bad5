//! What one job does: the proposal and its cards read once (a [`Scene`]), the wait for cards
//! still being posted, and the task itself — post the card, refresh every copy, reply in the
//! threads, DM.

use super::sending::{booked, done, transient};
use super::{CARD_WAIT, JobOutcome, Scene, SlackOutbox};
use crate::domain::{PostedCard, ProposalId, SlackJob, SlackTask};
use crate::slack::SlackError;
use crate::slack::card::{self, CardContext};

impl SlackOutbox {
    #[tracing::instrument(skip_all, fields(job = job.id, proposal_id = ?job.proposal_id))]
    pub(super) async fn perform(&self, job: &SlackJob) -> JobOutcome {
        let proposal_id = match (&job.task, &job.proposal_id) {
            (SlackTask::AnnounceControl { notice }, _) => return self.announce(job, notice).await,
            (_, Some(id)) => id,
            (_, None) => return JobOutcome::Fail("the job names no proposal".into()),
        };
        if job.task == SlackTask::RefreshCards
            && let Some(outcome) = self.before_refresh(job).await
        {
            return outcome;
        }
        let scene = match self.scene(job, proposal_id).await {
            Ok(scene) => scene,
            Err(outcome) => return outcome,
        };
        if job.task.works_on_the_cards()
            && let Some(outcome) = self.wait_for_cards(job, &scene).await
        {
            return outcome;
        }
        self.act(job, &scene).await
    }

    /// A refresh whose bucket is booked ahead waits behind the refreshes turned away before
    /// it, unread and unrendered; otherwise it folds in the refreshes of its card that are
    /// also due (several changes before the refresh went out: one update, rendered from the
    /// proposal as read after this, shows them all).
    async fn before_refresh(&self, job: &SlackJob) -> Option<JobOutcome> {
        let bucket = self.api.method_bucket("chat.update");
        let now = self.clock.now();
        if let Some(until) = self.bookings.wait_for(&bucket.key, job.id, now) {
            return Some(booked(bucket, until, now));
        }
        match self.store.coalesce_slack_jobs(job, now).await {
            Ok(0) => None,
            Ok(folded) => {
                tracing::debug!(folded, "card refreshes coalesced");
                None
            }
            Err(error) => Some(transient(job, error.to_string())),
        }
    }

    /// Reads what a job about a proposal works from.
    async fn scene(&self, job: &SlackJob, id: &ProposalId) -> Result<Scene, JobOutcome> {
        let proposal = match self.store.proposal(id).await {
            Ok(Some(proposal)) => proposal,
            Ok(None) => return Err(JobOutcome::Fail("proposal not found".into())),
            Err(error) => return Err(transient(job, error.to_string())),
        };
        let registry = self.registry.current();
        let agent = registry.agents.get(proposal.agent.as_str()).cloned();
        let requester = match &proposal.content.requested_by {
            Some(text) => self.directory.person(text).await,
            None => None,
        };
        let (votes, posted) = tokio::try_join!(
            self.store.votes(&proposal.id),
            self.store.posted_cards(&proposal.id)
        )
        .map_err(|error| transient(job, error.to_string()))?;
        Ok(Scene {
            proposal,
            registry,
            agent,
            requester,
            votes,
            posted,
        })
    }

    /// A job that works on the cards waits while one of them is still being posted: a refresh
    /// only for a post in a worker's hands (it may carry older state; a post not yet claimed
    /// will show the state of its time), a thread reply for every post (it needs the thread).
    async fn wait_for_cards(&self, job: &SlackJob, scene: &Scene) -> Option<JobOutcome> {
        let proposal = &scene.proposal;
        let unposted = proposal
            .content
            .verdict
            .route
            .iter()
            .any(|role| !scene.posted.iter().any(|c| &c.role == role));
        if !unposted {
            return None;
        }
        let waiting = if job.task == SlackTask::RefreshCards {
            self.store
                .card_posts_in_flight(&proposal.id, self.clock.now())
                .await
        } else {
            self.store.card_posts_outstanding(&proposal.id).await
        };
        match waiting {
            Ok(true) => Some(JobOutcome::Retry {
                after: CARD_WAIT,
                error: "waiting for its card to be posted".into(),
                counted: false,
                bucket: None,
            }),
            Ok(false) => None,
            Err(error) => Some(transient(job, error.to_string())),
        }
    }

    /// The card as it stands now.
    async fn render(&self, scene: &Scene) -> crate::slack::OutgoingMessage {
        let proposal = &scene.proposal;
        let full_diff = format!(
            "{}p/{}?{}",
            self.public_url.as_str().trim_end_matches('/').to_owned() + "/",
            proposal.id,
            self.links.query(&proposal.id, self.clock.now())
        );
        let sla_note = self.sla_note(&proposal.id).await;
        let context = CardContext {
            owner: scene.agent.as_ref().map(|a| a.owner.as_str()),
            requester: scene.requester.as_deref(),
            catalog: (scene.agent.as_ref()).and_then(|a| a.actions.get(&proposal.content.action)),
            votes: &scene.votes,
            full_diff: Some(&full_diff),
            sla_note,
        };
        card::render(proposal, &context)
    }

    /// Does the job's task.
    async fn act(&self, job: &SlackJob, scene: &Scene) -> JobOutcome {
        let Scene {
            proposal,
            registry,
            agent,
            requester,
            votes: _,
            posted,
        } = scene;
        match &job.task {
            SlackTask::PostCard { role } => self.post_card(job, scene, role).await,
            SlackTask::RefreshCards => {
                let message = self.render(scene).await;
                self.refresh(job, posted, &message).await
            }
            SlackTask::AnnounceVote { voter } => self.announce_vote(job, scene, voter).await,
            SlackTask::Remind { mentions } => {
                let text = crate::slack::messages::reminder(proposal, mentions);
                done(self.thread_replies(job, posted, &text).await)
            }
            SlackTask::Escalate {
                level,
                label,
                users,
                mentions,
                channel,
            } => {
                let text = crate::slack::messages::escalation(proposal, *level, label, mentions);
                self.escalate(job, posted, &text, channel.as_deref(), users)
                    .await
            }
            SlackTask::CallbackFailed { event, url, error } => {
                let Some(owner) = agent.as_ref().map(|a| a.owner.clone()) else {
                    return JobOutcome::Done(None);
                };
                let notice = crate::slack::messages::callback_failed(proposal, event, url, error);
                done(self.dm(job, &owner, &notice).await)
            }
            SlackTask::NotifyRequester => {
                let Some(user) = requester.as_deref() else {
                    return JobOutcome::Done(None);
                };
                let notice = crate::slack::messages::outcome_notice(proposal);
                done(self.dm(job, user, &notice).await)
            }
            SlackTask::LockoutAlert { user, until } => {
                // Every routed role's channel, once each.
                let channels: std::collections::BTreeSet<&str> = (proposal.content.verdict.route)
                    .iter()
                    .filter_map(|role| registry.roles.get(role).map(|r| r.channel.as_str()))
                    .collect();
                let places: Vec<(&str, Option<&str>)> =
                    channels.into_iter().map(|c| (c, None)).collect();
                let alert = crate::slack::messages::lockout_alert(proposal, user, *until);
                done(self.post_everywhere(job, &places, &alert).await)
            }
            // Handled before the proposal is read (it names none).
            SlackTask::AnnounceControl { notice } => self.announce(job, notice).await,
        }
    }

    /// Posts the card in `role`'s channel, unless a copy is there already.
    async fn post_card(&self, job: &SlackJob, scene: &Scene, role: &str) -> JobOutcome {
        if scene.posted.iter().any(|card| card.role == role) {
            return JobOutcome::Done(None);
        }
        let Some(channel) = scene.registry.roles.get(role).map(|r| r.channel.clone()) else {
            return JobOutcome::Fail(format!("role {role:?} is no longer declared"));
        };
        let message = self.render(scene).await;
        match self.post(job, &channel, &message, None).await {
            Ok(ts) => JobOutcome::Done(Some(PostedCard {
                role: role.to_owned(),
                channel,
                ts,
            })),
            Err(outcome) => outcome,
        }
    }

    /// Replies in the cards' threads with `voter`'s vote and the role it counted for.
    async fn announce_vote(&self, job: &SlackJob, scene: &Scene, voter: &str) -> JobOutcome {
        let verdict = &scene.proposal.content.verdict;
        let tally = crate::domain::vote::tally(&verdict.quorum, &verdict.route, &scene.votes);
        let Some((vote, role)) = (scene.votes.iter())
            .zip(&tally.roles)
            .find(|(v, _)| v.voter == voter)
        else {
            return JobOutcome::Fail(format!("no vote by {voter}"));
        };
        let text = crate::slack::messages::vote_reply(vote, role.as_deref());
        done(self.thread_replies(job, &scene.posted, &text).await)
    }

    /// An escalation rung: posted in its channel (if any), sent to each named person, and
    /// replied in the cards' threads.
    async fn escalate(
        &self,
        job: &SlackJob,
        posted: &[PostedCard],
        text: &crate::slack::OutgoingMessage,
        channel: Option<&str>,
        users: &[String],
    ) -> JobOutcome {
        if let Some(channel) = channel
            && let Err(outcome) = self.post(job, channel, text, None).await
        {
            return outcome;
        }
        for user in users {
            if let Err(outcome) = self.dm(job, user, text).await {
                return outcome;
            }
        }
        done(self.thread_replies(job, posted, text).await)
    }

    /// Brings every posted copy of the card up to date. Every copy is updated even if one
    /// fails: a deleted message must not leave the other channels showing live buttons.
    async fn refresh(
        &self,
        job: &SlackJob,
        posted: &[PostedCard],
        message: &crate::slack::OutgoingMessage,
    ) -> JobOutcome {
        let mut outcome = JobOutcome::Done(None);
        for card in posted {
            match self
                .api
                .update_message(&card.channel, &card.ts, message)
                .await
            {
                Ok(()) => {}
                Err(SlackError::Api(error)) if error.starts_with("message_not_found") => {
                    tracing::warn!(channel = %card.channel, ts = %card.ts, "a card was deleted in Slack; not updating it");
                }
                Err(error) => {
                    // A retry redoes every copy: it books a token for each.
                    let mut bucket = self.api.method_bucket("chat.update");
                    bucket.refill *= u32::try_from(posted.len()).unwrap_or(1).max(1);
                    let this = self.outcome_of(job, error, Some(bucket));
                    // Prefer a retry (which redoes every copy) over giving up, and waiting for
                    // the budget over a retry counted towards giving up.
                    let better = match (&outcome, &this) {
                        (
                            JobOutcome::Retry { counted: true, .. },
                            JobOutcome::Retry { counted: false, .. },
                        ) => true,
                        (JobOutcome::Retry { .. }, _) => false,
                        _ => true,
                    };
                    if better {
                        outcome = this;
                    }
                }
            }
        }
        outcome
    }

    /// The latest reminder or escalation of a proposal that took effect, from its timers.
    async fn sla_note(
        &self,
        id: &crate::domain::ProposalId,
    ) -> Option<(String, chrono::DateTime<chrono::Utc>)> {
        let nudges = match self.store.fired_nudges(id).await {
            Ok(nudges) => nudges,
            Err(error) => {
                tracing::warn!(%error, "cannot read a proposal's reminders");
                return None;
            }
        };
        let (timer, at) = nudges.into_iter().last()?;
        let note = match timer {
            crate::domain::Timer::Escalate { level, .. } => {
                format!("escalated (level {})", level + 1)
            }
            _ => "approvers reminded".to_owned(),
        };
        Some((note, at))
    }
}
