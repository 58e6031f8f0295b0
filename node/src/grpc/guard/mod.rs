//! Who is calling, and may they: every call on the client port passes here before its
//! service sees it. With auth disabled every call is allowed. With auth enabled the caller is
//! the user named by a token (`authorization: Bearer <token>`) or, on nodes started with
//! `--client-cert-auth`, by the common name of the verified client certificate; the call then
//! needs what [`Need`] names of that user's roles (`meta::auth`).
//!
//! The services of the client port are wrapped ([`documents`], [`admin`], [`transactions`]) so that no rpc
//! reaches its handler unchecked: a new rpc does not compile until it says what it needs.
//! Requests forwarded between nodes (peer port) were checked where they entered the cluster.

pub mod admin;
pub mod backup;
pub mod documents;
pub mod transactions;

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use flotilla_proto::v1::ErrorReason;
use flotilla_proto::with_reason;
use tonic::metadata::MetadataMap;
use tonic::{Code, Request, Status};

use crate::auth::token::{self, TokenError};
use crate::host::Host;
use crate::meta::auth::{AuthState, Need};
use crate::tls::accept::ConnInfo;

/// The metadata key carrying the token.
pub const AUTHORIZATION: &str = "authorization";

/// Who a call is made as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// Auth is disabled: anyone may do anything.
    Anyone,
    /// Auth is enabled and the call carried no credentials.
    Anonymous,
    User(String),
}

/// How the caller proved who they are.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    pub token: Option<String>,
    /// The common name of a verified client certificate, when certificates authenticate.
    pub certificate_user: Option<String>,
}

/// The caller of a call with `credentials`, against the auth state `auth` at `now_ms`.
pub fn resolve(auth: &AuthState, credentials: &Credentials, now_ms: u64) -> Result<Caller, Status> {
    if !auth.enabled {
        return Ok(Caller::Anyone);
    }
    if let Some(t) = &credentials.token {
        let claims = token::verify(&auth.secret, t, now_ms).map_err(|e| {
            let reason = match e {
                TokenError::Invalid => ErrorReason::TokenInvalid,
                TokenError::Expired => ErrorReason::TokenExpired,
            };
            with_reason(Status::unauthenticated(e.to_string()), reason)
        })?;
        // A token of a deleted user, or issued before the password changed, is revoked; so
        // is a recorded token whose record is gone.
        return match auth.users.get(&claims.user) {
            Some(u) if u.generation == claims.generation => match &claims.id {
                Some(id) if !auth.token_live(id, &claims.user) => Err(with_reason(
                    Status::unauthenticated(format!("token {id} was revoked")),
                    ErrorReason::TokenRevoked,
                )),
                _ => Ok(Caller::User(claims.user)),
            },
            _ => Err(with_reason(
                Status::unauthenticated(format!(
                    "the token of user {} was revoked (user deleted or password changed)",
                    claims.user
                )),
                ErrorReason::TokenInvalid,
            )),
        };
    }
    if let Some(user) = &credentials.certificate_user {
        return if auth.users.contains_key(user) {
            Ok(Caller::User(user.clone()))
        } else {
            Err(with_reason(
                Status::unauthenticated(format!(
                    "the client certificate names user {user}, who does not exist"
                )),
                ErrorReason::UserNotFound,
            ))
        };
    }
    Ok(Caller::Anonymous)
}

/// Refuses `caller` unless it may do what `need` names.
pub fn authorize(auth: &AuthState, caller: &Caller, need: &Need) -> Result<(), Status> {
    match caller {
        Caller::Anyone => Ok(()),
        Caller::Anonymous => Err(with_reason(
            Status::unauthenticated(format!(
                "auth is enabled: this call needs {need}; authenticate first"
            )),
            ErrorReason::AuthRequired,
        )),
        Caller::User(user) if auth.allows(user, need) => Ok(()),
        Caller::User(user) => Err(with_reason(
            Status::new(Code::PermissionDenied, format!("user {user} lacks {need}")),
            ErrorReason::PermissionDenied,
        )),
    }
}

/// Resolves and checks the callers of one node's client port.
#[derive(Clone)]
pub struct Guard {
    host: Arc<Host>,
}

impl Guard {
    pub fn new(host: Arc<Host>) -> Guard {
        Guard { host }
    }

    /// The caller of `request`.
    pub fn caller<T>(&self, request: &Request<T>) -> Result<Caller, Status> {
        if self.host.is_removed() {
            return Err(flotilla_proto::with_reason(
                Status::unavailable(format!(
                    "node {} was removed from the cluster; ask another node",
                    self.host.id
                )),
                flotilla_proto::v1::ErrorReason::NodeRemoved,
            ));
        }
        let state = self.host.meta_state();
        let credentials = Credentials {
            token: bearer(request.metadata()),
            certificate_user: self
                .host
                .config
                .security
                .client_cert_auth
                .then(|| certificate_user(request))
                .flatten(),
        };
        resolve(&state.auth, &credentials, now_ms())
    }

    /// The caller of `request`, refused unless it may do what `need` names.
    pub fn check<T>(&self, request: &Request<T>, need: Need) -> Result<Caller, Status> {
        let caller = self.caller(request)?;
        authorize(&self.host.meta_state().auth, &caller, &need)?;
        Ok(caller)
    }

    /// Whether `caller` may do what `need` names (for calls that need several things).
    pub fn allows(&self, caller: &Caller, need: &Need) -> Result<(), Status> {
        authorize(&self.host.meta_state().auth, caller, need)
    }

    pub fn host(&self) -> &Arc<Host> {
        &self.host
    }
}

/// The token of an `authorization: Bearer <token>` header.
fn bearer(metadata: &MetadataMap) -> Option<String> {
    let value = metadata.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_string())
        .filter(|t| !t.is_empty())
}

/// The common name of the client certificate the connection verified.
fn certificate_user<T>(request: &Request<T>) -> Option<String> {
    let conn = request.extensions().get::<ConnInfo>()?;
    let leaf = conn.peer_certs.as_ref()?.first()?;
    crate::tls::common_name(leaf)
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::token::Claims;
    use crate::meta::auth::{AuthCommand, Permission, ROOT};
    use flotilla_proto::reason_of;

    fn state() -> AuthState {
        let mut a = AuthState::default();
        for cmd in [
            AuthCommand::AddUser {
                name: ROOT.into(),
                password_hash: None,
            },
            AuthCommand::GrantRole {
                user: ROOT.into(),
                role: ROOT.into(),
            },
            AuthCommand::AddUser {
                name: "ann".into(),
                password_hash: None,
            },
            AuthCommand::AddRole {
                name: "reader".into(),
            },
            AuthCommand::GrantPermission {
                role: "reader".into(),
                database: "shop".into(),
                permission: Permission::Read,
            },
            AuthCommand::GrantRole {
                user: "ann".into(),
                role: "reader".into(),
            },
            AuthCommand::Enable {
                secret: b"k".to_vec(),
            },
        ] {
            a.apply(&cmd).unwrap();
        }
        a
    }

    fn token_of(a: &AuthState, user: &str, expires_ms: u64) -> Credentials {
        let generation = a.users.get(user).map_or(0, |u| u.generation);
        Credentials {
            token: Some(token::sign(
                &a.secret,
                &Claims {
                    user: user.into(),
                    generation,
                    expires_ms,
                    id: None,
                },
            )),
            certificate_user: None,
        }
    }

    fn refused(r: Result<Caller, Status>) -> (Code, Option<ErrorReason>) {
        let s = r.expect_err("refused");
        (s.code(), reason_of(&s))
    }

    #[test]
    fn with_auth_disabled_anyone_may_do_anything() {
        let mut a = state();
        a.apply(&AuthCommand::Disable).unwrap();
        let caller = resolve(&a, &Credentials::default(), 0).unwrap();
        assert_eq!(caller, Caller::Anyone);
        assert!(authorize(&a, &caller, &Need::ClusterAdmin).is_ok());
    }

    #[test]
    fn a_token_names_its_user_until_it_expires_or_is_revoked() {
        let mut a = state();
        let ann = token_of(&a, "ann", 1_000);
        assert_eq!(resolve(&a, &ann, 10).unwrap(), Caller::User("ann".into()));
        assert_eq!(
            refused(resolve(&a, &ann, 1_000)),
            (Code::Unauthenticated, Some(ErrorReason::TokenExpired))
        );
        let forged = Credentials {
            token: Some("abc.def".into()),
            certificate_user: None,
        };
        assert_eq!(
            refused(resolve(&a, &forged, 0)),
            (Code::Unauthenticated, Some(ErrorReason::TokenInvalid))
        );
        a.apply(&AuthCommand::SetPassword {
            name: "ann".into(),
            password_hash: None,
        })
        .unwrap();
        assert_eq!(
            refused(resolve(&a, &ann, 10)),
            (Code::Unauthenticated, Some(ErrorReason::TokenInvalid))
        );
    }

    #[test]
    fn a_recorded_token_is_refused_once_revoked_and_the_others_of_its_user_stay() {
        let mut a = state();
        let recorded = |a: &mut AuthState, id: &str| {
            a.apply(&AuthCommand::AddToken {
                id: id.into(),
                user: "ann".into(),
                now_ms: 0,
                expires_ms: 1_000,
                description: String::new(),
            })
            .unwrap();
            let generation = a.users["ann"].generation;
            let claims = Claims {
                user: "ann".into(),
                generation,
                expires_ms: 1_000,
                id: Some(id.into()),
            };
            Credentials {
                token: Some(token::sign(&a.secret, &claims)),
                certificate_user: None,
            }
        };
        let first = recorded(&mut a, "t1");
        let second = recorded(&mut a, "t2");
        a.apply(&AuthCommand::RevokeToken {
            id: "t1".into(),
            now_ms: 10,
        })
        .unwrap();
        assert_eq!(
            refused(resolve(&a, &first, 10)),
            (Code::Unauthenticated, Some(ErrorReason::TokenRevoked))
        );
        assert_eq!(
            resolve(&a, &second, 10).unwrap(),
            Caller::User("ann".into())
        );
    }

    #[test]
    fn a_call_without_credentials_or_without_the_permission_is_refused() {
        let a = state();
        let anonymous = resolve(&a, &Credentials::default(), 0).unwrap();
        let need = Need::Database("shop".into(), Permission::Read);
        let s = authorize(&a, &anonymous, &need).expect_err("refused");
        assert_eq!(s.code(), Code::Unauthenticated);
        assert_eq!(reason_of(&s), Some(ErrorReason::AuthRequired));
        let ann = Caller::User("ann".into());
        assert!(authorize(&a, &ann, &need).is_ok());
        let write = Need::Database("shop".into(), Permission::Write);
        let s = authorize(&a, &ann, &write).expect_err("refused");
        assert_eq!(s.code(), Code::PermissionDenied);
        assert_eq!(reason_of(&s), Some(ErrorReason::PermissionDenied));
    }

    #[test]
    fn a_certificate_names_an_existing_user() {
        let a = state();
        let cert = |u: &str| Credentials {
            token: None,
            certificate_user: Some(u.into()),
        };
        assert_eq!(
            resolve(&a, &cert("ann"), 0).unwrap(),
            Caller::User("ann".into())
        );
        assert_eq!(
            refused(resolve(&a, &cert("eve"), 0)),
            (Code::Unauthenticated, Some(ErrorReason::UserNotFound))
        );
    }

    #[test]
    fn only_bearer_tokens_are_read() {
        let mut m = MetadataMap::new();
        assert_eq!(bearer(&m), None);
        m.insert(AUTHORIZATION, "Bearer abc".parse().unwrap());
        assert_eq!(bearer(&m).as_deref(), Some("abc"));
        m.insert(AUTHORIZATION, "Basic abc".parse().unwrap());
        assert_eq!(bearer(&m), None);
        m.insert(AUTHORIZATION, "Bearer ".parse().unwrap());
        assert_eq!(bearer(&m), None);
    }
}
