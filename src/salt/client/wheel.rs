//! The `wheel` client: wheel calls are synchronous on the master, so the reply is the result.

use rmpv::Value;

use super::SaltClients;
use crate::salt::channel::Auth;
use crate::salt::error::SaltError;

impl SaltClients {
    /// Runs a wheel function and returns the master's `data` map (`return`, `success`, ...).
    /// An argument named like a key of the request itself ([`WHEEL_REQUEST_KEYS`]) is refused:
    /// the wheel arguments are top-level keys of the request, and the master keeps the last of
    /// two equal keys.
    pub async fn wheel(
        &self,
        fun: &str,
        args: Vec<(String, Value)>,
        auth: &Auth,
    ) -> Result<Value, SaltError> {
        if let Some((key, _)) = args
            .iter()
            .find(|(k, _)| WHEEL_REQUEST_KEYS.contains(&k.as_str()))
        {
            return Err(SaltError::Protocol(format!(
                "wheel argument '{key}' would replace a key of the request"
            )));
        }
        self.channel.wheel(fun, args, auth).await
    }
}

/// Keys of a wheel request that are not the function's arguments: the routing (`cmd`, `fun`),
/// the credentials, the master-side identity (`user`, `key`) and the keys Salt's wheel client
/// reads to name the job (`__jid__`, `__tag__`, `__user__`).
pub const WHEEL_REQUEST_KEYS: &[&str] = &[
    "cmd", "fun", "token", "eauth", "username", "password", "user", "key", "__jid__", "__tag__",
    "__user__",
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::salt::bus::memory::MemoryBus;
    use crate::salt::channel::{MasterChannel, Timeouts};

    #[tokio::test]
    async fn request_keys_are_not_arguments() {
        // A channel to nowhere: the refusal comes before any send.
        let clients = SaltClients {
            channel: MasterChannel::new("tcp://127.0.0.1:9", 1, Timeouts::default()),
            bus: std::sync::Arc::new(MemoryBus::new(16)),
            timeout: std::time::Duration::from_secs(1),
            gather_job_timeout: std::time::Duration::from_secs(1),
        };
        for key in WHEEL_REQUEST_KEYS {
            let args = vec![((*key).to_owned(), Value::from("runner"))];
            let auth = Auth::Token("ab".into());
            match clients.wheel("test.arg", args, &auth).await {
                Err(SaltError::Protocol(m)) => assert!(m.contains(key), "{m}"),
                other => panic!("{key}: {other:?}"),
            }
        }
    }
}
