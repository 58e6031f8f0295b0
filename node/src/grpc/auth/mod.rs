//! The `Auth` service: tokens for users' passwords, and the users and roles kept in the meta
//! state (see `meta::auth`). Any node issues tokens from its copy of the meta state; changes
//! are made by the meta group leader, and other nodes forward them there over the peer port.
//! On the client port a change needs the role `root` once auth is enabled (a user may also
//! change their own password); forwarded requests were checked where they entered. Recorded
//! tokens (made, listed and revoked one by one) are in [`tokens`].

use std::sync::Arc;

use flotilla_proto::v1::auth_client::AuthClient;
use flotilla_proto::v1::auth_server::Auth;
use flotilla_proto::v1::{self as pb, ErrorReason};
use flotilla_proto::with_reason;
use tokio::sync::Semaphore;
use tonic::{Request, Response, Status};

use super::guard::{Caller, Guard, now_ms};
use crate::auth::{password, token};
use crate::command::MetaCommand;
use crate::host::Host;
use crate::meta::auth::{ALL_DATABASES, AuthCommand, Need, Permission, ROOT};
use crate::network::PeerChannel;
use crate::network::forward::{MAX_HOPS, hops, onward};

/// Password hashes computed at once (argon2 is made to be slow and big: a flood of
/// authentications must not take every core).
const HASHING_AT_ONCE: usize = 2;

/// Longest user or role name.
const MAX_NAME_BYTES: usize = 64;

pub struct AuthService {
    host: Arc<Host>,
    /// Checks callers on the client port; `None` on the peer port.
    guard: Option<Guard>,
    hashing: Arc<Semaphore>,
}

impl AuthService {
    /// The service of the client port.
    pub fn for_clients(host: Arc<Host>) -> Self {
        AuthService {
            guard: Some(Guard::new(host.clone())),
            host,
            hashing: Arc::new(Semaphore::new(HASHING_AT_ONCE)),
        }
    }

    /// The service of the peer port (forwarded changes).
    pub fn for_peers(host: Arc<Host>) -> Self {
        AuthService {
            host,
            guard: None,
            hashing: Arc::new(Semaphore::new(HASHING_AT_ONCE)),
        }
    }

    fn check<T>(&self, request: &Request<T>, need: Need) -> Result<(), Status> {
        match &self.guard {
            Some(g) => g.check(request, need).map(|_| ()),
            None => Ok(()),
        }
    }

    /// Runs `f` off the async threads, a few at a time.
    async fn hashing<R: Send + 'static>(
        &self,
        f: impl FnOnce() -> R + Send + 'static,
    ) -> Result<R, Status> {
        let _permit = self
            .hashing
            .acquire()
            .await
            .map_err(|_| Status::unavailable("the node is stopping"))?;
        tokio::task::spawn_blocking(f)
            .await
            .map_err(|e| Status::internal(format!("password hashing failed: {e}")))
    }

    async fn hash(&self, password: String) -> Result<Option<String>, Status> {
        if password.is_empty() {
            return Ok(None);
        }
        self.hashing(move || password::hash(&password))
            .await?
            .map(Some)
            .map_err(|e| Status::invalid_argument(e.to_string()))
    }

    /// Forwards `msg` to the meta leader unless this node is it (`None`: serve it here).
    async fn to_meta_leader<T, R>(
        &self,
        hops: u32,
        msg: &T,
        call: impl FnOnce(AuthClient<PeerChannel>, Request<T>) -> BoxFut<Result<Response<R>, Status>>,
    ) -> Option<Result<Response<R>, Status>>
    where
        T: Clone,
    {
        match self.host.meta_leader_peer() {
            Some((leader, _)) if leader == self.host.id => None,
            Some((_, addr)) if hops < MAX_HOPS => {
                let client = match self.host.peers().auth(&addr) {
                    Ok(c) => c,
                    Err(e) => return Some(Err(e.into())),
                };
                let request = onward(msg.clone(), hops, self.host.config.request_timeout);
                Some(call(client, request).await)
            }
            _ => Some(Err(Status::unavailable(
                "no meta leader is known right now",
            ))),
        }
    }

    async fn propose(&self, cmd: AuthCommand) -> Result<(), Status> {
        self.host
            .propose_meta(MetaCommand::Auth(cmd))
            .await
            .map(|_| ())
            .map_err(Status::from)
    }
}

type BoxFut<T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send>>;

/// Answers with the meta leader's answer to `$msg` unless this node leads the meta group.
macro_rules! at_meta_leader {
    ($self:ident, $hops:expr, $msg:expr, $method:ident) => {
        if let Some(r) = $self
            .to_meta_leader($hops, &$msg, |mut c, r| {
                Box::pin(async move { c.$method(r).await })
            })
            .await
        {
            return r;
        }
    };
}

mod tokens;

/// A user or role name: 1 to 64 letters, digits, '-', '_', '.' or '@'.
fn check_name(kind: &str, name: &str) -> Result<(), Status> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_BYTES
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@'));
    if ok {
        Ok(())
    } else {
        Err(with_reason(
            Status::invalid_argument(format!(
                "invalid {kind} name {name:?}: use 1-{MAX_NAME_BYTES} letters, digits, '-', '_', '.' or '@'"
            )),
            ErrorReason::InvalidName,
        ))
    }
}

fn permission(p: i32) -> Result<Permission, Status> {
    match pb::Permission::try_from(p) {
        Ok(pb::Permission::Read) => Ok(Permission::Read),
        Ok(pb::Permission::Write) => Ok(Permission::Write),
        Ok(pb::Permission::Admin) => Ok(Permission::Admin),
        _ => Err(Status::invalid_argument(
            "permission must be read, write or admin",
        )),
    }
}

fn to_proto(p: Permission) -> pb::Permission {
    match p {
        Permission::Read => pb::Permission::Read,
        Permission::Write => pb::Permission::Write,
        Permission::Admin => pb::Permission::Admin,
    }
}

fn bad_credentials() -> Status {
    with_reason(
        Status::unauthenticated("wrong user name or password"),
        ErrorReason::BadCredentials,
    )
}

#[tonic::async_trait]
impl Auth for AuthService {
    async fn authenticate(
        &self,
        request: Request<pb::AuthenticateRequest>,
    ) -> Result<Response<pb::AuthenticateResponse>, Status> {
        let msg = request.into_inner();
        let state = self.host.meta_state();
        let auth = &state.auth;
        if !auth.enabled {
            // Nothing to prove: calls need no token.
            return Ok(Response::new(pb::AuthenticateResponse::default()));
        }
        let user = auth.users.get(&msg.user).cloned();
        let hash = user.as_ref().and_then(|u| u.password_hash.clone());
        let Some(hash) = hash else {
            return Err(bad_credentials());
        };
        let password = msg.password;
        if !self
            .hashing(move || password::verify(&password, &hash))
            .await?
        {
            return Err(bad_credentials());
        }
        let generation = user.map_or(0, |u| u.generation);
        let expires_ms = now_ms() + self.host.config.security.auth_token_ttl.as_millis() as u64;
        let claims = token::Claims {
            user: msg.user,
            generation,
            expires_ms,
            id: None,
        };
        Ok(Response::new(pb::AuthenticateResponse {
            token: token::sign(&auth.secret, &claims),
            expires_at_unix_ms: expires_ms,
        }))
    }

    async fn auth_status(
        &self,
        request: Request<pb::AuthStatusRequest>,
    ) -> Result<Response<pb::AuthStatusResponse>, Status> {
        let user = match &self.guard {
            Some(g) => match g.caller(&request)? {
                Caller::User(u) => u,
                Caller::Anyone | Caller::Anonymous => String::new(),
            },
            None => String::new(),
        };
        Ok(Response::new(pb::AuthStatusResponse {
            enabled: self.host.meta_state().auth.enabled,
            user,
        }))
    }

    async fn auth_enable(
        &self,
        request: Request<pb::AuthEnableRequest>,
    ) -> Result<Response<pb::AuthEnableResponse>, Status> {
        self.check(&request, Need::ClusterAdmin)?;
        let hops = hops(&request);
        let msg = request.into_inner();
        at_meta_leader!(self, hops, msg, auth_enable);
        let secret: [u8; 32] = rand::random();
        self.propose(AuthCommand::Enable {
            secret: secret.to_vec(),
        })
        .await?;
        tracing::info!("auth enabled");
        Ok(Response::new(pb::AuthEnableResponse {}))
    }

    async fn auth_disable(
        &self,
        request: Request<pb::AuthDisableRequest>,
    ) -> Result<Response<pb::AuthDisableResponse>, Status> {
        self.check(&request, Need::ClusterAdmin)?;
        let hops = hops(&request);
        let msg = request.into_inner();
        at_meta_leader!(self, hops, msg, auth_disable);
        self.propose(AuthCommand::Disable).await?;
        tracing::warn!("auth disabled: every client may do anything");
        Ok(Response::new(pb::AuthDisableResponse {}))
    }

    async fn user_add(
        &self,
        request: Request<pb::UserAddRequest>,
    ) -> Result<Response<pb::UserAddResponse>, Status> {
        self.check(&request, Need::ClusterAdmin)?;
        let hops = hops(&request);
        let msg = request.into_inner();
        check_name("user", &msg.name)?;
        at_meta_leader!(self, hops, msg, user_add);
        let password_hash = self.hash(msg.password).await?;
        self.propose(AuthCommand::AddUser {
            name: msg.name,
            password_hash,
        })
        .await?;
        Ok(Response::new(pb::UserAddResponse {}))
    }

    async fn user_delete(
        &self,
        request: Request<pb::UserDeleteRequest>,
    ) -> Result<Response<pb::UserDeleteResponse>, Status> {
        self.check(&request, Need::ClusterAdmin)?;
        let hops = hops(&request);
        let msg = request.into_inner();
        at_meta_leader!(self, hops, msg, user_delete);
        self.propose(AuthCommand::DeleteUser { name: msg.name })
            .await?;
        Ok(Response::new(pb::UserDeleteResponse {}))
    }

    async fn user_change_password(
        &self,
        request: Request<pb::UserChangePasswordRequest>,
    ) -> Result<Response<pb::UserChangePasswordResponse>, Status> {
        if let Some(g) = &self.guard {
            let caller = g.caller(&request)?;
            if caller != Caller::User(request.get_ref().name.clone()) {
                g.allows(&caller, &Need::ClusterAdmin)?;
            }
        }
        let hops = hops(&request);
        let msg = request.into_inner();
        at_meta_leader!(self, hops, msg, user_change_password);
        let password_hash = self.hash(msg.password).await?;
        self.propose(AuthCommand::SetPassword {
            name: msg.name,
            password_hash,
        })
        .await?;
        Ok(Response::new(pb::UserChangePasswordResponse {}))
    }

    async fn user_grant_role(
        &self,
        request: Request<pb::UserGrantRoleRequest>,
    ) -> Result<Response<pb::UserGrantRoleResponse>, Status> {
        self.check(&request, Need::ClusterAdmin)?;
        let hops = hops(&request);
        let msg = request.into_inner();
        at_meta_leader!(self, hops, msg, user_grant_role);
        self.propose(AuthCommand::GrantRole {
            user: msg.user,
            role: msg.role,
        })
        .await?;
        Ok(Response::new(pb::UserGrantRoleResponse {}))
    }

    async fn user_revoke_role(
        &self,
        request: Request<pb::UserRevokeRoleRequest>,
    ) -> Result<Response<pb::UserRevokeRoleResponse>, Status> {
        self.check(&request, Need::ClusterAdmin)?;
        let hops = hops(&request);
        let msg = request.into_inner();
        at_meta_leader!(self, hops, msg, user_revoke_role);
        self.propose(AuthCommand::RevokeRole {
            user: msg.user,
            role: msg.role,
        })
        .await?;
        Ok(Response::new(pb::UserRevokeRoleResponse {}))
    }

    async fn user_list(
        &self,
        request: Request<pb::UserListRequest>,
    ) -> Result<Response<pb::UserListResponse>, Status> {
        self.check(&request, Need::ClusterAdmin)?;
        let state = self.host.meta_state();
        let users = state
            .auth
            .users
            .iter()
            .map(|(name, u)| pb::UserInfo {
                name: name.clone(),
                roles: u.roles.iter().cloned().collect(),
                has_password: u.password_hash.is_some(),
            })
            .collect();
        Ok(Response::new(pb::UserListResponse { users }))
    }

    async fn role_add(
        &self,
        request: Request<pb::RoleAddRequest>,
    ) -> Result<Response<pb::RoleAddResponse>, Status> {
        self.check(&request, Need::ClusterAdmin)?;
        let hops = hops(&request);
        let msg = request.into_inner();
        check_name("role", &msg.name)?;
        at_meta_leader!(self, hops, msg, role_add);
        self.propose(AuthCommand::AddRole { name: msg.name })
            .await?;
        Ok(Response::new(pb::RoleAddResponse {}))
    }

    async fn role_delete(
        &self,
        request: Request<pb::RoleDeleteRequest>,
    ) -> Result<Response<pb::RoleDeleteResponse>, Status> {
        self.check(&request, Need::ClusterAdmin)?;
        let hops = hops(&request);
        let msg = request.into_inner();
        at_meta_leader!(self, hops, msg, role_delete);
        self.propose(AuthCommand::DeleteRole { name: msg.name })
            .await?;
        Ok(Response::new(pb::RoleDeleteResponse {}))
    }

    async fn role_grant_permission(
        &self,
        request: Request<pb::RoleGrantPermissionRequest>,
    ) -> Result<Response<pb::RoleGrantPermissionResponse>, Status> {
        self.check(&request, Need::ClusterAdmin)?;
        let hops = hops(&request);
        let msg = request.into_inner();
        let permission = permission(msg.permission)?;
        if msg.database != ALL_DATABASES {
            crate::validate::new_database(&msg.database)?;
        }
        at_meta_leader!(self, hops, msg, role_grant_permission);
        self.propose(AuthCommand::GrantPermission {
            role: msg.role,
            database: msg.database,
            permission,
        })
        .await?;
        Ok(Response::new(pb::RoleGrantPermissionResponse {}))
    }

    async fn role_revoke_permission(
        &self,
        request: Request<pb::RoleRevokePermissionRequest>,
    ) -> Result<Response<pb::RoleRevokePermissionResponse>, Status> {
        self.check(&request, Need::ClusterAdmin)?;
        let hops = hops(&request);
        let msg = request.into_inner();
        at_meta_leader!(self, hops, msg, role_revoke_permission);
        self.propose(AuthCommand::RevokePermission {
            role: msg.role,
            database: msg.database,
        })
        .await?;
        Ok(Response::new(pb::RoleRevokePermissionResponse {}))
    }

    async fn role_list(
        &self,
        request: Request<pb::RoleListRequest>,
    ) -> Result<Response<pb::RoleListResponse>, Status> {
        self.check(&request, Need::ClusterAdmin)?;
        let state = self.host.meta_state();
        let root = pb::RoleInfo {
            name: ROOT.into(),
            grants: vec![],
            cluster_admin: true,
        };
        let roles = std::iter::once(root)
            .chain(state.auth.roles.iter().map(|(name, r)| {
                pb::RoleInfo {
                    name: name.clone(),
                    grants: r
                        .grants
                        .iter()
                        .map(|(db, p)| pb::Grant {
                            database: db.clone(),
                            permission: to_proto(*p) as i32,
                        })
                        .collect(),
                    cluster_admin: false,
                }
            }))
            .collect();
        Ok(Response::new(pb::RoleListResponse { roles }))
    }

    async fn token_create(
        &self,
        request: Request<pb::TokenCreateRequest>,
    ) -> Result<Response<pb::TokenCreateResponse>, Status> {
        self.create_token(request).await
    }

    async fn token_list(
        &self,
        request: Request<pb::TokenListRequest>,
    ) -> Result<Response<pb::TokenListResponse>, Status> {
        self.list_tokens(request).await
    }

    async fn token_revoke(
        &self,
        request: Request<pb::TokenRevokeRequest>,
    ) -> Result<Response<pb::TokenRevokeResponse>, Status> {
        self.revoke_token(request).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_and_role_names_are_short_and_plain() {
        for good in ["root", "ann.lee@shop", "svc-1_a"] {
            assert!(check_name("user", good).is_ok(), "{good}");
        }
        for bad in ["", "a b", "ann\n", "é", &"x".repeat(MAX_NAME_BYTES + 1)] {
            let s = check_name("user", bad).expect_err(bad);
            assert_eq!(
                flotilla_proto::reason_of(&s),
                Some(ErrorReason::InvalidName)
            );
        }
    }
}
