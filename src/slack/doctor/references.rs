//! Every Slack id countersign's files and settings name — role channels, user groups, people —
//! each with where it is named, so a failed check can say which file and key to fix. Pure: reads
//! the loaded registry, calls nothing.

use std::collections::BTreeMap;
use std::path::Path;

use crate::domain::{EscalationLevel, EscalationTarget};
use crate::registry::Registry;

/// A role's channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleChannel {
    pub role: String,
    pub channel: String,
}

/// Slack ids to check, each with the places that name it (`manifests/roles.yaml:
/// roles.finance.approvers.users`), in a stable order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct References {
    pub channels: Vec<RoleChannel>,
    pub users: BTreeMap<String, Vec<String>>,
    pub groups: BTreeMap<String, Vec<String>>,
}

impl References {
    /// Collects from the registry loaded from `manifests`/`policies`, and `slack_admins`.
    pub fn collect(
        registry: &Registry,
        slack_admins: &[String],
        manifests: &Path,
        policies: &Path,
    ) -> Self {
        let mut refs = Self::default();
        let roles_file = manifests.join("roles.yaml").display().to_string();
        for (name, role) in registry.roles.iter() {
            refs.channels.push(RoleChannel {
                role: name.to_owned(),
                channel: role.channel.clone(),
            });
            for user in &role.approvers.users {
                refs.user(user, &roles_file, &format!("roles.{name}.approvers.users"));
            }
            if let Some(group) = &role.approvers.usergroup {
                refs.group(
                    group,
                    &roles_file,
                    &format!("roles.{name}.approvers.usergroup"),
                );
            }
        }

        let oncall_file = manifests.join("oncall.yaml").display().to_string();
        for name in registry.oncall.names() {
            let schedule = registry.oncall.get(name).expect("listed");
            for (i, layer) in schedule.layers.iter().enumerate() {
                for user in &layer.users {
                    refs.user(
                        user,
                        &oncall_file,
                        &format!("schedules.{name}.layers[{i}].users"),
                    );
                }
            }
            for (i, o) in schedule.overrides.iter().enumerate() {
                refs.user(
                    &o.user,
                    &oncall_file,
                    &format!("schedules.{name}.overrides[{i}].user"),
                );
            }
        }

        for agent in registry.agents.agents() {
            let file = manifests.join("agents").join(format!("{}.yaml", agent.id));
            refs.user(&agent.owner, &file.display().to_string(), "owner");
        }

        for rule in registry.policies.rules() {
            let file = rule.file.display().to_string();
            let key = format!("rule {}: escalation", rule.name);
            refs.ladder(&rule.requirement.escalation, &file, &key);
        }
        let defaults = registry.policies.defaults();
        let policies = policies.display().to_string();
        for (impact, requirement) in [
            ("low", &defaults.low),
            ("medium", &defaults.medium),
            ("high", &defaults.high),
        ] {
            let key = format!("defaults.{impact}.escalation");
            refs.ladder(&requirement.escalation, &policies, &key);
        }

        for admin in slack_admins {
            let (file, key) = ("configuration", "slack_admins");
            if admin.starts_with('S') {
                refs.group(admin, file, key);
            } else {
                refs.user(admin, file, key);
            }
        }
        refs
    }

    fn ladder(&mut self, ladder: &[EscalationLevel], file: &str, key: &str) {
        for (i, level) in ladder.iter().enumerate() {
            match &level.notify {
                Some(EscalationTarget::User(user)) => {
                    self.user(user, file, &format!("{key}[{i}].notify.user"))
                }
                Some(EscalationTarget::Usergroup(group)) => {
                    self.group(group, file, &format!("{key}[{i}].notify.usergroup"))
                }
                _ => {}
            }
        }
    }

    fn user(&mut self, id: &str, file: &str, key: &str) {
        push_unique(self.users.entry(id.to_owned()).or_default(), file, key);
    }

    fn group(&mut self, id: &str, file: &str, key: &str) {
        push_unique(self.groups.entry(id.to_owned()).or_default(), file, key);
    }
}

fn push_unique(places: &mut Vec<String>, file: &str, key: &str) {
    let place = format!("{file}: {key}");
    if !places.contains(&place) {
        places.push(place);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture() -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let (manifests, policies) = (dir.path().join("manifests"), dir.path().join("policies"));
        for (from, to) in [("manifests", &manifests), ("policies", &policies)] {
            std::fs::create_dir_all(to.join("agents")).unwrap();
            for entry in std::fs::read_dir(root.join(from)).unwrap() {
                let entry = entry.unwrap();
                if entry.file_type().unwrap().is_file() {
                    std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
                }
            }
        }
        (dir, manifests, policies)
    }

    #[test]
    fn every_named_id_is_collected_with_where_it_is_named() {
        let (_dir, manifests, policies) = fixture();
        std::fs::write(
            manifests.join("agents/ops.yaml"),
            "id: ops\nowner: U0OWNER09\ndescription: d\ntoken_sha256: \
             a000000000000000000000000000000000000000000000000000000000000001\nmode: active\nactions: {}\n",
        )
        .unwrap();
        std::fs::write(
            policies.join("zz-escalate.yaml"),
            "rules:\n  - name: page-people\n    description: d\n    when: action.id == \"x.y\"\n    route: [legal]\n    approvals: 1\n    sla: 1h\n    escalation:\n      - {after: 10m, notify: oncall}\n      - {after: 20m, notify: {user: U0PAGE01}}\n      - {after: 30m, notify: {usergroup: S0PAGERS}}\n",
        )
        .unwrap();
        let registry = Registry::load(&manifests, &policies).unwrap();
        let admins = vec!["U0ADMIN1".to_owned(), "S0ADMINS".to_owned()];
        let refs = References::collect(&registry, &admins, &manifests, &policies);

        let m = manifests.display();
        assert_eq!(
            refs.channels.first(),
            Some(&RoleChannel {
                role: "finance".into(),
                channel: "C0FINANCE".into()
            })
        );
        assert_eq!(refs.channels.len(), 4);
        // Named twice: as an approver and in a rotation; each place listed once.
        assert_eq!(
            refs.users["U0FIN001"],
            [
                format!("{m}/roles.yaml: roles.finance.approvers.users"),
                format!("{m}/oncall.yaml: schedules.finance-primary.layers[0].users"),
            ]
        );
        assert_eq!(
            refs.users["U0MGR001"],
            [format!(
                "{m}/oncall.yaml: schedules.finance-primary.overrides[0].user"
            )]
        );
        assert_eq!(
            refs.users["U0OWNER09"],
            [format!("{m}/agents/ops.yaml: owner")]
        );
        assert_eq!(
            refs.users["U0PAGE01"],
            [format!(
                "{}: rule page-people: escalation[1].notify.user",
                policies.join("zz-escalate.yaml").display()
            )]
        );
        assert_eq!(refs.users["U0ADMIN1"], ["configuration: slack_admins"]);
        assert_eq!(
            refs.groups.keys().collect::<Vec<_>>(),
            ["S0ADMINS", "S0FINAPPR", "S0PAGERS"]
        );
        assert_eq!(
            refs.groups["S0FINAPPR"],
            [format!("{m}/roles.yaml: roles.finance.approvers.usergroup")]
        );
        // `notify: oncall` and `notify: {role}` name no id of their own.
        assert!(!refs.users.keys().any(|u| !u.starts_with('U')));
    }
}
