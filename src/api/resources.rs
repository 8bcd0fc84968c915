//! `/minions`, `/jobs`, `/keys`, `/stats`: rest_cherrypy's resource views over lowstate calls
//! (API.md §8), with the session token (`X-Auth-Token` or the `session_id` cookie), except `POST /keys`.
//!
//! | route | Salt call | body |
//! | --- | --- | --- |
//! | `GET /minions[/<mid>]` | local `grains.items` on `<mid>` or `*` | `{"return": [{mid: grains}]}` |
//! | `POST /minions` | the lowstate with every client forced to `local_async` | 202 `{"return": [...], "_links": {"jobs": [{"href": "/jobs/<jid>"}]}}` |
//! | `GET /jobs` | runner `jobs.list_jobs` | `{"return": [jobs]}` |
//! | `GET /jobs/<jid>` | runner `jobs.list_job` | `{"info": [job], "return": [{mid: return}]}` |
//! | `GET /keys` | wheel `key.list_all` | `{"return": {minions, minions_pre, ...}}` (not a list, as rest_cherrypy) |
//! | `GET /keys/<mid>` | wheel `key.finger` | `{"return": {"minions": {mid: finger}}}` |
//! | `POST /keys` | wheel `key.gen_accept` with the body's `username`, `password`, `eauth` (never a session) | a tar of `minion.pem` and `minion.pub` (see [`keys_post`]) |
//! | `GET /stats` | none: saltgate's own counters | see [`Stats`] |
//!
//! `/stats` needs the session unless `stats_disable_auth`; its counters run only with
//! `collect_stats` (as rest_cherrypy's `cpstats`, the route exists either way). The clients these
//! routes use must be in `netapi_enable_clients`, as for the same calls made through `POST /`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use axum::{Extension, extract::Query};
use http::{HeaderMap, StatusCode};
use serde_json::{Map, Value, json};

use super::error::{ApiError, render_body};
use super::lowstate::{self, Credentials, Mode, execute, master, prepare, require_valid, session};
use super::negotiate::{Format, response_format};
use super::state::AppState;

/// Optional `?mid=` / `?jid=` query forms of the path routes (rest_cherrypy takes both).
#[derive(Debug, serde::Deserialize, Default)]
pub struct Ids {
    mid: Option<String>,
    jid: Option<String>,
}

/// Runs one session-authenticated chunk and returns its results.
async fn one_chunk(app: &AppState, headers: &HeaderMap, chunk: Value) -> Result<Value, ApiError> {
    let token = session(headers)?;
    let prepared = prepare(
        vec![chunk],
        &Credentials::Session(token.clone()),
        &app.config.master.netapi_enable_clients,
        None,
    )?;
    let salt = master(app)?;
    require_valid(app, salt, &token).await?;
    // These views never use wheel_async, so they need no shared background bound.
    let mut out = execute(salt, &lowstate::Background::new(), prepared).await?;
    Ok(out.pop().unwrap_or(Value::Null))
}

fn respond(headers: &HeaderMap, f: impl FnOnce(Format) -> Response) -> Response {
    match response_format(headers) {
        Some(format) => f(format),
        None => ApiError::NotAcceptable.render(Format::Json),
    }
}

async fn answer(
    headers: &HeaderMap,
    work: impl Future<Output = Result<Value, ApiError>>,
) -> Response {
    let Some(format) = response_format(headers) else {
        return ApiError::NotAcceptable.render(Format::Json);
    };
    match work.await {
        Ok(v) => render_body(StatusCode::OK, format, &v),
        Err(e) => e.render(format),
    }
}

/// `GET /minions`.
pub async fn minions(
    State(app): State<AppState>,
    Query(ids): Query<Ids>,
    headers: HeaderMap,
) -> Response {
    minion_grains(app, headers, ids.mid).await
}

/// `GET /minions/<mid>`.
pub async fn minion(
    State(app): State<AppState>,
    Path(mid): Path<String>,
    headers: HeaderMap,
) -> Response {
    minion_grains(app, headers, Some(mid)).await
}

async fn minion_grains(app: AppState, headers: HeaderMap, mid: Option<String>) -> Response {
    let tgt = mid.filter(|m| !m.is_empty()).unwrap_or_else(|| "*".into());
    let chunk = json!({"client": "local", "tgt": tgt, "fun": "grains.items"});
    answer(&headers, async {
        Ok(json!({"return": [one_chunk(&app, &headers, chunk).await?]}))
    })
    .await
}

/// `POST /minions`: publish without waiting; 202 with links to the jobs.
pub async fn minions_post(
    State(app): State<AppState>,
    Extension(bg): Extension<lowstate::Background>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    lowstate::handle(&app, &bg, &headers, body, Mode::Minions).await
}

/// `GET /jobs`.
pub async fn jobs(
    State(app): State<AppState>,
    Query(ids): Query<Ids>,
    headers: HeaderMap,
) -> Response {
    match ids.jid.filter(|j| !j.is_empty()) {
        Some(jid) => job_detail(app, headers, jid).await,
        None => {
            let chunk = json!({"client": "runner", "fun": "jobs.list_jobs"});
            answer(&headers, async {
                Ok(json!({"return": [one_chunk(&app, &headers, chunk).await?]}))
            })
            .await
        }
    }
}

/// `GET /jobs/<jid>`.
pub async fn job(
    State(app): State<AppState>,
    Path(jid): Path<String>,
    headers: HeaderMap,
) -> Response {
    job_detail(app, headers, jid).await
}

async fn job_detail(app: AppState, headers: HeaderMap, jid: String) -> Response {
    let chunk = json!({"client": "runner", "fun": "jobs.list_job", "jid": jid});
    answer(&headers, async {
        let info = one_chunk(&app, &headers, chunk).await?;
        Ok(job_shape(info))
    })
    .await
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
    State(app): State<AppState>,
    Query(ids): Query<Ids>,
    headers: HeaderMap,
) -> Response {
    key_view(app, headers, ids.mid).await
}

/// `GET /keys/<mid>`.
pub async fn key(
    State(app): State<AppState>,
    Path(mid): Path<String>,
    headers: HeaderMap,
) -> Response {
    key_view(app, headers, Some(mid)).await
}

async fn key_view(app: AppState, headers: HeaderMap, mid: Option<String>) -> Response {
    let chunk = match mid.filter(|m| !m.is_empty()) {
        Some(mid) => json!({"client": "wheel", "fun": "key.finger", "match": mid}),
        None => json!({"client": "wheel", "fun": "key.list_all"}),
    };
    answer(&headers, async {
        let r = one_chunk(&app, &headers, chunk).await?;
        Ok(json!({"return": r.pointer("/data/return").cloned().unwrap_or(Value::Null)}))
    })
    .await
}

/// saltgate's request counters (`collect_stats`).
#[derive(Debug)]
pub struct Stats {
    started: Instant,
    enabled: bool,
    requests: AtomicU64,
    in_flight: AtomicU64,
    by_class: [AtomicU64; 5],
}

impl Stats {
    /// Counters; they count only when `enabled`.
    pub fn new(enabled: bool) -> Self {
        Self {
            started: Instant::now(),
            enabled,
            requests: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            by_class: Default::default(),
        }
    }

    fn snapshot(&self) -> Value {
        let c = |i: usize| self.by_class[i].load(Ordering::Relaxed);
        json!({"saltgate": {
            "version": env!("CARGO_PKG_VERSION"),
            "collect_stats": self.enabled,
            "uptime_secs": self.started.elapsed().as_secs(),
            "requests": {
                "total": self.requests.load(Ordering::Relaxed),
                "in_flight": self.in_flight.load(Ordering::Relaxed),
                "1xx": c(0), "2xx": c(1), "3xx": c(2), "4xx": c(3), "5xx": c(4),
            },
        }})
    }
}

/// Middleware counting every request when `collect_stats` is on.
pub async fn count(Extension(stats): Extension<Arc<Stats>>, req: Request, next: Next) -> Response {
    if !stats.enabled {
        return next.run(req).await;
    }
    stats.requests.fetch_add(1, Ordering::Relaxed);
    stats.in_flight.fetch_add(1, Ordering::Relaxed);
    let r = next.run(req).await;
    stats.in_flight.fetch_sub(1, Ordering::Relaxed);
    let class = usize::from(r.status().as_u16() / 100).saturating_sub(1);
    if let Some(slot) = stats.by_class.get(class) {
        slot.fetch_add(1, Ordering::Relaxed);
    }
    r
}

/// `GET /stats`.
pub async fn stats(
    State(app): State<AppState>,
    Extension(stats): Extension<Arc<Stats>>,
    headers: HeaderMap,
) -> Response {
    if app.config.api.stats_disable_auth {
        return respond(&headers, |f| {
            render_body(StatusCode::OK, f, &stats.snapshot())
        });
    }
    answer(&headers, async {
        let token = session(&headers)?;
        let salt = master(&app)?;
        require_valid(&app, salt, &token).await?;
        Ok(stats.snapshot())
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::lowstate::Client;

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
/// failures are JSON errors with their own status; an already accepted minion is 409.
pub async fn keys_post(State(app): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    let format = response_format(&headers).unwrap_or(Format::Json);
    match key_pair(&app, &headers, body).await {
        Ok((mid, tar)) => Response::builder()
            .status(StatusCode::OK)
            .header(http::header::CONTENT_TYPE, "application/x-tar")
            .header(
                http::header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"saltkeys-{mid}.tar\""),
            )
            .header(http::header::CACHE_CONTROL, "no-cache")
            .body(Body::from(tar))
            .unwrap_or_else(|_| ApiError::Internal.render(format)),
        Err(e) => e.render(format),
    }
}

async fn key_pair(
    app: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> Result<(String, Vec<u8>), ApiError> {
    let raw =
        super::extract::read_capped(headers, body, app.config.api.max_request_body_size).await?;
    let parsed = super::body::parse_async(headers, &raw).await?;
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
    if !app
        .config
        .master
        .netapi_enable_clients
        .iter()
        .any(|c| c == "wheel")
    {
        return Err(ApiError::BadBody("Client disabled: 'wheel'".into()));
    }
    let salt = master(app)?;
    let auth = crate::salt::Auth::Eauth {
        eauth,
        username,
        password,
    };
    let args = vec![("id_".to_owned(), rmpv::Value::from(mid.as_str()))];
    let data = salt.wheel("key.gen_accept", args, &auth).await?;
    let data = crate::salt::wire::payload::to_json(&data);
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
