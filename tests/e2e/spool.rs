//! The spool against a real master: hooks accepted while the master is down are answered 202
//! `queued` and reach the bus (and the Reactor) once each, in arrival order, when it is back; a small spool
//! refuses with 503 + `Retry-After` and drains; a sender's retry after a saltgate restart is a
//! duplicate. The heavy rounds (SIGKILL during floods, a master restart mid-flood) are in
//! `chaos` (3007.17 only).
//!
//! What reached the bus is counted by an independent subscriber on the master's publisher
//! ([`Watcher`]), by the `i` in each hook's body, never by saltgate's own counters.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use saltgate::salt::Event;
use saltgate::salt::bus::ipc::Endpoint;
use saltgate::salt::wire::framing::{Decoded, decode_frame, frame_body};
use saltgate::salt::wire::payload::to_json;
use sha2::Sha256;
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::gate::{Gate, blocking};
use crate::support::salt::{self, SaltSandbox};

/// The GitHub secret of the spool tests' hook rule.
pub(crate) const SECRET: &str = "spool-e2e-secret";

/// The hook rule every spool test uses: GitHub-signed hooks under `spool/`.
pub(crate) const RULE: &str =
    "- path: spool\n  auth: none\n  verify: {github: {secret_env: SPOOL_SECRET}}\n";

/// The environment [`RULE`] reads its secret from.
pub(crate) const ENV: [(&str, &str); 1] = [("SPOOL_SECRET", SECRET)];

/// A Reactor SLS acting on the master itself (a wheel function, no minion in the way): one
/// file per hook under `file_roots`, `spool-out/<i>.txt`.
const OUTAGE_SLS: &str = r#"spool_outage:
  wheel.file_roots.write:
    - args:
      - data: "{{ data['post']['i'] }}"
      - path: "spool-out/{{ data['post']['i'] }}.txt"
"#;

/// GitHub's headers for `body`.
pub(crate) fn github_headers(body: &[u8], delivery: &str) -> Vec<(&'static str, String)> {
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(body);
    vec![
        ("content-type", "application/json".into()),
        ("x-github-event", "push".into()),
        ("x-github-delivery", delivery.to_owned()),
        (
            "x-hub-signature-256",
            format!("sha256={}", hex::encode(mac.finalize().into_bytes())),
        ),
    ]
}

/// A signed hook `i` of run `run`, with `pad` bytes of padding.
pub(crate) fn signed_hook(
    client: &reqwest::Client,
    url: &str,
    run: u64,
    i: u64,
    pad: usize,
) -> reqwest::RequestBuilder {
    let body = format!(
        r#"{{"run": {run}, "i": {i}, "pad": "{}"}}"#,
        "p".repeat(pad)
    );
    let mut req = client.post(url);
    for (k, v) in github_headers(body.as_bytes(), &format!("{run}-{i}")) {
        req = req.header(k, v);
    }
    req.body(body)
}

/// An independent subscriber on the master's publisher: counts, by `post.i`, the hook events
/// of one run (`post.run`) with a given tag, and the Reactor requests
/// (`salt/reactors/manage/is_leader`). It reconnects every 10 ms while the master is down, so
/// that after a restart it is subscribed long before saltgate (whose backoff starts at 100 ms)
/// and the Reactor (an engine started after the publisher) are.
pub(crate) struct Watcher {
    seen: Arc<Mutex<HashMap<u64, u32>>>,
    /// Each hook's delivery ids (`_saltgate.id`) over all its copies, and the first copies in
    /// the order the bus carried them, as `(i, seq)`.
    ids: Arc<Mutex<IdLog>>,
    asks: Arc<AtomicU64>,
    connects: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Each hook's delivery ids `(spool, seq)`, and its first copies in bus order as `(i, seq)`.
type IdLog = (HashMap<u64, HashSet<(u64, u64)>>, Vec<(u64, u64)>);

trait Io: AsyncRead + Unpin + Send {}
impl<T: AsyncRead + Unpin + Send> Io for T {}

async fn connect(endpoint: &Endpoint) -> std::io::Result<Box<dyn Io>> {
    Ok(match endpoint {
        Endpoint::Unix(p) => Box::new(tokio::net::UnixStream::connect(p).await?),
        Endpoint::Tcp(a) => Box::new(tokio::net::TcpStream::connect(a).await?),
    })
}

impl Watcher {
    pub(crate) fn start(config: &saltgate::config::Config, tag: &str, run: u64) -> Watcher {
        let endpoint = config.master.bus_endpoints().0;
        let tag = tag.to_owned();
        let seen = Arc::new(Mutex::new(HashMap::new()));
        let ids: Arc<Mutex<IdLog>> = Arc::new(Mutex::new((HashMap::new(), Vec::new())));
        let asks = Arc::new(AtomicU64::new(0));
        let connects = Arc::new(AtomicU64::new(0));
        let (s, a, c, d) = (seen.clone(), asks.clone(), connects.clone(), ids.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok(mut conn) = connect(&endpoint).await else {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                c.fetch_add(1, Ordering::SeqCst);
                let mut buf = Vec::new();
                let mut chunk = vec![0u8; 64 << 10];
                loop {
                    match conn.read(&mut chunk).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                    let mut start = 0;
                    while let Ok(Decoded::Frame {
                        consumed,
                        start: body,
                        ..
                    }) = decode_frame(&buf[start..], 64 << 20)
                    {
                        let frame = &buf[start + body..start + consumed];
                        if let Ok(ev) = frame_body(frame).and_then(|b| Event::unpack(&b)) {
                            if ev.tag == "salt/reactors/manage/is_leader" {
                                a.fetch_add(1, Ordering::SeqCst);
                            } else if ev.tag == tag {
                                let post = to_json(ev.get("post").unwrap_or(&rmpv::Value::Nil));
                                if post["run"] == run {
                                    if let Some(i) = post["i"].as_u64() {
                                        let n = {
                                            let mut seen = s.lock().unwrap();
                                            let n = seen.entry(i).or_insert(0);
                                            *n += 1;
                                            *n
                                        };
                                        let id = saltgate::spool::id::event_id(&ev)
                                            .unwrap_or((u64::MAX, u64::MAX));
                                        let mut d = d.lock().unwrap();
                                        d.0.entry(i).or_default().insert(id);
                                        if n == 1 {
                                            d.1.push((i, id.1));
                                        }
                                    }
                                }
                            }
                        }
                        start += consumed;
                    }
                    buf.drain(..start);
                }
            }
        });
        Watcher {
            seen,
            ids,
            asks,
            connects,
            task,
        }
    }

    /// Waits for the first connection.
    pub(crate) async fn connected(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.connects.load(Ordering::SeqCst) == 0 {
            assert!(Instant::now() < deadline, "the watcher never connected");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// How often each `i` was seen.
    pub(crate) fn seen(&self) -> HashMap<u64, u32> {
        self.seen.lock().unwrap().clone()
    }

    /// Hooks whose copies on the bus did not all carry one and the same delivery id (a copy
    /// without one counts as another id): a repeat must be recognisable by its id.
    pub(crate) fn unmarked_repeats(&self) -> Vec<u64> {
        let d = self.ids.lock().unwrap();
        let mut bad: Vec<u64> =
            d.0.iter()
                .filter(|(_, ids)| ids.len() != 1 || ids.contains(&(u64::MAX, u64::MAX)))
                .map(|(i, _)| *i)
                .collect();
        bad.sort_unstable();
        bad
    }

    /// The hooks' first copies in the order the bus carried them, as `(i, spool sequence)`.
    pub(crate) fn bus_order(&self) -> Vec<(u64, u64)> {
        self.ids.lock().unwrap().1.clone()
    }

    /// Reactor requests seen, and connections made.
    pub(crate) fn asks_and_connects(&self) -> (u64, u64) {
        (
            self.asks.load(Ordering::SeqCst),
            self.connects.load(Ordering::SeqCst),
        )
    }

    /// Waits until every one of `want` was seen; panics with the missing ones after `timeout`.
    pub(crate) async fn wait_all(&self, want: &HashSet<u64>, timeout: Duration, what: &str) {
        let deadline = Instant::now() + timeout;
        loop {
            let seen = self.seen();
            let missing: Vec<u64> = want
                .iter()
                .filter(|i| !seen.contains_key(i))
                .copied()
                .collect();
            if missing.is_empty() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: {} of {} hooks answered 2xx never reached the bus, e.g. {:?}",
                missing.len(),
                want.len(),
                &missing[..missing.len().min(8)]
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Repeats among `seen` for the ids in `want`: (ids seen more than once, extra copies).
pub(crate) fn repeats(seen: &HashMap<u64, u32>, want: &HashSet<u64>) -> (usize, u64) {
    let extra: Vec<u32> = want
        .iter()
        .filter_map(|i| seen.get(i).copied())
        .filter(|&n| n > 1)
        .collect();
    (extra.len(), extra.iter().map(|&n| u64::from(n - 1)).sum())
}

/// Polls `gate`'s spool until `what` holds (30 s at most).
pub(crate) async fn until_spool(
    gate: &Gate,
    why: &str,
    what: impl Fn(&saltgate::spool::SpoolStatus) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = gate.state.spool.as_ref().expect("spool on").status();
        if what(&status) {
            return;
        }
        assert!(Instant::now() < deadline, "{why}: {status:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The real `saltgate` binary on the sandbox's master config, with [`RULE`], serving on its
/// own port.
pub(crate) struct Binary {
    child: Option<std::process::Child>,
    pub base: String,
    pub config: PathBuf,
}

impl Drop for Binary {
    fn drop(&mut self) {
        self.kill();
    }
}

impl Binary {
    /// Writes the config into `dir` (port, spool under `dir/spool`); does not start anything.
    pub(crate) fn configure(sandbox: &SaltSandbox, dir: &Path) -> Binary {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut master = std::fs::read_to_string(sandbox.master_config_file()).unwrap();
        master.push_str(&format!(
            "\nrest_cherrypy:\n  host: 127.0.0.1\n  port: {port}\n  disable_ssl: true\n  \
             webhook_disable_auth: true\nsaltgate:\n  bus: master\n  spool:\n    dir: {}\n  \
             hooks:\n{}",
            dir.join("spool").display(),
            indent(RULE, 4)
        ));
        let config = dir.join("master");
        std::fs::write(&config, master).unwrap();
        Binary {
            child: None,
            base: format!("http://127.0.0.1:{port}"),
            config,
        }
    }

    /// Starts it (output appended to `<dir>/saltgate.log`) and waits until it answers.
    pub(crate) async fn start(&mut self) {
        let log = self.config.with_file_name("saltgate.log");
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_saltgate"))
            .args(["serve", "--config"])
            .arg(&self.config)
            .env("SPOOL_SECRET", SECRET)
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let c = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if c.get(format!("{}/", self.base))
                .send()
                .await
                .is_ok_and(|r| r.status() == 200)
            {
                return;
            }
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().unwrap()) {
                panic!(
                    "saltgate exited with {status}:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            assert!(Instant::now() < deadline, "saltgate did not start");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Its config, as saltgate loads it.
    pub(crate) fn load(&self) -> saltgate::config::Config {
        let env = ENV
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        saltgate::config::Config::load(&self.config, &env).unwrap()
    }

    /// SIGKILL, and wait for it.
    pub(crate) fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[tokio::test]
async fn a_master_outage_queues_hooks_and_each_reaches_the_bus_and_the_reactor_once() {
    const N: u64 = 500;
    let sandbox = Arc::new(
        blocking(|| {
            SaltSandbox::builder()
                .with_reactor(
                    "salt/netapi/hook/spool/outage",
                    &["salt://spool/outage.sls"],
                )
                .with_file("spool/outage.sls", OUTAGE_SLS)
                .start()
        })
        .await,
    );
    let gate = Gate::start(&sandbox, RULE, &ENV, |_| {}).await;
    // A second saltgate whose spool holds 256 KiB: it fills during the outage.
    let small = Gate::start(&sandbox, RULE, &ENV, |c| {
        if let Some(s) = &mut c.spool {
            s.max_bytes = 256 << 10;
        }
    })
    .await;
    let run = (u64::from(std::process::id()) << 20) | 1;
    let watcher = Watcher::start(&gate.state.config, "salt/netapi/hook/spool/outage", run);
    let small_watcher = Watcher::start(&gate.state.config, "salt/netapi/hook/spool/small", run);
    watcher.connected().await;
    small_watcher.connected().await;

    let s = Arc::clone(&sandbox);
    blocking(move || s.stop_master()).await;
    until_spool(&gate, "the spool never saw the master go", |s| {
        s.link == "down"
    })
    .await;
    until_spool(&small, "the small spool never saw the master go", |s| {
        s.link == "down"
    })
    .await;

    // 500 signed hooks, the first 20 one after the other (their order is the client's),
    // then 16 at a time: every one answered 202 `queued`.
    const SEQUENTIAL: u64 = 20;
    let client = reqwest::Client::new();
    for i in 0..SEQUENTIAL {
        let resp = signed_hook(&client, &gate.url("/hook/spool/outage"), run, i, 64)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 202, "hook {i}");
    }
    let next = Arc::new(AtomicU64::new(SEQUENTIAL));
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let (client, url, next) = (client.clone(), gate.url("/hook/spool/outage"), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut bad = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= N {
                    return bad;
                }
                let resp = signed_hook(&client, &url, run, i, 64).send().await.unwrap();
                let status = resp.status();
                let body: serde_json::Value = resp.json().await.unwrap();
                if status != 202 || body != serde_json::json!({"success": true, "queued": true}) {
                    bad.push(format!("{i}: {status} {body}"));
                }
            }
        }));
    }
    for t in tasks {
        let bad = t.await.unwrap();
        assert!(bad.is_empty(), "not answered 202 queued: {bad:?}");
    }
    let status = gate.state.spool.as_ref().unwrap().status();
    assert_eq!(status.pending, N, "{status:?}");

    // The small spool fills: 503 spool_full with Retry-After, nothing accepted is dropped.
    let mut small_accepted = HashSet::new();
    let refusal = loop {
        let i = small_accepted.len() as u64;
        assert!(i < 1000, "the small spool never filled");
        let resp = signed_hook(&client, &small.url("/hook/spool/small"), run, i, 8 << 10)
            .send()
            .await
            .unwrap();
        match resp.status().as_u16() {
            202 => {
                small_accepted.insert(i);
            }
            503 => break resp,
            other => panic!("small spool answered {other}"),
        }
    };
    let retry: u64 = refusal.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "Retry-After {retry}");
    let body: serde_json::Value = refusal.json().await.unwrap();
    assert_eq!(body["code"], "spool_full", "{body}");
    assert!(small_accepted.len() >= 5, "{}", small_accepted.len());

    // What in-process subscribers (and so /events clients) see of the Reactor requests.
    let mut sub = gate.state.bus.subscribe();
    let s = Arc::clone(&sandbox);
    blocking(move || s.start_master()).await;
    let all: HashSet<u64> = (0..N).collect();
    watcher
        .wait_all(&all, Duration::from_secs(60), "after the outage")
        .await;
    small_watcher
        .wait_all(&small_accepted, Duration::from_secs(60), "the small spool")
        .await;
    // The watcher was subscribed again before saltgate delivered: it saw the Reactor asked.
    let (asks, connects) = watcher.asks_and_connects();
    assert!(
        connects >= 2 && asks >= 1,
        "asks {asks}, connects {connects}"
    );
    until_spool(&gate, "the spool never drained", |s| s.pending == 0).await;
    until_spool(&small, "the small spool never drained", |s| s.pending == 0).await;
    // Nothing repeated: each hook on the bus exactly once.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (repeated, extra) = repeats(&watcher.seen(), &all);
    let (small_repeated, _) = repeats(&small_watcher.seen(), &small_accepted);
    let small_status = small.state.spool.as_ref().unwrap().status();
    assert_eq!(
        (repeated, extra, small_repeated),
        (0, 0, 0),
        "{small_status:?}"
    );
    // In arrival order: the bus carried them by spool sequence, the sequential ones first and
    // in the order they were sent; each with one delivery id.
    let order = watcher.bus_order();
    assert_eq!(order.len() as u64, N);
    let first: Vec<u64> = order
        .iter()
        .take(SEQUENTIAL as usize)
        .map(|o| o.0)
        .collect();
    assert_eq!(first, (0..SEQUENTIAL).collect::<Vec<_>>(), "bus order");
    let out_of_order: Vec<_> = order.windows(2).filter(|w| w[0].1 >= w[1].1).collect();
    assert!(
        out_of_order.is_empty(),
        "out of spool order: {out_of_order:?}"
    );
    assert_eq!(watcher.unmarked_repeats(), Vec::<u64>::new());
    let status = gate.state.spool.as_ref().unwrap().status();
    assert!(status.reactor_answers >= 1, "{status:?}");
    assert_eq!((status.confirmed, status.repeats), (N, 0), "{status:?}");

    // The requests carry the master's key on the bus; subscribers get it scrubbed.
    let key = std::fs::read_to_string(sandbox.root().join("cache/master/.root_key")).unwrap();
    let ask = sub
        .wait_for(Duration::from_secs(5), |e| {
            e.tag == "salt/reactors/manage/is_leader"
        })
        .await
        .unwrap();
    let text = to_json(&ask.data).to_string();
    assert!(
        !text.contains(key.trim()) && text.contains("redacted by saltgate"),
        "{text}"
    );
    // And the Reactor acted on every one.
    // The Reactor runs its jobs one after the other (about 0.3 s each on two busy cores): wait
    // while it makes progress, and fail once it has written nothing new for 30 s.
    let out = sandbox.root().join("srv/salt/spool-out");
    let mut last = (0, Instant::now());
    let count = loop {
        let count = std::fs::read_dir(&out).map(|d| d.count()).unwrap_or(0);
        if count > last.0 {
            last = (count, Instant::now());
        }
        if count as u64 >= N || last.1.elapsed() > Duration::from_secs(30) {
            break count;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(
        count as u64,
        N,
        "Reactor outputs\n{}",
        sandbox.master_log_tail(30)
    );
    eprintln!(
        "master outage: {N} hooks answered 202 queued, all {N} on the bus once and acted on; \
         small spool: {} accepted, then 503 Retry-After {retry}, drained",
        small_accepted.len()
    );
}

/// The real binary on the shared sandbox with its spool in a temp dir (kept alive by the first
/// value), and a watcher of `spool/redelivery` hooks of run number `n`, connected.
async fn redelivery_binary(n: u64) -> (tempfile::TempDir, Binary, Watcher, u64) {
    let sandbox = blocking(salt::shared).await;
    let dir = tempfile::tempdir().unwrap();
    let mut binary = Binary::configure(sandbox, dir.path());
    binary.start().await;
    let config = binary.load();
    let run = (u64::from(std::process::id()) << 20) | n;
    let watcher = Watcher::start(&config, "salt/netapi/hook/spool/redelivery", run);
    watcher.connected().await;
    (dir, binary, watcher, run)
}

#[tokio::test]
async fn a_github_redelivery_after_a_saltgate_restart_is_a_duplicate() {
    let (_dir, mut binary, watcher, run) = redelivery_binary(2).await;
    let client = reqwest::Client::new();
    let url = format!("{}/hook/spool/redelivery", binary.base);
    let first = signed_hook(&client, &url, run, 7, 0).send().await.unwrap();
    assert!(first.status().is_success(), "{}", first.status());
    let body: serde_json::Value = first.json().await.unwrap();
    assert_eq!(body["success"], true, "{body}");
    assert!(body.get("duplicate").is_none(), "{body}");
    watcher
        .wait_all(
            &HashSet::from([7]),
            Duration::from_secs(30),
            "first delivery",
        )
        .await;

    // A confirmation is made durable within a second (`SYNC_EVERY`); a kill before that
    // would deliver the hook once more at the restart (at-least-once), which is not what this
    // test is about.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    binary.kill();
    binary.start().await;
    // GitHub's "Redeliver": the same body, signature and X-GitHub-Delivery.
    let again = signed_hook(&client, &url, run, 7, 0).send().await.unwrap();
    assert_eq!(again.status(), 200);
    let body: serde_json::Value = again.json().await.unwrap();
    assert_eq!(
        body,
        serde_json::json!({"success": true, "duplicate": true})
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(watcher.seen().get(&7), Some(&1), "fired again");
}

/// The delivery log's Redeliver (`POST <ui>/log/<seq>/redeliver`, with a real Salt token from
/// the sandbox's eauth) puts a delivered hook on the real master's bus again, with the same
/// delivery id; the log shows the entry with its attempts.
#[tokio::test]
async fn redeliver_from_the_delivery_log_reaches_the_real_bus_again() {
    let (_dir, binary, watcher, run) = redelivery_binary(3).await;
    let client = reqwest::Client::new();
    let url = format!("{}/hook/spool/redelivery", binary.base);
    let first = signed_hook(&client, &url, run, 9, 0).send().await.unwrap();
    assert!(first.status().is_success(), "{}", first.status());
    let want = HashSet::from([9]);
    watcher
        .wait_all(&want, Duration::from_secs(30), "first delivery")
        .await;
    let login: serde_json::Value = client
        .post(format!("{}/login", binary.base))
        .json(&serde_json::json!({"username": "saltdev", "password": "saltdev", "eauth": "file"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = login["return"][0]["token"].as_str().unwrap().to_owned();
    // The entry is delivered once its echo is seen.
    let deadline = Instant::now() + Duration::from_secs(30);
    let seq = loop {
        let log: serde_json::Value = client
            .get(format!(
                "{}/ui/log?path=spool/redelivery&state=delivered",
                binary.base
            ))
            .header("x-auth-token", &token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if let Some(seq) = log["deliveries"][0]["seq"].as_u64() {
            break seq;
        }
        assert!(Instant::now() < deadline, "never delivered: {log}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let unauthenticated = client
        .post(format!("{}/ui/log/{seq}/redeliver", binary.base))
        .send()
        .await
        .unwrap();
    assert_eq!(unauthenticated.status(), 401);
    let resp = client
        .post(format!("{}/ui/log/{seq}/redeliver", binary.base))
        .header("x-auth-token", &token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let deadline = Instant::now() + Duration::from_secs(30);
    while watcher.seen().get(&9).copied().unwrap_or(0) < 2 {
        assert!(
            Instant::now() < deadline,
            "the redelivery never reached the bus"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        watcher.unmarked_repeats().is_empty(),
        "the redelivered copy carries another delivery id"
    );
}

/// `text` with every line indented by `n` spaces.
pub(crate) fn indent(text: &str, n: usize) -> String {
    text.lines()
        .map(|l| format!("{}{l}\n", " ".repeat(n)))
        .collect()
}
