//! Recorded tokens (`token create | list | revoke`): tokens for scripts and services, made at
//! the meta leader and recorded in the meta state by id, so that each can be revoked on its own
//! (see `meta::auth`). A user makes, lists and revokes their own; the role `root` anyone's.

use std::time::Duration;

use flotilla_proto::v1::{self as pb, ErrorReason};
use flotilla_proto::with_reason;
use tonic::{Request, Response, Status};

use super::AuthService;
use crate::auth::token;
use crate::grpc::guard::{Caller, now_ms};
use crate::meta::auth::{AuthCommand, Need};
use crate::network::forward::hops;

/// Life of a token when the request names none.
pub const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(30 * 24 * 3600);
/// Longest life of a token.
pub const MAX_TOKEN_TTL: Duration = Duration::from_secs(366 * 24 * 3600);
/// Longest description of a token.
const MAX_DESCRIPTION_BYTES: usize = 256;

fn auth_disabled() -> Status {
    Status::failed_precondition("auth is disabled: calls need no token (enable auth first)")
}

fn not_found(id: &str) -> Status {
    with_reason(
        Status::not_found(format!(
            "token {id} does not exist (revoked, expired or never made)"
        )),
        ErrorReason::TokenNotFound,
    )
}

/// The life of a token asked for as `ttl_ms` (0: the default).
fn ttl(ttl_ms: u64) -> Result<Duration, Status> {
    let ttl = match ttl_ms {
        0 => DEFAULT_TOKEN_TTL,
        ms => Duration::from_millis(ms),
    };
    if ttl > MAX_TOKEN_TTL {
        return Err(Status::invalid_argument(format!(
            "a token lives at most {} days",
            MAX_TOKEN_TTL.as_secs() / 86_400
        )));
    }
    Ok(ttl)
}

fn check_description(text: &str) -> Result<(), Status> {
    if text.len() > MAX_DESCRIPTION_BYTES || text.chars().any(char::is_control) {
        return Err(Status::invalid_argument(format!(
            "a token's description is at most {MAX_DESCRIPTION_BYTES} bytes without control characters"
        )));
    }
    Ok(())
}

/// A token id: 16 hex digits.
fn new_id() -> String {
    format!("{:016x}", rand::random::<u64>())
}

impl AuthService {
    /// The caller of a token call on the client port (`None` on the peer port: checked where
    /// it entered).
    fn token_caller<T>(&self, request: &Request<T>) -> Result<Option<Caller>, Status> {
        let Some(g) = &self.guard else {
            return Ok(None);
        };
        let caller = g.caller(request)?;
        g.allows(&caller, &Need::User)?;
        Ok(Some(caller))
    }

    fn is_admin(&self, caller: &Caller) -> bool {
        match &self.guard {
            Some(g) => g.allows(caller, &Need::ClusterAdmin).is_ok(),
            None => true,
        }
    }

    pub(super) async fn create_token(
        &self,
        request: Request<pb::TokenCreateRequest>,
    ) -> Result<Response<pb::TokenCreateResponse>, Status> {
        let caller = self.token_caller(&request)?;
        let hops = hops(&request);
        let mut msg = request.into_inner();
        match &caller {
            Some(Caller::Anyone) => return Err(auth_disabled()),
            Some(Caller::User(me)) if msg.user.is_empty() => msg.user = me.clone(),
            Some(c @ Caller::User(me)) if msg.user != *me && !self.is_admin(c) => {
                return Err(with_reason(
                    Status::permission_denied(format!(
                        "user {me} lacks the role root (needed to make a token for user {})",
                        msg.user
                    )),
                    ErrorReason::PermissionDenied,
                ));
            }
            _ => {}
        }
        if msg.user.is_empty() {
            return Err(Status::invalid_argument("a token needs a user"));
        }
        let ttl = ttl(msg.ttl_ms)?;
        check_description(&msg.description)?;
        at_meta_leader!(self, hops, msg, token_create);
        if !self.host.meta_state().auth.enabled {
            return Err(auth_disabled());
        }
        let id = new_id();
        let now = now_ms();
        let expires_ms = now.saturating_add(ttl.as_millis() as u64);
        self.propose(AuthCommand::AddToken {
            id: id.clone(),
            user: msg.user.clone(),
            now_ms: now,
            expires_ms,
            description: msg.description,
        })
        .await?;
        let state = self.host.meta_state();
        let generation = state
            .auth
            .users
            .get(&msg.user)
            .map(|u| u.generation)
            .ok_or_else(|| not_found(&id))?;
        let claims = token::Claims {
            user: msg.user.clone(),
            generation,
            expires_ms,
            id: Some(id.clone()),
        };
        tracing::info!(token = %id, user = %msg.user, "token created");
        Ok(Response::new(pb::TokenCreateResponse {
            token: token::sign(&state.auth.secret, &claims),
            token_id: id,
            expires_at_unix_ms: expires_ms,
        }))
    }

    pub(super) async fn list_tokens(
        &self,
        request: Request<pb::TokenListRequest>,
    ) -> Result<Response<pb::TokenListResponse>, Status> {
        let caller = self.token_caller(&request)?;
        let only: Option<String> = match &caller {
            Some(c @ Caller::User(me)) if !self.is_admin(c) => Some(me.clone()),
            _ => None,
        };
        let now = now_ms();
        let state = self.host.meta_state();
        let tokens = state
            .auth
            .tokens
            .iter()
            .filter(|(_, t)| t.expires_ms > now)
            .filter(|(_, t)| only.as_ref().is_none_or(|me| *me == t.user))
            .map(|(id, t)| pb::TokenInfo {
                token_id: id.clone(),
                user: t.user.clone(),
                created_at_unix_ms: t.created_ms,
                expires_at_unix_ms: t.expires_ms,
                description: t.description.clone(),
            })
            .collect();
        Ok(Response::new(pb::TokenListResponse { tokens }))
    }

    pub(super) async fn revoke_token(
        &self,
        request: Request<pb::TokenRevokeRequest>,
    ) -> Result<Response<pb::TokenRevokeResponse>, Status> {
        let caller = self.token_caller(&request)?;
        let hops = hops(&request);
        let msg = request.into_inner();
        if let Some(c @ Caller::User(me)) = &caller
            && !self.is_admin(c)
        {
            // Another user's token reads as unknown: its id says nothing to this caller.
            let state = self.host.meta_state();
            if !state.auth.token_live(&msg.token_id, me) {
                return Err(not_found(&msg.token_id));
            }
        }
        at_meta_leader!(self, hops, msg, token_revoke);
        self.propose(AuthCommand::RevokeToken {
            id: msg.token_id.clone(),
            now_ms: now_ms(),
        })
        .await?;
        tracing::info!(token = %msg.token_id, "token revoked");
        Ok(Response::new(pb::TokenRevokeResponse {}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_lives_thirty_days_unless_asked_otherwise_and_at_most_a_year() {
        assert_eq!(ttl(0).unwrap(), DEFAULT_TOKEN_TTL);
        assert_eq!(ttl(1_000).unwrap(), Duration::from_secs(1));
        assert!(ttl(MAX_TOKEN_TTL.as_millis() as u64 + 1).is_err());
        assert!(check_description("ci deploys").is_ok());
        assert!(check_description("a\nb").is_err());
        assert_eq!(new_id().len(), 16);
    }
}
