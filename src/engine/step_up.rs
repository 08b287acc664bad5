//! Step-up in the core: whether a reviewer can answer a TOTP challenge, checking their code
//! (one step of drift, each step once, five wrong codes lock them out), and enrolling or
//! unenrolling an authenticator. Every change is one command, written with its audit event in
//! one transaction (`Command::StepUp`); the adapters (Slack's modal and `/countersign enroll`,
//! the CLI's reset) only turn the typed answers into words.

use chrono::{DateTime, Utc};

use super::{Engine, EngineError};
use crate::stepup::totp::Authenticator;
use crate::stepup::vault::Vault;
use crate::store::{Command, CommandResult, StepUpChange};

/// Why a TOTP answer cannot count. Nothing is recorded as a vote; the adapter says why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepUpRefusal {
    /// No `secret_key` is configured, so TOTP step-up is off.
    Off,
    LockedOut {
        until: DateTime<Utc>,
    },
    NotEnrolled,
    /// The stored secret does not open with the configured key (was `secret_key` changed?).
    SecretUnreadable,
    WrongCode,
    /// A wrong code, and the one too many: locked until then (audited, channels alerted).
    WrongCodeLockedOut {
        until: DateTime<Utc>,
    },
    CodeAlreadyUsed,
    /// The store could not answer; try again.
    Unavailable,
}

impl StepUpRefusal {
    /// The reason as the audit trail records it.
    pub fn audit_reason(&self) -> &'static str {
        match self {
            Self::Off => "totp not configured",
            Self::LockedOut { .. } => "locked out",
            Self::NotEnrolled => "not enrolled",
            Self::SecretUnreadable => "secret unreadable",
            Self::WrongCode => crate::stepup::WRONG_CODE,
            Self::WrongCodeLockedOut { .. } => crate::stepup::WRONG_CODE_LOCKED_OUT,
            Self::CodeAlreadyUsed => crate::stepup::CODE_ALREADY_USED,
            Self::Unavailable => "unavailable",
        }
    }
}

/// What `/countersign enroll [CODE]` did.
pub enum Enrollment {
    Off,
    AlreadyEnrolled,
    /// A new pending enrollment: show the reviewer this authenticator to scan.
    Started(Box<Authenticator>),
    /// Confirmed with a right code: active now.
    Enrolled,
    /// A code without a pending enrollment to confirm.
    StartFirst,
    CodeMismatch,
    /// The pending enrollment was replaced or confirmed meanwhile, or cannot be read.
    StartAgain,
    Unavailable,
}

/// What `/countersign unenroll CODE` did.
#[derive(Debug, PartialEq, Eq)]
pub enum Unenrollment {
    Off,
    NotEnrolled,
    CodeMismatch,
    /// Locked out by wrong codes (this one, or earlier ones) until then.
    LockedOut {
        until: DateTime<Utc>,
    },
    CodeAlreadyUsed,
    Unenrolled,
}

impl Engine {
    /// Whether `user` can answer a TOTP challenge now: TOTP is on, they are not locked out,
    /// and their enrollment is active.
    pub async fn totp_ready(&self, vault: Option<&Vault>, user: &str) -> Result<(), StepUpRefusal> {
        if vault.is_none() {
            return Err(StepUpRefusal::Off);
        }
        let now = self.clock.now();
        match self.store.step_up_locked_until(user, now).await {
            Ok(Some(until)) => return Err(StepUpRefusal::LockedOut { until }),
            Ok(None) => {}
            // Fail closed: a lock that cannot be read may be there.
            Err(_) => return Err(StepUpRefusal::Unavailable),
        }
        match self.store.totp_enrollment(user).await {
            Ok(Some(enrollment)) if enrollment.active => Ok(()),
            Ok(_) => Err(StepUpRefusal::NotEnrolled),
            Err(error) => {
                tracing::error!(%error, "cannot read a TOTP enrollment");
                Err(StepUpRefusal::Unavailable)
            }
        }
    }

    /// `/countersign enroll [CODE]`: without a code, starts (or restarts) an enrollment; with
    /// one, confirms the pending enrollment.
    pub async fn enroll_totp(
        &self,
        vault: Option<&Vault>,
        user: &str,
        code: Option<&str>,
    ) -> Enrollment {
        let Some(vault) = vault else {
            return Enrollment::Off;
        };
        let now = self.clock.now();
        let existing = match self.store.totp_enrollment(user).await {
            Ok(existing) => existing,
            Err(error) => {
                tracing::error!(%error, "cannot read a TOTP enrollment");
                return Enrollment::Unavailable;
            }
        };
        match (existing, code) {
            (Some(enrollment), _) if enrollment.active => Enrollment::AlreadyEnrolled,
            (Some(pending), Some(code)) => {
                let authenticator = vault
                    .open(user, &pending.sealed_secret)
                    .and_then(|secret| Authenticator::new(secret, user).ok());
                let Some(authenticator) = authenticator else {
                    return Enrollment::StartAgain;
                };
                let Some(step) = authenticator.matching_step(code, now.timestamp()) else {
                    return Enrollment::CodeMismatch;
                };
                let activate = StepUpChange::ActivateTotp {
                    step,
                    sealed_secret: pending.sealed_secret.clone(),
                };
                match self.change_step_up(user, activate).await {
                    Ok((true, _)) => Enrollment::Enrolled,
                    Ok((false, _)) => Enrollment::StartAgain,
                    Err(_) => Enrollment::Unavailable,
                }
            }
            (None, Some(_)) => Enrollment::StartFirst,
            (_, None) => {
                let secret = Authenticator::generate_secret();
                let sealed_secret = vault.seal(user, &secret);
                let Ok(authenticator) = Authenticator::new(secret, user) else {
                    return Enrollment::Unavailable;
                };
                match self
                    .change_step_up(user, StepUpChange::BeginTotp { sealed_secret })
                    .await
                {
                    Ok((true, _)) => Enrollment::Started(Box::new(authenticator)),
                    Ok((false, _)) => Enrollment::AlreadyEnrolled,
                    Err(_) => Enrollment::Unavailable,
                }
            }
        }
    }

    /// `/countersign unenroll CODE`: removes an enrollment, proven with a current code (spent,
    /// when the enrollment is active).
    pub async fn unenroll_totp(
        &self,
        vault: Option<&Vault>,
        user: &str,
        code: &str,
    ) -> Result<Unenrollment, EngineError> {
        let Some(vault) = vault else {
            return Ok(Unenrollment::Off);
        };
        let now = self.clock.now();
        // A locked-out reviewer cannot unenroll either: else guessing codes here would get
        // round the lockout (and a hit would let someone enroll their own authenticator).
        if let Some(until) = self.store.step_up_locked_until(user, now).await? {
            return Ok(Unenrollment::LockedOut { until });
        }
        let Some(enrollment) = self.store.totp_enrollment(user).await? else {
            return Ok(Unenrollment::NotEnrolled);
        };
        let step = vault
            .open(user, &enrollment.sealed_secret)
            .and_then(|secret| Authenticator::new(secret, user).ok())
            .and_then(|auth| auth.matching_step(code, now.timestamp()));
        let Some(step) = step else {
            // A wrong code counts towards the lockout, as on an approval.
            let wrong = StepUpChange::WrongAnswer { proposal: None };
            return Ok(match self.change_step_up(user, wrong).await?.1 {
                Some(until) => Unenrollment::LockedOut { until },
                None => Unenrollment::CodeMismatch,
            });
        };
        let change = StepUpChange::Unenroll {
            step: enrollment.active.then_some(step),
        };
        Ok(match self.change_step_up(user, change).await? {
            (true, _) => Unenrollment::Unenrolled,
            (false, _) if enrollment.active => Unenrollment::CodeAlreadyUsed,
            (false, _) => Unenrollment::NotEnrolled,
        })
    }

    /// An operator removes `user`'s enrollment (`countersign totp reset`); false if there was
    /// none.
    pub async fn reset_totp(&self, user: &str, by: &str) -> Result<bool, EngineError> {
        let change = StepUpChange::Reset { by: by.to_owned() };
        Ok(self.change_step_up(user, change).await?.0)
    }

    /// Applies one step-up change with its audit event: whether it changed anything, and the
    /// lock a wrong answer set.
    pub(super) async fn change_step_up(
        &self,
        user: &str,
        change: StepUpChange,
    ) -> Result<(bool, Option<DateTime<Utc>>), EngineError> {
        let command = Command::StepUp {
            user: user.to_owned(),
            change,
        };
        match self.apply(command).await? {
            CommandResult::StepUp {
                changed,
                locked_until,
            } => Ok((changed, locked_until)),
            other => Err(EngineError::Store(crate::store::StoreError::Other(
                format!("a step-up change answered {other:?}"),
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Clock;
    use crate::config::Secret;
    use crate::engine::testing::core;

    fn vault() -> Vault {
        Vault::new(&Secret::new("k".repeat(32)))
    }

    /// Enrolls `user` the way `/countersign enroll` does; answers their authenticator.
    async fn enrolled(engine: &Engine, user: &str) -> Authenticator {
        let vault = vault();
        let Enrollment::Started(authenticator) = engine.enroll_totp(Some(&vault), user, None).await
        else {
            panic!("enrollment did not start");
        };
        let code = authenticator.code_at(engine.clock().now().timestamp() as u64);
        let confirmed = engine.enroll_totp(Some(&vault), user, Some(&code)).await;
        assert!(matches!(confirmed, Enrollment::Enrolled));
        *authenticator
    }

    #[tokio::test]
    async fn totp_is_ready_only_when_on_and_enrolled() {
        let core = core().await;
        let vault = vault();
        let ready = |v| core.engine.totp_ready(v, "U1");
        assert_eq!(ready(Some(&vault)).await, Err(StepUpRefusal::NotEnrolled));
        let _ = enrolled(&core.engine, "U1").await;
        assert_eq!(ready(Some(&vault)).await, Ok(()));
        // Without a secret key, TOTP is off whatever the reviewer holds.
        assert_eq!(ready(None).await, Err(StepUpRefusal::Off));
    }

    #[tokio::test]
    async fn guessing_unenroll_codes_locks_out_like_wrong_approvals() {
        let core = core().await;
        let vault = vault();
        let vault = Some(&vault);
        let authenticator = enrolled(&core.engine, "U1").await;
        for _ in 0..4 {
            let guess = core.engine.unenroll_totp(vault, "U1", "000000").await;
            assert_eq!(guess.unwrap(), Unenrollment::CodeMismatch);
        }
        let until = core.clock.now() + crate::stepup::LOCKOUT;
        let fifth = core.engine.unenroll_totp(vault, "U1", "000000").await;
        assert_eq!(fifth.unwrap(), Unenrollment::LockedOut { until });
        // Locked: a right code does not unenroll, nor approve.
        core.clock.advance(chrono::Duration::seconds(30));
        let code = authenticator.code_at(core.clock.now().timestamp() as u64);
        let locked = core.engine.unenroll_totp(vault, "U1", &code).await;
        assert_eq!(locked.unwrap(), Unenrollment::LockedOut { until });
        assert_eq!(
            core.engine.totp_ready(vault, "U1").await,
            Err(StepUpRefusal::LockedOut { until })
        );
    }

    #[tokio::test]
    async fn unenrolling_takes_a_current_unspent_code() {
        let core = core().await;
        let vault = vault();
        let vault = Some(&vault);
        let authenticator = enrolled(&core.engine, "U1").await;
        let spent = authenticator.code_at(core.clock.now().timestamp() as u64);
        let unenroll = |code: String| {
            let engine = core.engine.clone();
            async move { engine.unenroll_totp(vault, "U1", &code).await.unwrap() }
        };
        assert_eq!(unenroll(spent).await, Unenrollment::CodeAlreadyUsed);
        assert_eq!(unenroll("000000".into()).await, Unenrollment::CodeMismatch);
        core.clock.advance(chrono::Duration::seconds(30));
        let code = authenticator.code_at(core.clock.now().timestamp() as u64);
        assert_eq!(unenroll(code.clone()).await, Unenrollment::Unenrolled);
        assert_eq!(unenroll(code).await, Unenrollment::NotEnrolled);
        assert!(!core.engine.reset_totp("U1", "operator:test").await.unwrap());
    }
}
