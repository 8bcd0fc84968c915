//! The Salt master's own settings, read the way Salt reads them: the config file, then
//! `master.d/*.conf` (`default_include`) and any `include:` files, merged recursively; paths
//! under `root_dir`; `sock_dir` moved to `<cachedir>/.salt-unix` when it is too long.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use super::error::ConfigError;
use crate::salt::bus::ipc::Endpoint;

/// The master keys saltgate uses, with Salt's defaults.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct MasterSettings {
    /// Salt's `root_dir`; other paths live under it.
    pub root_dir: PathBuf,
    /// Where the master's event sockets are.
    pub sock_dir: PathBuf,
    /// The master's cache directory.
    pub cachedir: PathBuf,
    /// The user the master runs as (its key file is `<cachedir>/.<user>_key`).
    pub user: String,
    /// `ipc` (unix sockets) or `tcp` (loopback ports) for the event bus.
    pub ipc_mode: IpcMode,
    /// The event publisher's port with `ipc_mode: tcp`.
    pub tcp_master_pub_port: u16,
    /// The event puller's port with `ipc_mode: tcp`.
    pub tcp_master_pull_port: u16,
    /// Use IPv6 loopback in TCP mode.
    pub ipv6: Option<bool>,
    /// The address the master binds; saltgate connects to it (`0.0.0.0` means loopback). An IP
    /// address, bracketed or not, as Salt's own clients require.
    #[serde(deserialize_with = "ip_address")]
    pub interface: IpAddr,
    /// The request server's port.
    pub ret_port: u16,
    /// Seconds `local` waits for returns before asking `saltutil.find_job`.
    pub timeout: u64,
    /// Seconds minions get to answer `saltutil.find_job`.
    pub gather_job_timeout: u64,
    /// Seconds a token lives.
    pub token_expire: u64,
    /// Which netapi clients may be used.
    pub netapi_enable_clients: Vec<String>,
    /// The eauth ACLs, kept as written.
    pub external_auth: serde_json::Value,
    /// The Reactor's `{tag glob: [sls, ...]}` list, kept as written; read only to warn about
    /// globs that match hook tags outside the signed rules.
    pub reactor: serde_json::Value,
    /// `permissive_acl`, as written (how `*` joins an auth list).
    pub permissive_acl: serde_json::Value,
    /// `keep_acl_in_token`, as written (the master then uses the ACL stored in the token).
    pub keep_acl_in_token: serde_json::Value,
    /// `eauth_acl_module`, as written (a module that supplies eauth ACLs).
    pub eauth_acl_module: serde_json::Value,
    /// `auth.enable_expanded_auth_matching`, as written.
    #[serde(rename = "auth.enable_expanded_auth_matching")]
    pub expanded_auth_matching: serde_json::Value,
    /// `key_cache`, as written (a cached minion list).
    pub key_cache: serde_json::Value,
    /// `enable_ssh_minions`, as written (roster targets join the minion list).
    pub enable_ssh_minions: serde_json::Value,
    /// Salt's `redis.host` (its Redis returner and cache): the shared store's default host.
    #[serde(rename = "redis.host")]
    pub redis_host: serde_json::Value,
    /// Salt's `redis.port`.
    #[serde(rename = "redis.port")]
    pub redis_port: serde_json::Value,
    /// Salt's `redis.db`.
    #[serde(rename = "redis.db")]
    pub redis_db: serde_json::Value,
    /// Salt's `redis.password`.
    #[serde(rename = "redis.password")]
    pub redis_password: serde_json::Value,
}

/// How the master's event bus is reached (Salt's `ipc_mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum IpcMode {
    /// Unix sockets in `sock_dir`.
    #[default]
    Ipc,
    /// Loopback TCP ports (`tcp_master_pub_port`, `tcp_master_pull_port`).
    Tcp,
}

/// An IP address as Salt writes one in `interface`: `10.0.0.1`, `::1` or `[::1]`.
fn ip_address<'de, D: Deserializer<'de>>(de: D) -> Result<IpAddr, D::Error> {
    let text = String::deserialize(de)?;
    let bare = text.trim_start_matches('[').trim_end_matches(']');
    bare.parse().map_err(|_| {
        serde::de::Error::custom(format!(
            "{text:?} is not an IP address (Salt's clients connect to the master by address)"
        ))
    })
}

impl Default for MasterSettings {
    fn default() -> Self {
        Self {
            root_dir: PathBuf::from("/"),
            sock_dir: PathBuf::from("/var/run/salt/master"),
            cachedir: PathBuf::from("/var/cache/salt/master"),
            user: "root".into(),
            ipc_mode: IpcMode::Ipc,
            tcp_master_pub_port: 4512,
            tcp_master_pull_port: 4513,
            ipv6: None,
            interface: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            ret_port: 4506,
            timeout: 5,
            gather_job_timeout: 10,
            token_expire: 43200,
            netapi_enable_clients: Vec::new(),
            external_auth: serde_json::Value::Object(Default::default()),
            reactor: serde_json::Value::Null,
            permissive_acl: serde_json::Value::Null,
            keep_acl_in_token: serde_json::Value::Null,
            eauth_acl_module: serde_json::Value::Null,
            expanded_auth_matching: serde_json::Value::Null,
            key_cache: serde_json::Value::Null,
            enable_ssh_minions: serde_json::Value::Null,
            redis_host: serde_json::Value::Null,
            redis_port: serde_json::Value::Null,
            redis_db: serde_json::Value::Null,
            redis_password: serde_json::Value::Null,
        }
    }
}

impl MasterSettings {
    /// The tag globs of the `reactor` list (`- 'salt/netapi/hook/*': [...]`).
    pub fn reactor_globs(&self) -> Vec<String> {
        self.reactor
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(serde_json::Value::as_object)
            .flat_map(|m| m.keys().cloned())
            .collect()
    }

    /// Applies Salt's path rules: the long-`sock_dir` rewrite, then `root_dir` prepending.
    pub fn resolve_paths(&mut self) {
        if self.sock_dir.as_os_str().len() > self.cachedir.as_os_str().len() + 10 {
            self.sock_dir = self.cachedir.join(".salt-unix");
        }
        let root = self.root_dir.clone();
        for path in [&mut self.sock_dir, &mut self.cachedir] {
            *path = under_root(&root, path);
        }
    }

    /// `tcp://<interface>:<ret_port>` with wildcard interfaces mapped to loopback.
    pub fn ret_endpoint(&self) -> String {
        let host = match self.interface {
            IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        match host {
            IpAddr::V4(v4) => format!("tcp://{v4}:{}", self.ret_port),
            IpAddr::V6(v6) => format!("tcp://[{v6}]:{}", self.ret_port),
        }
    }

    /// The event bus endpoints: (publisher, puller).
    pub fn bus_endpoints(&self) -> (Endpoint, Endpoint) {
        if self.ipc_mode == IpcMode::Tcp {
            let host = if self.ipv6 == Some(true) {
                IpAddr::V6(Ipv6Addr::LOCALHOST)
            } else {
                IpAddr::V4(Ipv4Addr::LOCALHOST)
            };
            (
                Endpoint::Tcp(SocketAddr::new(host, self.tcp_master_pub_port)),
                Endpoint::Tcp(SocketAddr::new(host, self.tcp_master_pull_port)),
            )
        } else {
            (
                Endpoint::Unix(self.sock_dir.join("master_event_pub.ipc")),
                Endpoint::Unix(self.sock_dir.join("master_event_pull.ipc")),
            )
        }
    }

    /// The settings that shape how the master compiles and matches eauth ACLs.
    pub fn acl_options(&self) -> crate::security::acl::AclOptions {
        use crate::security::acl::truthy;
        crate::security::acl::AclOptions {
            permissive_acl: truthy(&self.permissive_acl),
            keep_acl_in_token: truthy(&self.keep_acl_in_token),
            eauth_acl_module: truthy(&self.eauth_acl_module),
            expanded_matching: truthy(&self.expanded_auth_matching),
            key_cache: truthy(&self.key_cache),
            ssh_minions: truthy(&self.enable_ssh_minions),
        }
    }

    /// Salt's `timeout`.
    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout)
    }

    /// Salt's `gather_job_timeout`.
    pub fn gather_job_timeout(&self) -> Duration {
        Duration::from_secs(self.gather_job_timeout)
    }
}

fn under_root(root: &Path, path: &Path) -> PathBuf {
    if root == Path::new("/") || path.starts_with(root) {
        return path.to_path_buf();
    }
    root.join(path.strip_prefix("/").unwrap_or(path))
}

/// A master config file and its includes merged into one mapping, remembering which file each
/// key was read from so that errors can name it.
#[derive(Debug, Clone)]
pub struct Merged {
    /// The merged document.
    pub doc: serde_yaml::Mapping,
    /// The master config file itself.
    pub file: PathBuf,
    /// Key paths an include set (`rest_cherrypy.port`, `saltgate.hooks`), with that include.
    from_includes: Vec<(String, PathBuf)>,
}

impl Merged {
    /// The file the value at `key` (a key path such as `saltgate.hooks[2].path`) came from:
    /// the include that last set it or a key above it, else the master config file.
    pub fn file_of(&self, key: &str) -> &Path {
        self.from_includes
            .iter()
            .filter(|(set, _)| is_under(key, set))
            .max_by_key(|(set, _)| set.len())
            .map_or(self.file.as_path(), |(_, file)| file.as_path())
    }
}

/// Whether the key path `key` is `parent` or below it.
fn is_under(key: &str, parent: &str) -> bool {
    key.strip_prefix(parent)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '[']))
}

/// Reads a master config file and its includes into one merged YAML mapping.
pub fn read_merged(path: &Path) -> Result<Merged, ConfigError> {
    let doc = read_yaml(path)?;
    let mut merged = Merged {
        doc,
        file: path.to_path_buf(),
        from_includes: Vec::new(),
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut patterns: Vec<String> = Vec::new();
    let invalid = |key: &str, message: &str| ConfigError::invalid(key, message).in_file(path);
    match merged.doc.get("default_include") {
        Some(serde_yaml::Value::String(s)) => patterns.push(s.clone()),
        Some(_) => return Err(invalid("default_include", "must be a string")),
        None => patterns.push("master.d/*.conf".into()),
    }
    match merged.doc.get("include") {
        None => {}
        Some(serde_yaml::Value::String(s)) => patterns.push(s.clone()),
        Some(serde_yaml::Value::Sequence(items)) => {
            for item in items {
                match item {
                    serde_yaml::Value::String(s) => patterns.push(s.clone()),
                    _ => return Err(invalid("include", "must be strings")),
                }
            }
        }
        Some(_) => return Err(invalid("include", "must be a string or a list")),
    }
    for pattern in patterns {
        for file in expand(dir, &pattern)? {
            let extra = read_yaml(&file)?;
            merge(&mut merged.doc, extra, "", &file, &mut merged.from_includes);
        }
    }
    Ok(merged)
}

fn read_yaml(path: &Path) -> Result<serde_yaml::Mapping, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    if text.trim().is_empty() {
        return Ok(serde_yaml::Mapping::new());
    }
    match serde_yaml::from_str::<serde_yaml::Value>(&text) {
        Ok(serde_yaml::Value::Mapping(m)) => Ok(m),
        Ok(serde_yaml::Value::Null) => Ok(serde_yaml::Mapping::new()),
        Ok(_) => Err(ConfigError::Yaml {
            path: path.to_path_buf(),
            message: "the top level must be a mapping".into(),
        }),
        Err(e) => Err(ConfigError::Yaml {
            path: path.to_path_buf(),
            message: e.to_string(),
        }),
    }
}

/// Salt merges included files recursively: mappings merge key by key, anything else replaces.
/// Each replaced key path is noted with `file` in `origins` (dropping notes below it).
fn merge(
    into: &mut serde_yaml::Mapping,
    from: serde_yaml::Mapping,
    prefix: &str,
    file: &Path,
    origins: &mut Vec<(String, PathBuf)>,
) {
    for (k, v) in from {
        let name = match &k {
            serde_yaml::Value::String(s) => s.clone(),
            other => serde_yaml::to_string(other)
                .unwrap_or_default()
                .trim()
                .to_owned(),
        };
        let path = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}.{name}")
        };
        match (into.get_mut(&k), v) {
            (Some(serde_yaml::Value::Mapping(a)), serde_yaml::Value::Mapping(b)) => {
                merge(a, b, &path, file, origins);
            }
            (_, v) => {
                into.insert(k, v);
                origins.retain(|(set, _)| !is_under(set, &path));
                origins.push((path, file.to_path_buf()));
            }
        }
    }
}

/// Expands a Salt include pattern (`master.d/*.conf`, absolute or relative to the config dir);
/// `*` and `?` are allowed in the last component only. Missing directories yield nothing.
fn expand(dir: &Path, pattern: &str) -> Result<Vec<PathBuf>, ConfigError> {
    let full = if Path::new(pattern).is_absolute() {
        PathBuf::from(pattern)
    } else {
        dir.join(pattern)
    };
    let name = full
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default()
        .to_owned();
    let parent = full.parent().unwrap_or(Path::new(".")).to_path_buf();
    if !name.contains(['*', '?']) {
        return Ok(if full.is_file() {
            vec![full]
        } else {
            Vec::new()
        });
    }
    let Ok(entries) = std::fs::read_dir(&parent) else {
        return Ok(Vec::new());
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| wildcard(&name, n))
        })
        .collect();
    files.sort();
    Ok(files)
}

fn wildcard(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    let (mut pi, mut ni, mut star, mut mark) = (0usize, 0usize, None::<usize>, 0usize);
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            pi += 1;
            mark = ni;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ni = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards() {
        assert!(wildcard("*.conf", "a.conf"));
        assert!(wildcard("*.conf", ".conf"));
        assert!(!wildcard("*.conf", "a.conf.bak"));
        assert!(wildcard("a?c*", "abcdef"));
    }

    #[test]
    fn long_sock_dir_moves_under_cachedir() {
        let mut m = MasterSettings {
            cachedir: "/c".into(),
            sock_dir: "/a/very/long/socket/directory/path".into(),
            ..Default::default()
        };
        m.resolve_paths();
        assert_eq!(m.sock_dir, PathBuf::from("/c/.salt-unix"));
    }

    #[test]
    fn root_dir_is_prepended() {
        let mut m = MasterSettings {
            root_dir: "/srv/r".into(),
            ..Default::default()
        };
        m.resolve_paths();
        assert_eq!(m.sock_dir, PathBuf::from("/srv/r/var/run/salt/master"));
        let mut m = MasterSettings {
            root_dir: "/srv/r".into(),
            sock_dir: "/srv/r/run".into(),
            cachedir: "/srv/r/cache".into(),
            ..Default::default()
        };
        m.resolve_paths();
        assert_eq!(m.sock_dir, PathBuf::from("/srv/r/run"));
    }

    #[test]
    fn endpoints() {
        let m = MasterSettings::default();
        assert_eq!(m.ret_endpoint(), "tcp://127.0.0.1:4506");
        let m = MasterSettings {
            interface: "::".parse().unwrap(),
            ret_port: 1,
            ..Default::default()
        };
        assert_eq!(m.ret_endpoint(), "tcp://[::1]:1");
        let m = MasterSettings {
            ipc_mode: IpcMode::Tcp,
            ..Default::default()
        };
        assert_eq!(
            m.bus_endpoints().1,
            Endpoint::Tcp("127.0.0.1:4513".parse().unwrap())
        );
    }

    #[test]
    fn includes_merge_recursively_in_order() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("master"),
            "ret_port: 1\nrest_cherrypy:\n  port: 8000\n",
        )
        .unwrap();
        std::fs::create_dir(dir.path().join("master.d")).unwrap();
        std::fs::write(
            dir.path().join("master.d/b.conf"),
            "rest_cherrypy:\n  host: h\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("master.d/a.conf"), "ret_port: 2\n").unwrap();
        std::fs::write(dir.path().join("master.d/c.txt"), "ret_port: 3\n").unwrap();
        let merged = read_merged(&dir.path().join("master")).unwrap();
        let m = &merged.doc;
        assert_eq!(m.get("ret_port"), Some(&serde_yaml::Value::from(2)));
        let rc = m.get("rest_cherrypy").unwrap();
        assert_eq!(rc.get("port"), Some(&serde_yaml::Value::from(8000)));
        assert_eq!(rc.get("host"), Some(&serde_yaml::Value::from("h")));
        // Each key is traced to the file that set it last.
        assert_eq!(
            merged.file_of("ret_port"),
            dir.path().join("master.d/a.conf")
        );
        assert_eq!(
            merged.file_of("rest_cherrypy.host"),
            dir.path().join("master.d/b.conf")
        );
        assert_eq!(
            merged.file_of("rest_cherrypy.port"),
            dir.path().join("master")
        );
        assert_eq!(merged.file_of("rest_cherrypy"), dir.path().join("master"));
        assert_eq!(merged.file_of("ret_portx"), dir.path().join("master"));
    }

    #[test]
    fn a_replaced_key_forgets_where_its_old_children_came_from() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("master"), "").unwrap();
        std::fs::create_dir(dir.path().join("master.d")).unwrap();
        std::fs::write(
            dir.path().join("master.d/a.conf"),
            "saltgate:\n  hooks: []\n  bus: builtin\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("master.d/b.conf"), "saltgate: ~\n").unwrap();
        std::fs::write(
            dir.path().join("master.d/c.conf"),
            "saltgate:\n  hooks: [{path: x}]\n",
        )
        .unwrap();
        let merged = read_merged(&dir.path().join("master")).unwrap();
        let c = dir.path().join("master.d/c.conf");
        assert_eq!(merged.file_of("saltgate.hooks[0].path"), c);
        assert_eq!(merged.file_of("saltgate"), c);
        assert_eq!(merged.file_of("saltgate.bus"), c);
    }

    #[test]
    fn interface_is_an_ip_address() {
        let m: MasterSettings = serde_yaml::from_str("interface: '[::1]'\n").unwrap();
        assert_eq!(m.interface, IpAddr::V6(Ipv6Addr::LOCALHOST));
        let e = serde_yaml::from_str::<MasterSettings>("interface: eth0\n").unwrap_err();
        assert!(
            e.to_string().contains("\"eth0\" is not an IP address"),
            "{e}"
        );
        let e = serde_yaml::from_str::<MasterSettings>("ipc_mode: pipes\n").unwrap_err();
        assert!(e.to_string().contains("`ipc` or `tcp`"), "{e}");
    }
}
