//! saltgate's own ACL check of compound commands (see [`crate::security::acl`] for why the
//! master's is not enough): checked before anything runs, eauth chunks after their credentials
//! are; every publish of a checked chunk's job is checked again ([`guard`]).

use rmpv::Value as Mp;
use serde_json::{Map, Value};

use super::Prepared;
use crate::api::error::ApiError;
use crate::api::state::App;
use crate::api::tokens::{AuthError, remove_token};
use crate::salt::channel::{Auth, PublishRequest, Token};
use crate::salt::client::args::publish_request;
use crate::salt::{SaltClients, SaltError};
use crate::security::acl::{self, AuthList, Caller};

/// Whether a chunk publishes a compound command (a `fun` list of two or more).
fn is_compound(p: &Prepared) -> bool {
    p.client.needs_target() && matches!(p.low.get("fun"), Some(Value::Array(f)) if f.len() >= 2)
}

/// Logs in, with the master's `mk_token`, the eauth credentials of every chunk with a compound
/// command, then checks the command against the new token's user, backend and groups as
/// [`authorize_tokens`] does; the chunk then runs with that token instead of the password.
///
/// Authentication comes first so that a wrong password is the same 401 whatever the ACL says
/// (no 401/403 oracle on the master's `external_auth`), and so that `<group>%` entries are
/// decidable (the token names the groups). The login is the throttled one of `/login`: a refusal
/// counts as a failure of the client's. The same credentials in several chunks log in once.
/// Each token made here is pushed to `fresh`, for [`revoke`] once the request is done.
/// Single-function chunks are left to the master (no extra round trip).
pub async fn authorize_eauth(
    app: &App,
    salt: &SaltClients,
    chunks: &mut [Prepared],
    fresh: &mut Vec<Token>,
) -> Result<(), ApiError> {
    let options = app.config.master.acl_options();
    let mut logins: Vec<(String, String, String, Token)> = Vec::new();
    for (index, chunk) in chunks.iter_mut().enumerate() {
        if !is_compound(chunk) {
            continue;
        }
        let Auth::Eauth {
            eauth,
            username,
            password,
        } = &chunk.auth
        else {
            continue;
        };
        let seen = logins
            .iter()
            .find(|(e, u, p, _)| e == eauth && u == username && p == password)
            .map(|(.., t)| t.clone());
        let token = match seen {
            Some(t) => t,
            None => {
                let t = match app.tokens.login(salt, eauth, username, password).await {
                    Ok(t) => t,
                    Err(AuthError::Salt(SaltError::AuthRefused(_) | SaltError::Master(_))) => {
                        tracing::info!(
                            chunk = index, user = %username, eauth = %eauth,
                            "Compound command: credentials refused by the Salt master"
                        );
                        // What a single function with a wrong password gets from the master.
                        return Err(in_chunk(
                            index,
                            SaltError::AuthRefused(String::new()).into(),
                        ));
                    }
                    Err(e) => return Err(in_chunk(index, e.into())),
                };
                fresh.push(t.clone());
                logins.push((eauth.clone(), username.clone(), password.clone(), t.clone()));
                t
            }
        };
        let caller = Caller::Token {
            eauth: &token.eauth,
            name: &token.name,
            groups: &token.groups,
        };
        let list = acl::auth_list(&app.config.master.external_auth, &options, &caller);
        check_chunk(&list, &chunk.low).map_err(|e| in_chunk(index, e))?;
        chunk.acl = Some(list);
        chunk.auth = Auth::Token(token.token.clone());
    }
    Ok(())
}

/// Revokes the tokens [`authorize_eauth`] made, once the request's chunks have run: forgotten by
/// saltgate and removed from the master's file token store (as `/logout` does; other token
/// stores keep them until they expire).
pub fn revoke(app: &App, fresh: &[Token]) {
    for t in fresh {
        app.tokens.forget(&t.token);
        remove_token(&app.config, &t.token);
    }
}

/// Checks the compound commands of chunks with a token against the token's user, backend and
/// groups (`session`: the request's token, already confirmed; other tokens are looked up).
pub async fn authorize_tokens(
    app: &App,
    salt: &SaltClients,
    chunks: &mut [Prepared],
    session: Option<&Token>,
) -> Result<(), ApiError> {
    let options = app.config.master.acl_options();
    for (index, chunk) in chunks.iter_mut().enumerate() {
        if !is_compound(chunk) {
            continue;
        }
        let Auth::Token(token) = &chunk.auth else {
            continue;
        };
        let known = match session {
            Some(t) if t.token == *token => t.clone(),
            _ => app
                .tokens
                .confirm(salt, token)
                .await
                .map_err(|e| in_chunk(index, e))?,
        };
        let caller = Caller::Token {
            eauth: &known.eauth,
            name: &known.name,
            groups: &known.groups,
        };
        let list = acl::auth_list(&app.config.master.external_auth, &options, &caller);
        check_chunk(&list, &chunk.low).map_err(|e| in_chunk(index, e))?;
        chunk.acl = Some(list);
    }
    Ok(())
}

fn in_chunk(index: usize, error: ApiError) -> ApiError {
    ApiError::Chunk {
        index,
        error: Box::new(error),
    }
}

/// The chunk's job, as it would be published, against the auth list.
fn check_chunk(list: &AuthList, low: &Map<String, Value>) -> Result<(), ApiError> {
    let (req, _) = publish_request(low);
    check_publish(list, &req)
}

fn check_publish(list: &AuthList, req: &PublishRequest) -> Result<(), ApiError> {
    let job = acl::Publish {
        tgt: &req.tgt,
        tgt_type: &req.tgt_type,
        fun: &req.fun,
        arg: &req.arg,
    };
    list.check(&job).map_err(|refusal| {
        tracing::info!(
            fun = ?refusal.fun,
            index = refusal.index,
            undecided = refusal.undecided.is_some(),
            "Compound command refused by saltgate's ACL check"
        );
        ApiError::AclRefused(refusal.to_string())
    })
}

/// Before every publish of a chunk's own job: a compound command is published only against the
/// auth list that passed it (fail closed for a path that skipped the check).
pub fn guard(acl: Option<&AuthList>, req: &PublishRequest) -> Result<(), ApiError> {
    match (acl, &req.fun) {
        (Some(list), _) => check_publish(list, req),
        (None, Mp::Array(funs)) if funs.len() >= 2 => Err(ApiError::AclRefused(
            "a compound command was not checked against the caller's ACL; refused".into(),
        )),
        (None, _) => Ok(()),
    }
}
