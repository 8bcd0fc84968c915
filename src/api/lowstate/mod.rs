//! `POST /` and `POST /run` (and `POST /minions`, `GET /`): lowstate chunks → Salt clients →
//! results. The chunks are checked and run by [`crate::api::netapi`]; the body is parsed by
//! [`crate::api::body`], which the hooks and the login routes share.
//!
//! A lowstate is a list of chunks (a single map is taken as a one-chunk list), each naming a
//! `client` and its arguments. The answer is `{"return": [r1, r2, ...]}` in chunk order, each
//! result shaped as rest_cherrypy shapes it (`local`: `{minion: return}`, silent minions `false`;
//! `local_async`: `{jid, minions}`; `local_batch`: one entry per minion; `runner`: the runner's
//! return; `runner_async`/`wheel_async`: `{tag, jid}`; `wheel`: `{tag, data}`).
//!
//! Credentials: on `/` the Salt token comes from `X-Auth-Token` or the `session_id` cookie and
//! replaces any credentials in the chunks (a session cannot be elevated with body credentials);
//! on `/run` each chunk carries `token` or `eauth` + `username` + `password`. Authentication and
//! authorization are the master's: every call carries the credentials on the clear channel.
//! One exception: the master lets a *compound command* (`fun` a list) through when any one of
//! its functions is allowed, so saltgate checks every function of one against the caller's
//! `external_auth` entries itself ([`crate::api::netapi::acl`]) and refuses with 403 naming the
//! function; single functions are left to the master, whose check is exact for them.
//!
//! Order of checks, cheapest first and all before any side effect: `Accept` (406) → session
//! token present (401) → body size (413) → `Content-Type` (415) → parse (400) → shape of *every*
//! chunk: a map, a known client, enabled in `netapi_enable_clients`, credentials present, `fun`
//! (and `tgt`) present, no key that saltgate sets in the master's request (`cmd`, `user`, `key`;
//! for wheel also `__jid__`, `__tag__`, `__user__`) (400/401) → a master is attached (503) → the
//! session token is valid (401), or on `/run` the client is within its failure budget (429) →
//! eauth chunks with a compound command log in with the master's `mk_token` (throttled as
//! `/login`; a wrong password is 401, the same as for any chunk, whatever the ACL) and their
//! command is checked against the new token's user and groups (403) → compound commands of
//! token chunks, against the token's user and groups (403). Then the chunks run one after the
//! other (an eauth chunk checked that way runs with its new token, which is revoked when the
//! request ends); each publish of a compound command is checked again against the same list.
//!
//! A failing chunk: a chunk that fails at run time (refused by the master, timeout, master
//! gone) ends the request with that chunk's error (`message` starts with `chunk <n>:`); the
//! results of earlier chunks are not returned, but their effects stay, and later chunks do not
//! run. That is rest_cherrypy's rule (API.md §3.4), kept because clients rely on a non-200 status
//! to notice failure. Unlike rest_cherrypy, malformed or disabled chunks are found *before*
//! anything runs, so a bad third chunk no longer leaves the first two executed.
//!
//! Differences from rest_cherrypy, on purpose: 406 before running (rest_cherrypy runs the
//! command, then refuses the response); errors are `{status, code, message}` in the negotiated
//! format instead of CherryPy HTML pages; an authorization refusal is 403 (rest_cherrypy: 401);
//! missing `tgt`/`fun` is 400 (rest_cherrypy: 500); YAML parse errors are 400 (rest_cherrypy:
//! 500); the `ssh` client is not served (400); a compound command with a function the caller's
//! `external_auth` does not allow is 403 (rest_cherrypy runs it: the master's check passes a
//! `fun` list when one function is allowed); a chunk with `cmd`, `user` or `key` (wheel: also
//! `__jid__`, `__tag__`, `__user__`) is 400 (rest_cherrypy's wheel client sets `cmd` over the
//! chunk's).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::response::Response;
use http::{HeaderMap, StatusCode};
use serde_json::{Value, json};

use crate::api::auth::Caller;
use crate::api::body::{parse_async, read_capped};
use crate::api::error::ApiError;
use crate::api::negotiate::{Negotiated, render_body};
use crate::api::netapi::{Background, Client, Shapes, run_lowstate};
use crate::api::state::App;

/// `GET /` (and `/index`, `/run`, `/token`): salt-api's welcome, listing the enabled clients.
pub async fn index(State(app): State<Arc<App>>, Negotiated(format): Negotiated) -> Response {
    let body = json!({
        "return": "Welcome",
        "clients": app.config.master.netapi_enable_clients,
    });
    render_body(StatusCode::OK, format, &body)
}

/// Which lowstate route is answering.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `POST /`: session token.
    Session,
    /// `POST /run`: credentials in each chunk.
    Run,
    /// `POST /minions`: session token, every chunk `local_async`, 202 with `_links`.
    Minions,
}

/// `POST /` and `POST /index` (and `POST /jobs`, as rest_cherrypy).
pub async fn root(
    State(app): State<Arc<App>>,
    State(bg): State<Background>,
    Negotiated(format): Negotiated,
    caller: Caller,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    handle(
        &app,
        &bg,
        format,
        Some(&caller),
        &headers,
        body,
        Mode::Session,
    )
    .await
}

/// `POST /run`: the credentials are in the chunks.
pub async fn run(
    State(app): State<Arc<App>>,
    State(bg): State<Background>,
    Negotiated(format): Negotiated,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    handle(&app, &bg, format, None, &headers, body, Mode::Run).await
}

/// `POST /minions`: publish without waiting; 202 with links to the jobs.
pub async fn minions_post(
    State(app): State<Arc<App>>,
    State(bg): State<Background>,
    Negotiated(format): Negotiated,
    caller: Caller,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    handle(
        &app,
        &bg,
        format,
        Some(&caller),
        &headers,
        body,
        Mode::Minions,
    )
    .await
}

/// The whole lowstate request, rendered in `format`.
async fn handle(
    app: &App,
    background: &Background,
    format: crate::api::negotiate::Format,
    caller: Option<&Caller>,
    headers: &HeaderMap,
    body: Body,
    mode: Mode,
) -> Result<Response, ApiError> {
    let (status, value) = respond(app, background, caller, headers, body, mode).await?;
    Ok(render_body(status, format, &value))
}

async fn respond(
    app: &App,
    background: &Background,
    caller: Option<&Caller>,
    headers: &HeaderMap,
    body: Body,
    mode: Mode,
) -> Result<(StatusCode, Value), ApiError> {
    let raw = read_capped(headers, body, app.config.api.max_request_body_size).await?;
    let lowstate = parse_async(headers, &raw).await?;
    let forced = (mode == Mode::Minions).then_some(Client::LocalAsync);
    let results =
        run_lowstate(app, background, caller, lowstate, forced, Shapes::default()).await?;
    if mode == Mode::Minions {
        let links: Vec<Value> = results
            .iter()
            .filter_map(|r| r.get("jid").and_then(Value::as_str))
            .map(|jid| json!({"href": format!("/jobs/{jid}")}))
            .collect();
        return Ok((
            StatusCode::ACCEPTED,
            json!({"return": results, "_links": {"jobs": links}}),
        ));
    }
    Ok((StatusCode::OK, json!({ "return": results })))
}
