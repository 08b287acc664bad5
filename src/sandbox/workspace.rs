//! The sandbox's Slack workspace: people, channels, user groups and DMs, seeded from the
//! manifests (every role's channel, approvers and user group; every agent's owner) and named by
//! `manifests/sandbox.yaml`. It is fixed for the life of the process; tests shape it (remove the
//! bot from a channel, archive one, deactivate a person, grant fewer scopes) before starting the
//! sandbox with it.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::manifest::{ManifestError, SlackApp};
use crate::registry::Registry;

/// The bot user countersign posts as.
pub const BOT_USER: &str = "U0COUNTERSIGN";
pub const BOT_ID: &str = "B0COUNTERSIGN";
pub const APP_ID: &str = "A0COUNTERSIGN";

#[derive(Debug, Clone, Serialize)]
pub struct User {
    pub id: String,
    pub name: String,
    pub real_name: String,
    pub email: String,
    pub is_admin: bool,
    /// A deactivated account: users.info still answers, with `deleted: true`.
    pub deleted: bool,
    pub is_bot: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Channel {
    pub id: String,
    pub name: String,
    /// For a DM: the person on the other side of the bot.
    pub user: Option<String>,
    /// Whether the bot is in the channel (always, for a DM). Slack refuses a bot's posts in a
    /// channel it is not in with `not_in_channel`.
    pub bot_member: bool,
    pub archived: bool,
}

impl Channel {
    /// A private channel: Slack hides it from an app that is not in it. (Modern private
    /// channels have `C` ids too; in the sandbox, a `G` id marks one.)
    pub fn is_private(&self) -> bool {
        self.id.starts_with('G')
    }
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
    /// What the bot token was granted (the `x-oauth-scopes` header): by default the bot scopes
    /// of `manifests/slack-app.yaml`. A method whose scope is missing answers `missing_scope`.
    pub bot_scopes: Vec<String>,
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
        let (app, _) = SlackApp::load_or_shipped(manifests_dir)?;

        let mut workspace = Self {
            team_id: file
                .team
                .as_ref()
                .map_or("T0SANDBOX".into(), |t| t.id.clone()),
            team_name: file.team.map_or("countersign sandbox".into(), |t| t.name),
            users: BTreeMap::new(),
            channels: BTreeMap::new(),
            usergroups: BTreeMap::new(),
            bot_scopes: app.bot_scopes,
        };
        for (id, spec) in file.users {
            workspace.add_user(User {
                real_name: spec.real_name.unwrap_or_else(|| spec.name.clone()),
                email: spec
                    .email
                    .unwrap_or_else(|| format!("{}@sandbox.example", spec.name)),
                name: spec.name,
                is_admin: spec.is_admin,
                deleted: false,
                is_bot: false,
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
                    bot_member: true,
                    archived: false,
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
                deleted: false,
                is_bot: false,
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
                bot_member: true,
                archived: false,
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

    /// Takes the bot out of a channel, as `/remove @countersign` would; `false` if no such
    /// channel (or a DM, which the bot cannot leave).
    pub fn remove_bot(&mut self, channel: &str) -> bool {
        match self.channels.get_mut(channel) {
            Some(c) if c.user.is_none() => {
                c.bot_member = false;
                true
            }
            _ => false,
        }
    }

    /// Archives a channel; `false` if no such channel (or a DM).
    pub fn archive(&mut self, channel: &str) -> bool {
        match self.channels.get_mut(channel) {
            Some(c) if c.user.is_none() => {
                c.archived = true;
                true
            }
            _ => false,
        }
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
