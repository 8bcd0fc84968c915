//! The `wheel` client: wheel calls are synchronous on the master, so the reply is the result.

use rmpv::Value;

use super::SaltClients;
use crate::salt::channel::Auth;
use crate::salt::error::SaltError;

impl SaltClients {
    /// Runs a wheel function and returns the master's `data` map (`return`, `success`, ...).
    pub async fn wheel(
        &self,
        fun: &str,
        args: Vec<(String, Value)>,
        auth: &Auth,
    ) -> Result<Value, SaltError> {
        self.channel.wheel(fun, args, auth).await
    }
}
