//! Users, roles and permissions (etcd's model), kept in the meta state so that every node
//! checks calls against the same replicated rules, and the secret that signs auth tokens.
//!
//! - A user has a password hash (argon2, PHC string; made by the proposer, so applying stays
//!   deterministic) or none (client certificates only), roles, and a token generation: a
//!   token names the generation it was issued under, so that deleting the user or changing
//!   the password revokes every token issued before.
//! - A token made with `token create` (for scripts and services, longer lived than the tokens
//!   of a password) is recorded here by id ([`TokenRecord`]): it is accepted only while its
//!   record is, so revoking it (by id) refuses it on every node as soon as that node applies
//!   the revocation. Records are dropped once their token expired.
//! - A role grants a [`Permission`] per database (`*` names every database). The built-in role
//!   [`ROOT`] administers the cluster and every database.
//! - Auth is enabled only while a user [`ROOT`] holds the role [`ROOT`] (so that someone can
//!   always turn it off again), and that user and role stay while it is.
//!
//! Applying and checking are pure: [`AuthState::apply`] and [`AuthState::allows`] do no I/O.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// The built-in cluster administrator role, and the user that must hold it to enable auth.
pub const ROOT: &str = "root";
/// A grant on this database name covers every database.
pub const ALL_DATABASES: &str = "*";

/// What a role may do with a database; each level includes the ones below it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Permission {
    Read,
    Write,
    Admin,
}

impl Permission {
    pub fn name(self) -> &'static str {
        match self {
            Permission::Read => "read",
            Permission::Write => "write",
            Permission::Admin => "admin",
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// PHC string of the password's argon2 hash; `None`: certificate only.
    pub password_hash: Option<String>,
    pub roles: BTreeSet<String>,
    /// Bumped when the password changes: earlier tokens stop being accepted.
    pub generation: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Role {
    /// Database name (or [`ALL_DATABASES`]) -> permission.
    pub grants: BTreeMap<String, Permission>,
}

/// The auth part of the meta state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthState {
    pub enabled: bool,
    /// Key of the tokens' HMAC, chosen once, when auth is first enabled.
    pub secret: Vec<u8>,
    pub users: BTreeMap<String, User>,
    pub roles: BTreeMap<String, Role>,
    /// Tokens name this with their user's generation: a user deleted and added again does not
    /// get back the tokens of the first one.
    pub next_generation: u64,
    /// The recorded tokens by id (see the module doc). Keep it the last field: a state stored
    /// before it existed ends where it begins.
    #[serde(deserialize_with = "crate::codec::trailing")]
    pub tokens: BTreeMap<String, TokenRecord>,
}

/// A token made by `token create`, accepted while this record exists.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    pub user: String,
    pub created_ms: u64,
    pub expires_ms: u64,
    pub description: String,
}

/// Most recorded tokens one user may hold at once.
pub const MAX_TOKENS_PER_USER: usize = 100;

/// A change to users, roles or whether auth is enabled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AuthCommand {
    /// `secret` is used only if the cluster has none yet.
    Enable {
        secret: Vec<u8>,
    },
    Disable,
    AddUser {
        name: String,
        password_hash: Option<String>,
    },
    DeleteUser {
        name: String,
    },
    SetPassword {
        name: String,
        password_hash: Option<String>,
    },
    GrantRole {
        user: String,
        role: String,
    },
    RevokeRole {
        user: String,
        role: String,
    },
    AddRole {
        name: String,
    },
    DeleteRole {
        name: String,
    },
    GrantPermission {
        role: String,
        database: String,
        permission: Permission,
    },
    RevokePermission {
        role: String,
        database: String,
    },
    /// Records token `id` of `user` (chosen by the proposer). Also drops the records of tokens
    /// expired at `now_ms`.
    AddToken {
        id: String,
        user: String,
        now_ms: u64,
        expires_ms: u64,
        description: String,
    },
    /// Revokes token `id`; also drops the records of tokens expired at `now_ms`.
    RevokeToken {
        id: String,
        now_ms: u64,
    },
}

/// Why an auth command was refused (part of the replicated outcome, like every meta refusal).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum AuthError {
    #[error("user {0} does not exist")]
    UserNotFound(String),
    #[error("user {0} already exists")]
    UserExists(String),
    #[error("role {0} does not exist")]
    RoleNotFound(String),
    #[error("role {0} already exists")]
    RoleExists(String),
    #[error("role {role} grants nothing on database {database}")]
    GrantNotFound { role: String, database: String },
    #[error("auth needs a user `root` holding the role `root`, and keeps them while it is enabled")]
    RootRequired,
    #[error("the role `root` is built in")]
    RootRoleBuiltIn,
    #[error("token {0} does not exist (revoked, expired or never made)")]
    TokenNotFound(String),
    #[error("user {0} holds {MAX_TOKENS_PER_USER} tokens already: revoke some first")]
    TooManyTokens(String),
}

/// What a call needs of its caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Need {
    /// Any authenticated user.
    User,
    /// A permission on a database.
    Database(String, Permission),
    /// The role `root`.
    ClusterAdmin,
}

impl std::fmt::Display for Need {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Need::User => write!(f, "an authenticated user"),
            Need::Database(db, p) => write!(f, "{} permission on database {db}", p.name()),
            Need::ClusterAdmin => write!(f, "the role root"),
        }
    }
}

impl AuthState {
    pub fn apply(&mut self, cmd: &AuthCommand) -> Result<(), AuthError> {
        match cmd {
            AuthCommand::Enable { secret } => {
                if !self.root_ready() {
                    return Err(AuthError::RootRequired);
                }
                if self.secret.is_empty() {
                    self.secret = secret.clone();
                }
                self.enabled = true;
            }
            AuthCommand::Disable => self.enabled = false,
            AuthCommand::AddUser {
                name,
                password_hash,
            } => {
                if self.users.contains_key(name) {
                    return Err(AuthError::UserExists(name.clone()));
                }
                self.next_generation += 1;
                let user = User {
                    password_hash: password_hash.clone(),
                    roles: BTreeSet::new(),
                    generation: self.next_generation,
                };
                self.users.insert(name.clone(), user);
            }
            AuthCommand::DeleteUser { name } => {
                if self.enabled && name == ROOT {
                    return Err(AuthError::RootRequired);
                }
                self.users
                    .remove(name)
                    .ok_or_else(|| AuthError::UserNotFound(name.clone()))?;
                self.tokens.retain(|_, t| t.user != *name);
            }
            AuthCommand::SetPassword {
                name,
                password_hash,
            } => {
                self.next_generation += 1;
                let generation = self.next_generation;
                let user = self.user_mut(name)?;
                user.password_hash = password_hash.clone();
                user.generation = generation;
                // Its tokens name the old generation: they are refused from now on.
                self.tokens.retain(|_, t| t.user != *name);
            }
            AuthCommand::GrantRole { user, role } => {
                if role != ROOT && !self.roles.contains_key(role) {
                    return Err(AuthError::RoleNotFound(role.clone()));
                }
                self.user_mut(user)?.roles.insert(role.clone());
            }
            AuthCommand::RevokeRole { user, role } => {
                if self.enabled && user == ROOT && role == ROOT {
                    return Err(AuthError::RootRequired);
                }
                if !self.user_mut(user)?.roles.remove(role) {
                    return Err(AuthError::RoleNotFound(role.clone()));
                }
            }
            AuthCommand::AddRole { name } => {
                if name == ROOT {
                    return Err(AuthError::RootRoleBuiltIn);
                }
                if self.roles.contains_key(name) {
                    return Err(AuthError::RoleExists(name.clone()));
                }
                self.roles.insert(name.clone(), Role::default());
            }
            AuthCommand::DeleteRole { name } => {
                if name == ROOT {
                    return Err(AuthError::RootRoleBuiltIn);
                }
                self.roles
                    .remove(name)
                    .ok_or_else(|| AuthError::RoleNotFound(name.clone()))?;
                for user in self.users.values_mut() {
                    user.roles.remove(name);
                }
            }
            AuthCommand::GrantPermission {
                role,
                database,
                permission,
            } => {
                self.role_mut(role)?
                    .grants
                    .insert(database.clone(), *permission);
            }
            AuthCommand::RevokePermission { role, database } => {
                if self.role_mut(role)?.grants.remove(database).is_none() {
                    return Err(AuthError::GrantNotFound {
                        role: role.clone(),
                        database: database.clone(),
                    });
                }
            }
            AuthCommand::AddToken {
                id,
                user,
                now_ms,
                expires_ms,
                description,
            } => {
                self.drop_expired_tokens(*now_ms);
                if !self.users.contains_key(user) {
                    return Err(AuthError::UserNotFound(user.clone()));
                }
                if self.tokens.values().filter(|t| t.user == *user).count() >= MAX_TOKENS_PER_USER {
                    return Err(AuthError::TooManyTokens(user.clone()));
                }
                let record = TokenRecord {
                    user: user.clone(),
                    created_ms: *now_ms,
                    expires_ms: *expires_ms,
                    description: description.clone(),
                };
                self.tokens.insert(id.clone(), record);
            }
            AuthCommand::RevokeToken { id, now_ms } => {
                self.drop_expired_tokens(*now_ms);
                self.tokens
                    .remove(id)
                    .ok_or_else(|| AuthError::TokenNotFound(id.clone()))?;
            }
        }
        Ok(())
    }

    fn drop_expired_tokens(&mut self, now_ms: u64) {
        self.tokens.retain(|_, t| t.expires_ms > now_ms);
    }

    /// Whether token `id` of `user` is still recorded (not revoked).
    pub fn token_live(&self, id: &str, user: &str) -> bool {
        self.tokens.get(id).is_some_and(|t| t.user == user)
    }

    fn user_mut(&mut self, name: &str) -> Result<&mut User, AuthError> {
        self.users
            .get_mut(name)
            .ok_or_else(|| AuthError::UserNotFound(name.to_string()))
    }

    fn role_mut(&mut self, name: &str) -> Result<&mut Role, AuthError> {
        if name == ROOT {
            return Err(AuthError::RootRoleBuiltIn);
        }
        self.roles
            .get_mut(name)
            .ok_or_else(|| AuthError::RoleNotFound(name.to_string()))
    }

    /// A user `root` holds the role `root`.
    fn root_ready(&self) -> bool {
        self.users.get(ROOT).is_some_and(|u| u.roles.contains(ROOT))
    }

    /// Whether `user` may do what `need` names. An unknown user may do nothing.
    pub fn allows(&self, user: &str, need: &Need) -> bool {
        let Some(u) = self.users.get(user) else {
            return false;
        };
        if u.roles.contains(ROOT) {
            return true;
        }
        match need {
            Need::User => true,
            Need::ClusterAdmin => false,
            Need::Database(db, wanted) => u
                .roles
                .iter()
                .filter_map(|r| self.roles.get(r))
                .flat_map(|r| [r.grants.get(db.as_str()), r.grants.get(ALL_DATABASES)])
                .flatten()
                .any(|granted| granted >= wanted),
        }
    }
}

#[cfg(test)]
mod tests;
