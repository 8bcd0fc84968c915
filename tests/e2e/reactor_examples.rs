//! Every file in `reactor-examples/`, as shipped, in front of a real master, minion and Reactor:
//! the rules of `saltgate.conf`, the mappings of `reactor.conf`, the SLS files. Each sender's
//! delivery is signed as that sender signs it and must end in the state the SLS applies.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use reqwest::StatusCode;
use rsa::pkcs8::DecodePrivateKey;
use rsa::signature::{SignatureEncoding, Signer};
use saltgate::security::Secret;
use saltgate::security::signature::github;

use crate::gate::{Gate, blocking};
use crate::support::salt::SaltSandbox;

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("reactor-examples")
}

fn read(name: &str) -> String {
    std::fs::read_to_string(examples().join(name)).unwrap()
}

/// A state that records its pillar as `<reactor-out>/<marker>.json`.
fn marker_state(out: &Path, marker_jinja: &str) -> String {
    format!(
        "marker:\n  file.managed:\n    - name: {}/{marker_jinja}.json\n    - contents: {{{{ pillar | json | yaml_dquote }}}}\n",
        out.display()
    )
}

fn sandbox() -> SaltSandbox {
    // reactor.conf as shipped, with the SLS paths served from file_roots.
    let reactor: serde_yaml::Value = serde_yaml::from_str(&read("reactor.conf")).unwrap();
    let mut builder = SaltSandbox::builder().with_minion_config("grains: {roles: [web]}\n");
    for entry in reactor["reactor"].as_sequence().unwrap() {
        for (tag, paths) in entry.as_mapping().unwrap() {
            let files: Vec<String> = paths
                .as_sequence()
                .unwrap()
                .iter()
                .map(|p| {
                    let name = Path::new(p.as_str().unwrap()).file_name().unwrap();
                    format!("salt://reactor/{}", name.to_str().unwrap())
                })
                .collect();
            let refs: Vec<&str> = files.iter().map(String::as_str).collect();
            builder = builder.with_reactor(tag.as_str().unwrap(), &refs);
        }
    }
    for sls in [
        "github-deploy",
        "gitlab-deploy",
        "jenkins-release",
        "travis-deploy",
        "signed-alert",
        "cluster-github-deploy",
    ] {
        builder = builder.with_file(&format!("reactor/{sls}.sls"), &read(&format!("{sls}.sls")));
    }
    // The master-cluster guard, on a tag of its own (reactor.conf names it as the alternative
    // for github/deploy; one master stands in for the cluster: the test fires both copies).
    builder = builder.with_reactor(
        "salt/netapi/hook/cluster/deploy",
        &["salt://reactor/cluster-github-deploy.sls"],
    );
    // The states the examples apply record their pillar; the sandbox root is only known after
    // start, so they write under the minion's own root_dir.
    let out_jinja = "{{ opts['root_dir'] }}/reactor-out";
    builder = builder
        .with_file(
            "deploy.sls",
            &marker_state(
                Path::new(out_jinja),
                "deploy-{{ pillar['deploy_source'] }}-{{ pillar['deploy_sha'] }}",
            ),
        )
        .with_file(
            "release.sls",
            &marker_state(
                Path::new(out_jinja),
                "release-{{ pillar['release_build'] }}",
            ),
        )
        .with_file(
            "alert-response.sls",
            &marker_state(Path::new(out_jinja), "alert-{{ pillar['alert_name'] }}"),
        );
    builder.start()
}

/// The rules of `saltgate.conf` with the secret and key files pointed at `dir`.
fn rules(dir: &Path) -> (String, saltgate::config::Unmatched) {
    let text = read("saltgate.conf").replace("/etc/saltgate/", &format!("{}/", dir.display()));
    let conf: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    let unmatched = serde_yaml::from_value(conf["saltgate"]["unmatched_hooks"].clone()).unwrap();
    (
        serde_yaml::to_string(&conf["saltgate"]["hooks"]).unwrap(),
        unmatched,
    )
}

#[tokio::test]
async fn every_reactor_example_acts_on_a_real_master() {
    let sandbox = Arc::new(blocking(sandbox).await);
    let secrets = tempfile::tempdir().unwrap();
    for (name, value) in [
        ("github.secret", "gh-example-secret"),
        ("gitlab.secret", "gl-example-token"),
        ("jenkins.token", "jk-example-token"),
        ("alerts.secret", "alert-example-secret"),
    ] {
        std::fs::write(secrets.path().join(name), format!("{value}\n")).unwrap();
    }
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    std::fs::copy(
        fixtures.join("travis-test.pub"),
        secrets.path().join("travis.pub"),
    )
    .unwrap();
    let (hooks, unmatched) = rules(secrets.path());
    let gate = Gate::start(&sandbox, &hooks, &[], |c| {
        c.saltgate.unmatched_hooks = unmatched;
        // Requests come from loopback; the sender's address travels in X-Forwarded-For.
        c.saltgate.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
    })
    .await;
    let c = reqwest::Client::new();
    let run = std::process::id();

    // GitHub push to main, from GitHub's address range.
    let body =
        serde_json::json!({"ref": "refs/heads/main", "after": format!("gh{run}")}).to_string();
    let mut req = c
        .post(gate.url("/hook/github/deploy"))
        .header("content-type", "application/json")
        .header("x-github-event", "push")
        .header("x-github-delivery", format!("example-{run}"))
        .header("x-forwarded-for", "140.82.112.5")
        .body(body.clone());
    for (k, v) in github::sign(
        &Secret::new(b"gh-example-secret".to_vec()).unwrap(),
        body.as_bytes(),
    ) {
        req = req.header(k, v);
    }
    assert_eq!(req.send().await.unwrap().status(), StatusCode::OK, "github");

    // GitLab push hook.
    let body = serde_json::json!({"object_kind": "push", "ref": "refs/heads/main", "checkout_sha": format!("gl{run}")});
    let resp = c
        .post(gate.url("/hook/gitlab/deploy"))
        .header("x-gitlab-token", "gl-example-token")
        .header("x-gitlab-event", "Push Hook")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK, "gitlab");

    // Jenkins notification, bearer token, from the internal network.
    let body = serde_json::json!({"name": "app", "build": {"phase": "COMPLETED", "status": "SUCCESS", "number": run}});
    let resp = c
        .post(gate.url("/hook/jenkins/release"))
        .header("authorization", "Bearer jk-example-token")
        .header("x-forwarded-for", "10.1.2.3")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK, "jenkins");

    // Travis CI: a form with one JSON `payload`, RSA-SHA1 signed.
    let payload =
        serde_json::json!({"state": "passed", "branch": "main", "commit": format!("tr{run}")})
            .to_string();
    let key = rsa::RsaPrivateKey::from_pkcs8_pem(
        &std::fs::read_to_string(fixtures.join("travis-test.key")).unwrap(),
    )
    .unwrap();
    let signature = rsa::pkcs1v15::SigningKey::<sha1::Sha1>::new(key).sign(payload.as_bytes());
    let resp = c
        .post(gate.url("/hook/travis/deploy"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header(
            "signature",
            base64::engine::general_purpose::STANDARD.encode(signature.to_bytes()),
        )
        .body(serde_urlencoded::to_string([("payload", payload.as_str())]).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK, "travis");

    // A signed alert for the minion.
    let body = serde_json::json!({"severity": "critical", "host": "e2e-minion", "alert": format!("disk{run}")}).to_string();
    let mut mac =
        <hmac::Hmac<sha2::Sha256> as hmac::Mac>::new_from_slice(b"alert-example-secret").unwrap();
    hmac::Mac::update(&mut mac, body.as_bytes());
    let sig = hex::encode(hmac::Mac::finalize(mac).into_bytes());
    let resp = c
        .post(gate.url("/hook/alerts/signed"))
        .header("content-type", "application/json")
        .header("x-signature", format!("sha256={sig}"))
        .header("x-delivery-id", format!("alert-{run}"))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK, "alerts");

    // Amazon SNS: a CloudWatch alarm notification, signed (v2, SHA-256) with the test key whose
    // certificate the test fetcher serves for the checked sns.<region>.amazonaws.com URL.
    let resp = c
        .post(gate.url("/hook/sns/alerts"))
        .header("content-type", "text/plain; charset=UTF-8")
        .header("x-amz-sns-message-type", "Notification")
        .body(sns_alarm(&format!("cpu{run}"), run))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK, "sns");

    // Salt's master cluster: a copy forwarded from a peer (`__peer_id` in its data, as Salt's
    // cluster publisher adds it) is skipped by the guard; the original, fired after it, acts.
    let push = |sha: &str| {
        serde_json::json!({
            "headers": {"X-Github-Event": "push"},
            "post": {"ref": "refs/heads/main", "after": sha},
        })
    };
    let mut forwarded = push(&format!("clcopy{run}"));
    forwarded["__peer_id"] = "master-b".into();
    let original = push(&format!("clorig{run}"));
    {
        let s = Arc::clone(&sandbox);
        blocking(move || {
            s.send_event("salt/netapi/hook/cluster/deploy", &forwarded);
            s.send_event("salt/netapi/hook/cluster/deploy", &original);
        })
        .await;
    }

    // Unmatched paths are refused, as saltgate.conf says.
    let resp = c.post(gate.url("/hook/elsewhere")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);

    // Each SLS applied its state on the minion.
    for (marker, key, want) in [
        (
            format!("deploy-github-gh{run}"),
            "deploy_sha",
            format!("gh{run}"),
        ),
        (
            format!("deploy-gitlab-gl{run}"),
            "deploy_sha",
            format!("gl{run}"),
        ),
        (format!("release-{run}"), "release_job", "app".to_owned()),
        (
            format!("deploy-travis-tr{run}"),
            "deploy_sha",
            format!("tr{run}"),
        ),
        (
            format!("alert-disk{run}"),
            "alert_name",
            format!("disk{run}"),
        ),
    ] {
        let s = Arc::clone(&sandbox);
        let m = marker.clone();
        let written = blocking(move || s.wait_reactor_file(&m, Duration::from_secs(90))).await;
        assert_eq!(written[key], want.as_str(), "{marker}");
    }
    let written = {
        let s = Arc::clone(&sandbox);
        let m = format!("deploy-github-clorig{run}");
        blocking(move || s.wait_reactor_file(&m, Duration::from_secs(90))).await
    };
    assert_eq!(written["deploy_sha"], format!("clorig{run}").as_str());
    // The forwarded copy was fired first: had the guard let it through, its state would be
    // queued before the original's. Give it a few seconds more all the same.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let copy = sandbox
        .reactor_out_dir()
        .join(format!("deploy-github-clcopy{run}.json"));
    assert!(
        !copy.exists(),
        "the Reactor acted on a copy forwarded from a peer: {}",
        copy.display()
    );
}

/// An SNS Notification carrying a CloudWatch alarm, signed as SNS signs (SignatureVersion 2:
/// RSA-SHA256 over the canonical string of AWS's documentation).
fn sns_alarm(alarm: &str, run: u32) -> String {
    let message = serde_json::json!({"AlarmName": alarm, "NewStateValue": "ALARM"}).to_string();
    let now = time::OffsetDateTime::now_utc();
    let timestamp = format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.000Z",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute(),
        now.second()
    );
    let id = format!("6d1b5e3a-0000-4000-8000-{run:012}");
    let topic = "arn:aws:sns:eu-west-1:123456789012:alerts";
    let subject = "ALARM: CPU";
    let canonical = format!(
        "Message\n{message}\nMessageId\n{id}\nSubject\n{subject}\nTimestamp\n{timestamp}\nTopicArn\n{topic}\nType\nNotification\n"
    );
    let key = rsa::RsaPrivateKey::from_pkcs8_pem(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sns/leaf.key"),
        )
        .unwrap(),
    )
    .unwrap();
    let signature = rsa::pkcs1v15::SigningKey::<sha2::Sha256>::new(key).sign(canonical.as_bytes());
    serde_json::json!({
        "Type": "Notification",
        "MessageId": id,
        "TopicArn": topic,
        "Subject": subject,
        "Message": message,
        "Timestamp": timestamp,
        "SignatureVersion": "2",
        "Signature": base64::engine::general_purpose::STANDARD.encode(signature.to_bytes()),
        "SigningCertURL": "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-0123456789abcdef.pem",
        "UnsubscribeURL": "https://sns.eu-west-1.amazonaws.com/?Action=Unsubscribe&SubscriptionArn=arn:aws:sns:eu-west-1:123456789012:alerts:c9135db0",
    })
    .to_string()
}
