//! Workspaces, migrations, the vault's records, the audit log, usage, wallets and refusals.

use super::*;

pub(super) async fn default_workspace_exists_and_migrations_are_idempotent(db: &Db) {
    let ws = db.store.get_workspace("default").await.unwrap();
    assert_eq!(ws.id, "default", "{}", db.name);
    // Opening the same database again runs no migration twice.
    let again = SqlStore::open(&db.url).await.unwrap();
    assert_eq!(
        again.get_workspace("default").await.unwrap().id,
        "default",
        "{}",
        db.name
    );
    again.close().await;
}

#[tokio::test]
async fn a_reopened_sqlite_file_runs_no_migration_twice() {
    // Opening the same SQLite file again runs no migration twice.
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("x.db").display());
    let a = SqlStore::open(&url).await.unwrap();
    a.close().await;
    let b = SqlStore::open(&url).await.unwrap();
    assert_eq!(b.get_workspace("default").await.unwrap().id, "default");
}

pub(super) async fn workspaces_isolate_records(db: &Db) {
    let s = &db.store;
    s.create_workspace(
        &WorkspaceRow {
            id: "team-a".into(),
            name: "A".into(),
            created_at: 1,
            updated_at: 1,
        },
        None,
    )
    .await
    .unwrap();
    let dup = s
        .create_workspace(
            &WorkspaceRow {
                id: "team-a".into(),
                name: "A".into(),
                created_at: 1,
                updated_at: 1,
            },
            None,
        )
        .await;
    assert!(matches!(dup, Err(StoreError::Conflict(_))));
    let a = s
        .create_provider_key(&pk("team-a", "shared-name"), &[], None)
        .await
        .unwrap();
    // The same name in another workspace is another key.
    let d = s
        .create_provider_key(&pk("default", "shared-name"), &[], None)
        .await
        .unwrap();
    assert!(matches!(
        s.get_provider_key("default", &a.id).await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        s.delete_provider_key("team-a", &d.id, 5, None).await,
        Err(StoreError::NotFound)
    ));
    assert_eq!(s.list_provider_keys("team-a", P).await.unwrap().1, 1);
    // A workspace that holds keys cannot be deleted; an empty one can.
    assert!(matches!(
        s.delete_workspace("team-a", None).await,
        Err(StoreError::Conflict(_))
    ));
    s.delete_provider_key("team-a", &a.id, 6, None).await.unwrap();
    let renamed = s.rename_workspace("team-a", "Team A", 7, None).await.unwrap();
    assert_eq!(renamed.name, "Team A");
    s.delete_workspace("team-a", None).await.unwrap();
    assert!(matches!(s.get_workspace("team-a").await, Err(StoreError::NotFound)));
    let (list, total) = s.list_workspaces(P).await.unwrap();
    assert_eq!((list.len(), total), (1, 1), "{}", db.name);
}

pub(super) async fn master_keys_and_rewrap_feed(db: &Db) {
    let s = &db.store;
    s.insert_master_key(1, &[9; 32], 1).await.unwrap();
    assert!(matches!(
        s.insert_master_key(1, &[9; 32], 1).await,
        Err(StoreError::Conflict(_))
    ));
    let row = pk("default", "k");
    s.create_provider_key(&row, &[secret("default", &row.id, 1, b"v1")], None)
        .await
        .unwrap();
    let hash = s
        .ensure_secret(&SecretRow {
            owner_id: "_hash".into(),
            field: "hmac".into(),
            ..secret("default", "_hash", 1, b"first")
        })
        .await
        .unwrap();
    // ensure_secret keeps the first value.
    let again = s
        .ensure_secret(&SecretRow {
            owner_id: "_hash".into(),
            field: "hmac".into(),
            ..secret("default", "_hash", 1, b"second")
        })
        .await
        .unwrap();
    assert_eq!(again.sealed, hash.sealed);
    assert_eq!(s.count_secrets_not_under(2).await.unwrap(), 2);
    let todo = s.secrets_not_under(2, 10).await.unwrap();
    assert_eq!(todo.len(), 2);
    for row in &todo {
        assert!(s.replace_sealed(row, &row.sealed, 2, b"rewrapped").await.unwrap());
        // A second replace with the stale value does nothing.
        assert!(!s.replace_sealed(row, &row.sealed, 2, b"again").await.unwrap());
    }
    assert_eq!(s.count_secrets_not_under(2).await.unwrap(), 0);
    s.insert_master_key(2, &[8; 32], 2).await.unwrap();
    s.retire_master_key(1, 3).await.unwrap();
    let keys = s.master_keys().await.unwrap();
    assert_eq!(keys.len(), 2);
    assert_eq!(keys[0].retired_at, Some(3));
    assert_eq!(keys[1].retired_at, None, "{}", db.name);
}

pub(super) async fn audit_log_filters_and_pages(db: &Db) {
    let s = &db.store;
    for i in 0..5 {
        s.append_audit(&event(
            "default",
            if i % 2 == 0 { "a.create" } else { "a.delete" },
            &format!("t{i}"),
            100 + i,
        ))
        .await
        .unwrap();
    }
    s.append_audit(&event("other", "a.create", "x", 1)).await.unwrap();
    let (all, total) = s.list_audit("default", &AuditFilter::default(), P).await.unwrap();
    assert_eq!((all.len(), total), (5, 5));
    assert_eq!(all[0].at, 104, "newest first");
    let f = AuditFilter {
        action: Some("a.create".into()),
        ..Default::default()
    };
    assert_eq!(s.list_audit("default", &f, P).await.unwrap().1, 3);
    let f = AuditFilter {
        from: Some(101),
        to: Some(103),
        ..Default::default()
    };
    assert_eq!(s.list_audit("default", &f, P).await.unwrap().1, 2);
    let f = AuditFilter {
        target_id: Some("t4".into()),
        ..Default::default()
    };
    assert_eq!(s.list_audit("default", &f, P).await.unwrap().0[0].action, "a.create");
    let (page2, _) = s
        .list_audit("default", &AuditFilter::default(), Page { page: 2, limit: 2 })
        .await
        .unwrap();
    assert_eq!(
        page2.iter().map(|e| e.at).collect::<Vec<_>>(),
        vec![102, 101],
        "{}",
        db.name
    );
}

pub(super) async fn audit_events_commit_with_their_change(db: &Db) {
    let s = &db.store;
    let row = pk("default", "audited");
    s.create_provider_key(&row, &[], Some(&event("default", "provider_key.create", &row.id, 1)))
        .await
        .unwrap();
    // A failing change writes no audit event.
    let _ = s
        .create_provider_key(
            &pk("default", "audited"),
            &[],
            Some(&event("default", "provider_key.create", "dup", 2)),
        )
        .await;
    let (events, _) = s.list_audit("default", &AuditFilter::default(), P).await.unwrap();
    assert_eq!(events.len(), 1, "{}", db.name);
    assert_eq!(events[0].target_id.as_deref(), Some(row.id.as_str()));
}

pub(super) async fn usage_is_added_up_and_never_double_counted(db: &Db) {
    use keygate_store::{UsageFilter, UsageGroup, UsageRow};
    let s = &db.store;
    let day = 86_400_000i64;
    let mk = |id: &str, at: i64, model: &str, vk: &str, cost: i64, status: i64| UsageRow {
        id: id.into(),
        workspace: "default".into(),
        at,
        virtual_key_id: Some(vk.into()),
        platform_key_id: Some("pk1".into()),
        provider_key_id: Some("prov1".into()),
        hub: Some("openai".into()),
        model: Some(model.into()),
        endpoint: "chat".into(),
        status_code: status,
        prompt_tokens: 10,
        completion_tokens: 5,
        cached_tokens: 2,
        cost_nano: cost,
        latency_ms: 3,
        ..Default::default()
    };
    let rows = vec![
        mk("u1", day, "gpt-4o-mini", "vk_a", 100, 200),
        mk("u2", day + 5, "gpt-4o", "vk_a", 1_000, 200),
        mk("u3", 2 * day, "gpt-4o-mini", "vk_b", 50, 502),
    ];
    s.insert_usage(&rows).await.unwrap();
    s.insert_usage(&rows[..1]).await.unwrap();
    let t = s.usage_totals("default", &UsageFilter::default()).await.unwrap();
    assert_eq!(
        (
            t.requests,
            t.errors,
            t.prompt_tokens,
            t.completion_tokens,
            t.cached_tokens,
            t.cost_nano
        ),
        (3, 1, 30, 15, 6, 1_150)
    );
    let f = UsageFilter {
        virtual_key_id: Some("vk_a".into()),
        ..Default::default()
    };
    assert_eq!(s.usage_totals("default", &f).await.unwrap().cost_nano, 1_100);
    let f = UsageFilter {
        from: Some(day + 1),
        to: Some(2 * day + 1),
        ..Default::default()
    };
    assert_eq!(s.usage_totals("default", &f).await.unwrap().requests, 2);
    assert_eq!(
        s.usage_totals("other", &UsageFilter::default()).await.unwrap().requests,
        0
    );
    let by_day = s
        .usage_grouped("default", &UsageFilter::default(), UsageGroup::Day, 100)
        .await
        .unwrap();
    assert_eq!(
        by_day
            .iter()
            .map(|g| (g.group.as_str(), g.requests))
            .collect::<Vec<_>>(),
        vec![("1", 2), ("2", 1)]
    );
    let by_model = s
        .usage_grouped("default", &UsageFilter::default(), UsageGroup::Model, 100)
        .await
        .unwrap();
    assert_eq!(
        by_model
            .iter()
            .map(|g| (g.group.as_str(), g.cost_nano))
            .collect::<Vec<_>>(),
        vec![("gpt-4o", 1_000), ("gpt-4o-mini", 150)]
    );
    let (list, total) = s.list_usage("default", &UsageFilter::default(), P).await.unwrap();
    assert_eq!((list.len(), total), (3, 3));
    assert_eq!(list[0].id, "u3", "{}", db.name);
}

pub(super) async fn wallets_tokens_and_refusal_events(db: &Db) {
    use keygate_store::{RateLimitEventRow, WalletRow, Web3TokenState};
    let s = &db.store;
    let w = WalletRow {
        address: "0xabc".into(),
        workspace: "default".into(),
        allow_admin: false,
        created_at: 1,
        created_by: None,
    };
    s.create_wallet(&w, None).await.unwrap();
    assert!(matches!(s.create_wallet(&w, None).await, Err(StoreError::Conflict(_))));
    assert_eq!(s.find_wallet("0xabc").await.unwrap().workspace, "default");
    assert_eq!(s.list_wallets("default").await.unwrap().len(), 1);
    assert!(s.list_wallets("other").await.unwrap().is_empty());
    assert!(matches!(
        s.delete_wallet("other", "0xabc", None).await,
        Err(StoreError::NotFound)
    ));
    s.delete_wallet("default", "0xabc", None).await.unwrap();
    assert!(matches!(s.find_wallet("0xabc").await, Err(StoreError::NotFound)));
    // A token is good once, before it expires.
    s.insert_web3_token(&[1; 32], 1_000).await.unwrap();
    s.insert_web3_token(&[2; 32], 1_000).await.unwrap();
    assert_eq!(
        s.consume_web3_token(&[1; 32], 500).await.unwrap(),
        Web3TokenState::Valid
    );
    assert_eq!(
        s.consume_web3_token(&[1; 32], 501).await.unwrap(),
        Web3TokenState::AlreadyUsed
    );
    assert_eq!(
        s.consume_web3_token(&[2; 32], 1_000).await.unwrap(),
        Web3TokenState::Expired
    );
    assert_eq!(
        s.consume_web3_token(&[3; 32], 1).await.unwrap(),
        Web3TokenState::Unknown
    );
    let ev = |id: &str, key: &str, at: i64| RateLimitEventRow {
        id: id.into(),
        workspace: "default".into(),
        at,
        platform_key_id: Some(key.into()),
        limit_type: "RPM".into(),
        limit_value: 10,
        scope: "api_key".into(),
        ..Default::default()
    };
    s.insert_rate_limit_events(&[ev("e1", "k1", 1), ev("e2", "k2", 2), ev("e3", "k1", 3)])
        .await
        .unwrap();
    s.insert_rate_limit_events(&[ev("e1", "k1", 1)]).await.unwrap();
    let mine = s.list_rate_limit_events("default", Some("k1"), 50).await.unwrap();
    assert_eq!(mine.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(), ["e3", "e1"]);
    assert_eq!(s.list_rate_limit_events("default", None, 2).await.unwrap().len(), 2);
    assert!(
        s.list_rate_limit_events("other", None, 50).await.unwrap().is_empty(),
        "{}",
        db.name
    );
}

pub(super) async fn pending_records_are_replaced_once_and_reconciled(db: &Db) {
    use keygate_store::{UsageFilter, UsageRow};
    let s = &db.store;
    let row = |id: &str, status: i64, tokens: i64| UsageRow {
        id: id.into(),
        workspace: "default".into(),
        at: 10,
        endpoint: "chat".into(),
        status_code: status,
        prompt_tokens: tokens,
        ..Default::default()
    };
    s.insert_usage(&[row("a", 0, 100), row("b", 0, 50)]).await.unwrap();
    // Pending records are not counted yet.
    assert_eq!(
        s.usage_totals("default", &UsageFilter::default())
            .await
            .unwrap()
            .requests,
        0
    );
    s.insert_usage(&[row("a", 200, 9)]).await.unwrap();
    // Settling twice never double-counts or overwrites the final record.
    s.insert_usage(&[row("a", 200, 999)]).await.unwrap();
    let t = s.usage_totals("default", &UsageFilter::default()).await.unwrap();
    assert_eq!((t.requests, t.prompt_tokens), (1, 9), "{}", db.name);
    assert_eq!(s.reconcile_pending_usage(11).await.unwrap(), 1);
    assert_eq!(s.reconcile_pending_usage(11).await.unwrap(), 0);
    let t = s.usage_totals("default", &UsageFilter::default()).await.unwrap();
    assert_eq!(
        (t.requests, t.prompt_tokens, t.errors, t.estimated),
        (2, 59, 1, 1),
        "{}",
        db.name
    );
    // One batch holding a record's pending, final and a late pending copy, among 150 others
    // (several multi-row statements): the final record stands, every other row once.
    let mut batch = vec![row("c", 0, 1), row("c", 200, 5), row("c", 0, 7)];
    batch.extend((0..150).map(|i| row(&format!("m{i}"), 200, 1)));
    s.insert_usage(&batch).await.unwrap();
    let t = s.usage_totals("default", &UsageFilter::default()).await.unwrap();
    assert_eq!(
        (t.requests, t.prompt_tokens),
        (2 + 1 + 150, 59 + 5 + 150),
        "{}",
        db.name
    );
}

/// Flags are 0/1 integers in both databases: a true flag reads back true through every row
/// type that has one (a false one is read in every other case).
pub(super) async fn flags_read_back_as_written(db: &Db) {
    use keygate_store::{UsageFilter, UsageRow, WalletRow};
    let s = &db.store;
    let private_key = ProviderKeyRow {
        private: true,
        ..pk("default", "private")
    };
    assert!(s.create_provider_key(&private_key, &[], None).await.unwrap().private);
    assert!(
        s.get_provider_key("default", &private_key.id).await.unwrap().private,
        "{}",
        db.name
    );
    let admin = PlatformKeyRow {
        org_admin: true,
        ..plk("default", 90)
    };
    assert!(s.create_platform_key(&admin, None).await.unwrap().org_admin);
    assert!(
        s.get_platform_key("default", &admin.id).await.unwrap().org_admin,
        "{}",
        db.name
    );
    let wallet = WalletRow {
        address: "0xadmin".into(),
        workspace: "default".into(),
        allow_admin: true,
        created_at: 1,
        created_by: None,
    };
    s.create_wallet(&wallet, None).await.unwrap();
    assert!(s.find_wallet("0xadmin").await.unwrap().allow_admin, "{}", db.name);
    let usage = UsageRow {
        id: "flagged".into(),
        workspace: "default".into(),
        at: 1,
        endpoint: "chat".into(),
        status_code: 200,
        estimated: true,
        stream: true,
        ..Default::default()
    };
    s.insert_usage(std::slice::from_ref(&usage)).await.unwrap();
    let (listed, _) = s.list_usage("default", &UsageFilter::default(), P).await.unwrap();
    assert_eq!(listed, vec![usage], "{}", db.name);
}
