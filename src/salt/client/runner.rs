//! The `runner` client: start a runner on the master and wait for `salt/run/<jid>/ret`.

use std::sync::Arc;
use std::time::Duration;

use rmpv::Value;

use super::SaltClients;
use crate::salt::channel::{Auth, RunnerStarted};
use crate::salt::error::SaltError;
use crate::salt::event::Event;

impl SaltClients {
    /// Runs a runner function and waits up to `timeout` for its return event. Returns the event's
    /// data (`return`, `success`, `fun`, `fun_args`, `jid`, `user`, ...).
    pub async fn runner_sync(
        &self,
        fun: &str,
        low: Value,
        auth: &Auth,
        timeout: Duration,
    ) -> Result<Arc<Event>, SaltError> {
        let mut sub = self.bus.subscribe();
        let started = self.channel.runner(fun, low, auth).await?;
        let ret_tag = format!("{}/ret", started.tag);
        sub.wait_for(timeout, |ev| ev.tag == ret_tag).await
    }

    /// Starts a runner function and returns at once with its tag and jid.
    pub async fn runner_async(
        &self,
        fun: &str,
        low: Value,
        auth: &Auth,
    ) -> Result<RunnerStarted, SaltError> {
        self.channel.runner(fun, low, auth).await
    }
}
