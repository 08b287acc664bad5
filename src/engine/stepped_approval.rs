//! An approval that needs step-up, in the core. It counts only when the proposal is still the
//! one the reviewer was shown, the reviewer may approve it, and their answer proves the step-up
//! the policy asks for: the value taken from the action (`confirm`) or a current code from
//! their enrolled authenticator (`totp`). Then one command spends the code's time step, audits
//! `step_up.passed` and records the vote, in one transaction. Every failure is audited here
//! (`step_up.failed` with its reason; a wrong code with the failure count and any lockout). The
//! adapter (today Slack's modal) only carries the answer in and words the outcome.

use super::review::{Admitted, Recorded};
use super::{Cast, ClickRefusal, Engine, EngineError, People, StepUpRefusal};
use crate::audit::{AuditDraft, kinds};
use crate::domain::{Ballot, Proposal, StepUp};
use crate::registry::Registry;
use crate::stepup::confirm::challenge;
use crate::stepup::totp::Authenticator;
use crate::stepup::vault::Vault;
use crate::store::{Command, StepUpChange, StepUpProof};

/// A reviewer's answer to a step-up challenge, for the proposal they were shown.
pub struct SteppedApproval<'a> {
    pub proposal: &'a Proposal,
    pub user: &'a str,
    /// What they typed: the confirmation value or the TOTP code.
    pub answer: &'a str,
    /// The [`Proposal::version`] they were shown.
    pub seen: &'a str,
    /// Identifies the submission: the same one again is a replay.
    pub dedupe: String,
}

/// Why a stepped-up approval does not count. Audited; the adapter says why in its words.
#[derive(Debug, PartialEq)]
pub enum SteppedRefusal {
    /// The proposal changed (was decided, cancelled, edited) since the reviewer was shown it.
    Changed,
    /// The confirmation value does not match what was asked for.
    WrongConfirmation { asks_for: String },
    /// The TOTP answer cannot count.
    Totp(StepUpRefusal),
    /// The ballot itself is refused (not an approver, separation of duties, decided…).
    Click(ClickRefusal),
}

impl Engine {
    /// Whether `user` can be asked for the step-up `proposal` needs (before showing a form):
    /// for TOTP, that it is on, they are enrolled and not locked out. A refusal is audited.
    pub async fn step_up_ready(
        &self,
        vault: Option<&Vault>,
        proposal: &Proposal,
        user: &str,
    ) -> Result<Result<(), StepUpRefusal>, EngineError> {
        if proposal.content.verdict.step_up != StepUp::Totp {
            return Ok(Ok(()));
        }
        let ready = self.totp_ready(vault, user).await;
        if let Err(refusal) = &ready {
            self.step_up_failed(proposal, user, refusal.audit_reason())
                .await?;
        }
        Ok(ready)
    }

    /// Checks the answer and, if it proves the step-up, records the approval with it.
    pub async fn approve_stepped_up(
        &self,
        people: &dyn People,
        registry: &Registry,
        vault: Option<&Vault>,
        attempt: SteppedApproval<'_>,
    ) -> Result<Result<Cast, SteppedRefusal>, EngineError> {
        let SteppedApproval {
            proposal,
            user,
            answer,
            seen,
            dedupe,
        } = attempt;
        if proposal.version() != seen {
            let reason = "proposal changed since the form opened";
            self.step_up_failed(proposal, user, reason).await?;
            return Ok(Err(SteppedRefusal::Changed));
        }
        // Eligibility first: someone who may not approve does not spend (or guess) codes.
        let eligible = match self
            .eligibility(people, registry, proposal, user, Ballot::Approve)
            .await
        {
            Ok(eligible) => eligible,
            Err(refusal) => {
                let reason = refusal.audit_reason();
                self.refuse_click(&proposal.id, user, Ballot::Approve, &reason)
                    .await?;
                return Ok(Err(SteppedRefusal::Click(refusal)));
            }
        };
        let proof = match self.prove(vault, proposal, user, answer).await? {
            Ok(proof) => proof,
            Err(refusal) => return Ok(Err(refusal)),
        };
        let ballot = Admitted {
            proposal: &proposal.id,
            user,
            eligible,
            ballot: Ballot::Approve,
            reason: None,
            dedupe,
        };
        Ok(match self.record(ballot, Some(proof)).await? {
            Recorded::Cast(cast) => Ok(cast),
            Recorded::Refused(refusal) => Err(SteppedRefusal::Click(refusal)),
            Recorded::CodeSpent => Err(SteppedRefusal::Totp(StepUpRefusal::CodeAlreadyUsed)),
        })
    }

    /// Audits a step-up answer that does not count for a reason the adapter found (a form
    /// submitted by someone other than the reviewer it was opened for).
    pub async fn step_up_failed(
        &self,
        proposal: &Proposal,
        user: &str,
        reason: &str,
    ) -> Result<(), EngineError> {
        let data =
            serde_json::json!({"step_up": proposal.content.verdict.step_up, "reason": reason});
        let actor = format!("reviewer:{user}");
        let event = AuditDraft::new(kinds::STEP_UP_FAILED, Some(&proposal.id), actor, data);
        self.apply(Command::Audit(event)).await?;
        Ok(())
    }

    /// Whether `answer` proves the step-up `proposal` asks for; a failure is audited (a wrong
    /// TOTP code by the command that counts it).
    async fn prove(
        &self,
        vault: Option<&Vault>,
        proposal: &Proposal,
        user: &str,
        answer: &str,
    ) -> Result<Result<StepUpProof, SteppedRefusal>, EngineError> {
        let kind = proposal.content.verdict.step_up;
        let totp_step = match kind {
            StepUp::None => None,
            StepUp::Confirm => {
                let asked = challenge(proposal);
                if !asked.accepts(answer) {
                    self.step_up_failed(proposal, user, "wrong confirmation value")
                        .await?;
                    let asks_for = asked.asks_for;
                    return Ok(Err(SteppedRefusal::WrongConfirmation { asks_for }));
                }
                None
            }
            StepUp::Totp => match self.totp_step(vault, proposal, user, answer).await {
                Ok(step) => Some(step),
                Err(refusal) => {
                    if !matches!(
                        refusal,
                        StepUpRefusal::WrongCode | StepUpRefusal::WrongCodeLockedOut { .. }
                    ) {
                        self.step_up_failed(proposal, user, refusal.audit_reason())
                            .await?;
                    }
                    return Ok(Err(SteppedRefusal::Totp(refusal)));
                }
            },
        };
        Ok(Ok(StepUpProof { kind, totp_step }))
    }

    /// The time step of `user`'s current TOTP `code` (within one step of drift), not yet
    /// spent: the vote spends it. A wrong code is counted towards the lockout (and audited).
    async fn totp_step(
        &self,
        vault: Option<&Vault>,
        proposal: &Proposal,
        user: &str,
        code: &str,
    ) -> Result<i64, StepUpRefusal> {
        self.totp_ready(vault, user).await?;
        let vault = vault.ok_or(StepUpRefusal::Off)?;
        let enrollment = (self.store.totp_enrollment(user).await.ok().flatten())
            .ok_or(StepUpRefusal::Unavailable)?;
        let secret = vault.open(user, &enrollment.sealed_secret).ok_or_else(|| {
            tracing::error!(
                user,
                "a TOTP secret does not open with the configured secret_key"
            );
            StepUpRefusal::SecretUnreadable
        })?;
        let authenticator =
            Authenticator::new(secret, user).map_err(|_| StepUpRefusal::Unavailable)?;
        let now = self.clock.now();
        if let Some(step) = authenticator.matching_step(code, now.timestamp()) {
            return Ok(step);
        }
        let wrong = StepUpChange::WrongAnswer {
            proposal: Some(proposal.id.clone()),
        };
        Err(match self.change_step_up(user, wrong).await {
            Ok((_, Some(until))) => StepUpRefusal::WrongCodeLockedOut { until },
            Ok((_, None)) => StepUpRefusal::WrongCode,
            Err(_) => StepUpRefusal::Unavailable,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Clock;
    use crate::config::Secret;
    use crate::domain::Status;
    use crate::engine::Enrollment;
    use crate::engine::testing::{Core, NOBODY_SPECIAL, core};

    fn vault() -> Vault {
        Vault::new(&Secret::new("k".repeat(32)))
    }

    /// Answers `proposal`'s step-up as `user` did in form `form`, as shown now.
    async fn answer(
        core: &Core,
        proposal: &Proposal,
        user: &str,
        answer: &str,
        form: &str,
    ) -> Result<Cast, SteppedRefusal> {
        let attempt = SteppedApproval {
            proposal,
            user,
            answer,
            seen: &proposal.version(),
            dedupe: form.into(),
        };
        (core.engine)
            .approve_stepped_up(&NOBODY_SPECIAL, &core.registry, Some(&vault()), attempt)
            .await
            .unwrap()
    }

    /// Enrolls `user` as `/countersign enroll` does; answers their authenticator.
    async fn enrolled(core: &Core, user: &str) -> Authenticator {
        let vault = vault();
        let Enrollment::Started(authenticator) =
            core.engine.enroll_totp(Some(&vault), user, None).await
        else {
            panic!("enrollment did not start");
        };
        let code = authenticator.code_at(core.clock.now().timestamp() as u64);
        let confirmed = core
            .engine
            .enroll_totp(Some(&vault), user, Some(&code))
            .await;
        assert!(matches!(confirmed, Enrollment::Enrolled));
        // The confirming code's step is spent: the next step's code is the first that counts.
        core.clock.advance(chrono::Duration::seconds(30));
        *authenticator
    }

    fn kinds(audit: &[(String, serde_json::Value)]) -> Vec<&str> {
        audit.iter().map(|(kind, _)| kind.as_str()).collect()
    }

    #[tokio::test]
    async fn a_step_up_approval_counts_only_through_the_step_up() {
        let core = core().await;
        let proposal = core.pending(StepUp::Confirm).await;
        let direct = core
            .approve(&NOBODY_SPECIAL, &proposal, "U0FIN001", "c1")
            .await;
        assert_eq!(direct.unwrap_err(), ClickRefusal::StepUpRequired);
        // The challenge asks for the action (the proposal has no amount, count nor target): a
        // wrong value is audited, nothing recorded.
        let wrong = answer(&core, &proposal, "U0FIN001", "crm.lead.tag", "view:1").await;
        let asks_for = "the action".to_owned();
        assert_eq!(
            wrong.unwrap_err(),
            SteppedRefusal::WrongConfirmation { asks_for }
        );
        let right = answer(
            &core,
            &proposal,
            "U0FIN001",
            "CRM.Opportunity.Update",
            "view:1",
        )
        .await;
        assert!(
            matches!(&right, Ok(Cast::Recorded { proposal, .. }) if proposal.status == Status::Approved),
            "{right:?}"
        );
        let audit = core.audit_of(&proposal.id).await;
        let kinds = kinds(&audit);
        let passed = kinds.iter().position(|k| *k == "step_up.passed").unwrap();
        // Passed and voted in one transaction: adjacent, in that order.
        assert_eq!(kinds[passed + 1], "proposal.voted", "{kinds:?}");
        assert_eq!(
            core.reasons(&proposal.id, kinds::STEP_UP_FAILED).await,
            ["wrong confirmation value"]
        );
    }

    #[tokio::test]
    async fn an_answer_counts_only_for_the_proposal_as_it_was_shown() {
        let core = core().await;
        let proposal = core.pending(StepUp::Confirm).await;
        let attempt = SteppedApproval {
            proposal: &proposal,
            user: "U0FIN001",
            answer: "crm.opportunity.update",
            seen: "pending@0",
            dedupe: "view:1".into(),
        };
        let stale = (core.engine)
            .approve_stepped_up(&NOBODY_SPECIAL, &core.registry, None, attempt)
            .await
            .unwrap();
        assert_eq!(stale.unwrap_err(), SteppedRefusal::Changed);
        assert_eq!(
            core.reasons(&proposal.id, kinds::STEP_UP_FAILED).await,
            ["proposal changed since the form opened"]
        );
    }

    #[tokio::test]
    async fn a_totp_code_counts_once_and_a_non_approver_spends_none() {
        let core = core().await;
        let authenticator = enrolled(&core, "U0FIN001").await;
        let _ = enrolled(&core, "U0SEC001").await;
        let code = authenticator.code_at(core.clock.now().timestamp() as u64);
        let first = core.pending(StepUp::Totp).await;
        let second = core.pending(StepUp::Totp).await;
        // Not an approver: refused before the code is looked at.
        let outsider = answer(&core, &first, "U0SEC001", "000000", "view:0").await;
        assert!(matches!(
            outsider,
            Err(SteppedRefusal::Click(ClickRefusal::NotAnApprover { .. }))
        ));
        let wrong = answer(&core, &first, "U0FIN001", "000000", "view:1").await;
        assert_eq!(
            wrong.unwrap_err(),
            SteppedRefusal::Totp(StepUpRefusal::WrongCode)
        );
        assert!(
            answer(&core, &first, "U0FIN001", &code, "view:2")
                .await
                .is_ok()
        );
        let again = answer(&core, &second, "U0FIN001", &code, "view:3").await;
        assert_eq!(
            again.unwrap_err(),
            SteppedRefusal::Totp(StepUpRefusal::CodeAlreadyUsed)
        );
        assert_eq!(
            core.reasons(&first.id, kinds::STEP_UP_FAILED).await,
            ["wrong code"]
        );
        assert_eq!(
            core.reasons(&second.id, kinds::STEP_UP_FAILED).await,
            ["code already used"]
        );
        // The next step's code approves the second.
        core.clock.advance(chrono::Duration::seconds(30));
        let next = authenticator.code_at(core.clock.now().timestamp() as u64);
        assert!(
            answer(&core, &second, "U0FIN001", &next, "view:4")
                .await
                .is_ok()
        );
    }

    #[tokio::test]
    async fn the_fifth_wrong_code_locks_the_reviewer_out_with_its_alert() {
        let core = core().await;
        let authenticator = enrolled(&core, "U0FIN001").await;
        let proposal = core.pending(StepUp::Totp).await;
        for n in 0..4 {
            let wrong = answer(&core, &proposal, "U0FIN001", "000000", &format!("v{n}")).await;
            assert_eq!(
                wrong.unwrap_err(),
                SteppedRefusal::Totp(StepUpRefusal::WrongCode)
            );
        }
        let until = core.clock.now() + crate::stepup::LOCKOUT;
        let fifth = answer(&core, &proposal, "U0FIN001", "000000", "v4").await;
        assert_eq!(
            fifth.unwrap_err(),
            SteppedRefusal::Totp(StepUpRefusal::WrongCodeLockedOut { until })
        );
        // Locked: even the right code is refused until it ends.
        let code = authenticator.code_at(core.clock.now().timestamp() as u64);
        let locked = answer(&core, &proposal, "U0FIN001", &code, "v5").await;
        assert_eq!(
            locked.unwrap_err(),
            SteppedRefusal::Totp(StepUpRefusal::LockedOut { until })
        );
        let audit = core.audit_of(&proposal.id).await;
        let kinds = kinds(&audit);
        let locked_at = kinds.iter().position(|k| *k == "step_up.locked").unwrap();
        // The fifth failure and the lock: one transaction, adjacent.
        assert_eq!(kinds[locked_at - 1], "step_up.failed");
        core.clock.advance(crate::stepup::LOCKOUT);
        let code = authenticator.code_at(core.clock.now().timestamp() as u64);
        assert!(
            answer(&core, &proposal, "U0FIN001", &code, "v6")
                .await
                .is_ok()
        );
    }
}
