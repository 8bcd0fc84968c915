//! Login and token guessing against a real master (eauth `file`): a flood of wrong passwords or
//! random tokens from one address is refused with 429 after a small burst, without asking the
//! master, while real logins from another address stay quick.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use futures::StreamExt;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::gate::{Gate, blocking};
use crate::support::salt;

/// `saltgate.auth_failure_burst` and `auth_max_in_flight` defaults.
const BURST: usize = 10;
const IN_FLIGHT: usize = 2;

fn client_from(addr: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(addr.parse::<IpAddr>().unwrap())
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

async fn login(gate: &Gate, c: &reqwest::Client, user: &str, password: &str) -> reqwest::Response {
    c.post(gate.url("/login"))
        .json(&json!({"username": user, "password": password, "eauth": "file"}))
        .send()
        .await
        .unwrap()
}

fn count(statuses: &[StatusCode], want: StatusCode) -> usize {
    statuses.iter().filter(|s| **s == want).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guessing_is_throttled_per_address_and_real_logins_stay_quick() {
    let sandbox = blocking(salt::shared).await;
    let gate = Gate::start(sandbox, "", &[], |_| {}).await;

    // Wrong passwords from one address, 16 at a time.
    let attacker = client_from("127.0.0.1");
    let statuses: Vec<StatusCode> = futures::stream::iter(0..64)
        .map(|i| {
            let (gate, attacker) = (&gate, &attacker);
            async move {
                login(gate, attacker, "saltdev", &format!("guess{i}"))
                    .await
                    .status()
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    let refused = count(&statuses, StatusCode::UNAUTHORIZED);
    let throttled = count(&statuses, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(refused + throttled, 64, "{statuses:?}");
    // Then one guess at a time (the master answers each failure after about 1 s), until the
    // budget is gone.
    let mut refused = refused;
    for _ in 0..(2 * BURST) {
        match login(&gate, &attacker, "saltdev", "guess").await.status() {
            StatusCode::UNAUTHORIZED => refused += 1,
            StatusCode::TOO_MANY_REQUESTS => break,
            other => panic!("{other}"),
        }
    }
    // Only the burst (and what was in flight when it ran out) reached the master's eauth.
    assert!(
        refused <= BURST + IN_FLIGHT,
        "{refused} guesses reached the master"
    );
    let resp = login(&gate, &attacker, "saltdev", "again").await;
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(resp.headers().contains_key("retry-after"));
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["code"], "rate_limited");

    // Real logins from another address are answered at once, and work.
    let other = client_from("127.0.0.2");
    for user in ["saltdev", "limited"] {
        let started = Instant::now();
        let resp = login(&gate, &other, user, user).await;
        assert_eq!(resp.status(), StatusCode::OK, "{user}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{user}: login took {:?}",
            started.elapsed()
        );
    }
    let resp = login(&gate, &other, "saltdev", "saltdev").await;
    let token = resp.headers()["x-auth-token"].to_str().unwrap().to_owned();

    // Random tokens from a third address: the burst is asked about, the rest never are.
    let guesser = client_from("127.0.0.3");
    let mut statuses = Vec::new();
    let mut throttled_time = Duration::ZERO;
    for _ in 0..(BURST + 20) {
        let t = format!("{:064x}", rand::random::<u128>());
        let started = Instant::now();
        let resp = guesser
            .post(gate.url("/"))
            .header("x-auth-token", t)
            .json(&json!([{"client": "local", "tgt": "*", "fun": "test.ping"}]))
            .send()
            .await
            .unwrap();
        if resp.status() == StatusCode::TOO_MANY_REQUESTS {
            throttled_time += started.elapsed();
        }
        statuses.push(resp.status());
    }
    let mut want = vec![StatusCode::UNAUTHORIZED; BURST];
    want.extend([StatusCode::TOO_MANY_REQUESTS; 20]);
    assert_eq!(statuses, want);
    assert!(
        throttled_time < Duration::from_secs(5),
        "{throttled_time:?}"
    );

    // The real token still works, from its own address.
    let resp = other
        .post(gate.url("/"))
        .header("x-auth-token", &token)
        .json(&json!([{"client": "local", "tgt": sandbox.minion_id(), "fun": "test.ping"}]))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["return"][0][sandbox.minion_id()], true, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_login_during_a_wrong_password_flood_stays_quick() {
    let sandbox = blocking(salt::shared).await;
    let gate = Gate::start(sandbox, "", &[], |_| {}).await;
    let timed_login = |from: &'static str| {
        let gate = &gate;
        async move {
            let started = Instant::now();
            let resp = login(gate, &client_from(from), "saltdev", "saltdev").await;
            assert_eq!(resp.status(), StatusCode::OK);
            started.elapsed()
        }
    };
    let quiet = timed_login("127.0.0.2").await;

    // 16 connections of wrong passwords from one address, for the whole measurement.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let url = gate.url("/login");
    let flood: Vec<_> = (0..16)
        .map(|_| {
            let (stop, url) = (stop.clone(), url.clone());
            tokio::spawn(async move {
                let c = client_from("127.0.0.4");
                let mut answered = 0usize;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let resp = c
                        .post(&url)
                        .json(&json!({"username": "saltdev", "password": "guess", "eauth": "file"}))
                        .send()
                        .await
                        .unwrap();
                    if resp.status() == StatusCode::UNAUTHORIZED {
                        answered += 1;
                    } else {
                        assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
                answered
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut during = Vec::new();
    for from in ["127.0.0.5", "127.0.0.6", "127.0.0.7"] {
        during.push(timed_login(from).await);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut answered = 0;
    for f in flood {
        answered += f.await.unwrap();
    }
    eprintln!("login alone {quiet:?}; during the flood {during:?}; guesses answered {answered}");
    for d in &during {
        assert!(
            *d < Duration::from_secs(2),
            "login during the flood took {d:?}"
        );
    }
    assert!(
        answered <= BURST + IN_FLIGHT,
        "{answered} guesses reached the master"
    );
}
