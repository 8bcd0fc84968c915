//! `/minions`, `/jobs`, `/keys`, `/stats`: rest_cherrypy's resource views over lowstate calls
//! (API.md §8), with the session token (`X-Auth-Token` or the `session_id` cookie), except `POST /keys`.
//!
//! | route | Salt call | body |
//! | --- | --- | --- |
//! | `GET /minions[/<mid>]` | local `grains.items` on `<mid>` or `*` | `{"return": [{mid: grains}]}` |
//! | `POST /minions` | the lowstate with every client forced to `local_async` (a lowstate route: [`crate::api::lowstate::minions_post`]) | 202 `{"return": [...], "_links": {"jobs": [{"href": "/jobs/<jid>"}]}}` |
//! | `GET /jobs` | runner `jobs.list_jobs` | `{"return": [jobs]}` |
//! | `GET /jobs/<jid>` | runner `jobs.list_job` | `{"info": [job], "return": [{mid: return}]}` |
//! | `GET /keys` | wheel `key.list_all` | `{"return": {minions, minions_pre, ...}}` (not a list, as rest_cherrypy) |
//! | `GET /keys/<mid>` | wheel `key.finger` | `{"return": {"minions": {mid: finger}}}` |
//! | `POST /keys` | wheel `key.gen_accept` with the body's `username`, `password`, `eauth` (never a session) | a tar of `minion.pem` and `minion.pub` (see [`keys_post`]) |
//! | `GET /stats` | none: saltgate's own counters | see [`stats::Stats`] |
//! | `GET /metrics` | none: saltgate's counters in the OpenMetrics text format | see [`metrics`] |
//!
//! `/stats` needs the session unless `stats_disable_auth`; its counters run only with
//! `collect_stats` (as rest_cherrypy's `cpstats`, the route exists either way). The clients these
//! routes use must be in `netapi_enable_clients`, as for the same calls made through `POST /`.

pub mod metrics;
pub mod stats;

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use http::{HeaderMap, StatusCode};
use serde_json::{Map, Value, json};

use crate::api::auth::Caller;
use crate::api::body::{parse_async, read_capped};
use crate::api::error::ApiError;
use crate::api::negotiate::{Format, Negotiated, render_body};
use crate::api::netapi::{Background, Client, Credentials, execute, prepare};
use crate::api::state::App;

/// Optional `?mid=` / `?jid=` query forms of the path routes (rest_cherrypy takes both).
#[derive(Debug, serde::Deserialize, Default)]
pub struct Ids {
    mid: Option<String>,
    jid: Option<String>,
}

/// Runs one session-authenticated chunk and returns its results.
async fn one_chunk(app: &App, caller: &Caller, chunk: Value) -> Result<Value, ApiError> {
    let prepared = prepare(
        vec![chunk],
        &Credentials::Session(caller.token().to_owned()),
        &app.config.master.netapi_enable_clients,
        None,
    )?;
    let salt = app.master()?;
    caller.confirm(salt).await?;
    // These views never use wheel_async, so they need no shared background bound.
    let background = Background::new();
    let run = crate::api::netapi::Run {
        salt,
        background: &background,
        shapes: crate::api::netapi::Shapes::default(),
    };
    let mut out = execute(&run, prepared).await?;
    Ok(out.pop().unwrap_or(Value::Null))
}

fn ok(format: Format, body: &Value) -> Response {
    render_body(StatusCode::OK, format, body)
}

/// `GET /minions`.
pub async fn minions(
    State(app): State<Arc<App>>,
    Query(ids): Query<Ids>,
    Negotiated(format): Negotiated,
    caller: Caller,
) -> Result<Response, ApiError> {
    minion_grains(&app, format, &caller, ids.mid).await
}

/// `GET /minions/<mid>`.
pub async fn minion(
    State(app): State<Arc<App>>,
    Path(mid): Path<String>,
    Negotiated(format): Negotiated,
    caller: Caller,
) -> Result<Response, ApiError> {
    minion_grains(&app, format, &caller, Some(mid)).await
}

async fn minion_grains(
    app: &App,
    format: Format,
    caller: &Caller,
    mid: Option<String>,
) -> Result<Response, ApiError> {
    let tgt = mid.filter(|m| !m.is_empty()).unwrap_or_else(|| "*".into());
    let chunk = json!({"client": "local", "tgt": tgt, "fun": "grains.items"});
    let grains = one_chunk(app, caller, chunk).await?;
    Ok(ok(format, &json!({ "return": [grains] })))
}

/// `GET /jobs`.
pub async fn jobs(
    State(app): State<Arc<App>>,
    Query(ids): Query<Ids>,
    Negotiated(format): Negotiated,
    caller: Caller,
) -> Result<Response, ApiError> {
    match ids.jid.filter(|j| !j.is_empty()) {
        Some(jid) => job_detail(&app, format, &caller, jid).await,
        None => {
            let chunk = json!({"client": "runner", "fun": "jobs.list_jobs"});
            let jobs = one_chunk(&app, &caller, chunk).await?;
            Ok(ok(format, &json!({ "return": [jobs] })))
        }
    }
}

/// `GET /jobs/<jid>`.
pub async fn job(
    State(app): State<Arc<App>>,
    Path(jid): Path<String>,
    Negotiated(format): Negotiated,
    caller: Caller,
) -> Result<Response, ApiError> {
    job_detail(&app, format, &caller, jid).await
}

async fn job_detail(
    app: &App,
    format: Format,
    caller: &Caller,
    jid: String,
) -> Result<Response, ApiError> {
    let chunk = json!({"client": "runner", "fun": "jobs.list_job", "jid": jid});
    let info = one_chunk(app, caller, chunk).await?;
    Ok(ok(format, &job_shape(info)))
}

/// `{"info": [list_job], "return": [{mid: Result[mid].return}]}`.
fn job_shape(info: Value) -> Value {
    let mut returns = Map::new();
    if let Some(result) = info.get("Result").and_then(Value::as_object) {
        for (mid, r) in result {
            returns.insert(mid.clone(), r.get("return").cloned().unwrap_or(Value::Null));
        }
    }
    json!({"info": [info], "return": [returns]})
}

/// `GET /keys`.
pub async fn keys(
    State(app): State<Arc<App>>,
    Query(ids): Query<Ids>,
    Negotiated(format): Negotiated,
    caller: Caller,
) -> Result<Response, ApiError> {
    key_view(&app, format, &caller, ids.mid).await
}

/// `GET /keys/<mid>`.
pub async fn key(
    State(app): State<Arc<App>>,
    Path(mid): Path<String>,
    Negotiated(format): Negotiated,
    caller: Caller,
) -> Result<Response, ApiError> {
    key_view(&app, format, &caller, Some(mid)).await
}

async fn key_view(
    app: &App,
    format: Format,
    caller: &Caller,
    mid: Option<String>,
) -> Result<Response, ApiError> {
    let chunk = match mid.filter(|m| !m.is_empty()) {
        Some(mid) => json!({"client": "wheel", "fun": "key.finger", "match": mid}),
        None => json!({"client": "wheel", "fun": "key.list_all"}),
    };
    let r = one_chunk(app, caller, chunk).await?;
    let keys = r.pointer("/data/return").cloned().unwrap_or(Value::Null);
    Ok(ok(format, &json!({ "return": keys })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_detail_splits_info_and_returns() {
        let info = json!({"jid": "1", "Function": "test.ping",
            "Result": {"m1": {"return": true, "retcode": 0, "success": true}}});
        let v = job_shape(info.clone());
        assert_eq!(v["info"], json!([info]));
        assert_eq!(v["return"], json!([{"m1": true}]));
        assert_eq!(job_shape(json!({"Error": "x"}))["return"], json!([{}]));
    }

    #[test]
    fn client_names_cover_the_resource_calls() {
        let names: Vec<&str> = Client::ALL.iter().map(|(n, _)| *n).collect();
        assert!(names.contains(&"local") && names.contains(&"runner") && names.contains(&"wheel"));
    }
}

/// `POST /keys`: generate a key pair for `mid` on the master (`wheel key.gen_accept`), accept
/// its public half, and answer both halves as a tar archive (`minion.pem`, `minion.pub`), as
/// rest_cherrypy does for pre-seeding a minion. Credentials (`username`, `password`, `eauth`)
/// come in the body, never a session: the private key leaves the master only for someone who
/// proves who they are on this request. Unlike rest_cherrypy (500 HTML for every failure),
/// failures are JSON errors with their own status; an already accepted minion is 409. As in
/// rest_cherrypy (`hypermedia_out` is off for it), `Accept` is not negotiated: never 406, and
/// errors are written in the format `Accept` prefers, as on every route.
pub async fn keys_post(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let (mid, tar) = key_pair(&app, &headers, body).await?;
    Response::builder()
        .status(StatusCode::OK)
        .header(http::header::CONTENT_TYPE, "application/x-tar")
        .header(
            http::header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"saltkeys-{mid}.tar\""),
        )
        .header(http::header::CACHE_CONTROL, "no-cache")
        .body(Body::from(tar))
        .map_err(|_| ApiError::Internal)
}

async fn key_pair(
    app: &App,
    headers: &HeaderMap,
    body: Body,
) -> Result<(String, Vec<u8>), ApiError> {
    let raw = read_capped(headers, body, app.config.api.max_request_body_size).await?;
    let parsed = parse_async(headers, &raw).await?;
    let fields = match parsed {
        Value::Array(mut items) if !items.is_empty() => items.swap_remove(0),
        other => other,
    };
    let text = |k: &str| fields.get(k).and_then(Value::as_str).map(str::to_owned);
    let mid = text("mid").ok_or(ApiError::BadBody("`mid` is required".into()))?;
    if mid.is_empty()
        || mid.len() > 255
        || mid.contains(['/', '\\', '"'])
        || mid.chars().any(char::is_control)
    {
        return Err(ApiError::BadBody("`mid` is not a valid minion id".into()));
    }
    let (Some(username), Some(password), Some(eauth)) =
        (text("username"), text("password"), text("eauth"))
    else {
        return Err(ApiError::Unauthorized(
            "username, password and eauth are required",
        ));
    };
    if !Client::Wheel.enabled_in(&app.config.master.netapi_enable_clients) {
        return Err(ApiError::BadBody("Client disabled: 'wheel'".into()));
    }
    let salt = app.master()?;
    let auth = crate::salt::Auth::Eauth {
        eauth,
        username,
        password,
    };
    let args = vec![("id_".to_owned(), rmpv::Value::from(mid.as_str()))];
    let data = salt.wheel("key.gen_accept", args, &auth).await?;
    let data = crate::salt::to_json(&data);
    if data.get("success") == Some(&Value::Bool(false)) {
        tracing::warn!(mid = %mid, "key.gen_accept failed on the master");
        return Err(ApiError::Internal);
    }
    let ret = data.get("return").cloned().unwrap_or(Value::Null);
    let (Some(public), Some(private)) = (
        ret.get("pub").and_then(Value::as_str),
        ret.get("priv").and_then(Value::as_str),
    ) else {
        return Err(ApiError::KeyExists);
    };
    tracing::info!(mid = %mid, "Generated and accepted a minion key pair");
    let mtime = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    let tar = key_tarball(public.as_bytes(), private.as_bytes(), mtime).map_err(|e| {
        tracing::error!(mid = %mid, error = %e, "Cannot pack the key pair");
        ApiError::Internal
    })?;
    Ok((mid, tar))
}

/// Python's `tarfile` pads an archive to whole records of 20 blocks; salt-api's tarball is one.
const TAR_RECORD: usize = 20 * 512;

/// The key pair packed as salt-api packs it: a ustar archive of `minion.pub`, then
/// `minion.pem`, regular files owned by uid and gid 0, padded to whole 10 KiB records. Two
/// choices differ from salt-api, neither of which a reader of the archive depends on: the
/// private key is mode 0600 (salt-api: 0644, so `tar -x` left it readable by all), and the
/// files carry the time they were made (salt-api: the epoch).
fn key_tarball(public: &[u8], private: &[u8], mtime: u64) -> std::io::Result<Vec<u8>> {
    let mut tar = tar::Builder::new(Vec::new());
    for (name, content, mode) in [
        ("minion.pub", public, 0o644),
        ("minion.pem", private, 0o600),
    ] {
        let mut header = tar::Header::new_ustar();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_size(content.len() as u64);
        header.set_mode(mode);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(mtime);
        tar.append_data(&mut header, name, content)?;
    }
    let mut out = tar.into_inner()?;
    out.resize(out.len().div_ceil(TAR_RECORD) * TAR_RECORD, 0);
    Ok(out)
}

#[cfg(test)]
mod tar_tests {
    use super::{TAR_RECORD, key_tarball};

    #[test]
    fn key_pair_tarball_has_salt_apis_members() {
        let tar = key_tarball(b"public!", b"private", 1_790_000_000).unwrap();
        assert_eq!(
            tar.len(),
            TAR_RECORD,
            "one record, as Python's tarfile pads it"
        );
        let mut archive = tar::Archive::new(tar.as_slice());
        let members: Vec<_> = archive
            .entries()
            .unwrap()
            .map(|entry| {
                let mut entry = entry.unwrap();
                let header = entry.header().clone();
                let mut content = String::new();
                std::io::Read::read_to_string(&mut entry, &mut content).unwrap();
                assert_eq!(header.entry_type(), tar::EntryType::Regular);
                assert_eq!(&header.as_bytes()[257..265], b"ustar\x0000");
                assert_eq!((header.uid().unwrap(), header.gid().unwrap()), (0, 0));
                assert_eq!(header.mtime().unwrap(), 1_790_000_000);
                (
                    header.path().unwrap().display().to_string(),
                    header.mode().unwrap(),
                    content,
                )
            })
            .collect();
        assert_eq!(
            members,
            [
                ("minion.pub".to_owned(), 0o644, "public!".to_owned()),
                ("minion.pem".to_owned(), 0o600, "private".to_owned()),
            ]
        );
    }
}
