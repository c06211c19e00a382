//! A hook's action as a value: its settings resolved once, when the hook's
//! delivery loop starts, then run once per attempt.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use super::exec::{Exec, KILL_GRACE};
use super::forward::{Forward, ForwardClient};
use super::Outcome;
use crate::config::{self, ActionKind};
use crate::replies::Reply;
use crate::spool::Item;

/// What one delivery does with an item.
pub(crate) enum Action {
    Forward(Forward),
    Exec(Exec),
}

impl Action {
    /// The action `cfg` describes. `client` is the process's shared forward
    /// client; `hide_env` the variables hookd reads secrets from, which no
    /// command may inherit.
    pub(crate) fn new(
        cfg: &config::Action,
        client: &ForwardClient,
        hide_env: &Arc<Vec<String>>,
    ) -> Action {
        match &cfg.kind {
            ActionKind::Forward { url, headers } => Action::Forward(Forward {
                client: client.clone(),
                url: url.clone(),
                headers_allow: headers.clone(),
                timeout: cfg.timeout,
            }),
            ActionKind::Exec(settings) => Action::Exec(Exec {
                settings: settings.clone(),
                timeout: cfg.timeout,
                hide_env: hide_env.clone(),
                kill_grace: KILL_GRACE,
            }),
        }
    }

    /// The longest one attempt may run before it counts as failed.
    pub(crate) fn timeout(&self) -> Duration {
        match self {
            Action::Forward(f) => f.timeout,
            Action::Exec(e) => e.timeout,
        }
    }

    /// Runs the action once for `item`'s `attempt` (1-based). When `cancel`
    /// completes first the attempt is given up and the result is
    /// [`Outcome::Cancelled`].
    #[cfg(test)]
    pub(crate) async fn attempt(
        &self,
        item: &Item,
        attempt: u32,
        cancel: impl Future<Output = ()>,
    ) -> Outcome {
        self.attempt_with_reply(item, attempt, cancel).await.0
    }

    /// As [`Action::attempt`], with what the action answered, to relay for
    /// `respond.wait`: the upstream's answer (any status), or a command's
    /// stdout after exit 0; `None` when there is nothing to relay.
    pub(crate) async fn attempt_with_reply(
        &self,
        item: &Item,
        attempt: u32,
        cancel: impl Future<Output = ()>,
    ) -> (Outcome, Option<Reply>) {
        match self {
            Action::Forward(f) => f.attempt_with_reply(item, attempt, cancel).await,
            Action::Exec(e) => e.attempt_with_reply(item, attempt, cancel).await,
        }
    }
}
