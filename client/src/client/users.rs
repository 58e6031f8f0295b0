//! Users, roles and auth of [`Client`]: each call runs through the same retry loop as the
//! others (nodes forward changes to the meta leader).

use flotilla_proto::v1 as pb;
use flotilla_proto::v1::auth_client::AuthClient;

use super::{Client, Kind, request};
use crate::auth::AuthChannel;
use crate::error::{Error, Result};

/// What a role may do with a database; each level includes the ones below it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Permission {
    /// Get, list, watch, database status.
    Read,
    /// Read, and put, delete, batches.
    Write,
    /// Write, and create, update and drop the database, move its replicas and leaders.
    Admin,
}

impl Permission {
    fn to_proto(self) -> pb::Permission {
        match self {
            Permission::Read => pb::Permission::Read,
            Permission::Write => pb::Permission::Write,
            Permission::Admin => pb::Permission::Admin,
        }
    }

    fn from_proto(p: i32) -> Option<Permission> {
        match pb::Permission::try_from(p).ok()? {
            pb::Permission::Read => Some(Permission::Read),
            pb::Permission::Write => Some(Permission::Write),
            pb::Permission::Admin => Some(Permission::Admin),
            pb::Permission::Unspecified => None,
        }
    }
}

impl std::str::FromStr for Permission {
    type Err = Error;

    fn from_str(s: &str) -> Result<Permission> {
        match s.to_ascii_lowercase().as_str() {
            "read" | "readonly" => Ok(Permission::Read),
            "write" | "readwrite" => Ok(Permission::Write),
            "admin" => Ok(Permission::Admin),
            other => Err(Error::InvalidArgument(format!(
                "unknown permission {other:?}: use read, write or admin"
            ))),
        }
    }
}

impl std::fmt::Display for Permission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Permission::Read => "read",
            Permission::Write => "write",
            Permission::Admin => "admin",
        })
    }
}

/// A user and the roles they hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserInfo {
    pub name: String,
    pub roles: Vec<String>,
    /// False: the user authenticates by client certificate only.
    pub has_password: bool,
}

/// A token just made by `token_create`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewToken {
    /// Names the token in `token_list` and `token_revoke`.
    pub id: String,
    /// The token itself (see [`ClientOptions::token`](crate::ClientOptions::token)).
    pub token: String,
    pub expires_at_unix_ms: u64,
}

/// A recorded token, as `token_list` shows it (never the token itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenInfo {
    pub id: String,
    pub user: String,
    pub created_at_unix_ms: u64,
    pub expires_at_unix_ms: u64,
    pub description: String,
}

/// A role and what it grants, per database (`*`: every database).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleInfo {
    pub name: String,
    pub grants: Vec<(String, Permission)>,
    /// The built-in role `root`.
    pub cluster_admin: bool,
}

fn auth(channel: AuthChannel) -> AuthClient<AuthChannel> {
    AuthClient::new(channel)
}

/// Runs one Auth rpc through the client's retry loop.
macro_rules! auth_call {
    ($self:ident, $kind:expr, $method:ident, $req:expr) => {{
        let req = $req;
        $self
            .call($kind, |ch, timeout| {
                let req = req.clone();
                async move { auth(ch).$method(request(req, timeout)).await }
            })
            .await
    }};
}

impl Client {
    /// Whether the cluster has auth enabled, and the user this client calls as ("" for none).
    pub async fn auth_status(&self) -> Result<(bool, String)> {
        let r = auth_call!(self, Kind::Read, auth_status, pb::AuthStatusRequest {})?;
        Ok((r.enabled, r.user))
    }

    /// Turns auth on: from then on every call needs credentials. Needs a user `root` holding
    /// the role `root`.
    pub async fn auth_enable(&self) -> Result<()> {
        auth_call!(self, Kind::Write, auth_enable, pb::AuthEnableRequest {})?;
        Ok(())
    }

    /// Turns auth off: every client may do anything.
    pub async fn auth_disable(&self) -> Result<()> {
        auth_call!(self, Kind::Write, auth_disable, pb::AuthDisableRequest {})?;
        Ok(())
    }

    /// Adds a user; an empty password makes a user that authenticates by certificate only.
    pub async fn user_add(&self, name: &str, password: &str) -> Result<()> {
        let req = pb::UserAddRequest {
            name: name.into(),
            password: password.into(),
        };
        auth_call!(self, Kind::Write, user_add, req)?;
        Ok(())
    }

    pub async fn user_delete(&self, name: &str) -> Result<()> {
        let req = pb::UserDeleteRequest { name: name.into() };
        auth_call!(self, Kind::Write, user_delete, req)?;
        Ok(())
    }

    /// Sets a user's password; every token issued to the user before stops working.
    pub async fn user_change_password(&self, name: &str, password: &str) -> Result<()> {
        let req = pb::UserChangePasswordRequest {
            name: name.into(),
            password: password.into(),
        };
        auth_call!(self, Kind::Write, user_change_password, req)?;
        Ok(())
    }

    pub async fn user_grant_role(&self, user: &str, role: &str) -> Result<()> {
        let req = pb::UserGrantRoleRequest {
            user: user.into(),
            role: role.into(),
        };
        auth_call!(self, Kind::Write, user_grant_role, req)?;
        Ok(())
    }

    pub async fn user_revoke_role(&self, user: &str, role: &str) -> Result<()> {
        let req = pb::UserRevokeRoleRequest {
            user: user.into(),
            role: role.into(),
        };
        auth_call!(self, Kind::Write, user_revoke_role, req)?;
        Ok(())
    }

    pub async fn user_list(&self) -> Result<Vec<UserInfo>> {
        let r = auth_call!(self, Kind::Read, user_list, pb::UserListRequest {})?;
        Ok(r.users
            .into_iter()
            .map(|u| UserInfo {
                name: u.name,
                roles: u.roles,
                has_password: u.has_password,
            })
            .collect())
    }

    /// Makes a token for `user` (`None`: the caller; another user's needs the role `root`)
    /// valid for `ttl` (`None`: 30 days), recorded so that it can be revoked on its own.
    pub async fn token_create(
        &self,
        user: Option<&str>,
        ttl: Option<std::time::Duration>,
        description: &str,
    ) -> Result<NewToken> {
        let req = pb::TokenCreateRequest {
            ttl_ms: ttl.map_or(0, |t| t.as_millis() as u64),
            description: description.into(),
            user: user.unwrap_or_default().into(),
        };
        let r = auth_call!(self, Kind::Write, token_create, req)?;
        Ok(NewToken {
            id: r.token_id,
            token: r.token,
            expires_at_unix_ms: r.expires_at_unix_ms,
        })
    }

    /// The caller's tokens (every user's for the role `root`) that have not expired.
    pub async fn token_list(&self) -> Result<Vec<TokenInfo>> {
        let r = auth_call!(self, Kind::Read, token_list, pb::TokenListRequest {})?;
        Ok(r.tokens
            .into_iter()
            .map(|t| TokenInfo {
                id: t.token_id,
                user: t.user,
                created_at_unix_ms: t.created_at_unix_ms,
                expires_at_unix_ms: t.expires_at_unix_ms,
                description: t.description,
            })
            .collect())
    }

    /// Revokes one token: every node refuses it once it applies the revocation.
    pub async fn token_revoke(&self, id: &str) -> Result<()> {
        let req = pb::TokenRevokeRequest {
            token_id: id.into(),
        };
        auth_call!(self, Kind::Write, token_revoke, req)?;
        Ok(())
    }

    pub async fn role_add(&self, name: &str) -> Result<()> {
        let req = pb::RoleAddRequest { name: name.into() };
        auth_call!(self, Kind::Write, role_add, req)?;
        Ok(())
    }

    pub async fn role_delete(&self, name: &str) -> Result<()> {
        let req = pb::RoleDeleteRequest { name: name.into() };
        auth_call!(self, Kind::Write, role_delete, req)?;
        Ok(())
    }

    /// Grants `permission` on `database` (`*`: every database) to a role.
    pub async fn role_grant_permission(
        &self,
        role: &str,
        database: &str,
        permission: Permission,
    ) -> Result<()> {
        let req = pb::RoleGrantPermissionRequest {
            role: role.into(),
            database: database.into(),
            permission: permission.to_proto() as i32,
        };
        auth_call!(self, Kind::Write, role_grant_permission, req)?;
        Ok(())
    }

    pub async fn role_revoke_permission(&self, role: &str, database: &str) -> Result<()> {
        let req = pb::RoleRevokePermissionRequest {
            role: role.into(),
            database: database.into(),
        };
        auth_call!(self, Kind::Write, role_revoke_permission, req)?;
        Ok(())
    }

    pub async fn role_list(&self) -> Result<Vec<RoleInfo>> {
        let r = auth_call!(self, Kind::Read, role_list, pb::RoleListRequest {})?;
        Ok(r.roles
            .into_iter()
            .map(|r| RoleInfo {
                name: r.name,
                grants: r
                    .grants
                    .into_iter()
                    .filter_map(|g| Some((g.database, Permission::from_proto(g.permission)?)))
                    .collect(),
                cluster_admin: r.cluster_admin,
            })
            .collect())
    }
}
