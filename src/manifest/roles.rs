//! `manifests/roles.yaml`: the roles that own decisions, and where to reach them in Slack.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;
use serde_saphyr::Spanned;

use super::ManifestError;

/// Who may approve for a role: named users and/or everyone in a Slack user group.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Approvers {
    #[serde(default)]
    pub users: Vec<String>,
    pub usergroup: Option<String>,
}

/// A role (finance, legal, revops, security…).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Role {
    /// Slack channel id where the role's cards go.
    pub channel: String,
    pub approvers: Approvers,
    /// On-call schedule name (see `manifests/oncall.yaml`).
    pub oncall: Option<String>,
    /// Role that takes over when this one does not answer.
    pub fallback: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RolesFile {
    roles: BTreeMap<String, Spanned<Role>>,
}

/// The declared roles, by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Roles(BTreeMap<String, Role>);

impl Roles {
    pub fn get(&self, name: &str) -> Option<&Role> {
        self.0.get(name)
    }

    pub fn contains(&self, name: &str) -> bool {
        self.0.contains_key(name)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &Role)> {
        self.0.iter().map(|(name, role)| (name.as_str(), role))
    }
}

pub(super) fn slack_id(text: &str, prefixes: &[char]) -> bool {
    text.len() >= 3
        && text.len() <= 24
        && text.starts_with(prefixes)
        && text
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
}

/// Loads `path`; a missing file is no roles.
pub fn load_roles(path: &Path) -> Result<Roles, ManifestError> {
    if !path.exists() {
        return Ok(Roles::default());
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| ManifestError::new(path, None, None, format!("cannot read: {e}")))?;
    let file: RolesFile = serde_saphyr::from_str(&text).map_err(|e| {
        ManifestError::new(path, e.location().map(|l| l.line()), None, e.to_string())
    })?;
    for (name, role) in &file.roles {
        let fail = |key: &str, message: String| {
            ManifestError::new(
                path,
                Some(role.referenced.line()),
                Some(&format!("roles.{name}.{key}")),
                message,
            )
        };
        let r = &role.value;
        if crate::domain::AgentId::parse(name).is_err() {
            return Err(fail(
                "",
                format!("{name:?} is not a valid role name (lowercase letters, digits, '-', '_')"),
            ));
        }
        if !slack_id(&r.channel, &['C', 'G']) {
            return Err(fail(
                "channel",
                format!("{:?} is not a Slack channel id (C…)", r.channel),
            ));
        }
        if let Some(user) = r.approvers.users.iter().find(|u| !slack_id(u, &['U', 'W'])) {
            return Err(fail(
                "approvers.users",
                format!("{user:?} is not a Slack user id (U…)"),
            ));
        }
        if let Some(group) = &r.approvers.usergroup
            && !slack_id(group, &['S'])
        {
            return Err(fail(
                "approvers.usergroup",
                format!("{group:?} is not a Slack user group id (S…)"),
            ));
        }
        if r.approvers.users.is_empty() && r.approvers.usergroup.is_none() {
            return Err(fail(
                "approvers",
                "a role needs approvers: users, a usergroup, or both".into(),
            ));
        }
        if let Some(fallback) = &r.fallback {
            if !file.roles.contains_key(fallback) {
                return Err(fail("fallback", format!("no role named {fallback:?}")));
            }
            // Follow the chain: it must end, not come back here.
            let mut seen = vec![name.as_str()];
            let mut next = Some(fallback.as_str());
            while let Some(current) = next {
                if seen.contains(&current) {
                    return Err(fail(
                        "fallback",
                        format!("fallback cycle: {} → {current}", seen.join(" → ")),
                    ));
                }
                seen.push(current);
                next = file
                    .roles
                    .get(current)
                    .and_then(|r| r.value.fallback.as_deref());
            }
        }
    }
    Ok(Roles(
        file.roles.into_iter().map(|(k, v)| (k, v.value)).collect(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<Roles, ManifestError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("roles.yaml");
        std::fs::write(&path, text).unwrap();
        load_roles(&path)
    }

    #[test]
    fn loads_the_shipped_roles() {
        let roles = load_roles(&Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests/roles.yaml"))
            .unwrap();
        assert_eq!(roles.get("finance").unwrap().channel, "C0FINANCE");
        assert_eq!(
            roles.get("finance").unwrap().fallback.as_deref(),
            Some("revops")
        );
        assert!(roles.contains("security"));
    }

    #[test]
    fn errors_name_line_and_key() {
        let err = load("roles:\n  finance: {channel: C0FIN, approvers: {users: [U0A1]}}\n  legal: {channel: general, approvers: {users: [U0B1]}}\n").unwrap_err();
        assert_eq!(
            (err.line, err.key.as_deref()),
            (Some(3), Some("roles.legal.channel")),
            "{err}"
        );
        let err =
            load("roles:\n  finance: {channel: C0FIN, approvers: {users: []}}\n").unwrap_err();
        assert_eq!(err.key.as_deref(), Some("roles.finance.approvers"));
        let err = load("roles:\n  a: {channel: C0A1, approvers: {users: [U0A1]}, fallback: b}\n  b: {channel: C0B1, approvers: {users: [U0B1]}, fallback: a}\n").unwrap_err();
        assert!(err.message.contains("cycle"), "{err}");
        let err = load("roles:\n  a: {channel: C0A1, approvers: {users: [U0A1]}, fallback: zz}\n")
            .unwrap_err();
        assert!(err.message.contains("no role named"), "{err}");
        let err = load("roles:\n  a: {channel: C0A1, approvers: {users: [U0A1]}, colour: red}\n")
            .unwrap_err();
        assert!(err.to_string().contains("colour"), "{err}");
    }
}
