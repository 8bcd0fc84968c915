//! Hostile credentials: password and token guessing, and rate-limit keys, on the real HTTP path.
//!
//! Credential checks need a master: these tests attach saltgate to a fake request server
//! (`support::fake_master`) that answers `mk_token` and `get_token` and counts what reaches it.
//! "Another client" is another loopback source address (127.0.0.2, ...), or an address a trusted
//! proxy put in `X-Forwarded-For`.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use futures::StreamExt;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::TestApp;
use crate::support::fake_master::FakeMaster;

const USERS: &[(&str, &str)] = &[("saltdev", "saltdev")];
/// `saltgate.auth_failure_burst`'s default.
const BURST: usize = 10;
/// `saltgate.auth_max_in_flight`'s default.
const IN_FLIGHT: usize = 2;

fn client_from(addr: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(addr.parse::<IpAddr>().unwrap())
        .build()
        .unwrap()
}

fn random_token() -> String {
    format!("{:032x}", rand::random::<u128>())
}

fn creds(password: &str) -> Value {
    json!({"username": "saltdev", "password": password, "eauth": "file"})
}

async fn login(app: &TestApp, c: &reqwest::Client, password: &str) -> reqwest::Response {
    c.post(app.url("/login"))
        .json(&creds(password))
        .send()
        .await
        .unwrap()
}

/// A 429 with `Retry-After` and the error body in the negotiated format.
async fn assert_throttled(resp: reqwest::Response, yaml: bool) {
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    let secs: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    // One failure refills every 10 s by default; guesses in flight when the budget ran out
    // push it a little further.
    assert!((1..=60).contains(&secs), "Retry-After {secs}");
    let ctype = resp.headers()["content-type"].to_str().unwrap().to_owned();
    let body = resp.text().await.unwrap();
    let v: Value = if yaml {
        assert_eq!(ctype, "application/x-yaml");
        serde_yaml::from_str(&body).unwrap()
    } else {
        assert_eq!(ctype, "application/json");
        serde_json::from_str(&body).unwrap()
    };
    assert_eq!(v["code"], "rate_limited", "{body}");
    assert_eq!(v["status"], 429);
}

#[tokio::test]
async fn wrong_password_flood_is_throttled_and_a_real_login_elsewhere_stays_quick() {
    let master = FakeMaster::start(USERS);
    let app = TestApp::builder().with_master(&master).spawn().await;
    let attacker = client_from("127.0.0.1");
    // 16 connections' worth of wrong passwords at once.
    let statuses: Vec<StatusCode> = futures::stream::iter(0..64)
        .map(|i| {
            let (app, attacker) = (&app, &attacker);
            async move { login(app, attacker, &format!("guess{i}")).await.status() }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    let refused = statuses
        .iter()
        .filter(|s| **s == StatusCode::UNAUTHORIZED)
        .count();
    let throttled = statuses
        .iter()
        .filter(|s| **s == StatusCode::TOO_MANY_REQUESTS)
        .count();
    assert_eq!(refused + throttled, 64, "{statuses:?}");
    // Then one guess at a time, until the budget is gone.
    let mut refused = refused;
    for _ in 0..(2 * BURST) {
        match login(&app, &attacker, "guess").await.status() {
            StatusCode::UNAUTHORIZED => refused += 1,
            StatusCode::TOO_MANY_REQUESTS => break,
            other => panic!("{other}"),
        }
    }
    // The burst, plus at most what was already at the master when the budget ran out.
    assert!(refused <= BURST + IN_FLIGHT, "{refused} guesses answered");
    assert!(master.calls.mk_token() <= BURST + IN_FLIGHT);
    let before = master.calls.mk_token();
    assert_throttled(login(&app, &attacker, "again").await, false).await;
    let yaml = attacker
        .post(app.url("/login"))
        .header("accept", "application/x-yaml")
        .json(&creds("again"))
        .send()
        .await
        .unwrap();
    assert_throttled(yaml, true).await;
    assert_eq!(
        master.calls.mk_token(),
        before,
        "throttled guesses reach the master"
    );

    // A real login from another client is answered at once.
    let started = Instant::now();
    let resp = login(&app, &client_from("127.0.0.2"), "saltdev").await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(started.elapsed() < Duration::from_secs(2));
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["return"][0]["user"], "saltdev");
    // The guessing client itself waits out its window, right password or not.
    assert_eq!(
        login(&app, &attacker, "saltdev").await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
}

#[tokio::test]
async fn successful_logins_and_valid_tokens_are_never_counted() {
    let master = FakeMaster::start(USERS);
    let app = TestApp::builder().with_master(&master).spawn().await;
    let c = client_from("127.0.0.1");
    for _ in 0..(3 * BURST) {
        let resp = login(&app, &c, "saltdev").await;
        assert_eq!(resp.status(), StatusCode::OK);
        let token = resp.headers()["x-auth-token"].to_str().unwrap().to_owned();
        // A fresh token is known at once: its first use costs no get_token.
        let resp = c
            .post(app.url("/logout"))
            .header("x-auth-token", &token)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
    }
    assert_eq!(master.calls.get_token(), 0);
    // Many at once from one client wait their turn; none is refused.
    let statuses: Vec<StatusCode> = futures::stream::iter(0..(2 * BURST))
        .map(|_| {
            let (app, c) = (&app, &c);
            async move { login(app, c, "saltdev").await.status() }
        })
        .buffer_unordered(2 * BURST)
        .collect()
        .await;
    assert!(
        statuses.iter().all(|s| *s == StatusCode::OK),
        "{statuses:?}"
    );
    // Failures up to the burst still leave the client its login.
    for _ in 0..(BURST - 1) {
        assert_eq!(
            login(&app, &c, "wrong").await.status(),
            StatusCode::UNAUTHORIZED
        );
    }
    assert_eq!(login(&app, &c, "saltdev").await.status(), StatusCode::OK);
}

/// How one route takes a token (or credentials), for [`every_credential_check_is_throttled`].
#[derive(Debug, Clone, Copy)]
enum Probe {
    Login,
    Token,
    Lowstate,
    Minions,
    Logout,
    Events,
    Ws,
    Deliveries,
    Hook,
    /// `/run` with the token in the chunk: the master checks it with the command.
    RunChunkToken,
    /// `/run` with eauth credentials in the chunk.
    RunChunkEauth,
}

impl Probe {
    async fn send(self, app: &TestApp, c: &reqwest::Client) -> StatusCode {
        let t = random_token();
        let req = match self {
            Probe::Login => c.post(app.url("/login")).json(&creds(&t)),
            Probe::Token => c.post(app.url("/token")).json(&json!([creds(&t)])),
            Probe::Lowstate => c
                .post(app.url("/"))
                .header("x-auth-token", &t)
                .json(&json!([{"client": "local", "tgt": "*", "fun": "test.ping"}])),
            Probe::Minions => c.get(app.url("/minions")).header("x-auth-token", &t),
            Probe::Logout => c.post(app.url("/logout")).header("x-auth-token", &t),
            Probe::Events => c.get(app.url("/events")).header("x-auth-token", &t),
            Probe::Ws => c.get(app.url(&format!("/ws/{t}"))),
            Probe::Deliveries => c
                .get(app.url("/ui/deliveries"))
                .header("cookie", format!("session_id={t}")),
            Probe::Hook => c
                .post(app.url("/hook/guarded"))
                .header("x-auth-token", &t)
                .json(&json!({})),
            Probe::RunChunkToken => c
                .post(app.url("/run"))
                .json(&json!([{"client": "runner", "fun": "test.arg", "token": t}])),
            Probe::RunChunkEauth => c.post(app.url("/run")).json(&json!([{
                "client": "runner", "fun": "test.arg",
                "eauth": "file", "username": "saltdev", "password": t,
            }])),
        };
        req.send().await.unwrap().status()
    }
}

#[tokio::test]
async fn every_credential_check_is_throttled() {
    let master = FakeMaster::start(USERS);
    let app = TestApp::builder()
        .with_master(&master)
        .with_hooks("- path: guarded\n  auth: token\n", &[])
        .with_config(|c| c.master.netapi_enable_clients = vec!["local".into(), "runner".into()])
        .spawn()
        .await;
    let probes = [
        Probe::Login,
        Probe::Token,
        Probe::Lowstate,
        Probe::Minions,
        Probe::Logout,
        Probe::Events,
        Probe::Ws,
        Probe::Deliveries,
        Probe::Hook,
        Probe::RunChunkToken,
        Probe::RunChunkEauth,
    ];
    for (i, probe) in probes.into_iter().enumerate() {
        // Each route from its own client, so each starts with a full budget.
        let c = client_from(&format!("127.0.0.{}", i + 2));
        let calls = || {
            master.calls.mk_token()
                + master.calls.get_token()
                + master.calls.other.load(std::sync::atomic::Ordering::SeqCst)
        };
        let before = calls();
        let mut statuses = Vec::new();
        for _ in 0..(BURST + 5) {
            statuses.push(probe.send(&app, &c).await);
        }
        let mut want = vec![StatusCode::UNAUTHORIZED; BURST];
        want.extend([StatusCode::TOO_MANY_REQUESTS; 5]);
        assert_eq!(statuses, want, "{probe:?}");
        assert_eq!(calls() - before, BURST, "{probe:?}: requests at the master");
    }
}

#[tokio::test]
async fn an_unknown_token_is_remembered_briefly_and_hashed_lookups_stay_short() {
    let master = FakeMaster::start(USERS);
    let app = TestApp::builder().with_master(&master).spawn().await;
    let c = client_from("127.0.0.1");
    let token = random_token();
    let logout = || {
        c.post(app.url("/logout"))
            .header("x-auth-token", &token)
            .send()
    };
    for _ in 0..(3 * BURST) {
        assert_eq!(logout().await.unwrap().status(), StatusCode::UNAUTHORIZED);
    }
    // One question to the master; repeats are answered from the cache and not counted.
    assert_eq!(master.calls.get_token(), 1);
    // Issued later (by another master client): known within a few seconds.
    master.issue(&token);
    assert_eq!(logout().await.unwrap().status(), StatusCode::UNAUTHORIZED);
    tokio::time::sleep(saltgate::security::throttle::NEGATIVE_TTL + Duration::from_millis(500))
        .await;
    assert_eq!(logout().await.unwrap().status(), StatusCode::OK);
    assert_eq!(master.calls.get_token(), 2);
}

#[tokio::test]
async fn checks_sent_to_the_master_at_once_are_capped() {
    // A slow eauth backend; many clients guessing at once (each its own address).
    let master = FakeMaster::with_delay(USERS, Duration::from_millis(200));
    let app = TestApp::builder()
        .with_master(&master)
        .with_config(|c| c.saltgate.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()])
        .spawn()
        .await;
    let c = reqwest::Client::new();
    let statuses: Vec<StatusCode> = futures::stream::iter(0..16)
        .map(|i| {
            let req = c
                .post(app.url("/login"))
                .header("x-forwarded-for", format!("203.0.113.{i}"))
                .json(&creds("guess"));
            async move { req.send().await.unwrap().status() }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    assert!(
        statuses.iter().all(|s| *s == StatusCode::UNAUTHORIZED),
        "{statuses:?}"
    );
    assert_eq!(master.calls.mk_token(), 16);
    assert!(
        master.calls.max_outstanding() <= IN_FLIGHT,
        "{} checks at the master at once",
        master.calls.max_outstanding()
    );
}

#[tokio::test]
async fn a_queue_that_never_drains_is_refused_with_503() {
    let master = FakeMaster::with_delay(USERS, Duration::from_secs(3));
    let app = TestApp::builder()
        .with_master(&master)
        .with_config(|c| {
            c.saltgate.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
            c.saltgate.auth_max_in_flight = 1;
        })
        .spawn()
        .await;
    let c = reqwest::Client::new();
    let started = Instant::now();
    let answers: Vec<(StatusCode, Value)> = futures::stream::iter(0..3)
        .map(|i| {
            let req = c
                .post(app.url("/login"))
                .header("x-forwarded-for", format!("203.0.113.{i}"))
                .json(&creds("guess"));
            async move {
                let resp = req.send().await.unwrap();
                (resp.status(), resp.json().await.unwrap())
            }
        })
        .buffer_unordered(3)
        .collect()
        .await;
    let busy: Vec<&Value> = answers
        .iter()
        .filter(|(s, _)| *s == StatusCode::SERVICE_UNAVAILABLE)
        .map(|(_, v)| v)
        .collect();
    // One is answered at 3 s, one at 6 s; the third has waited 5 s for a slot by then.
    assert_eq!(busy.len(), 1, "{answers:?}");
    assert_eq!(busy[0]["code"], "salt_unavailable");
    assert!(started.elapsed() < Duration::from_secs(15));
}

async fn hook_status(app: &TestApp, c: &reqwest::Client, forwarded: &str) -> StatusCode {
    c.post(app.url("/hook/busy"))
        .header("x-forwarded-for", forwarded)
        .json(&json!({}))
        .send()
        .await
        .unwrap()
        .status()
}

#[tokio::test]
async fn one_ipv6_slash_64_behind_a_proxy_is_one_client() {
    let app = TestApp::builder()
        .with_hooks(
            "- path: busy\n  auth: none\n  rate: {per_second: 1, burst: 2}\n",
            &[],
        )
        .with_config(|c| c.saltgate.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()])
        .spawn()
        .await;
    let c = reqwest::Client::new();
    let mut ok = 0;
    for i in 1..=20 {
        if hook_status(&app, &c, &format!("2001:db8:1:2::{i:x}")).await == StatusCode::OK {
            ok += 1;
        }
    }
    assert_eq!(ok, 2, "addresses of one /64 each got a burst");
    assert_eq!(
        hook_status(&app, &c, "2001:db8:1:3::1").await,
        StatusCode::OK
    );
    // IPv4-mapped is the IPv4 client.
    assert_eq!(hook_status(&app, &c, "192.0.2.9").await, StatusCode::OK);
    assert_eq!(hook_status(&app, &c, "192.0.2.9").await, StatusCode::OK);
    assert_eq!(
        hook_status(&app, &c, "::ffff:192.0.2.9").await,
        StatusCode::TOO_MANY_REQUESTS
    );
}

#[tokio::test]
async fn a_many_address_flood_through_a_proxy_does_not_starve_a_legitimate_sender() {
    // A small key table, so the flood overflows it many times over.
    let app = TestApp::builder()
        .with_hooks(
            "- path: busy\n  auth: none\n  rate: {per_second: 1, burst: 3}\n",
            &[],
        )
        .with_config(|c| {
            c.saltgate.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
            c.saltgate.rate_limit_max_keys = 64;
        })
        .spawn()
        .await;
    let c = reqwest::Client::new();
    let legit = "198.51.100.7";
    for round in 0..3u32 {
        // 400 fresh addresses, several requests each, from many connections.
        let flood: Vec<StatusCode> = futures::stream::iter(0..1200u32)
            .map(|i| {
                let addr = std::net::Ipv4Addr::from(0x0a00_0000 + round * 1000 + i / 3);
                let c = &c;
                let app = &app;
                async move { hook_status(app, c, &addr.to_string()).await }
            })
            .buffer_unordered(16)
            .collect()
            .await;
        assert!(flood.iter().all(|s| *s == StatusCode::OK), "{flood:?}");
        assert_eq!(
            hook_status(&app, &c, legit).await,
            StatusCode::OK,
            "round {round}: the legitimate sender was starved"
        );
    }
    // Each flooding address is still limited on its own: no free pass.
    let last = "10.0.9.9";
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(hook_status(&app, &c, last).await);
    }
    assert_eq!(statuses[3], StatusCode::TOO_MANY_REQUESTS, "{statuses:?}");
}
