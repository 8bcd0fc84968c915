//! Deliveries as the senders' own code makes them, through the real request path: Svix and
//! Standard Webhooks signed by their Python libraries from PyPI (`scripts/signers-venv`, which
//! installs them on first use; the test fails, never skips, when they cannot be had), and a
//! Gitea/Forgejo delivery of the form content type, signed over its JSON payload.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use reqwest::StatusCode;
use saltgate::security::Secret;
use saltgate::security::signature::gitea;
use serde_json::Value;

use crate::support::{TestApp, assert_no_event, data_json, recv_event};

/// 32 key bytes whose base64 ends in one `=`, written without it, as the libraries accept.
const WHSEC_UNPADDED: &str = "whsec_c2FsdGdhdGUtc2VuZGVycy10ZXN0LWtleS0zMmJ5dGU";

/// The signers' venv, installed once per run.
fn signers_python() -> &'static PathBuf {
    static VENV: OnceLock<PathBuf> = OnceLock::new();
    VENV.get_or_init(|| {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/signers-venv");
        let out = Command::new(script)
            .output()
            .expect("run scripts/signers-venv");
        assert!(
            out.status.success(),
            "scripts/signers-venv failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let venv = String::from_utf8(out.stdout).unwrap();
        PathBuf::from(venv.trim()).join("bin/python")
    })
}

/// `v1,<base64>` signatures of `body` by Svix's SDK and by the Standard Webhooks library.
fn library_signatures(msg_id: &str, ts: i64, body: &str) -> (String, String) {
    const SIGN: &str = r#"
import sys, json, datetime
from svix.webhooks import Webhook as Svix
from standardwebhooks.webhooks import Webhook as Standard
secret, msg_id, ts, body = sys.argv[1:5]
at = datetime.datetime.fromtimestamp(int(ts), tz=datetime.timezone.utc)
print(json.dumps([Svix(secret).sign(msg_id, at, body), Standard(secret).sign(msg_id, at, body)]))
"#;
    let out = Command::new(signers_python())
        .args(["-c", SIGN, WHSEC_UNPADDED, msg_id, &ts.to_string(), body])
        .output()
        .expect("run the signers' python");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sigs: (String, String) = serde_json::from_slice(&out.stdout).unwrap();
    sigs
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[tokio::test]
async fn svix_and_standard_webhooks_libraries_are_accepted() {
    let app = TestApp::builder()
        .with_hooks(
            "- path: svix\n  auth: none\n  verify: {standard_webhooks: {secret_env: WH}}\n",
            &[("WH", WHSEC_UNPADDED)],
        )
        .spawn()
        .await;
    let c = reqwest::Client::new();
    let mut sub = app.subscribe();
    let body = r#"{"type":"invoice.paid","data":{"id":"in_1"}}"#;
    let ts = now();
    let (svix_sig, standard_sig) = library_signatures("msg_2aXsenders", ts, body);
    let send = |family: &str, id: &str, sig: &str, body: &str| {
        c.post(app.url("/hook/svix"))
            .header("content-type", "application/json")
            .header(format!("{family}-id"), id)
            .header(format!("{family}-timestamp"), ts.to_string())
            .header(format!("{family}-signature"), sig)
            .body(body.to_owned())
            .send()
    };

    // Svix's service sends its SDK's signature under svix-* names.
    let resp = send("svix", "msg_2aXsenders", &svix_sig, body)
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let ev = recv_event(&mut sub, "salt/netapi/hook/svix").await;
    let data = data_json(&ev);
    assert_eq!(data["post"]["data"]["id"], "in_1");
    assert!(
        data["headers"].get("Svix-Signature").is_none(),
        "signature leaked to the bus: {data}"
    );

    // The Standard Webhooks library, under webhook-* names (another id: not a duplicate).
    let (_, other_sig) = library_signatures("msg_2aXother", ts, body);
    assert_eq!(standard_sig, svix_sig, "the two libraries agree");
    let resp = send("webhook", "msg_2aXother", &other_sig, body)
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    recv_event(&mut sub, "salt/netapi/hook/svix").await;

    // A changed body, or the signature under the other family's id, does not pass.
    for (family, id, body) in [
        (
            "svix",
            "msg_2aXsenders",
            r#"{"type":"invoice.paid","data":{"id":"in_2"}}"#,
        ),
        ("webhook", "msg_2aXchanged", body),
    ] {
        let resp = send(family, id, &svix_sig, body).await.unwrap();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{family} {id}");
        let json: Value = resp.json().await.unwrap();
        assert_eq!(json["code"], "bad_signature");
        assert_no_event(&mut sub).await;
    }
}

#[tokio::test]
async fn gitea_form_delivery_is_verified_over_its_payload() {
    let app = TestApp::builder()
        .with_hooks(
            "- path: gitea\n  auth: none\n  verify: {gitea: {secret_env: GT}}\n",
            &[("GT", "gitea-s3cret")],
        )
        .spawn()
        .await;
    let c = reqwest::Client::new();
    let mut sub = app.subscribe();
    let json = r#"{"ref":"refs/heads/main","commits":[{"message":"fix a & b = c"}]}"#;
    let body: String = form_urlencoded::Serializer::new(String::new())
        .append_pair("payload", json)
        .finish();
    let secret = Secret::new(b"gitea-s3cret".to_vec()).unwrap();
    let sig = gitea::sign(&secret, json.as_bytes()).remove(0).1;
    let send = |body: String, sig: &str| {
        c.post(app.url("/hook/gitea"))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("x-gitea-event", "push")
            .header("x-gitea-delivery", format!("d-{}", body.len()))
            .header("x-gitea-signature", sig)
            .header("x-hub-signature-256", format!("sha256={sig}"))
            .body(body)
            .send()
    };
    let resp = send(body.clone(), &sig).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let ev = recv_event(&mut sub, "salt/netapi/hook/gitea").await;
    let data = data_json(&ev);
    assert_eq!(data["post"]["payload"], json);
    assert!(
        data["headers"].get("X-Hub-Signature-256").is_none()
            && data["headers"].get("X-Gitea-Signature").is_none(),
        "a signature leaked to the bus: {data}"
    );
    // A second field is content the signature does not cover.
    let resp = send(format!("{body}&ref=evil"), &sig).await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert_no_event(&mut sub).await;
}
