//! Proves the harness itself: the real master answers, the Reactor writes, the master can be
//! restarted under a running minion, and the real salt-api comes up.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::{SaltApi, SaltSandbox, shared};

fn ping(sandbox: &SaltSandbox) -> serde_json::Value {
    let out = sandbox.salt(&["-t", "10", sandbox.minion_id(), "test.ping", "--out=json"]);
    assert!(
        out.status.success(),
        "salt test.ping: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("test.ping --out=json is JSON")
}

#[test]
fn shared_sandbox_minion_answers_ping() {
    let sandbox = shared();
    assert_eq!(ping(sandbox), json!({ "e2e-minion": true }));
    let sock = sandbox.sock_dir().join("master_event_pull.ipc");
    assert!(
        sock.as_os_str().len() < 100,
        "socket path too long: {}",
        sock.display()
    );
    assert!(sock.exists(), "no {}", sock.display());
    assert!(sandbox.master_config_file().is_file());
    assert!(!sandbox.salt_version().is_empty());
}

#[test]
fn shared_sandbox_reactor_writes_hook_data() {
    let sandbox = shared();
    let out = sandbox.salt_run(&[
        "event.send",
        "salt/netapi/hook/e2e/selftest",
        r#"{"post": {"id": "selftest-1", "text": "quote \" and: colon, {brace} 'single'"}}"#,
    ]);
    assert!(
        out.status.success(),
        "salt-run event.send: {}\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let data = sandbox.wait_reactor_file("selftest-1", Duration::from_secs(30));
    assert_eq!(data["post"]["id"], "selftest-1");
    assert_eq!(
        data["post"]["text"],
        "quote \" and: colon, {brace} 'single'"
    );
    assert!(data["_stamp"].is_string(), "no _stamp in {data}");

    // Without an `id` the file is named after the (sanitised) `_stamp`.
    let before = sandbox.reactor_files().len();
    sandbox.send_event("salt/netapi/hook/e2e/no-id", &json!({ "post": { "n": 1 } }));
    assert!(sandbox.wait_reactor_count(before + 1, Duration::from_secs(30)) > before);
    let stamped: Vec<_> = sandbox
        .reactor_files()
        .into_iter()
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("stamp-"))
        })
        .collect();
    assert!(
        !stamped.is_empty(),
        "no stamp-*.json in {:?}",
        sandbox.reactor_files()
    );
}

#[test]
fn private_sandbox_survives_master_restart() {
    let started = Instant::now();
    let sandbox = SaltSandbox::builder()
        .with_file("custom/marker.sls", &custom_sls_writing("custom-marker"))
        .with_reactor("e2e/custom/*", &["salt://custom/marker.sls"])
        .start();
    eprintln!("sandbox started in {:?}", started.elapsed());
    let ret_port = sandbox.ret_port();

    let t = Instant::now();
    sandbox.stop_master();
    eprintln!("master stopped in {:?}", t.elapsed());
    assert!(!sandbox.master_running());
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", ret_port)).is_err(),
        "ret_port still answers with the master stopped"
    );

    let t = Instant::now();
    sandbox.start_master();
    eprintln!("master restarted, minion answering, in {:?}", t.elapsed());
    assert_eq!(sandbox.ret_port(), ret_port);
    assert_eq!(ping(&sandbox), json!({ "e2e-minion": true }));

    // The Reactor runs again after the restart, extra mappings and files included.
    sandbox.send_event("e2e/custom/after-restart", &json!({ "n": 1 }));
    let data = sandbox.wait_reactor_file("custom-marker", Duration::from_secs(30));
    assert_eq!(data, json!({ "tag": "e2e/custom/after-restart" }));
}

/// A Reactor SLS (for `with_file`) writing `{"tag": <event tag>}` to `reactor-out/<name>.json`.
fn custom_sls_writing(name: &str) -> String {
    format!(
        "custom_marker:\n  local.file.write:\n    - tgt: e2e-minion\n    - args:\n      \
         - path: {{{{ opts['root_dir'] }}}}/reactor-out/{name}.json\n      \
         - args: {{{{ {{'tag': tag}} | json | yaml_dquote }}}}\n"
    )
}

/// POSTs `{"id": id}` to the real salt-api's `/hook/e2e/via-api` and waits for the Reactor.
fn hook_through_salt_api(sandbox: &SaltSandbox, id: &str) {
    let port = sandbox.salt_api_port();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let (status, body) = rt.block_on(async {
        let client = reqwest::Client::new();
        let resp = client
            .post(format!("http://127.0.0.1:{port}/hook/e2e/via-api"))
            .header("Accept", "application/json")
            .json(&json!({ "id": id }))
            .send()
            .await
            .expect("POST /hook");
        let status = resp.status();
        (status, resp.text().await.expect("hook body"))
    });
    assert_eq!(
        status,
        200,
        "POST /hook: {body}\n{}",
        sandbox.api_log_tail(40)
    );
    let data = sandbox.wait_reactor_file(id, Duration::from_secs(30));
    assert_eq!(data["post"]["id"], id);
}

#[test]
fn private_sandbox_runs_rest_cherrypy() {
    let sandbox = SaltSandbox::builder()
        .with_salt_api(SaltApi::RestCherrypy)
        .with_master_config("rest_cherrypy:\n  debug: false\n")
        .start();
    hook_through_salt_api(&sandbox, "via-cherrypy");
}

/// rest_tornado, with the master event bus on loopback TCP (`ipc_mode: tcp`) on the
/// sandbox's own ports rather than Salt's fixed defaults.
#[test]
fn private_sandbox_runs_rest_tornado_over_tcp_bus() {
    let sandbox = SaltSandbox::builder()
        .with_salt_api(SaltApi::RestTornado)
        .with_master_config("ipc_mode: tcp")
        .start();
    let pull = sandbox.master_config()["tcp_master_pull_port"]
        .as_u64()
        .expect("tcp_master_pull_port");
    assert_ne!(
        pull, 4513,
        "the default port would collide between sandboxes"
    );
    let pull = u16::try_from(pull).expect("a port");
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", pull)).is_ok(),
        "nothing listens on tcp_master_pull_port {pull}"
    );
    hook_through_salt_api(&sandbox, "via-tornado");
}
