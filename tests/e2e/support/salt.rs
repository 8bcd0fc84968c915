//! `SaltSandbox`: a real `salt-master` + `salt-minion` (+ Reactor, + optionally the real
//! `salt-api`) from a PyPI venv, every path inside one short temp dir under `/tmp`, on free
//! loopback ports, as child processes each in its own process group.
//!
//! Cleanup: `Drop` terminates the process groups (SIGTERM, up to 10 s, then SIGKILL). A sandbox
//! kept in a `static` is never dropped, so every sandbox also starts a small `bash` watchdog in
//! its own process group that polls the test process and, once it is gone, kills the process
//! groups listed in `<root>/.pgids` and removes the root.
//!
//! Set `SALTGATE_E2E_KEEP=1` to keep the root dir (configs and logs) after a sandbox is dropped.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError};
use std::thread::sleep;
use std::time::{Duration, Instant};

use serde_json::Value as Json;
use serde_yaml::{Mapping, Value as Yaml};

/// The minion's id in every sandbox.
pub(crate) const MINION_ID: &str = "e2e-minion";
/// The Reactor tag pattern built into every sandbox.
pub(crate) const HOOK_TAG: &str = "salt/netapi/hook/e2e/*";

const READY_TIMEOUT: Duration = Duration::from_secs(90);
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
const MINION_GRACE: Duration = Duration::from_secs(2);
const API_TIMEOUT: Duration = Duration::from_secs(30);

/// Writes `{{ data | json }}` to `<root>/reactor-out/<name>.json` on the minion, where `<name>`
/// is the hook body's `id` or else the event's `_stamp`, sanitised to `[A-Za-z0-9_.-]`.
/// `yaml_dquote` keeps the JSON one YAML double-quoted scalar whatever it contains.
const REACTOR_SLS: &str = r#"{%- set post = data.get('post') %}
{%- if post is mapping and post.get('id') is not none %}
{%-   set name = post['id'] | string %}
{%- else %}
{%-   set name = 'stamp-' ~ (data.get('_stamp', 'none') | string) %}
{%- endif %}
{%- set name = name | regex_replace('[^A-Za-z0-9_.-]', '_') %}
e2e_reactor_out:
  local.file.write:
    - tgt: @MINION@
    - args:
      - path: {{ (@OUT_DIR@ ~ '/' ~ name ~ '.json') | yaml_dquote }}
      - args: {{ data | json | yaml_dquote }}
"#;

const WATCHDOG: &str = r#"pid=$1; root=$2; mode=$3
while kill -0 "$pid" 2>/dev/null; do sleep 1; done
pgs=$(cat "$root/.pgids" 2>/dev/null)
for pg in $pgs; do kill -TERM -- "-$pg" 2>/dev/null; done
for _ in 1 2 3 4 5 6 7 8 9 10; do
  alive=
  for pg in $pgs; do kill -0 -- "-$pg" 2>/dev/null && alive=1; done
  [ -z "$alive" ] && break
  sleep 1
done
for pg in $pgs; do kill -KILL -- "-$pg" 2>/dev/null; done
[ "$mode" = rm ] && rm -rf -- "$root"
exit 0
"#;

/// Which real salt-api to run next to the master.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(clippy::enum_variant_names, reason = "salt-api's own module names")]
pub(crate) enum SaltApi {
    RestCherrypy,
    RestTornado,
    /// salt-api with `rest_wsgi:`, which it serves with wsgiref's simple server on
    /// `localhost`. On Python 3 that answers every request 500 (see `wsgi_diff`).
    RestWsgi,
}

impl SaltApi {
    fn config_key(self) -> &'static str {
        match self {
            SaltApi::RestCherrypy => "rest_cherrypy",
            SaltApi::RestTornado => "rest_tornado",
            SaltApi::RestWsgi => "rest_wsgi",
        }
    }
}

/// The sandbox shared by tests that do not disturb it (no restarts, no config changes).
pub(crate) fn shared() -> &'static SaltSandbox {
    static SHARED: OnceLock<SaltSandbox> = OnceLock::new();
    SHARED.get_or_init(|| SaltSandbox::builder().start())
}

/// Options for a sandbox; see [`SaltSandbox::builder`].
#[derive(Debug, Default, Clone)]
pub(crate) struct SaltSandboxBuilder {
    reactors: Vec<(String, Vec<String>)>,
    files: Vec<(String, String)>,
    master_yaml: Vec<String>,
    minion_yaml: Vec<String>,
    salt_api: Option<SaltApi>,
    wsgi_app: bool,
    no_minion: bool,
}

impl SaltSandboxBuilder {
    /// Adds a Reactor mapping, `tag` pattern → SLS paths (`salt://...` or absolute), after the
    /// built-in `salt/netapi/hook/e2e/*` one.
    pub(crate) fn with_reactor(mut self, tag: &str, sls: &[&str]) -> Self {
        self.reactors.push((
            tag.to_owned(),
            sls.iter().map(|s| (*s).to_owned()).collect(),
        ));
        self
    }

    /// Places a file under the sandbox's `file_roots` (`name` is relative, e.g.
    /// `reactor/deploy.sls`, then reachable as `salt://reactor/deploy.sls`).
    pub(crate) fn with_file(mut self, name: &str, content: &str) -> Self {
        assert!(
            !name.starts_with('/') && !name.split('/').any(|c| c == ".."),
            "with_file: {name:?} must be a relative path inside file_roots"
        );
        self.files.push((name.to_owned(), content.to_owned()));
        self
    }

    /// Deep-merges a YAML mapping into the master config (later calls win), e.g.
    /// `"ipc_mode: tcp"` or a `rest_cherrypy:` block. `@ROOT@` is replaced by the sandbox root.
    pub(crate) fn with_master_config(mut self, yaml: &str) -> Self {
        self.master_yaml.push(yaml.to_owned());
        self
    }

    /// Deep-merges a YAML mapping into the minion config. `@ROOT@` is replaced by the root.
    pub(crate) fn with_minion_config(mut self, yaml: &str) -> Self {
        self.minion_yaml.push(yaml.to_owned());
        self
    }

    /// Also runs the real salt-api of this kind on a free port (`disable_ssl`,
    /// `webhook_disable_auth`, host 127.0.0.1); see [`SaltSandbox::salt_api_port`].
    pub(crate) fn with_salt_api(mut self, kind: SaltApi) -> Self {
        self.salt_api = Some(kind);
        self
    }

    /// Also runs rest_wsgi's own WSGI application from this Salt install on a free port, in
    /// wsgiref's simple server as salt-api runs it, with one change: its `str` answer is encoded
    /// to UTF-8 bytes, which wsgiref requires (without it every answer is a 500). See
    /// [`SaltSandbox::wsgi_app_port`].
    pub(crate) fn with_rest_wsgi_app(mut self) -> Self {
        self.wsgi_app = true;
        self
    }

    /// Starts the master alone: no minion (e.g. a second master of a cluster, whose minions
    /// are the first one's). `start` then waits for the master's event publisher and request
    /// port instead of a `test.ping`.
    pub(crate) fn without_minion(mut self) -> Self {
        self.no_minion = true;
        self
    }

    /// Writes the configs, starts master, minion (and salt-api), and waits until the minion
    /// answers `test.ping`. Panics with the log tails when that does not happen within 90 s.
    pub(crate) fn start(self) -> SaltSandbox {
        SaltSandbox::start(self)
    }
}

#[derive(Debug)]
struct Proc {
    name: &'static str,
    child: Child,
}

impl Proc {
    fn pgid(&self) -> u32 {
        self.child.id()
    }
}

#[derive(Debug, Default)]
struct Procs {
    master: Option<Proc>,
    minion: Option<Proc>,
    api: Option<Proc>,
    wsgi_app: Option<Proc>,
}

impl Procs {
    fn all(&self) -> impl Iterator<Item = &Proc> {
        [&self.master, &self.minion, &self.api, &self.wsgi_app]
            .into_iter()
            .flatten()
    }
}

/// rest_wsgi's application under wsgiref's simple server (what `rest_wsgi.start()` does), its
/// `str` answer encoded to bytes. argv: master config file, port.
const WSGI_APP: &str = r#"
import os, sys
os.environ["SALT_MASTER_CONFIG"] = sys.argv[1]
import salt.netapi.rest_wsgi as rest_wsgi
from wsgiref.simple_server import make_server

def application(environ, start_response):
    return [part.encode("utf-8") for part in rest_wsgi.application(environ, start_response)]

make_server("127.0.0.1", int(sys.argv[2]), application).serve_forever()
"#;

/// A running real Salt master + minion (+ salt-api). See the module docs.
#[derive(Debug)]
pub(crate) struct SaltSandbox {
    root: PathBuf,
    venv: PathBuf,
    publish_port: u16,
    ret_port: u16,
    api: Option<(SaltApi, u16)>,
    wsgi_app_port: Option<u16>,
    /// tcp_master_{pub,pull}_port, tcp_master_publish_pull, tcp_master_workers, and the
    /// minion's tcp_{pub,pull}_port: used only with `ipc_mode: tcp`, but never the defaults,
    /// so that parallel sandboxes in that mode do not collide.
    tcp_ports: [u16; 6],
    /// Whether a minion runs (see [`SaltSandboxBuilder::without_minion`]).
    with_minion: bool,
    master_config: OnceLock<Mapping>,
    procs: Mutex<Procs>,
    watchdog: Mutex<Option<Child>>,
    keep: bool,
    _tempdir: Option<tempfile::TempDir>,
}

impl SaltSandbox {
    pub(crate) fn builder() -> SaltSandboxBuilder {
        SaltSandboxBuilder::default()
    }

    fn start(opts: SaltSandboxBuilder) -> SaltSandbox {
        let venv = venv().to_owned();
        let t0 = Instant::now();
        let keep = std::env::var_os("SALTGATE_E2E_KEEP").is_some_and(|v| !v.is_empty() && v != "0");
        let tempdir = tempfile::Builder::new()
            .prefix("sge-")
            .tempdir_in("/tmp")
            .expect("create the sandbox root under /tmp");
        let root = tempdir.path().to_owned();
        let (tempdir, root) = if keep {
            (None, tempdir.keep())
        } else {
            (Some(tempdir), root)
        };
        let [
            publish_port,
            ret_port,
            api_port,
            t0p,
            t1p,
            t2p,
            t3p,
            t4p,
            t5p,
            wsgi_port,
        ] = free_ports();
        let mut sandbox = SaltSandbox {
            root,
            venv,
            publish_port,
            ret_port,
            api: opts.salt_api.map(|kind| (kind, api_port)),
            wsgi_app_port: opts.wsgi_app.then_some(wsgi_port),
            tcp_ports: [t0p, t1p, t2p, t3p, t4p, t5p],
            with_minion: !opts.no_minion,
            master_config: OnceLock::new(),
            procs: Mutex::new(Procs::default()),
            watchdog: Mutex::new(None),
            keep,
            _tempdir: tempdir,
        };
        sandbox.write_files(&opts);
        // A merged config may set the ports (a cluster's masters share them).
        let merged_port = |key: &str| {
            (sandbox.master_config().get(key))
                .and_then(Yaml::as_u64)
                .map(|p| u16::try_from(p).expect("a port number"))
        };
        let (ret, publish) = (merged_port("ret_port"), merged_port("publish_port"));
        sandbox.ret_port = ret.unwrap_or(sandbox.ret_port);
        sandbox.publish_port = publish.unwrap_or(sandbox.publish_port);
        sandbox.start_watchdog();
        // From here on a panic drops `sandbox`, which stops whatever was started.
        {
            let mut procs = sandbox.lock_procs();
            procs.master = Some(sandbox.spawn("master", "salt-master", &["-l", "warning"]));
            if sandbox.with_minion {
                procs.minion = Some(sandbox.spawn("minion", "salt-minion", &["-l", "warning"]));
            }
            sandbox.write_pgids(&procs);
        }
        sandbox.wait_ready("start");
        eprintln!(
            "salt sandbox {} (Salt {}): ready after {:?}",
            sandbox.root.display(),
            sandbox.salt_version(),
            t0.elapsed()
        );
        if let Some((kind, port)) = sandbox.api {
            {
                let mut procs = sandbox.lock_procs();
                procs.api = Some(sandbox.spawn("api", "salt-api", &["-l", "warning"]));
                sandbox.write_pgids(&procs);
            }
            sandbox.wait_api_ready(kind, port);
        }
        if let Some(port) = sandbox.wsgi_app_port {
            let script = sandbox.root.join("wsgi_app.py");
            fs::write(&script, WSGI_APP).expect("write the rest_wsgi runner");
            let config = sandbox.master_config_file().to_string_lossy().into_owned();
            let port_arg = port.to_string();
            {
                let mut procs = sandbox.lock_procs();
                procs.wsgi_app = Some(sandbox.spawn_args(
                    "wsgi_app",
                    "python",
                    &[script.to_string_lossy().as_ref(), &config, &port_arg],
                ));
                sandbox.write_pgids(&procs);
            }
            sandbox.wait_http(port, "rest_wsgi's application", |_| true);
        }
        sandbox
    }

    // ---- accessors -------------------------------------------------------------------------

    /// The minion's id (`e2e-minion`).
    pub(crate) fn minion_id(&self) -> &'static str {
        MINION_ID
    }

    /// The sandbox root (a short dir under `/tmp`).
    pub(crate) fn root(&self) -> &Path {
        &self.root
    }

    /// The Salt venv in use.
    pub(crate) fn venv(&self) -> &Path {
        &self.venv
    }

    /// `<root>/etc/salt`: holds `master` and `minion`; pass as `-c` to the Salt CLIs.
    pub(crate) fn config_dir(&self) -> PathBuf {
        self.root.join("etc/salt")
    }

    /// `<root>/etc/salt/master`, the file a program like saltgate reads (no `master.d`).
    pub(crate) fn master_config_file(&self) -> PathBuf {
        self.config_dir().join("master")
    }

    /// The master's `sock_dir` (holds `master_event_pub.ipc` / `master_event_pull.ipc`).
    pub(crate) fn sock_dir(&self) -> PathBuf {
        self.root.join("s")
    }

    /// The master's request port (ZeroMQ ROUTER, clear and aes channels).
    pub(crate) fn ret_port(&self) -> u16 {
        self.ret_port
    }

    /// The master config as written to [`Self::master_config_file`] (after the merges), e.g.
    /// to read `tcp_master_pull_port` in `ipc_mode: tcp`.
    pub(crate) fn master_config(&self) -> &Mapping {
        self.master_config
            .get()
            .expect("the master config is written in start()")
    }

    /// The master's publish port.
    pub(crate) fn publish_port(&self) -> u16 {
        self.publish_port
    }

    /// The port of rest_wsgi's application started by `with_rest_wsgi_app`. Panics without it.
    pub(crate) fn wsgi_app_port(&self) -> u16 {
        self.wsgi_app_port
            .expect("wsgi_app_port: this sandbox was built without with_rest_wsgi_app()")
    }

    /// The port of the real salt-api started by `with_salt_api`. Panics without it.
    pub(crate) fn salt_api_port(&self) -> u16 {
        self.api
            .map(|(_, port)| port)
            .expect("salt_api_port: this sandbox was built without with_salt_api(..)")
    }

    /// Where the built-in Reactor writes its files.
    pub(crate) fn reactor_out_dir(&self) -> PathBuf {
        self.root.join("reactor-out")
    }

    /// The master's log file.
    pub(crate) fn master_log_file(&self) -> PathBuf {
        self.root.join("log/master")
    }

    /// The Salt version of the venv, e.g. `3007.17`.
    pub(crate) fn salt_version(&self) -> String {
        salt_version_of(&self.venv)
    }

    // ---- CLIs ------------------------------------------------------------------------------

    /// Runs `<venv>/bin/salt -c <config_dir> ARGS...`.
    pub(crate) fn salt(&self, args: &[&str]) -> Output {
        self.cli("salt", args)
    }

    /// Runs `<venv>/bin/salt-run -c <config_dir> ARGS...`.
    pub(crate) fn salt_run(&self, args: &[&str]) -> Output {
        self.cli("salt-run", args)
    }

    /// Runs `<venv>/bin/salt-key -c <config_dir> ARGS...`.
    pub(crate) fn salt_key(&self, args: &[&str]) -> Output {
        self.cli("salt-key", args)
    }

    fn cli(&self, program: &str, args: &[&str]) -> Output {
        Command::new(self.venv.join("bin").join(program))
            .arg("-c")
            .arg(self.config_dir())
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("run {program}: {e}"))
    }

    /// Fires `tag` with JSON `data` on the master bus via `salt-run event.send`. Panics when
    /// the runner does not report success.
    pub(crate) fn send_event(&self, tag: &str, data: &Json) {
        let data = data.to_string();
        let out = self.salt_run(&["--out=json", "event.send", tag, &data]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.trim() == "true",
            "salt-run event.send {tag} failed: {}\nstdout: {stdout}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // ---- logs ------------------------------------------------------------------------------

    /// The last `n` lines of the master log (log file + captured stdout/stderr).
    pub(crate) fn master_log_tail(&self, n: usize) -> String {
        self.log_tail("master", n)
    }

    /// The last `n` lines of the minion log (log file + captured stdout/stderr).
    pub(crate) fn minion_log_tail(&self, n: usize) -> String {
        self.log_tail("minion", n)
    }

    /// The last `n` lines of the salt-api log (log file + captured stdout/stderr).
    pub(crate) fn api_log_tail(&self, n: usize) -> String {
        self.log_tail("api", n)
    }

    fn log_tail(&self, name: &str, n: usize) -> String {
        let mut s = String::new();
        for file in [name.to_owned(), format!("{name}.out")] {
            let path = self.root.join("log").join(&file);
            let text = fs::read(&path).map(|b| String::from_utf8_lossy(&b).into_owned());
            let text = text.unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let from = lines.len().saturating_sub(n);
            let _ = writeln!(s, "--- {} (last {n} lines)", path.display());
            for line in &lines[from..] {
                let _ = writeln!(s, "{line}");
            }
        }
        s
    }

    // ---- Reactor ---------------------------------------------------------------------------

    /// The files the built-in Reactor has written so far, sorted.
    pub(crate) fn reactor_files(&self) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = fs::read_dir(self.reactor_out_dir())
            .map(|rd| {
                rd.filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.extension().is_some_and(|x| x == "json"))
                    .collect()
            })
            .unwrap_or_default();
        files.sort();
        files
    }

    /// Waits until the Reactor has written `reactor-out/<id>.json` and returns its parsed
    /// content (the event data). Panics with the log tails after `timeout`.
    pub(crate) fn wait_reactor_file(&self, id: &str, timeout: Duration) -> Json {
        let path = self.reactor_out_dir().join(format!("{id}.json"));
        let deadline = Instant::now() + timeout;
        let mut last_err;
        loop {
            match fs::read(&path) {
                // The minion may be mid-write: retry until the JSON parses.
                Ok(bytes) => match serde_json::from_slice(&bytes) {
                    Ok(v) => return v,
                    Err(e) => last_err = format!("unparsable: {e}"),
                },
                Err(e) => last_err = e.to_string(),
            }
            if Instant::now() >= deadline {
                panic!(
                    "no Reactor output {} after {timeout:?} ({last_err}); present: {:?}\n{}\n{}",
                    path.display(),
                    self.reactor_files(),
                    self.master_log_tail(40),
                    self.minion_log_tail(40)
                );
            }
            sleep(Duration::from_millis(100));
        }
    }

    /// Waits until at least `n` Reactor files exist, or `timeout` passes; returns the count
    /// (which may be below `n`: the caller asserts).
    pub(crate) fn wait_reactor_count(&self, n: usize, timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        loop {
            let count = self.reactor_files().len();
            if count >= n || Instant::now() >= deadline {
                return count;
            }
            sleep(Duration::from_millis(100));
        }
    }

    // ---- master outage ---------------------------------------------------------------------

    /// Stops the master (SIGTERM to its process group, SIGKILL after 10 s). The minion keeps
    /// running and reconnects when the master is back.
    pub(crate) fn stop_master(&self) {
        let mut procs = self.lock_procs();
        if let Some(master) = procs.master.take() {
            terminate(vec![master]);
        }
        self.write_pgids(&procs);
    }

    /// Starts the master again with the same config (ports, pki, sock_dir) and waits until
    /// the minion answers `test.ping` (without a minion: until the master listens).
    pub(crate) fn start_master(&self) {
        {
            let mut procs = self.lock_procs();
            assert!(
                procs.master.is_none(),
                "start_master: the master is running"
            );
            procs.master = Some(self.spawn("master", "salt-master", &["-l", "warning"]));
            self.write_pgids(&procs);
        }
        self.wait_ready("restart");
    }

    /// Whether the master process is running (started and not exited).
    pub(crate) fn master_running(&self) -> bool {
        let mut procs = self.lock_procs();
        procs
            .master
            .as_mut()
            .is_some_and(|p| matches!(p.child.try_wait(), Ok(None)))
    }

    // ---- internals -------------------------------------------------------------------------

    fn lock_procs(&self) -> MutexGuard<'_, Procs> {
        self.procs.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn write_files(&self, opts: &SaltSandboxBuilder) {
        let root = &self.root;
        for dir in [
            "etc/salt",
            "pki/master",
            "pki/minion",
            "cache/master",
            "cache/minion",
            "s",
            "ms",
            "run",
            "log",
            "srv/salt/e2e",
            "reactor-out",
        ] {
            fs::create_dir_all(root.join(dir)).expect("create sandbox dirs");
        }
        let conf = self.config_dir();
        let srv = root.join("srv/salt");
        let p = |rel: &str| Yaml::from(root.join(rel).to_string_lossy().into_owned());

        fs::write(conf.join("users.txt"), "saltdev:saltdev\nlimited:limited\n")
            .expect("write users.txt");
        let out_dir = self.reactor_out_dir().to_string_lossy().into_owned();
        let out_dir_json = serde_json::to_string(&out_dir).expect("json string");
        let sls = REACTOR_SLS
            .replace("@MINION@", MINION_ID)
            .replace("@OUT_DIR@", &out_dir_json);
        fs::write(srv.join("e2e/reactor.sls"), sls).expect("write the Reactor SLS");
        for (name, content) in &opts.files {
            let path = srv.join(name);
            if let Some(parent) = path.parent() {
                fs::create_dir_all(parent).expect("create file_roots subdir");
            }
            fs::write(&path, content).expect("write a file_roots file");
        }

        let mut reactor = vec![Yaml::Mapping(yaml_map([(
            HOOK_TAG,
            Yaml::Sequence(vec![p("srv/salt/e2e/reactor.sls")]),
        )]))];
        for (tag, sls) in &opts.reactors {
            let list = sls.iter().map(|s| Yaml::from(s.clone())).collect();
            reactor.push(Yaml::Mapping(yaml_map([(
                tag.as_str(),
                Yaml::Sequence(list),
            )])));
        }
        let eauth_file = yaml_map([
            ("^filename", p("etc/salt/users.txt")),
            ("^filetype", Yaml::from("text")),
            ("saltdev", yaml_list(&[".*", "@runner", "@wheel", "@jobs"])),
            ("limited", yaml_list(&["test.ping"])),
        ]);
        let mut master = yaml_map([
            ("id", Yaml::from("e2e-master")),
            ("root_dir", p("")),
            ("conf_file", p("etc/salt/master")),
            ("pki_dir", p("pki/master")),
            ("cachedir", p("cache/master")),
            ("sock_dir", p("s")),
            ("log_file", p("log/master")),
            ("log_level_logfile", Yaml::from("info")),
            ("pidfile", p("run/master.pid")),
            ("api_pidfile", p("run/api.pid")),
            ("api_logfile", p("log/api")),
            ("interface", Yaml::from("127.0.0.1")),
            ("publish_port", Yaml::from(self.publish_port)),
            ("ret_port", Yaml::from(self.ret_port)),
            ("tcp_master_pub_port", Yaml::from(self.tcp_ports[0])),
            ("tcp_master_pull_port", Yaml::from(self.tcp_ports[1])),
            ("tcp_master_publish_pull", Yaml::from(self.tcp_ports[2])),
            ("tcp_master_workers", Yaml::from(self.tcp_ports[3])),
            ("user", Yaml::from("root")),
            ("auto_accept", Yaml::from(true)),
            ("worker_threads", Yaml::from(2)),
            (
                "file_roots",
                Yaml::Mapping(yaml_map([("base", Yaml::Sequence(vec![p("srv/salt")]))])),
            ),
            ("reactor", Yaml::Sequence(reactor)),
            (
                "external_auth",
                Yaml::Mapping(yaml_map([("file", Yaml::Mapping(eauth_file))])),
            ),
            (
                "netapi_enable_clients",
                yaml_list(&[
                    "local",
                    "local_async",
                    "local_batch",
                    "local_subset",
                    "runner",
                    "runner_async",
                    "wheel",
                    "wheel_async",
                ]),
            ),
        ]);
        if let Some((kind, port)) = self.api {
            let mut block = yaml_map([
                ("port", Yaml::from(port)),
                ("disable_ssl", Yaml::from(true)),
                ("webhook_disable_auth", Yaml::from(true)),
            ]);
            match kind {
                SaltApi::RestCherrypy => {
                    block.insert("host".into(), "127.0.0.1".into());
                }
                SaltApi::RestTornado => {
                    block.insert("address".into(), "127.0.0.1".into());
                    block.insert("num_processes".into(), 1.into());
                }
                // rest_wsgi reads `port` only (and binds localhost).
                SaltApi::RestWsgi => {
                    block = yaml_map([("port", Yaml::from(port))]);
                }
            }
            master.insert(kind.config_key().into(), Yaml::Mapping(block));
        }
        for extra in &opts.master_yaml {
            merge(&mut master, &self.parse_extra(extra));
        }

        let mut minion = yaml_map([
            ("id", Yaml::from(MINION_ID)),
            ("master", Yaml::from("127.0.0.1")),
            ("master_port", Yaml::from(self.ret_port)),
            ("publish_port", Yaml::from(self.publish_port)),
            ("tcp_pub_port", Yaml::from(self.tcp_ports[4])),
            ("tcp_pull_port", Yaml::from(self.tcp_ports[5])),
            ("root_dir", p("")),
            ("conf_file", p("etc/salt/minion")),
            ("pki_dir", p("pki/minion")),
            ("cachedir", p("cache/minion")),
            ("sock_dir", p("ms")),
            ("pidfile", p("run/minion.pid")),
            ("log_file", p("log/minion")),
            ("log_level_logfile", Yaml::from("info")),
            ("user", Yaml::from("root")),
            // Fast (re)connection: defaults wait 10 s between auth attempts and up to 10 s
            // before re-authenticating after a master restart.
            ("acceptance_wait_time", Yaml::from(1)),
            ("acceptance_wait_time_max", Yaml::from(2)),
            ("random_reauth_delay", Yaml::from(0)),
            ("recon_default", Yaml::from(200)),
            ("recon_max", Yaml::from(2000)),
            ("recon_randomize", Yaml::from(false)),
            ("auth_timeout", Yaml::from(5)),
            ("grains_cache", Yaml::from(true)),
        ]);
        for extra in &opts.minion_yaml {
            merge(&mut minion, &self.parse_extra(extra));
        }

        let write = |name: &str, map: &Mapping| {
            let text = serde_yaml::to_string(map).expect("serialise config");
            fs::write(conf.join(name), text).expect("write config");
        };
        write("master", &master);
        let _ = self.master_config.set(master);
        write("minion", &minion);
    }

    fn parse_extra(&self, yaml: &str) -> Mapping {
        let yaml = yaml.replace("@ROOT@", &self.root.to_string_lossy());
        match serde_yaml::from_str::<Yaml>(&yaml) {
            Ok(Yaml::Mapping(m)) => m,
            Ok(Yaml::Null) => Mapping::new(),
            other => panic!("extra config must be a YAML mapping, got {other:?} from:\n{yaml}"),
        }
    }

    fn spawn(&self, name: &'static str, program: &str, args: &[&str]) -> Proc {
        let config = self.config_dir().to_string_lossy().into_owned();
        let mut all = vec!["-c", config.as_str()];
        all.extend_from_slice(args);
        self.spawn_args(name, program, &all)
    }

    /// Runs the venv's `program` with exactly `args`, in its own process group, output to
    /// `log/<name>.out`.
    fn spawn_args(&self, name: &'static str, program: &str, args: &[&str]) -> Proc {
        let out_path = self.root.join("log").join(format!("{name}.out"));
        let out = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&out_path)
            .expect("open the process output file");
        let err = out.try_clone().expect("clone the output file handle");
        let child = Command::new(self.venv.join("bin").join(program))
            .args(args)
            .current_dir(&self.root)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {program}: {e}"));
        Proc { name, child }
    }

    fn write_pgids(&self, procs: &Procs) {
        let ids: Vec<String> = procs.all().map(|p| p.pgid().to_string()).collect();
        let tmp = self.root.join(".pgids.tmp");
        fs::write(&tmp, ids.join(" ") + "\n").expect("write .pgids");
        fs::rename(&tmp, self.root.join(".pgids")).expect("rename .pgids");
    }

    fn start_watchdog(&self) {
        let mode = if self.keep { "keep" } else { "rm" };
        let child = Command::new("bash")
            .arg("-c")
            .arg(WATCHDOG)
            .arg("saltgate-e2e-watchdog")
            .arg(std::process::id().to_string())
            .arg(&self.root)
            .arg(mode)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("spawn the watchdog (bash)");
        *self.watchdog.lock().unwrap_or_else(PoisonError::into_inner) = Some(child);
    }

    fn wait_ready(&self, what: &str) {
        if self.with_minion {
            self.wait_minion_ready(what);
        } else {
            self.wait_master_ready(what);
        }
    }

    /// Panics (with log tails) unless, within [`READY_TIMEOUT`], the master's event publisher
    /// socket is in its `sock_dir` and its request port accepts connections on its
    /// `interface`.
    fn wait_master_ready(&self, what: &str) {
        let deadline = Instant::now() + READY_TIMEOUT;
        let interface = (self.master_config().get("interface"))
            .and_then(Yaml::as_str)
            .unwrap_or("127.0.0.1")
            .to_owned();
        let addr = format!("{interface}:{}", self.ret_port);
        let addr: std::net::SocketAddr = addr.parse().expect("interface:ret_port");
        let publisher = self.sock_dir().join("master_event_pub.ipc");
        loop {
            if let Some(dead) = self.exited_process() {
                self.fail(&format!("{what}: salt-{dead} exited"));
            }
            if publisher.exists()
                && TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok()
            {
                return;
            }
            if Instant::now() >= deadline {
                self.fail(&format!(
                    "{what}: the master did not listen on {addr} with {} within {READY_TIMEOUT:?}",
                    publisher.display()
                ));
            }
            sleep(Duration::from_millis(200));
        }
    }

    /// Panics (with log tails) unless master and minion are up and the minion answers
    /// `test.ping` within [`READY_TIMEOUT`].
    fn wait_minion_ready(&self, what: &str) {
        let started = Instant::now();
        let deadline = started + READY_TIMEOUT;
        // Each test.ping costs a Python start plus up to `-t` seconds, so first wait (cheaply)
        // for auto_accept to file the minion's key (in `cluster_pki_dir` on a cluster's master).
        let pki = (self.master_config().get("cluster_pki_dir"))
            .and_then(Yaml::as_str)
            .map_or_else(|| self.root.join("pki/master"), PathBuf::from);
        let key = pki.join("minions").join(MINION_ID);
        while !key.exists() && Instant::now() < deadline {
            if let Some(dead) = self.exited_process() {
                self.fail(&format!("{what}: salt-{dead} exited"));
            }
            sleep(Duration::from_millis(100));
        }
        loop {
            if let Some(dead) = self.exited_process() {
                self.fail(&format!("{what}: salt-{dead} exited"));
            }
            // `timeout`: a wedged master must not hang the readiness loop past its deadline.
            let out = Command::new("timeout")
                .args(["-k", "5", "30"])
                .arg(self.venv.join("bin/salt"))
                .arg("-c")
                .arg(self.config_dir())
                .args(["-t", "5", MINION_ID, "test.ping", "--out=json"])
                .stdin(Stdio::null())
                .output()
                .expect("run timeout(1) + salt");
            let stdout = String::from_utf8_lossy(&out.stdout);
            let answered = serde_json::from_str::<Json>(&stdout)
                .ok()
                .and_then(|v| v.get(MINION_ID).cloned())
                == Some(Json::Bool(true));
            if answered {
                return;
            }
            let last = format!(
                "{}\nstdout: {stdout}\nstderr: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
            if Instant::now() >= deadline {
                self.fail(&format!(
                    "{what}: minion did not answer test.ping within {READY_TIMEOUT:?}; last try: {last}"
                ));
            }
            sleep(Duration::from_millis(500));
        }
    }

    fn wait_api_ready(&self, kind: SaltApi, port: u16) {
        // rest_wsgi under salt-api answers everything 500 (see `SaltApi::RestWsgi`).
        let ready = move |status: u16| kind == SaltApi::RestWsgi || status < 500;
        self.wait_http(port, &format!("salt-api ({kind:?})"), ready);
    }

    /// Waits until `GET /` on 127.0.0.1:port answers a status `ready` accepts.
    fn wait_http(&self, port: u16, what: &str, ready: impl Fn(u16) -> bool) {
        let deadline = Instant::now() + API_TIMEOUT;
        loop {
            if let Some(dead) = self.exited_process() {
                self.fail(&format!("salt-{dead} exited"));
            }
            if let Some(status) = http_get_status(port, "/") {
                if ready(status) {
                    return;
                }
            }
            if Instant::now() >= deadline {
                self.fail(&format!(
                    "{what} did not answer GET / on 127.0.0.1:{port} within {API_TIMEOUT:?}"
                ));
            }
            sleep(Duration::from_millis(200));
        }
    }

    fn exited_process(&self) -> Option<&'static str> {
        let mut procs = self.lock_procs();
        let Procs {
            master,
            minion,
            api,
            wsgi_app,
        } = &mut *procs;
        [master, minion, api, wsgi_app]
            .into_iter()
            .filter_map(Option::as_mut)
            .find_map(|p| (!matches!(p.child.try_wait(), Ok(None))).then_some(p.name))
    }

    fn fail(&self, msg: &str) -> ! {
        let mut logs = format!("{}\n{}", self.master_log_tail(60), self.minion_log_tail(60));
        if self.api.is_some() {
            logs.push('\n');
            logs.push_str(&self.api_log_tail(60));
        }
        panic!(
            "Salt sandbox {} (Salt {}): {msg}\n{logs}",
            self.root.display(),
            self.salt_version()
        );
    }
}

impl Drop for SaltSandbox {
    fn drop(&mut self) {
        let procs = std::mem::take(&mut *self.lock_procs());
        let Procs {
            master,
            minion,
            api,
            wsgi_app,
        } = procs;
        terminate(
            [wsgi_app, api, minion, master]
                .into_iter()
                .flatten()
                .collect(),
        );
        let _ = fs::write(self.root.join(".pgids"), "\n");
        if let Some(mut wd) = self
            .watchdog
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            kill_group(wd.id(), "KILL");
            let _ = wd.wait();
        }
    }
}

/// SIGTERM every process group, wait for all of them to be gone, and SIGKILL a group still
/// alive after its grace period: [`STOP_TIMEOUT`], but [`MINION_GRACE`] for the minion, which
/// takes 5-30 s to act on SIGTERM and has nothing worth a clean exit.
fn terminate(mut procs: Vec<Proc>) {
    for p in &procs {
        kill_group(p.pgid(), "TERM");
    }
    let started = Instant::now();
    let mut killed = vec![false; procs.len()];
    loop {
        let mut alive = false;
        for (p, killed) in procs.iter_mut().zip(&mut killed) {
            let leader_done = !matches!(p.child.try_wait(), Ok(None));
            if leader_done && !group_alive(p.pgid()) {
                continue;
            }
            alive = true;
            let grace = if p.name == "minion" {
                MINION_GRACE
            } else {
                STOP_TIMEOUT
            };
            if !*killed && started.elapsed() >= grace {
                kill_group(p.pgid(), "KILL");
                *killed = true;
            }
        }
        if !alive {
            return;
        }
        sleep(Duration::from_millis(100));
    }
}

fn kill_group(pgid: u32, signal: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg("--")
        .arg(format!("-{pgid}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

fn group_alive(pgid: u32) -> bool {
    Command::new("kill")
        .arg("-0")
        .arg("--")
        .arg(format!("-{pgid}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Free loopback ports, never handed out twice in this process. (Another process may still
/// take one between this check and Salt's bind; Salt binds by number, so this cannot be
/// avoided by passing a listener.)
fn free_ports<const N: usize>() -> [u16; N] {
    static USED: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    let mut used = USED.lock().unwrap_or_else(PoisonError::into_inner);
    let used = used.get_or_insert_with(HashSet::new);
    let mut held = Vec::new();
    let mut ports = [0u16; N];
    for slot in &mut ports {
        loop {
            let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
            let port = l.local_addr().expect("local_addr").port();
            held.push(l);
            if used.insert(port) {
                *slot = port;
                break;
            }
        }
    }
    ports
}

/// `GET path` over plain HTTP/1.0 to 127.0.0.1:port; the status code, or `None`.
fn http_get_status(port: u16, path: &str) -> Option<u16> {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut buf = [0u8; 64];
    let mut got = 0;
    while got < 12 {
        match s.read(&mut buf[got..]).ok()? {
            0 => break,
            n => got += n,
        }
    }
    let head = std::str::from_utf8(&buf[..got]).ok()?;
    head.split_whitespace().nth(1)?.parse().ok()
}

fn yaml_map<'a>(entries: impl IntoIterator<Item = (&'a str, Yaml)>) -> Mapping {
    entries
        .into_iter()
        .map(|(k, v)| (Yaml::from(k), v))
        .collect()
}

fn yaml_list(items: &[&str]) -> Yaml {
    Yaml::Sequence(items.iter().map(|s| Yaml::from(*s)).collect())
}

/// Deep merge: mappings merge key by key, anything else in `extra` replaces.
fn merge(base: &mut Mapping, extra: &Mapping) {
    for (k, v) in extra {
        match (base.get_mut(k), v) {
            (Some(Yaml::Mapping(b)), Yaml::Mapping(e)) => merge(b, e),
            _ => {
                base.insert(k.clone(), v.clone());
            }
        }
    }
}

// ---- the venv ----------------------------------------------------------------------------

/// The Salt venv: `$SALTGATE_SALT_VENV`, or what `scripts/salt-venv` prints for
/// `$SALTGATE_SALT_VERSION` (default 3007.17), installing it if needed. Panics when Salt
/// cannot be had: these tests fail rather than skip.
pub(crate) fn venv() -> &'static Path {
    static VENV: OnceLock<PathBuf> = OnceLock::new();
    VENV.get_or_init(resolve_venv)
}

fn resolve_venv() -> PathBuf {
    let venv = match std::env::var_os("SALTGATE_SALT_VENV").filter(|v| !v.is_empty()) {
        Some(v) => PathBuf::from(v),
        None => {
            let version =
                std::env::var("SALTGATE_SALT_VERSION").unwrap_or_else(|_| "3007.17".to_owned());
            let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/salt-venv");
            let out = Command::new(&script)
                .arg(&version)
                .stdin(Stdio::null())
                .stderr(Stdio::inherit())
                .output()
                .unwrap_or_else(|e| {
                    panic!("e2e tests need Salt: cannot run {}: {e}", script.display())
                });
            assert!(
                out.status.success(),
                "e2e tests need Salt: {} {version} failed ({}). Install it, or point \
                 SALTGATE_SALT_VENV at a venv with Salt.",
                script.display(),
                out.status
            );
            let printed = String::from_utf8_lossy(&out.stdout);
            let line = printed
                .lines()
                .rfind(|l| !l.trim().is_empty())
                .unwrap_or("");
            PathBuf::from(line.trim())
        }
    };
    for bin in ["salt-master", "salt-minion", "salt", "salt-run", "salt-api"] {
        assert!(
            venv.join("bin").join(bin).is_file(),
            "e2e tests need Salt: {} has no bin/{bin} (SALTGATE_SALT_VENV / scripts/salt-venv)",
            venv.display()
        );
    }
    venv
}

/// The Salt version installed in `venv`, from its `salt-*.dist-info` dir, else from Python.
pub(crate) fn salt_version_of(venv: &Path) -> String {
    let from_dist_info = fs::read_dir(venv.join("lib")).ok().and_then(|libs| {
        libs.filter_map(Result::ok).find_map(|py| {
            fs::read_dir(py.path().join("site-packages"))
                .ok()?
                .filter_map(Result::ok)
                .find_map(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    let version = name.strip_prefix("salt-")?.strip_suffix(".dist-info")?;
                    Some(version.to_owned())
                })
        })
    });
    if let Some(v) = from_dist_info {
        return v;
    }
    let out = Command::new(venv.join("bin/python"))
        .args(["-c", "import salt.version; print(salt.version.__version__)"])
        .output()
        .expect("run the venv's python");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}
