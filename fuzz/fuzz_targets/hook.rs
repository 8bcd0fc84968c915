//! Whole requests through saltgate's real router (in process, built-in bus, no master):
//! hook path → rule → tag (src/api/hook/, src/config/hooks.rs), with each rule's verifier,
//! allowlist, body cap (`Content-Length` included) and body parsing by content type (YAML only
//! on the `yaml: true` rule), the event fired, and the lowstate routes' body parsing.
//!
//! Input: first line `<METHOD> <request target>` (just a path means `POST <path>`), then
//! header lines, a blank line, and the body. Rules (see `RULES`): `github/deploy` (GitHub
//! signature, secret `It's a Secret to Everybody`), `github` (no check), `slack`, `yaml`
//! (`yaml: true`), `small` (64-byte body cap), `local` (allowlist 10.0.0.0/8, so refused), and
//! the default rule (no token: `webhook_disable_auth`).
//!
//! A request target under `/tornado/` goes, without that prefix, to the rest_tornado dialect's
//! router (its own hook `post` parser, query arguments and header names in the event) over the
//! same state.
//!
//! Oracles: every event fired has the tag `salt/netapi/hook[/<decoded path>]` and packs for
//! the master bus; an answered hook fired exactly one event.
#![no_main]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::OnceLock;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use futures::FutureExt;
use http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use libfuzzer_sys::fuzz_target;
use saltgate::config::Config;
use saltgate::salt::{BusItem, Subscription};
use saltgate_fuzz::{first_text, message};
use tower::ServiceExt;

const RULES: &str = r#"
- path: github/deploy
  auth: none
  verify: {github: {secret_env: GITHUB_SECRET}}
- path: github
  auth: none
- path: slack
  auth: none
  verify: {slack: {secret_env: SLACK_SECRET}}
- path: yaml
  auth: none
  yaml: true
- path: small
  auth: none
  max_body: 64
- path: local
  auth: none
  allow_from: [10.0.0.0/8]
"#;

struct World {
    rt: tokio::runtime::Runtime,
    router: Router,
    tornado: Router,
    events: std::sync::Mutex<Subscription>,
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let mut config = Config::builtin();
        config.api.webhook_disable_auth = true;
        config.api.disable_ssl = true;
        let rules: Vec<saltgate::config::RawHook> = serde_yaml::from_str(RULES).expect("rules");
        // Fired directly: the checks below read what this one request fired, and a spooled
        // hook is pushed after its answer.
        config.spool = None;
        let env = HashMap::from([
            (
                "GITHUB_SECRET".to_owned(),
                "It's a Secret to Everybody".to_owned(),
            ),
            (
                "SLACK_SECRET".to_owned(),
                "8f742231b10e8888abcd99yyyzzz85a5".to_owned(),
            ),
        ]);
        config.tornado = Some(
            serde_yaml::from_str("port: 0\nwebhook_disable_auth: true\n").expect("block"),
        );
        config.set_hooks(&rules, &env).expect("rules build");
        let (router, tornado, events) = rt.block_on(async {
            let state = saltgate::server::build_state(config).expect("state");
            let events = state.bus.subscribe();
            let tornado = saltgate::api::dialect::router(
                saltgate::config::Dialect::RestTornado,
                state.clone(),
            );
            (saltgate::api::router(state), tornado, events)
        });
        World {
            rt,
            router,
            tornado,
            events: std::sync::Mutex::new(events),
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let w = world();
    let m = message(data);
    let first = first_text(&m);
    let (method, target) = match first.split_once(' ') {
        Some((meth, t)) => (
            Method::from_bytes(meth.as_bytes()).unwrap_or(Method::POST),
            t.trim(),
        ),
        None => (Method::POST, first.as_str()),
    };
    let (router, target) = match target.strip_prefix("/tornado") {
        Some(rest) if rest.starts_with('/') => (&w.tornado, rest),
        _ => (&w.router, target),
    };
    let Ok(mut req) = Request::builder()
        .method(method.clone())
        .uri(target)
        .body(Body::from(m.body.to_vec()))
    else {
        return;
    };
    *req.headers_mut() = m.headers;
    let path = req.uri().path().to_owned();
    req.extensions_mut()
        .insert(ConnectInfo(SocketAddr::from(([192, 0, 2, 7], 40000))));

    let (status, _body) = w.rt.block_on(async {
        let Ok(resp) = router.clone().oneshot(req).await;
        let status = resp.status();
        let body = resp.into_body().collect().await.map(|b| b.to_bytes());
        (status, body)
    });

    let mut events = w.events.lock().unwrap_or_else(|e| e.into_inner());
    let mut fired = Vec::new();
    while let Some(Some(item)) = events.recv().now_or_never() {
        if let BusItem::Event(e) = item {
            fired.push(e);
        }
    }
    for e in &fired {
        assert!(e.pack().is_ok(), "fired event {:?} cannot be packed", e.tag);
        assert!(
            !e.tag.chars().any(char::is_control),
            "control character in tag {:?}",
            e.tag
        );
    }
    if let Some(rest) = path.strip_prefix("/hook") {
        if method == Method::POST && status == StatusCode::OK && fired.len() == 1 {
            let decoded = percent_encoding::percent_decode_str(rest).decode_utf8_lossy();
            let trimmed = decoded.trim_matches('/');
            let want = if trimmed.is_empty() {
                "salt/netapi/hook".to_owned()
            } else {
                format!("salt/netapi/hook/{trimmed}")
            };
            assert_eq!(fired[0].tag, want, "tag of {path:?}");
        }
    }
    assert!(fired.len() <= 1, "one request fired {} events", fired.len());
});
