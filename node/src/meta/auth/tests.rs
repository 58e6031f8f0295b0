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

fn add_token(a: &mut AuthState, id: &str, user: &str, now_ms: u64) -> Result<(), AuthError> {
    a.apply(&AuthCommand::AddToken {
        id: id.into(),
        user: user.into(),
        now_ms,
        expires_ms: now_ms + 1_000,
        description: String::new(),
    })
}

#[test]
fn tokens_are_revoked_one_by_one_and_forgotten_once_expired() {
    let mut a = with_root();
    reader_of(&mut a, "ann", "shop", Permission::Read);
    add_token(&mut a, "t1", "ann", 0).unwrap();
    add_token(&mut a, "t2", "ann", 500).unwrap();
    assert_eq!(
        add_token(&mut a, "t3", "nobody", 0),
        Err(AuthError::UserNotFound("nobody".into()))
    );
    a.apply(&AuthCommand::RevokeToken {
        id: "t1".into(),
        now_ms: 600,
    })
    .unwrap();
    assert!(!a.token_live("t1", "ann"));
    assert!(a.token_live("t2", "ann"));
    assert!(!a.token_live("t2", "root"));
    let again = AuthCommand::RevokeToken {
        id: "t1".into(),
        now_ms: 600,
    };
    assert_eq!(a.apply(&again), Err(AuthError::TokenNotFound("t1".into())));
    // t2 expired at 1500: the next token command drops its record.
    add_token(&mut a, "t4", "root", 1_500).unwrap();
    assert_eq!(a.tokens.keys().collect::<Vec<_>>(), ["t4"]);
}

#[test]
fn a_new_password_or_deleting_the_user_drops_their_tokens_and_their_number_is_bounded() {
    let mut a = with_root();
    reader_of(&mut a, "ann", "shop", Permission::Read);
    for i in 0..MAX_TOKENS_PER_USER {
        add_token(&mut a, &format!("t{i}"), "ann", 0).unwrap();
    }
    assert_eq!(
        add_token(&mut a, "one-more", "ann", 0),
        Err(AuthError::TooManyTokens("ann".into()))
    );
    add_token(&mut a, "r", "root", 0).unwrap();
    a.apply(&AuthCommand::SetPassword {
        name: "ann".into(),
        password_hash: None,
    })
    .unwrap();
    assert_eq!(a.tokens.keys().collect::<Vec<_>>(), ["r"]);
    add_token(&mut a, "t", "ann", 0).unwrap();
    a.apply(&AuthCommand::DeleteUser { name: "ann".into() })
        .unwrap();
    assert_eq!(a.tokens.keys().collect::<Vec<_>>(), ["r"]);
}

#[test]
fn an_auth_state_stored_before_tokens_existed_reads_back_without_any() {
    #[derive(Serialize)]
    struct Before {
        enabled: bool,
        secret: Vec<u8>,
        users: BTreeMap<String, User>,
        roles: BTreeMap<String, Role>,
        next_generation: u64,
    }
    let a = with_root();
    let before = Before {
        enabled: a.enabled,
        secret: a.secret.clone(),
        users: a.users.clone(),
        roles: a.roles.clone(),
        next_generation: a.next_generation,
    };
    let bytes = postcard::to_stdvec(&before).unwrap();
    let read: AuthState = postcard::from_bytes(&bytes).unwrap();
    assert_eq!(read, a);
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
