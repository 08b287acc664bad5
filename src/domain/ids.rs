//! Identifier newtypes. Each parses its text once; afterwards it is known to be well formed.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Why a piece of text is not a valid identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidId(pub String);

/// A proposal id: `prop_` followed by a lowercase ULID. Opaque to agents; ULIDs sort by
/// creation time, which keeps the primary-key index append-mostly.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ProposalId(String);

impl ProposalId {
    const PREFIX: &'static str = "prop_";

    pub fn generate() -> Self {
        Self(format!(
            "{}{}",
            Self::PREFIX,
            ulid::Ulid::new().to_string().to_lowercase()
        ))
    }

    pub fn parse(text: &str) -> Result<Self, InvalidId> {
        let ok = text
            .strip_prefix(Self::PREFIX)
            .is_some_and(|rest| rest.len() == 26 && ulid::Ulid::from_string(rest).is_ok());
        if ok {
            Ok(Self(text.to_ascii_lowercase()))
        } else {
            Err(InvalidId(format!("not a proposal id: {text:?}")))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for ProposalId {
    type Error = InvalidId;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<ProposalId> for String {
    fn from(id: ProposalId) -> Self {
        id.0
    }
}

impl fmt::Display for ProposalId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

macro_rules! slug_id {
    ($(#[$doc:meta])* $name:ident, $what:literal, $max:literal, $extra:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            pub const MAX_LEN: usize = $max;

            pub fn parse(text: &str) -> Result<Self, InvalidId> {
                let well_formed = !text.is_empty()
                    && text.len() <= $max
                    && text.starts_with(|c: char| c.is_ascii_lowercase())
                    && text.chars().all(|c| {
                        c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_' || $extra.contains(c)
                    });
                if well_formed {
                    Ok(Self(text.to_owned()))
                } else {
                    Err(InvalidId(format!(
                        concat!("{:?} is not a valid ", $what, ": use 1 to ", $max,
                            " lowercase letters, digits, '-', '_'", " {}", " starting with a letter"),
                        text, if $extra.is_empty() { "".to_owned() } else { format!("or {:?}", $extra) }
                    )))
                }
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = InvalidId;
            fn try_from(value: String) -> Result<Self, Self::Error> {
                Self::parse(&value)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> Self {
                id.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

slug_id!(
    /// An agent's id as declared in `manifests/agents/*.yaml` (`revops-crm`).
    AgentId, "agent id", 64, ""
);
slug_id!(
    /// An action's id in an agent's catalog (`crm.opportunity.update`).
    ActionId, "action id", 128, "."
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_proposal_ids_parse_back() {
        let id = ProposalId::generate();
        assert!(id.as_str().starts_with("prop_"));
        assert_eq!(ProposalId::parse(id.as_str()).unwrap(), id);
    }

    #[test]
    fn malformed_proposal_ids_are_refused() {
        for bad in [
            "",
            "prop_",
            "prop_123",
            "xx_01j0000000000000000000000",
            "prop_../../etc",
        ] {
            assert!(ProposalId::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn slugs() {
        assert!(AgentId::parse("revops-crm").is_ok());
        assert!(AgentId::parse("RevOps").is_err());
        assert!(AgentId::parse("a.b").is_err());
        assert!(ActionId::parse("crm.opportunity.update").is_ok());
        assert!(ActionId::parse("crm opportunity").is_err());
        assert!(ActionId::parse(&"a".repeat(129)).is_err());
        let message = ActionId::parse("Bad").unwrap_err().0;
        assert!(message.contains("\"Bad\""), "{message}");
    }
}
