//! `flotilla user`, `flotilla role`, `flotilla auth` and `flotilla token`: users, roles and
//! their permissions per database, turning auth on and off (as etcd's `etcdctl
//! user|role|auth`), and tokens for scripts and services, revoked one by one.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use clap::Subcommand;
use flotilla_client::{Client, Permission};
use serde_json::json;

use crate::print;
use crate::render::{self, Output};
use crate::table::Table;

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Add a user (the password is read from --new-password, FLOTILLA_NEW_PASSWORD or stdin).
    Add {
        name: String,
        /// The new user's password; none: the user authenticates by client certificate only.
        #[arg(long, env = "FLOTILLA_NEW_PASSWORD", hide_env_values = true)]
        new_password: Option<String>,
        /// Read the password from the first line of stdin.
        #[arg(long, conflicts_with = "new_password")]
        password_stdin: bool,
    },
    /// Delete a user (their tokens stop working at once).
    Delete { name: String },
    /// Every user and their roles.
    List,
    /// Change a user's password (their earlier tokens stop working).
    Passwd {
        name: String,
        #[arg(long, env = "FLOTILLA_NEW_PASSWORD", hide_env_values = true)]
        new_password: Option<String>,
        #[arg(long, conflicts_with = "new_password")]
        password_stdin: bool,
    },
    /// Grant a role to a user (`root`: the cluster administrator).
    Grant { name: String, role: String },
    /// Revoke a role from a user.
    Revoke { name: String, role: String },
}

#[derive(Debug, Subcommand)]
pub enum RoleCommand {
    /// Add a role (it grants nothing until `role grant`).
    Add { name: String },
    /// Delete a role (its users lose what it granted).
    Delete { name: String },
    /// Every role and what it grants.
    List,
    /// Grant a permission on a database (`*`: every database): read, write or admin.
    Grant {
        name: String,
        #[arg(long)]
        database: String,
        #[arg(long)]
        permission: Permission,
    },
    /// Revoke what a role grants on a database.
    Revoke {
        name: String,
        #[arg(long)]
        database: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum AuthCommand {
    /// Require credentials for every call (needs a user `root` holding the role `root`).
    Enable,
    /// Allow every call without credentials.
    Disable,
    /// Whether auth is enabled, and who this command line calls as.
    Status,
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Make a token (printed once, with its id); use it with --token or FLOTILLA_TOKEN.
    Create {
        /// How long it stays valid, e.g. `90d`, `12h` (at most 366 days).
        #[arg(long, default_value = "30d", value_parser = humantime::parse_duration)]
        ttl: Duration,
        /// What the token is for (shown by `token list`).
        #[arg(long, default_value = "")]
        description: String,
        /// Make it for this user (needs the role root); default: the user calling.
        #[arg(long = "for")]
        for_user: Option<String>,
    },
    /// Your tokens that have not expired (every user's, for the role root).
    List,
    /// Revoke one token by its id: every node refuses it from then on.
    Revoke { id: String },
}

/// The password of `user add` / `user passwd`.
fn new_password(given: Option<String>, stdin: bool) -> Result<String> {
    if stdin {
        let mut line = String::new();
        std::io::stdin()
            .read_line(&mut line)
            .context("reading the password from stdin")?;
        return Ok(line.trim_end_matches(['\r', '\n']).to_string());
    }
    Ok(given.unwrap_or_default())
}

fn done(what: String, out: Output) -> Result<()> {
    print(&render::steps(&what, &[], out))
}

pub async fn user(client: &Client, command: UserCommand, out: Output) -> Result<()> {
    match command {
        UserCommand::Add {
            name,
            new_password: given,
            password_stdin,
        } => {
            let password = new_password(given, password_stdin)?;
            client.user_add(&name, &password).await?;
            done(format!("user {name} added"), out)
        }
        UserCommand::Delete { name } => {
            client.user_delete(&name).await?;
            done(format!("user {name} deleted"), out)
        }
        UserCommand::Passwd {
            name,
            new_password: given,
            password_stdin,
        } => {
            let password = new_password(given, password_stdin)?;
            client.user_change_password(&name, &password).await?;
            done(format!("password of user {name} changed"), out)
        }
        UserCommand::Grant { name, role } => {
            client.user_grant_role(&name, &role).await?;
            done(format!("role {role} granted to user {name}"), out)
        }
        UserCommand::Revoke { name, role } => {
            client.user_revoke_role(&name, &role).await?;
            done(format!("role {role} revoked from user {name}"), out)
        }
        UserCommand::List => {
            let users = client.user_list().await?;
            let text = match out {
                Output::Json => users
                    .iter()
                    .map(|u| {
                        let v =
                            json!({"name": u.name, "roles": u.roles, "password": u.has_password});
                        format!("{v}\n")
                    })
                    .collect(),
                Output::Table => {
                    let mut t = Table::new(["NAME", "ROLES", "PASSWORD"]);
                    for u in &users {
                        let roles = if u.roles.is_empty() {
                            "-".to_string()
                        } else {
                            u.roles.join(",")
                        };
                        let password = if u.has_password { "yes" } else { "no" };
                        t.row([u.name.clone(), roles, password.to_string()]);
                    }
                    t.render()
                }
            };
            print(&text)
        }
    }
}

pub async fn role(client: &Client, command: RoleCommand, out: Output) -> Result<()> {
    match command {
        RoleCommand::Add { name } => {
            client.role_add(&name).await?;
            done(format!("role {name} added"), out)
        }
        RoleCommand::Delete { name } => {
            client.role_delete(&name).await?;
            done(format!("role {name} deleted"), out)
        }
        RoleCommand::Grant {
            name,
            database,
            permission,
        } => {
            client
                .role_grant_permission(&name, &database, permission)
                .await?;
            done(
                format!("role {name} may {permission} database {database}"),
                out,
            )
        }
        RoleCommand::Revoke { name, database } => {
            client.role_revoke_permission(&name, &database).await?;
            done(
                format!("role {name} no longer grants anything on database {database}"),
                out,
            )
        }
        RoleCommand::List => {
            let roles = client.role_list().await?;
            let grants = |r: &flotilla_client::RoleInfo| {
                if r.cluster_admin {
                    return "cluster admin, every database".to_string();
                }
                let g: Vec<String> = r.grants.iter().map(|(db, p)| format!("{db}={p}")).collect();
                if g.is_empty() {
                    "-".into()
                } else {
                    g.join(",")
                }
            };
            let text = match out {
                Output::Json => roles
                    .iter()
                    .map(|r| {
                        let g: serde_json::Map<String, serde_json::Value> = r
                            .grants
                            .iter()
                            .map(|(db, p)| (db.clone(), json!(p.to_string())))
                            .collect();
                        let v =
                            json!({"name": r.name, "grants": g, "cluster_admin": r.cluster_admin});
                        format!("{v}\n")
                    })
                    .collect(),
                Output::Table => {
                    let mut t = Table::new(["NAME", "GRANTS"]);
                    for r in &roles {
                        t.row([r.name.clone(), grants(r)]);
                    }
                    t.render()
                }
            };
            print(&text)
        }
    }
}

pub async fn auth(client: &Client, command: AuthCommand, out: Output) -> Result<()> {
    match command {
        AuthCommand::Enable => {
            client.auth_enable().await?;
            done("auth enabled".into(), out)
        }
        AuthCommand::Disable => {
            client.auth_disable().await?;
            done("auth disabled".into(), out)
        }
        AuthCommand::Status => {
            let (enabled, user) = client.auth_status().await?;
            let text = match out {
                Output::Json => format!("{}\n", json!({"enabled": enabled, "user": user})),
                Output::Table if enabled => format!(
                    "auth enabled; calling as {}\n",
                    if user.is_empty() { "nobody" } else { &user }
                ),
                Output::Table => "auth disabled: every client may do anything\n".into(),
            };
            print(&text)
        }
    }
}

/// A Unix time in milliseconds, as RFC 3339 (UTC, to the second).
fn time(unix_ms: u64) -> String {
    let at = UNIX_EPOCH + Duration::from_millis(unix_ms);
    humantime::format_rfc3339_seconds(at.max(UNIX_EPOCH)).to_string()
}

pub async fn token(client: &Client, command: TokenCommand, out: Output) -> Result<()> {
    match command {
        TokenCommand::Create {
            ttl,
            description,
            for_user,
        } => {
            let t = client
                .token_create(for_user.as_deref(), Some(ttl), &description)
                .await?;
            let text = match out {
                Output::Json => format!(
                    "{}\n",
                    json!({"id": t.id, "token": t.token, "expires_at": time(t.expires_at_unix_ms)})
                ),
                Output::Table => format!(
                    "token {} made, valid until {} (shown only now):\n{}\n",
                    t.id,
                    time(t.expires_at_unix_ms),
                    t.token
                ),
            };
            print(&text)
        }
        TokenCommand::List => {
            let tokens = client.token_list().await?;
            let now = SystemTime::now();
            let text = match out {
                Output::Json => tokens
                    .iter()
                    .map(|t| {
                        let v = json!({
                            "id": t.id,
                            "user": t.user,
                            "created_at": time(t.created_at_unix_ms),
                            "expires_at": time(t.expires_at_unix_ms),
                            "description": t.description,
                        });
                        format!("{v}\n")
                    })
                    .collect(),
                Output::Table => {
                    let mut table = Table::new(["ID", "USER", "CREATED", "EXPIRES", "DESCRIPTION"]);
                    for t in &tokens {
                        let left = (UNIX_EPOCH + Duration::from_millis(t.expires_at_unix_ms))
                            .duration_since(now)
                            .map(|d| Duration::from_secs(d.as_secs()))
                            .unwrap_or_default();
                        table.row([
                            t.id.clone(),
                            t.user.clone(),
                            time(t.created_at_unix_ms),
                            format!(
                                "{} (in {})",
                                time(t.expires_at_unix_ms),
                                humantime::format_duration(left)
                            ),
                            if t.description.is_empty() {
                                "-".into()
                            } else {
                                t.description.clone()
                            },
                        ]);
                    }
                    table.render()
                }
            };
            print(&text)
        }
        TokenCommand::Revoke { id } => {
            client.token_revoke(&id).await?;
            done(format!("token {id} revoked"), out)
        }
    }
}
