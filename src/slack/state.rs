//! What Slack's handlers reach, whichever transport brought the request (`/slack/*` over HTTP,
//! or the Socket Mode loop): the app's state narrowed to Slack's part (axum's `FromRef`
//! substate), so the Slack adapter depends on the core, not on the HTTP adapter.

use std::sync::Arc;

use super::SlackContext;
use crate::engine::Engine;
use crate::registry::SharedRegistry;

#[derive(Clone)]
pub struct SlackState {
    pub engine: Engine,
    pub registry: SharedRegistry,
    pub slack: SlackContext,
    /// Wakes the report worker when a report is asked for in a channel.
    pub reports: Arc<tokio::sync::Notify>,
    /// Deliveries already handled (Socket Mode envelopes Slack sends again).
    pub seen: Arc<crate::cluster::SeenKeys>,
}
