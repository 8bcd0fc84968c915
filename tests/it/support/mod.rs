//! An in-process saltgate on an ephemeral port with the built-in bus.

pub(crate) mod fake_master;

use std::net::SocketAddr;
use std::time::Duration;

use saltgate::config::Config;
use saltgate::salt::{BusItem, Event, Subscription};
use saltgate::server::{self, Limits};
use tokio::sync::oneshot;

/// A running saltgate.
pub(crate) struct TestApp {
    pub addr: SocketAddr,
    pub state: saltgate::api::AppState,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

/// Builds a [`TestApp`].
pub(crate) struct Builder {
    config: Config,
    limits: Limits,
    env: std::collections::HashMap<String, String>,
    hooks: Vec<saltgate::config::RawHook>,
    tls: Option<server::Tls>,
    dialect: saltgate::config::Dialect,
}

impl TestApp {
    pub(crate) fn builder() -> Builder {
        let mut config = Config::builtin();
        config.api.webhook_disable_auth = true;
        config.api.disable_ssl = true;
        let limits = Limits::from_config(&config);
        Builder {
            config,
            limits,
            env: Default::default(),
            hooks: Vec::new(),
            tls: None,
            dialect: saltgate::config::Dialect::RestCherrypy,
        }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Connections the server has accepted and closed so far.
    pub(crate) fn connections(&self) -> (u64, u64) {
        self.state.metrics.connections_served()
    }

    /// Waits (up to 5 s) until the server has accepted `accepted` and closed `closed`
    /// connections in all (at least): it has taken, or let go of, the ones a test opened or
    /// closed. In place of a sleep that hopes it did.
    pub(crate) async fn connections_reach(&self, accepted: u64, closed: u64) {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            let now = self.connections();
            if now.0 >= accepted && now.1 >= closed {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the server accepted and closed {now:?} connections, not ({accepted}, {closed})"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// A bus subscription taken now.
    pub(crate) fn subscribe(&self) -> Subscription {
        self.state.bus.subscribe()
    }

    /// Stops accepting and waits for the server to drain.
    pub(crate) async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap().unwrap();
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl Builder {
    pub(crate) fn with_config(mut self, f: impl FnOnce(&mut Config)) -> Self {
        f(&mut self.config);
        self
    }

    pub(crate) fn with_limits(mut self, f: impl FnOnce(&mut Limits)) -> Self {
        f(&mut self.limits);
        self
    }

    /// Hook rules as YAML (the `saltgate.hooks` list); secrets via `secret_env` from `env`.
    pub(crate) fn with_hooks(mut self, yaml: &str, env: &[(&str, &str)]) -> Self {
        self.hooks = serde_yaml::from_str(yaml).unwrap();
        self.env
            .extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        self
    }

    /// Attach to `master`'s request server for credential checks (`mk_token`, `get_token`).
    /// The event bus is the master's, whose sockets do not exist: hooks cannot fire.
    pub(crate) fn with_master(mut self, master: &fake_master::FakeMaster) -> Self {
        self.config.use_master = true;
        self.config.master.interface = [127, 0, 0, 1].into();
        self.config.master.ret_port = master.port;
        self.config.master.sock_dir = "/nonexistent/saltgate-it/sock".into();
        self
    }

    /// Serve `dialect` (default rest_cherrypy).
    pub(crate) fn with_dialect(mut self, dialect: saltgate::config::Dialect) -> Self {
        self.dialect = dialect;
        self
    }

    /// Serve TLS with the certificate in `tests/fixtures/tls`.
    pub(crate) fn with_tls(mut self) -> Self {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tls");
        self.config.api.ssl_crt = Some(dir.join("server.crt"));
        self.config.api.ssl_key = Some(dir.join("server.key"));
        self.config.api.disable_ssl = false;
        self.tls = server::tls_from_config(&self.config).unwrap();
        assert!(self.tls.is_some());
        self
    }

    pub(crate) async fn spawn(mut self) -> TestApp {
        self.config.set_hooks(&self.hooks, &self.env).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        // A spool a previous app (the same test, restarted) still holds is let go of once
        // its tasks have seen that app dropped.
        let mut tries = 0;
        let state = loop {
            match server::build_state(self.config.clone()) {
                Ok(state) => break state,
                Err(e) if tries < 100 && e.to_string().contains("in use") => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("{e}"),
            }
        };
        // Until its pusher has started, a spool answers hooks `queued`; tests of a bus that
        // works expect it started (a bus a test keeps down never gets there: go on after 2 s).
        if let Some(spool) = &state.spool {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
            while !spool.status().delivering && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        let (stop, stopped) = oneshot::channel::<()>();
        let listener = server::Listener::new(self.dialect, listener, self.tls);
        let task = tokio::spawn(server::serve(
            state.clone(),
            vec![listener],
            self.limits,
            async {
                let _ = stopped.await;
            },
        ));
        TestApp {
            addr,
            state,
            stop: Some(stop),
            task: Some(task),
        }
    }
}

/// The next event whose tag starts with `prefix`.
pub(crate) async fn recv_event(sub: &mut Subscription, prefix: &str) -> std::sync::Arc<Event> {
    sub.wait_for(Duration::from_secs(5), |e| e.tag.starts_with(prefix))
        .await
        .unwrap_or_else(|e| panic!("no event {prefix}: {e}"))
}

/// Asserts that nothing is fired within a short while.
pub(crate) async fn assert_no_event(sub: &mut Subscription) {
    match tokio::time::timeout(Duration::from_millis(300), sub.recv()).await {
        Err(_) => {}
        Ok(Some(BusItem::Event(e))) => panic!("unexpected event {}", e.tag),
        Ok(other) => panic!("unexpected bus item {other:?}"),
    }
}

/// The JSON form of an event's data.
pub(crate) fn data_json(event: &Event) -> serde_json::Value {
    saltgate::salt::wire::payload::to_json(&event.data)
}

/// The value of the series `series` in `app`'s own `/metrics`.
pub(crate) async fn app_metric(app: &TestApp, series: &str) -> f64 {
    metric(&app.url("/metrics"), series).await
}

/// The value of the series `series` (name and labels, as `/metrics` writes them) scraped from
/// the `/metrics` at `url`.
pub(crate) async fn metric(url: &str, series: &str) -> f64 {
    let text = reqwest::get(url).await.unwrap().text().await.unwrap();
    text.lines()
        .find_map(|l| {
            l.strip_prefix(series)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no {series} in\n{text}"))
}
