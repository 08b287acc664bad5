//! Where an agent's callback signing secrets come from: the environment variable its manifest
//! names (`callback_secret_env`), or — for a variable the environment left unset — a value
//! given to this process in its configuration. Only `serve --demo` gives any (the demo agents'
//! generated secrets, see [`crate::demo`]): a value handed over in memory needs no
//! `std::env::set_var`, which is unsound once the runtime's threads are up, and two servers in
//! one process (the tests) each keep their own.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::config::Secret;

use super::signature::{self, WebhookSecret};

/// The callback secrets' source; cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct SecretSource {
    given: Arc<BTreeMap<String, Secret>>,
}

impl SecretSource {
    /// `given` (variable name → value), then the environment. Demo mode gives values only for
    /// variables the environment left unset when it started, so the two never disagree; and
    /// what was given stays put even if the environment changed later.
    pub fn new(given: BTreeMap<String, Secret>) -> Self {
        Self {
            given: Arc::new(given),
        }
    }

    /// The text of variable `var`, if it is given or set in the environment.
    pub fn value(&self, var: &str) -> Option<String> {
        match self.given.get(var) {
            Some(value) => Some(value.expose().to_owned()),
            None => std::env::var(var).ok(),
        }
    }

    /// The parsed secrets `var` holds, or why there are none (naming the variable, never the
    /// value).
    pub fn secrets(&self, var: &str) -> Result<Vec<WebhookSecret>, String> {
        let value = self
            .value(var)
            .ok_or_else(|| format!("environment variable {var} is not set"))?;
        signature::parse_all(&value).map_err(|e| format!("{var}: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_given_value_stands_in_for_an_unset_variable() {
        let var = "COUNTERSIGN_TEST_SECRET_SOURCE_UNSET";
        let secret = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
        let source = SecretSource::new(BTreeMap::from([(var.to_owned(), Secret::new(secret))]));
        assert_eq!(source.value(var).as_deref(), Some(secret));
        assert_eq!(source.secrets(var).unwrap().len(), 1);
        let missing = SecretSource::default().secrets(var).unwrap_err();
        assert_eq!(missing, format!("environment variable {var} is not set"));
    }
}
