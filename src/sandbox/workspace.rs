//! The sandbox's Slack workspace: people, channels, user groups and DMs, seeded from the
//! manifests (every role's channel, approvers and user group; every agent's owner) and named by
//! `manifests/sandbox.yaml`. It is fixed for the life of the process.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::manifest::ManifestError;
use crate::registry::Registry;

/// The bot user countersign posts as.
pub const BOT_USER: &str = "U0COUNTERSIGN";
pub const BOT_ID: &str = "B0COUNTERSIGN";

#[derive(Debug, Clone, Serialize)]
pub struct User {
    pub id: String,
    pub name: String,
    pub real_name: String,
    pub email: String,
    pub is_admin: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Channel {
    pub id: String,
    pub name: String,
    /// For a DM: the person on the other side of the bot.
    pub user: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Usergroup {
    pub id: String,
    pub handle: String,
    pub users: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct Workspace {
    pub team_id: String,
    pub team_name: String,
    pub users: BTreeMap<String, User>,
    pub channels: BTreeMap<String, Channel>,
    pub usergroups: BTreeMap<String, Usergroup>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct WorkspaceFile {
    team: Option<TeamSpec>,
    #[serde(default)]
    users: BTreeMap<String, UserSpec>,
    #[serde(default)]
    usergroups: BTreeMap<String, UsergroupSpec>,
    #[serde(default)]
    channels: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TeamSpec {
    id: String,
    name: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UserSpec {
    name: String,
    real_name: Option<String>,
    email: Option<String>,
    #[serde(default)]
    is_admin: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UsergroupSpec {
    handle: String,
    users: Vec<String>,
}

impl Workspace {
    /// Seeds the workspace from the registry and `manifests_dir/sandbox.yaml` (optional).
    pub fn seed(registry: &Registry, manifests_dir: &Path) -> Result<Self, ManifestError> {
        let path = manifests_dir.join("sandbox.yaml");
        let file: WorkspaceFile = if path.exists() {
            let text = std::fs::read_to_string(&path)
                .map_err(|e| ManifestError::new(&path, None, None, format!("cannot read: {e}")))?;
            serde_saphyr::from_str(&text).map_err(|e| {
                ManifestError::new(&path, e.location().map(|l| l.line()), None, e.to_string())
            })?
        } else {
            WorkspaceFile::default()
        };

        let mut workspace = Self {
            team_id: file
                .team
                .as_ref()
                .map_or("T0SANDBOX".into(), |t| t.id.clone()),
            team_name: file.team.map_or("countersign sandbox".into(), |t| t.name),
            users: BTreeMap::new(),
            channels: BTreeMap::new(),
            usergroups: BTreeMap::new(),
        };
        for (id, spec) in file.users {
            workspace.add_user(User {
                real_name: spec.real_name.unwrap_or_else(|| spec.name.clone()),
                email: spec
                    .email
                    .unwrap_or_else(|| format!("{}@sandbox.example", spec.name)),
                name: spec.name,
                is_admin: spec.is_admin,
                id,
            });
        }
        for (id, group) in file.usergroups {
            for user in &group.users {
                workspace.mention(user);
            }
            workspace.usergroups.insert(
                id.clone(),
                Usergroup {
                    id,
                    handle: group.handle,
                    users: group.users,
                },
            );
        }
        for (role_name, role) in registry.roles.iter() {
            let name = file
                .channels
                .get(&role.channel)
                .cloned()
                .unwrap_or_else(|| format!("{role_name}-approvals"));
            workspace.channels.insert(
                role.channel.clone(),
                Channel {
                    id: role.channel.clone(),
                    name,
                    user: None,
                },
            );
            for user in &role.approvers.users {
                workspace.mention(user);
            }
            if let Some(group) = &role.approvers.usergroup {
                workspace
                    .usergroups
                    .entry(group.clone())
                    .or_insert_with(|| Usergroup {
                        id: group.clone(),
                        handle: format!("{role_name}-approvers"),
                        users: role.approvers.users.clone(),
                    });
            }
        }
        for agent in registry.agents.agents() {
            workspace.mention(&agent.owner);
        }
        for name in registry.oncall.names() {
            let schedule = registry.oncall.get(name).expect("listed");
            let people = schedule
                .layers
                .iter()
                .flat_map(|layer| &layer.users)
                .chain(schedule.overrides.iter().map(|o| &o.user));
            for user in people {
                workspace.mention(user);
            }
        }
        Ok(workspace)
    }

    /// Makes sure a user the manifests mention exists, named after their id if unnamed.
    fn mention(&mut self, id: &str) {
        if !self.users.contains_key(id) {
            let name = id.to_ascii_lowercase();
            self.add_user(User {
                id: id.to_owned(),
                real_name: name.clone(),
                email: format!("{name}@sandbox.example"),
                name,
                is_admin: false,
            });
        }
    }

    fn add_user(&mut self, user: User) {
        let dm = dm_channel(&user.id);
        self.channels.insert(
            dm.clone(),
            Channel {
                id: dm,
                name: user.name.clone(),
                user: Some(user.id.clone()),
            },
        );
        self.users.insert(user.id.clone(), user);
    }

    /// Resolves what Slack accepts as a `channel` argument: a channel id, a DM id, or a user id
    /// (which means the DM with that user).
    pub fn channel(&self, id: &str) -> Option<&Channel> {
        if self.users.contains_key(id) {
            return self.channels.get(&dm_channel(id));
        }
        self.channels.get(id)
    }

    pub fn user_by_email(&self, email: &str) -> Option<&User> {
        self.users
            .values()
            .find(|u| u.email.eq_ignore_ascii_case(email))
    }
}

/// The bot's DM channel with a user: `D` + the user id without its `U`.
pub fn dm_channel(user: &str) -> String {
    format!("D{}", &user[1..])
}
