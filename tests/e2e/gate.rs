//! saltgate in-process, attached to a sandbox's real master.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use saltgate::api::AppState;
use saltgate::config::{BusChoice, Config, Dialect, ListenHost, RawHook};
use saltgate::server::{self, Limits};
use std::sync::Arc;

use futures::future::BoxFuture;
use saltgate::api::hook::sns::{SnsFetchError, SnsHttp};
use saltgate::security::signature::sns::SnsUrl;
use tokio::sync::oneshot;

use crate::support::salt::SaltSandbox;

/// Serves the test SNS signing certificate (`tests/fixtures/sns/leaf.pem`) for any checked SNS
/// certificate URL: the test machines cannot reach `sns.<region>.amazonaws.com`. The URL has
/// already passed saltgate's strict check when this is called.
#[derive(Debug)]
pub(crate) struct FixtureSnsCerts;

impl SnsHttp for FixtureSnsCerts {
    fn get<'a>(
        &'a self,
        _url: &'a SnsUrl,
        _max: usize,
    ) -> BoxFuture<'a, Result<Vec<u8>, SnsFetchError>> {
        Box::pin(async {
            let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures/sns/leaf.pem");
            std::fs::read(path).map_err(|e| SnsFetchError::Request(e.to_string()))
        })
    }
}

/// A running saltgate attached to a sandbox master.
pub(crate) struct Gate {
    pub addr: SocketAddr,
    pub state: AppState,
    stop: Option<oneshot::Sender<()>>,
    /// This gate's own spool directory (gates share sandboxes, never spools).
    _spool: tempfile::TempDir,
}

impl Drop for Gate {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl Gate {
    /// Starts saltgate on the sandbox's master config; `tweak` adjusts the loaded config (hook
    /// rules as YAML go through `hooks_yaml`).
    pub(crate) async fn start(
        sandbox: &SaltSandbox,
        hooks_yaml: &str,
        env: &[(&str, &str)],
        tweak: impl FnOnce(&mut Config),
    ) -> Gate {
        Self::start_dialect(sandbox, Dialect::RestCherrypy, hooks_yaml, env, tweak).await
    }

    /// [`Gate::start`], serving `dialect` on its listener.
    pub(crate) async fn start_dialect(
        sandbox: &SaltSandbox,
        dialect: Dialect,
        hooks_yaml: &str,
        env: &[(&str, &str)],
        tweak: impl FnOnce(&mut Config),
    ) -> Gate {
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut config = Config::load(&sandbox.master_config_file(), &env).unwrap();
        config.saltgate.bus = BusChoice::Master;
        config.use_master = true;
        config.api.webhook_disable_auth = true;
        config.api.host = ListenHost::Ip([127, 0, 0, 1].into());
        let hooks: Vec<RawHook> = if hooks_yaml.is_empty() {
            Vec::new()
        } else {
            serde_yaml::from_str(hooks_yaml).unwrap()
        };
        let spool_dir = tempfile::tempdir().unwrap();
        if let Some(spool) = &mut config.spool {
            spool.storage = saltgate::spool::Storage::Dir(spool_dir.path().to_path_buf());
        }
        tweak(&mut config);
        config.set_hooks(&hooks, &env).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let limits = Limits::from_config(&config);
        let state = server::build_state_with(config, Some(Arc::new(FixtureSnsCerts))).unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let listener = server::Listener::new(dialect, listener, None);
        tokio::spawn(server::serve(
            state.clone(),
            vec![listener],
            limits,
            async {
                let _ = stopped.await;
            },
        ));
        let gate = Gate {
            addr,
            state,
            stop: Some(stop),
            _spool: spool_dir,
        };
        gate.wait_bus().await;
        gate
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Waits until the master's event bus is connected and the spool delivers (the master's
    /// Reactor answered), so that hooks are answered 200, not 202 `queued`.
    pub(crate) async fn wait_bus(&self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let delivering =
            |state: &AppState| state.spool.as_ref().is_none_or(|s| s.status().delivering);
        while !self.state.bus.status().connected || !delivering(&self.state) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "saltgate never reached the master bus"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub(crate) fn salt(&self) -> &saltgate::salt::SaltClients {
        self.state.salt.as_ref().expect("attached to a master")
    }
}

/// Runs blocking sandbox work (starts, stops, file waits) off the async runtime.
pub(crate) async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}
