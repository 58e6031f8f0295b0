//! Users, roles and permissions (etcd's model), kept in the meta state so that every node
//! checks calls against the same replicated rules, and the secret that signs auth tokens.
//!
//! - A user has a password hash (argon2, PHC string; made by the proposer, so applying stays
//!   deterministic) or none (client certificates only), roles, and a token generation: a
//!   token names the generation it was issued under, so that deleting the user or changing
//!   the password revokes every token issued before.
//! - A role grants a [`Permission`] per database (`*` names every database). The built-in role
//!   [`ROOT`] administers the cluster and every database.
//! - Auth is enabled only while a user [`ROOT`] holds the role [`ROOT`] (so that someone can
//!   always turn it off again), and that user and role stay while it is.
//!
//! Applying and checking are pure: [`AuthState::apply`] and [`AuthState::allows`] do no I/O.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Deserializer, Serialize};

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
}

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
        }
        Ok(())
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

/// Reads the auth part of a meta state, which ends the stored form: a state stored before
/// users and roles existed ends just before it, and reads back with auth disabled (what it
/// was). The stored form is postcard, which has no field names to tell a missing field by.
pub fn deserialize_trailing<'de, D: Deserializer<'de>>(d: D) -> Result<AuthState, D::Error> {
    // Only the end of the input can fail here in a state an earlier version wrote; a damaged
    // file fails elsewhere (redb checksums its pages).
    Ok(AuthState::deserialize(d).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_root() -> AuthState {
        let mut a = AuthState::default();
        for cmd in [
            AuthCommand::AddUser {
                name: ROOT.into(),
                password_hash: Some("h".into()),
            },
            AuthCommand::GrantRole {
                user: ROOT.into(),
                role: ROOT.into(),
            },
        ] {
            a.apply(&cmd).unwrap();
        }
        a
    }

    fn reader_of(a: &mut AuthState, user: &str, db: &str, p: Permission) {
        let role = format!("{db}-{}", p.name());
        let _ = a.apply(&AuthCommand::AddRole { name: role.clone() });
        for cmd in [
            AuthCommand::GrantPermission {
                role: role.clone(),
                database: db.into(),
                permission: p,
            },
            AuthCommand::AddUser {
                name: user.into(),
                password_hash: None,
            },
        ] {
            let _ = a.apply(&cmd);
        }
        a.apply(&AuthCommand::GrantRole {
            user: user.into(),
            role,
        })
        .unwrap();
    }

    #[test]
    fn auth_is_enabled_only_with_a_root_user_holding_the_root_role() {
        let mut a = AuthState::default();
        let enable = AuthCommand::Enable {
            secret: vec![7; 32],
        };
        assert_eq!(a.apply(&enable), Err(AuthError::RootRequired));
        a = with_root();
        a.apply(&enable).unwrap();
        assert!(a.enabled);
        assert_eq!(a.secret, vec![7; 32]);
        // The secret is chosen once.
        a.apply(&AuthCommand::Disable).unwrap();
        a.apply(&AuthCommand::Enable {
            secret: vec![9; 32],
        })
        .unwrap();
        assert_eq!(a.secret, vec![7; 32]);
        // While enabled, root stays root.
        let revoke = AuthCommand::RevokeRole {
            user: ROOT.into(),
            role: ROOT.into(),
        };
        assert_eq!(a.apply(&revoke), Err(AuthError::RootRequired));
        let delete = AuthCommand::DeleteUser { name: ROOT.into() };
        assert_eq!(a.apply(&delete), Err(AuthError::RootRequired));
        a.apply(&AuthCommand::Disable).unwrap();
        a.apply(&revoke).unwrap();
    }

    #[test]
    fn permissions_are_per_database_and_each_level_includes_the_lower_ones() {
        let mut a = with_root();
        reader_of(&mut a, "ann", "shop", Permission::Read);
        reader_of(&mut a, "bob", "shop", Permission::Write);
        reader_of(&mut a, "cid", ALL_DATABASES, Permission::Admin);
        let db = |p| Need::Database("shop".into(), p);
        let other = |p| Need::Database("hr".into(), p);
        assert!(a.allows("ann", &db(Permission::Read)));
        assert!(!a.allows("ann", &db(Permission::Write)));
        assert!(!a.allows("ann", &other(Permission::Read)));
        assert!(a.allows("bob", &db(Permission::Write)));
        assert!(!a.allows("bob", &db(Permission::Admin)));
        assert!(a.allows("cid", &other(Permission::Admin)));
        assert!(!a.allows("cid", &Need::ClusterAdmin));
        assert!(a.allows("root", &Need::ClusterAdmin));
        assert!(a.allows("root", &other(Permission::Admin)));
        assert!(a.allows("ann", &Need::User));
        assert!(!a.allows("nobody", &Need::User));
        // Deleting a role takes its grants from its users.
        a.apply(&AuthCommand::DeleteRole {
            name: "shop-read".into(),
        })
        .unwrap();
        assert!(!a.allows("ann", &db(Permission::Read)));
    }

    #[test]
    fn a_new_password_or_a_new_user_of_the_same_name_gets_a_new_generation() {
        let mut a = with_root();
        let first = a.users[ROOT].generation;
        a.apply(&AuthCommand::SetPassword {
            name: ROOT.into(),
            password_hash: Some("h2".into()),
        })
        .unwrap();
        assert!(a.users[ROOT].generation > first);
        reader_of(&mut a, "ann", "shop", Permission::Read);
        let ann = a.users["ann"].generation;
        a.apply(&AuthCommand::DeleteUser { name: "ann".into() })
            .unwrap();
        a.apply(&AuthCommand::AddUser {
            name: "ann".into(),
            password_hash: None,
        })
        .unwrap();
        assert!(a.users["ann"].generation > ann);
    }

    #[test]
    fn the_root_role_is_built_in_and_unknown_names_are_refused() {
        let mut a = with_root();
        let add = AuthCommand::AddRole { name: ROOT.into() };
        assert_eq!(a.apply(&add), Err(AuthError::RootRoleBuiltIn));
        let grant = AuthCommand::GrantRole {
            user: ROOT.into(),
            role: "nope".into(),
        };
        assert_eq!(a.apply(&grant), Err(AuthError::RoleNotFound("nope".into())));
        let grant = AuthCommand::GrantRole {
            user: "nobody".into(),
            role: ROOT.into(),
        };
        assert_eq!(
            a.apply(&grant),
            Err(AuthError::UserNotFound("nobody".into()))
        );
        let add = AuthCommand::AddUser {
            name: ROOT.into(),
            password_hash: None,
        };
        assert_eq!(a.apply(&add), Err(AuthError::UserExists(ROOT.into())));
    }
}
