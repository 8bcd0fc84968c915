//! Hostile request bodies: every adversarial shape at about 1 MiB (`max_request_body_size`), in
//! every content type, on every route that parses a body, without credentials. Each must be
//! answered promptly (400/413, or success where the body is valid) and cost bounded CPU and
//! memory.
//!
//! saltgate runs as a subprocess (the built binary, `serve --config` on the built-in bus) so
//! that its CPU time (`/proc/<pid>/stat`, utime + stime of every thread) and peak RSS (`VmHWM`,
//! reset before each request through `/proc/<pid>/clear_refs`) are its own. The spec bound is
//! 100 ms of CPU and 16 MiB + 4 × the body of peak RSS per request, for a release build; tests
//! run a debug build, whose parsers are several times slower, so the CPU bound is multiplied by
//! [`DEBUG_CPU_FACTOR`] there (release numbers are measured by hand, see the report in the
//! commit). `SALTGATE_HOSTILE_BIN` runs the scenario against another binary (e.g. an older build).

use std::io::Write;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const MIB: usize = 1 << 20;
/// A debug build's parsers are slower than a release build's by about this much.
const DEBUG_CPU_FACTOR: u64 = if cfg!(debug_assertions) { 8 } else { 1 };
/// Spec bound on CPU per request, in milliseconds.
const CPU_MS: u64 = 100;
/// An answer slower than this is a failure (old saltgate took minutes on some of these).
const DEADLINE: Duration = Duration::from_secs(30);

struct Server {
    child: Child,
    base: String,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn binary() -> PathBuf {
    std::env::var_os("SALTGATE_HOSTILE_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_saltgate")))
}

async fn start() -> Server {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("saltgate.yaml");
    let mut f = std::fs::File::create(&config).unwrap();
    write!(
        f,
        "rest_cherrypy:\n  host: 127.0.0.1\n  port: {port}\n  disable_ssl: true\n  \
         webhook_disable_auth: true\nsaltgate:\n  bus: builtin\n  hooks:\n    \
         - path: yaml\n      auth: none\n      yaml: true\n"
    )
    .unwrap();
    let child = Command::new(binary())
        .args(["serve", "--config"])
        .arg(&config)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let started = Instant::now();
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "saltgate did not start"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Server {
        child,
        base,
        _dir: dir,
    }
}

/// CPU time of the whole process (all threads), in milliseconds.
fn cpu_ms(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // USER_HZ is 100 on Linux.
    ticks * 10
}

fn status_kib(pid: u32, key: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// Resets the peak RSS to the current RSS; returns the current RSS in KiB.
fn reset_peak(pid: u32) -> u64 {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").unwrap();
    status_kib(pid, "VmRSS:")
}

/// An adversarial shape: its YAML text, its JSON text when JSON can say it, and its form body.
struct Shape {
    name: &'static str,
    yaml: Vec<u8>,
    json: Option<Vec<u8>>,
    form: Vec<u8>,
    /// Whether a parse of it must be refused (it is over a bound), as opposed to merely large.
    hostile: bool,
    /// Whether its form body must be refused (block shapes in a form value stay text).
    form_hostile: bool,
}

/// `unit` repeated to fill `size` bytes at most, between `head` and `tail`.
fn fill(head: &str, unit: &str, tail: &str, size: usize) -> Vec<u8> {
    let n = (size - head.len() - tail.len()) / unit.len();
    format!("{head}{}{tail}", unit.repeat(n)).into_bytes()
}

fn urlencode(raw: &[u8]) -> String {
    let mut out = String::with_capacity(raw.len() * 3);
    for &b in raw {
        if b.is_ascii_alphanumeric() || b"-_.".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `fun=test.arg&arg=<value>`, with `value` (one line) repeated to fill about 1 MiB encoded.
fn form_of(value: &[u8]) -> Vec<u8> {
    let item = format!("&arg={}", urlencode(value));
    let n = ((MIB - 16) / item.len()).max(1);
    let mut out = String::from("fun=test.arg");
    for _ in 0..n {
        out.push_str(&item);
    }
    out.truncate(MIB);
    out.into_bytes()
}

/// A one-line "billion laughs": 9 levels of 9 aliases (387 million leaves) in about 550 bytes.
fn flow_alias_bomb() -> String {
    let mut s = String::from("[&a0 [x, x, x, x, x, x, x, x, x]");
    for i in 1..10 {
        let p = i - 1;
        s.push_str(&format!(
            ", &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]"
        ));
    }
    s.push(']');
    s
}

fn shapes() -> Vec<Shape> {
    let deep_map = fill("", "{a: ", "", MIB);
    let deep_seq = fill("", "[", "", MIB);
    // Block nesting by indentation: about 1,400 levels fit in 1 MiB.
    let mut indented = String::new();
    let mut level = 0;
    while indented.len() + level + 3 < MIB {
        indented.push_str(&" ".repeat(level));
        indented.push_str("a:\n");
        level += 1;
    }
    let mut keys = String::new();
    let mut json_keys = String::from("{");
    let mut form_keys = String::from("fun=test.arg");
    let mut i = 0;
    while keys.len() < MIB - 32 {
        keys.push_str(&format!("k{i}: 1\n"));
        i += 1;
    }
    i = 0;
    while json_keys.len() < MIB - 32 {
        json_keys.push_str(&format!("\"k{i}\":1,"));
        i += 1;
    }
    json_keys.push_str("\"end\":1}");
    i = 0;
    while form_keys.len() < MIB - 32 {
        form_keys.push_str(&format!("&k{i}=1"));
        i += 1;
    }
    // Just under the budget: a large but valid body (about 40,000 values).
    let mut valid =
        String::from("[{\"fun\":\"test.arg\",\"client\":\"local\",\"tgt\":\"*\",\"arg\":[");
    while valid.len() < MIB / 2 {
        valid.push_str("\"xxxxxxxxxxxxxxxxxxxxxxxxxxxx\",");
    }
    valid.push_str("\"end\"]}]");
    let long = format!(
        "[{{\"fun\":\"test.arg\",\"arg\":[\"{}\"]}}]",
        "x".repeat(MIB - 64)
    );
    let bomb = flow_alias_bomb();
    let mut yaml_bombs = String::new();
    let mut b = 0;
    while yaml_bombs.len() < MIB - 1024 {
        yaml_bombs.push_str(&format!(
            "b{b}: {}\n",
            bomb.replace("&a", &format!("&b{b}a"))
                .replace("*a", &format!("*b{b}a"))
        ));
        b += 1;
    }
    vec![
        Shape {
            name: "deep flow maps",
            form: form_of(&deep_map[..4096]),
            json: Some(fill("", "{\"a\":", "", MIB)),
            yaml: deep_map,
            hostile: true,
            form_hostile: true,
        },
        Shape {
            name: "deep flow sequences",
            form: form_of(&deep_seq[..4096]),
            json: Some(deep_seq.clone()),
            yaml: deep_seq,
            hostile: true,
            form_hostile: true,
        },
        Shape {
            name: "deep compact block sequences",
            yaml: fill("", "- ", "x\n", MIB),
            json: None,
            form: form_of(&fill("", "- ", "x", 4096)),
            hostile: true,
            form_hostile: true,
        },
        Shape {
            name: "deep block indentation",
            form: form_of(b"x"),
            yaml: indented.into_bytes(),
            json: None,
            hostile: true,
            form_hostile: false,
        },
        Shape {
            name: "alias bombs",
            form: form_of(bomb.as_bytes()),
            yaml: yaml_bombs.into_bytes(),
            json: None,
            hostile: true,
            form_hostile: true,
        },
        Shape {
            // Found by the `body` fuzz target: few nodes, but every alias repeats 64 KiB.
            name: "aliases of long text",
            form: form_of(format!("[&x {}, {}]", "y".repeat(2048), "*x, ".repeat(500)).as_bytes()),
            yaml: format!(
                "a: &x {}\nb: [{}]\n",
                "y".repeat(64 << 10),
                "*x, ".repeat((MIB - (80 << 10)) / 4)
            )
            .into_bytes(),
            json: None,
            hostile: true,
            form_hostile: true,
        },
        Shape {
            name: "many keys",
            yaml: keys.into_bytes(),
            json: Some(json_keys.into_bytes()),
            form: form_keys.into_bytes(),
            hostile: true,
            form_hostile: true,
        },
        Shape {
            name: "many documents",
            yaml: fill("", "--- 1\n", "", MIB),
            json: Some(fill("", "[1] ", "", MIB)),
            form: form_of(b"x"),
            hostile: true,
            form_hostile: false,
        },
        Shape {
            name: "large valid lowstate",
            yaml: valid.clone().into_bytes(),
            json: Some(valid.into_bytes()),
            form: form_of(b"[xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx, 2]"),
            hostile: false,
            form_hostile: false,
        },
        Shape {
            name: "one long string",
            yaml: long.clone().into_bytes(),
            json: Some(long.into_bytes()),
            form: form_of(&[b'x'; 4096]),
            hostile: false,
            form_hostile: false,
        },
    ]
}

/// Routes that parse a body, and whether they read a YAML body as YAML (the default hook rule
/// keeps it as text).
const ROUTES: &[(&str, bool)] = &[
    ("/run", true),
    ("/login", true),
    ("/token", true),
    ("/", true),
    ("/minions", true),
    ("/jobs", true),
    ("/keys", true),
    ("/hook/demo", false),
    ("/hook/yaml", true),
];

fn server_alive(child: &mut Child) -> bool {
    matches!(child.try_wait(), Ok(None))
}

#[derive(Debug)]
#[allow(dead_code, reason = "printed with SALTGATE_HOSTILE_VERBOSE")]
struct Cost {
    status: u16,
    cpu_ms: u64,
    peak_mib: f64,
    wall: Duration,
}

fn client() -> reqwest::Client {
    // A fresh connection per request: a route that answers before reading the body (401 on a
    // bad token) closes its connection.
    reqwest::Client::builder()
        .timeout(DEADLINE)
        .pool_max_idle_per_host(0)
        .build()
        .unwrap()
}

/// Sends one body and measures what it cost the server. `Err` when no answer came (a timeout,
/// or the server died): the server may be stuck on it.
async fn send(
    server: &mut Server,
    client: &reqwest::Client,
    route: &str,
    ct: &str,
    body: &[u8],
) -> Result<(Cost, String), String> {
    let pid = server.child.id();
    let rss_before = reset_peak(pid);
    let cpu_before = cpu_ms(pid);
    let started = Instant::now();
    let sent = client
        .post(format!("{}{route}", server.base))
        .header("content-type", ct)
        .header("x-auth-token", "not-a-token")
        .body(body.to_vec())
        .send()
        .await;
    let (status, text) = match sent {
        Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
        // A route that refuses before reading the body (a bad token) answers and closes while
        // the body is still being sent: the client sees a broken pipe.
        Err(e) if !e.is_timeout() && server_alive(&mut server.child) => {
            (0, format!("closed early: {e:?}"))
        }
        Err(e) => return Err(format!("no answer after {:?}: {e:?}", started.elapsed())),
    };
    let cost = Cost {
        status,
        cpu_ms: cpu_ms(pid) - cpu_before,
        peak_mib: (status_kib(pid, "VmHWM:").saturating_sub(rss_before)) as f64 / 1024.0,
        wall: started.elapsed(),
    };
    if std::env::var_os("SALTGATE_HOSTILE_VERBOSE").is_some() {
        eprintln!("{ct} ({} KiB) on {route}: {cost:?}", body.len() / 1024);
    }
    Ok((cost, text))
}

/// The spec bounds (CPU with the debug margin), as failure lines.
fn check_bounds(what: &str, cost: &Cost, body_len: usize, failures: &mut Vec<String>) {
    let cpu_bound = CPU_MS * DEBUG_CPU_FACTOR;
    if cost.cpu_ms > cpu_bound {
        failures.push(format!(
            "{what}: {} ms of CPU > {cpu_bound} ms",
            cost.cpu_ms
        ));
    }
    let rss_bound = 16.0 + 4.0 * body_len as f64 / MIB as f64;
    if cost.peak_mib > rss_bound {
        failures.push(format!(
            "{what}: peak RSS +{:.1} MiB > {rss_bound:.1} MiB",
            cost.peak_mib
        ));
    }
}

/// The two bodies of the report: `{a: ` × 40,000 (160 KB; 6.6 s of CPU before) and a form of
/// 100 `arg` items, each a 542-byte alias bomb (120 KB; 726 MiB of RSS on `/hook/demo` before).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reported_bodies_are_cheap() {
    let mut server = start().await;
    let client = client();
    let deep = "{a: ".repeat(40_000);
    let bomb = flow_alias_bomb();
    let mut form = String::from("fun=test.arg");
    for _ in 0..100 {
        form.push_str("&arg=");
        form.push_str(&urlencode(bomb.as_bytes()));
    }
    let deep_form = format!("fun=test.arg&arg={}", urlencode(deep.as_bytes()));
    let cases: [(&str, &str, &[u8]); 7] = [
        ("/run", "application/x-yaml", deep.as_bytes()),
        ("/login", "application/x-yaml", deep.as_bytes()),
        ("/hook/yaml", "application/x-yaml", deep.as_bytes()),
        (
            "/run",
            "application/x-www-form-urlencoded",
            deep_form.as_bytes(),
        ),
        (
            "/hook/demo",
            "application/x-www-form-urlencoded",
            deep_form.as_bytes(),
        ),
        (
            "/hook/demo",
            "application/x-www-form-urlencoded",
            form.as_bytes(),
        ),
        ("/run", "application/x-www-form-urlencoded", form.as_bytes()),
    ];
    let mut failures = Vec::new();
    for (route, ct, body) in cases {
        let what = format!("{ct} ({} KiB) on {route}", body.len() / 1024);
        match send(&mut server, &client, route, ct, body).await {
            Ok((cost, text)) => {
                if cost.status != 400 {
                    failures.push(format!("{what}: not refused: {cost:?} {text:.200}"));
                }
                check_bounds(&what, &cost, body.len(), &mut failures);
            }
            Err(e) => {
                failures.push(format!("{what}: {e}"));
                // Stuck on it: a fresh server for the next case.
                server = start().await;
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_bodies_are_cheap_on_every_route() {
    let mut server = start().await;
    let client = client();
    let mut failures = Vec::new();
    let mut worst_cpu = (0, String::new());
    let mut worst_rss = (0.0, String::new());
    'shapes: for shape in shapes() {
        let bodies: [(&str, &[u8]); 4] = [
            (
                "application/json",
                shape.json.as_deref().unwrap_or(&shape.yaml),
            ),
            ("application/x-yaml", &shape.yaml),
            ("application/x-www-form-urlencoded", &shape.form),
            ("text/plain", shape.json.as_deref().unwrap_or(&shape.yaml)),
        ];
        for (ct, body) in bodies {
            assert!(
                body.len() <= MIB,
                "{} {ct}: {} bytes",
                shape.name,
                body.len()
            );
            for &(route, reads_yaml) in ROUTES {
                let what = format!(
                    "{} as {ct} ({} KiB) on {route}",
                    shape.name,
                    body.len() / 1024
                );
                let (cost, text) = match send(&mut server, &client, route, ct, body).await {
                    Ok(answer) => answer,
                    Err(e) => {
                        failures.push(format!("{what}: {e}"));
                        // The server may be stuck on this body: nothing after it means anything.
                        break 'shapes;
                    }
                };
                if cost.cpu_ms > worst_cpu.0 {
                    worst_cpu = (cost.cpu_ms, what.clone());
                }
                if cost.peak_mib > worst_rss.0 {
                    worst_rss = (cost.peak_mib, what.clone());
                }
                let parsed_as_data = match ct {
                    "application/json" | "application/x-www-form-urlencoded" => true,
                    "application/x-yaml" => reads_yaml,
                    _ => false,
                };
                // 401: the route checks its token before it reads the body; 0: it closed the
                // connection after answering early.
                let refused = matches!(cost.status, 0 | 400 | 401 | 413);
                let allowed = refused || matches!(cost.status, 200 | 503);
                if !allowed || (cost.status == 503 && !text.contains("salt_unavailable")) {
                    failures.push(format!("{what}: status {}: {text:.200}", cost.status));
                }
                let must_refuse = if ct == "application/x-www-form-urlencoded" {
                    shape.form_hostile
                } else {
                    shape.hostile && parsed_as_data
                };
                if must_refuse && !refused {
                    failures.push(format!("{what}: not refused: {cost:?} {text:.200}"));
                }
                check_bounds(&what, &cost, body.len(), &mut failures);
            }
        }
    }
    eprintln!(
        "worst CPU: {} ms ({}); worst peak RSS: +{:.1} MiB ({})",
        worst_cpu.0, worst_cpu.1, worst_rss.0, worst_rss.1
    );
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
