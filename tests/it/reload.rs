//! Reload under load (issue 16): the real `saltgate` binary is sent SIGHUP while it works.
//!
//! - A flood of GitHub-signed hooks runs from 256 loopback addresses while the rule's secret is
//!   rotated and its quota raised. Every request is accounted for: it succeeds, or it is a 401
//!   that the rule set in force at that moment explains (the retired secret once the new set is
//!   in force, the new secret before). The switch is one point in time: no request that saw the
//!   new set finished before one that saw the old set started. No request fails otherwise; the
//!   `/events` stream held open through both reloads delivers every accepted hook; the new quota
//!   is in force; a bad config is refused and the running one keeps serving the flood. Once the
//!   flood is over a lowered quota is put in force the same way.
//! - A TLS listener's certificate is replaced in place: a keep-alive connection made on the old
//!   certificate keeps working, new handshakes present the new one (compared by DER), and a
//!   broken pair is refused while the current certificate keeps being served.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use saltgate::security::secret::Secret;
use tokio::sync::mpsc;

use crate::notify::Notified;

const OLD: &[u8] = b"old-s3cret";
const NEW: &[u8] = b"new-s3cret";
const SENDERS: u8 = 8;
const ADDRESSES_PER_SENDER: u8 = 32;
/// Bursts of the quota before the reload, after it, and in the refused config; one request per
/// second refills, so a probe's count is the burst plus at most its duration in seconds.
const BURST_BEFORE: u32 = 50;
const BURST_AFTER: u32 = 100;
const BURST_REFUSED: u32 = 10;
/// The quota's burst after a last reload, once the flood is over.
const BURST_LOWERED: u32 = 5;
/// The shortest time between two requests of one flood sender.
const PACE: Duration = Duration::from_millis(2);

/// Which secret signed a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Signed {
    Old,
    New,
}

/// One flood request as the sender saw it.
#[derive(Debug)]
struct Sent {
    delivery: String,
    signed: Signed,
    start: Instant,
    end: Instant,
    /// The status, or the transport error.
    outcome: Result<u16, String>,
    /// The error code of a refusal (`bad_signature`, ...).
    code: Option<String>,
}

impl Sent {
    /// Which rule set answered: `Some(true)` the new one (the new secret passed or the old one
    /// was refused), `Some(false)` the old one, `None` for anything but 200 and 401.
    fn saw_new(&self) -> Option<bool> {
        match (self.outcome.as_ref().ok()?, self.signed) {
            (200, Signed::New) | (401, Signed::Old) => Some(true),
            (200, Signed::Old) | (401, Signed::New) => Some(false),
            _ => None,
        }
    }
}

fn master(dir: &Path, port: u16, secret_file: &Path, per_second: u32, burst: u32) -> String {
    format!(
        "sock_dir: {sock}\ncachedir: {cache}\nrest_cherrypy:\n  host: 127.0.0.1\n  port: {port}\n  \
         disable_ssl: true\n  stats_disable_auth: true\nsaltgate:\n  bus: builtin\n  \
         streams_disable_auth: true\n  hooks:\n    - path: deploy\n      auth: none\n      \
         verify: {{github: {{secret_file: {secret}}}}}\n      \
         rate: {{per_second: {per_second}, burst: {burst}}}\n",
        sock = dir.join("sock").display(),
        cache = dir.join("cache").display(),
        secret = secret_file.display(),
    )
}

/// A client whose connections come from `ip`.
fn client_from(ip: Ipv4Addr) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(IpAddr::V4(ip))
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// Posts a hook signed with `secret` whose body carries `delivery`; status and error code.
async fn post(
    client: &reqwest::Client,
    port: u16,
    secret: &[u8],
    delivery: &str,
) -> Result<(u16, Option<String>), String> {
    let body = format!(r#"{{"ref":"refs/heads/main","n":"{delivery}"}}"#);
    let headers = saltgate::security::signature::github::sign(
        &Secret::new(secret.to_vec()).unwrap(),
        body.as_bytes(),
    );
    let mut req = client
        .post(format!("http://127.0.0.1:{port}/hook/deploy"))
        .header("content-type", "application/json")
        .header("x-github-event", "push")
        .header("x-github-delivery", delivery)
        .body(body);
    for (name, value) in headers {
        req = req.header(name, value);
    }
    let resp = req.send().await.map_err(|e| format!("{e:?}"))?;
    let status = resp.status().as_u16();
    let text = resp.text().await.map_err(|e| format!("body: {e:?}"))?;
    let code = (status != 200)
        .then(|| serde_json::from_str::<serde_json::Value>(&text).ok())
        .flatten()
        .and_then(|v| v["code"].as_str().map(str::to_owned));
    Ok((status, code))
}

/// One flood sender: round-robin over its own addresses, alternating the two secrets, until
/// `stop`; at most one request per [`PACE`], so that on a fast machine no address comes near
/// the quota (about 16 a second each against a burst of 50, refilled at 1 a second).
async fn sender(n: u8, port: u16, stop: Arc<AtomicBool>) -> Vec<Sent> {
    let clients: Vec<reqwest::Client> = (0..ADDRESSES_PER_SENDER)
        .map(|a| client_from(Ipv4Addr::new(127, 1, n, a + 1)))
        .collect();
    let mut sent = Vec::new();
    let mut i: usize = 0;
    let mut pace = tokio::time::interval(PACE);
    pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !stop.load(Ordering::SeqCst) {
        pace.tick().await;
        let signed = if (i + usize::from(n)).is_multiple_of(2) {
            Signed::Old
        } else {
            Signed::New
        };
        let secret = if signed == Signed::Old { OLD } else { NEW };
        let delivery = format!("f{n}-{i}");
        let start = Instant::now();
        let result = post(&clients[i % clients.len()], port, secret, &delivery).await;
        let end = Instant::now();
        let (outcome, code) = match result {
            Ok((status, code)) => (Ok(status), code),
            Err(e) => (Err(e), None),
        };
        sent.push(Sent {
            delivery,
            signed,
            start,
            end,
            outcome,
            code,
        });
        i += 1;
    }
    sent
}

/// Sends hooks from the fresh address `ip` back to back until one is refused with 429; how
/// many passed before it, and how long that took.
async fn probe_quota(port: u16, ip: Ipv4Addr, secret: &[u8], limit: u32) -> (u32, Duration) {
    let client = client_from(ip);
    let started = Instant::now();
    for passed in 0..limit {
        let delivery = format!("probe-{ip}-{passed}");
        match post(&client, port, secret, &delivery).await {
            Ok((200, _)) => {}
            Ok((429, code)) => {
                assert_eq!(code.as_deref(), Some("rate_limited"));
                return (passed, started.elapsed());
            }
            other => panic!("probe from {ip}: request {passed}: {other:?}"),
        }
    }
    panic!("probe from {ip}: {limit} requests and no 429");
}

/// Checks the quota in force by a probe from `ip`: `burst` pass at once, plus at most one per
/// second the probe took.
async fn assert_quota(port: u16, ip: Ipv4Addr, secret: &[u8], burst: u32) {
    let (passed, took) = probe_quota(port, ip, secret, burst * 2 + 50).await;
    let refill = u32::try_from(took.as_secs()).unwrap() + 1;
    assert!(
        (burst..=burst + refill).contains(&passed),
        "probe from {ip}: {passed} passed in {took:?}, the quota's burst is {burst}"
    );
}

/// Reads `/events` from 127.0.0.1 and reports each `deploy` hook's delivery and when it came;
/// the channel closes when the stream ends. A lag notice is reported as `lagged`.
async fn watch_events(port: u16, seen: mpsc::UnboundedSender<(String, Instant)>) {
    let resp = reqwest::get(format!("http://127.0.0.1:{port}/events"))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.bytes_stream();
    let mut buf = String::new();
    while let Some(chunk) = body.next().await {
        let Ok(chunk) = chunk else { return };
        buf.push_str(std::str::from_utf8(&chunk).unwrap());
        while let Some(end) = buf.find("\n\n") {
            let record: String = buf.drain(..end + 2).collect();
            let mut tag = "";
            let mut data = None;
            for line in record.lines() {
                if let Some(t) = line.strip_prefix("tag: ") {
                    tag = t;
                } else if let Some(d) = line.strip_prefix("data: ") {
                    data = serde_json::from_str::<serde_json::Value>(d).ok();
                }
            }
            if tag.starts_with("saltgate/stream/lagged") {
                let _ = seen.send(("lagged".to_owned(), Instant::now()));
            } else if tag == "salt/netapi/hook/deploy" {
                let n = data.as_ref().and_then(|d| d["data"]["post"]["n"].as_str());
                let _ = seen.send((n.unwrap_or("?").to_owned(), Instant::now()));
            }
        }
    }
}

/// Sends SIGHUP and waits for systemd's `READY=1`: (when the signal went, when READY came, the
/// status line).
fn reload(gate: &Notified) -> (Instant, Instant, String) {
    tokio::task::block_in_place(|| {
        let hup = Instant::now();
        gate.signal("-HUP");
        assert!(gate.expect("RELOADING=1").starts_with("RELOADING=1\n"));
        let ready = gate.expect("READY=1");
        (hup, Instant::now(), ready)
    })
}

/// The value of `series` in the `/metrics` on `port`.
async fn metric(port: u16, series: &str) -> f64 {
    crate::support::metric(&format!("http://127.0.0.1:{port}/metrics"), series).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn flood_of_signed_hooks_through_a_secret_rotation_and_a_refused_reload() {
    let secrets = tempfile::tempdir().unwrap();
    let (old_file, new_file, third_file) = (
        secrets.path().join("old"),
        secrets.path().join("new"),
        secrets.path().join("third"),
    );
    std::fs::write(&old_file, OLD).unwrap();
    std::fs::write(&new_file, NEW).unwrap();
    std::fs::write(&third_file, "third-s3cret").unwrap();
    let gate = Notified::start_with(|dir, port| master(dir, port, &old_file, 1, BURST_BEFORE));
    let port = gate.port;
    let dir = gate.dir().to_owned();
    tokio::task::block_in_place(|| gate.expect("READY=1"));

    let (seen_tx, mut seen) = mpsc::unbounded_channel();
    let stream = tokio::spawn(watch_events(port, seen_tx));
    // The stream is subscribed once a hook fired after it opened reaches it.
    let first = client_from(Ipv4Addr::new(127, 2, 0, 1));
    let mut subscribed = false;
    for k in 0..25 {
        let delivery = format!("warm-{k}");
        assert_eq!(post(&first, port, OLD, &delivery).await, Ok((200, None)));
        if let Ok(got) = tokio::time::timeout(Duration::from_millis(400), seen.recv()).await {
            assert!(got.unwrap().0.starts_with("warm-"));
            subscribed = true;
            break;
        }
    }
    assert!(subscribed, "the stream got no event");

    let stop = Arc::new(AtomicBool::new(false));
    let senders: Vec<_> = (0..SENDERS)
        .map(|n| tokio::spawn(sender(n, port, Arc::clone(&stop))))
        .collect();
    tokio::time::sleep(Duration::from_secs(1)).await;
    // The quota in force before: a burst of BURST_BEFORE.
    assert_quota(port, Ipv4Addr::new(127, 3, 0, 1), OLD, BURST_BEFORE).await;

    // Rotate the secret and raise the quota, under the flood.
    gate.write_master(&master(&dir, port, &new_file, 1, BURST_AFTER));
    let (hup, swapped, status) = reload(&gate);
    assert!(
        status.starts_with("READY=1\nSTATUS=Serving on "),
        "{status}"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_quota(port, Ipv4Addr::new(127, 3, 0, 2), NEW, BURST_AFTER).await;

    // A config that does not load (a quota of 0, with a third secret): refused as a whole,
    // under the flood; the rotated secret and the raised quota stay.
    gate.write_master(&master(&dir, port, &third_file, 0, BURST_REFUSED));
    let (refused_hup, refused_at, status) = reload(&gate);
    assert!(
        status.contains("STATUS=Reload refused, running configuration kept: "),
        "{status}"
    );
    assert!(status.contains("per_second"), "{status}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let third = client_from(Ipv4Addr::new(127, 2, 0, 2));
    assert_eq!(
        post(&third, port, b"third-s3cret", "third").await,
        Ok((401, Some("bad_signature".to_owned())))
    );
    assert_quota(port, Ipv4Addr::new(127, 3, 0, 3), NEW, BURST_AFTER).await;

    stop.store(true, Ordering::SeqCst);
    let mut sent = Vec::new();
    for s in senders {
        sent.extend(s.await.unwrap());
    }

    // Every request: no transport error, no status but 200 or 401, a 401 only as bad_signature.
    let failed: Vec<&Sent> = sent.iter().filter(|s| s.saw_new().is_none()).collect();
    assert!(
        failed.is_empty(),
        "{} of {} flood requests failed, e.g. {:?}",
        failed.len(),
        sent.len(),
        &failed[..failed.len().min(5)]
    );
    for s in sent.iter().filter(|s| s.outcome == Ok(401)) {
        assert_eq!(s.code.as_deref(), Some("bad_signature"), "{s:?}");
    }
    // Before the signal the old set answered; once READY=1 came, the new one.
    for s in &sent {
        if s.end < hup {
            assert_eq!(s.saw_new(), Some(false), "answered before SIGHUP: {s:?}");
        }
        if s.start > swapped {
            assert_eq!(s.saw_new(), Some(true), "sent after the reload: {s:?}");
        }
    }
    // One switch: every request that saw the new set finished after every request that saw
    // the old set had started.
    let last_old_start = sent
        .iter()
        .filter(|s| s.saw_new() == Some(false))
        .map(|s| s.start)
        .max()
        .unwrap();
    let first_new_end = sent
        .iter()
        .filter(|s| s.saw_new() == Some(true))
        .map(|s| s.end)
        .min()
        .unwrap();
    assert!(
        first_new_end >= last_old_start,
        "a request saw the new rules {:?} before another saw the old ones",
        last_old_start - first_new_end
    );
    // The account: accepted, the retired secret refused after the switch, the new secret
    // refused before it.
    let count = |signed: Signed, status: u16, new: bool| {
        sent.iter()
            .filter(|s| s.signed == signed && s.outcome == Ok(status))
            .inspect(|s| assert_eq!(s.saw_new(), Some(new)))
            .count()
    };
    let accepted = count(Signed::Old, 200, false) + count(Signed::New, 200, true);
    let retired = count(Signed::Old, 401, true);
    let early = count(Signed::New, 401, false);
    assert_eq!(accepted + retired + early, sent.len());
    let after_refusal = sent.iter().filter(|s| s.start > refused_at).count();
    // Requests in flight while each reload ran (sent before READY=1, answered after SIGHUP).
    let during =
        |from: Instant, to: Instant| sent.iter().filter(|s| s.start < to && s.end > from).count();
    let (during_swap, during_refusal) = (during(hup, swapped), during(refused_hup, refused_at));
    assert!(
        during_swap > 0 && during_refusal > 0,
        "no request in flight during a reload: {during_swap}, {during_refusal}"
    );
    assert!(
        count(Signed::Old, 200, false) > 0 && count(Signed::New, 200, true) > 0,
        "the flood did not span the reload"
    );
    assert!(
        after_refusal > 0,
        "the flood did not run after the refused reload"
    );
    eprintln!(
        "flood: {} requests: {accepted} accepted, {retired} retired secret after the switch, \
         {early} new secret before it; {during_swap} in flight during the swap, \
         {during_refusal} during the refused reload, {after_refusal} after it",
        sent.len()
    );

    // The stream was not cut: it delivered every accepted flood hook, also after each reload,
    // and still delivers.
    let mut wanted: HashSet<&str> = sent
        .iter()
        .filter(|s| s.outcome == Ok(200))
        .map(|s| s.delivery.as_str())
        .collect();
    let mut at: HashMap<String, Instant> = HashMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !wanted.is_empty() {
        let (delivery, when) = tokio::time::timeout_at(deadline, seen.recv())
            .await
            .unwrap_or_else(|_| panic!("{} accepted hooks not on the stream", wanted.len()))
            .expect("the event stream ended");
        assert_ne!(delivery, "lagged", "the event stream lagged");
        wanted.remove(delivery.as_str());
        at.insert(delivery, when);
    }
    assert!(
        at.values().any(|&t| t > refused_at),
        "no event after the reloads"
    );
    assert_eq!(post(&first, port, NEW, "last").await, Ok((200, None)));
    loop {
        let (delivery, _) = tokio::time::timeout(Duration::from_secs(10), seen.recv())
            .await
            .expect("the stream stopped delivering")
            .expect("the event stream ended");
        if delivery == "last" {
            break;
        }
    }
    assert!(!stream.is_finished());

    // The refusal was logged (naming the key, no secret) and counted.
    assert_eq!(
        metric(port, "saltgate_config_reloads_total{result=\"error\"}").await,
        1.0
    );
    assert_eq!(
        metric(port, "saltgate_config_last_reload_successful").await,
        0.0
    );
    let log = gate.log();
    assert!(log.contains("Configuration reloaded (SIGHUP)"), "{log}");
    let refusal = log
        .lines()
        .find(|l| l.contains("Reload refused: the running configuration stays in force"))
        .unwrap_or_else(|| panic!("no refusal logged:\n{log}"));
    assert!(refusal.contains("per_second"), "{refusal}");
    for secret in ["old-s3cret", "new-s3cret", "third-s3cret"] {
        assert!(!log.contains(secret), "a secret in the log");
    }

    // The flood over, a lowered quota is in force from the next request too, and a reload
    // that works again clears the refusal's gauge.
    gate.write_master(&master(&dir, port, &new_file, 1, BURST_LOWERED));
    let (_, _, status) = reload(&gate);
    assert!(
        status.starts_with("READY=1\nSTATUS=Serving on "),
        "{status}"
    );
    assert_quota(port, Ipv4Addr::new(127, 3, 0, 4), NEW, BURST_LOWERED).await;
    assert_eq!(
        metric(port, "saltgate_config_reloads_total{result=\"ok\"}").await,
        2.0
    );
    assert_eq!(
        metric(port, "saltgate_config_last_reload_successful").await,
        1.0
    );
}

/// Accepts whichever certificate the server presents (the test compares its DER itself), but
/// checks the handshake's signatures against it, so the server proves it holds the key.
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &rustls_pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

type Tls = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

/// A new TLS connection to `port` (HTTP/1.1, no ALPN) and the DER of the certificate the
/// server presented in its handshake.
async fn handshake(port: u16) -> (Tls, Vec<u8>) {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(
            rustls_pki_types::ServerName::try_from("localhost").unwrap(),
            tcp,
        )
        .await
        .unwrap();
    let der = presented(&tls);
    (tls, der)
}

/// The certificate `tls` was set up with.
fn presented(tls: &Tls) -> Vec<u8> {
    tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

/// `GET /` on an open connection, kept open (HTTP/1.1 keep-alive): the status.
async fn get_root(tls: &mut Tls) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    tls.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            assert!(!head.contains("connection: close"), "{head}");
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .unwrap_or_else(|| panic!("no content-length: {head}"))
                .trim()
                .parse()
                .unwrap();
            if buf.len() >= end + 4 + length {
                assert_eq!(buf.len(), end + 4 + length, "more than one response");
                return head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap();
            }
        }
        let n = tokio::time::timeout(Duration::from_secs(10), tls.read(&mut chunk))
            .await
            .expect("no response within 10 s")
            .unwrap();
        assert!(n > 0, "the connection was closed");
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Which fixture certificate `der` is (by its DER): `server.crt`, `server2.crt` or `another`.
fn which(der: &[u8]) -> &'static str {
    ["server.crt", "server2.crt"]
        .into_iter()
        .find(|name| {
            let path = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures/tls")
                .join(name);
            CertificateDer::from_pem_file(path).unwrap().as_ref() == der
        })
        .unwrap_or("another")
}

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/tls")
            .join(name),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_swaps_the_tls_certificate_of_a_live_listener() {
    let gate = Notified::start_with(|dir, port| {
        std::fs::write(dir.join("tls.crt"), fixture("server.crt")).unwrap();
        std::fs::write(dir.join("tls.key"), fixture("server.key")).unwrap();
        format!(
            "sock_dir: {sock}\ncachedir: {cache}\nrest_cherrypy:\n  host: 127.0.0.1\n  \
             port: {port}\n  ssl_crt: {crt}\n  ssl_key: {key}\nsaltgate:\n  bus: builtin\n  \
             keep_alive_timeout_secs: 120\n",
            sock = dir.join("sock").display(),
            cache = dir.join("cache").display(),
            crt = dir.join("tls.crt").display(),
            key = dir.join("tls.key").display(),
        )
    });
    let port = gate.port;
    let (crt, key) = (gate.dir().join("tls.crt"), gate.dir().join("tls.key"));
    tokio::task::block_in_place(|| gate.expect("READY=1"));

    let (mut kept, der) = handshake(port).await;
    assert_eq!(which(&der), "server.crt");
    assert_eq!(get_root(&mut kept).await, 200);

    // The files are replaced in place (as a renewal does), then SIGHUP.
    std::fs::write(&crt, fixture("server2.crt")).unwrap();
    std::fs::write(&key, fixture("server2.key")).unwrap();
    let (_, _, status) = reload(&gate);
    assert!(
        status.starts_with("READY=1\nSTATUS=Serving on "),
        "{status}"
    );
    // The open connection keeps working on the certificate it was set up with; a new handshake
    // gets the new one.
    assert_eq!(get_root(&mut kept).await, 200);
    assert_eq!(which(&presented(&kept)), "server.crt");
    let (mut renewed, der) = handshake(port).await;
    assert_eq!(
        which(&der),
        "server2.crt",
        "a handshake after the reload got the old certificate"
    );
    assert_eq!(get_root(&mut renewed).await, 200);

    // A broken pair is refused and the certificate in force stays: first a key that is not the
    // certificate's, then a certificate file with no certificate in it.
    std::fs::write(&crt, fixture("server.crt")).unwrap();
    let (_, _, status) = reload(&gate);
    assert!(
        status.contains("STATUS=Reload refused, running configuration kept: ")
            && status.contains("rest_cherrypy.ssl_crt/ssl_key do not form a usable pair"),
        "{status}"
    );
    let (mut after, der) = handshake(port).await;
    assert_eq!(which(&der), "server2.crt", "a refused pair was served");
    assert_eq!(get_root(&mut after).await, 200);

    std::fs::write(&crt, "not a certificate\n").unwrap();
    std::fs::write(&key, fixture("server2.key")).unwrap();
    let (_, _, status) = reload(&gate);
    assert!(
        status.contains("STATUS=Reload refused, running configuration kept: ")
            && status.contains("rest_cherrypy.ssl_crt: "),
        "{status}"
    );
    let (mut after, der) = handshake(port).await;
    assert_eq!(
        which(&der),
        "server2.crt",
        "a refused certificate file was served"
    );
    assert_eq!(get_root(&mut after).await, 200);
    for tls in [&mut kept, &mut renewed] {
        assert_eq!(get_root(tls).await, 200);
    }
    assert_eq!(which(&presented(&kept)), "server.crt");
    assert_eq!(which(&presented(&renewed)), "server2.crt");

    let log = gate.log();
    assert_eq!(
        log.matches("Reload refused: the running configuration stays in force")
            .count(),
        2,
        "{log}"
    );
    assert!(!log.contains("PRIVATE KEY"), "key material in the log");
}
