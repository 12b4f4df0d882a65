//! Provider, platform and virtual keys: lifecycles, uniqueness, paging, soft deletes seen by
//! the change feeds.

use super::*;

pub(super) async fn provider_key_lifecycle(db: &Db) {
    let s = &db.store;
    let rev0 = s.revision().await.unwrap();
    let row = pk("default", "openai-prod");
    let created = s
        .create_provider_key(
            &row,
            &[secret("default", &row.id, 1, b"sealed-1")],
            Some(&event("default", "provider_key.create", &row.id, 10)),
        )
        .await
        .unwrap();
    assert!(created.rev > rev0, "{}", db.name);
    assert_eq!(
        s.get_provider_key_by_name("default", "openai-prod").await.unwrap().id,
        row.id
    );
    // Names are unique per workspace among live keys.
    let dup = s.create_provider_key(&pk("default", "openai-prod"), &[], None).await;
    assert!(matches!(dup, Err(StoreError::Conflict(_))), "{}: {dup:?}", db.name);
    // Rotation: new version, old kept for a grace period.
    let mut next = created.clone();
    next.secret_version = 2;
    next.updated_at = 20;
    let updated = s
        .update_provider_key(
            &next,
            &[secret("default", &row.id, 2, b"sealed-2")],
            &[1],
            Some(1_000),
            None,
        )
        .await
        .unwrap();
    assert_eq!(updated.secret_version, 2);
    let secrets = s.secrets_of("default", &row.id).await.unwrap();
    assert_eq!(secrets.len(), 2);
    assert_eq!(secrets.iter().find(|x| x.version == 1).unwrap().expires_at, Some(1_000));
    assert_eq!(s.purge_expired_secrets(999).await.unwrap(), 0);
    assert_eq!(s.purge_expired_secrets(1_001).await.unwrap(), 1);
    assert_eq!(s.secrets_of("default", &row.id).await.unwrap().len(), 1);
    // Rename onto a taken name conflicts.
    let other = s.create_provider_key(&pk("default", "other"), &[], None).await.unwrap();
    let mut clash = other.clone();
    clash.name = "openai-prod".into();
    assert!(matches!(
        s.update_provider_key(&clash, &[], &[], None, None).await,
        Err(StoreError::Conflict(_))
    ));
    // Changes are visible to caches.
    let changed = all_changes!(s, provider_keys_changed_since, rev0, 1_000);
    assert!(changed.iter().any(|k| k.id == row.id) && changed.iter().any(|k| k.id == other.id));
    // Delete: gone, secrets shredded, name free again, change visible.
    let rev_before_delete = s.revision().await.unwrap();
    s.delete_provider_key("default", &row.id, 30, None).await.unwrap();
    assert!(matches!(
        s.get_provider_key("default", &row.id).await,
        Err(StoreError::NotFound)
    ));
    assert!(s.secrets_of("default", &row.id).await.unwrap().is_empty());
    assert!(matches!(
        s.delete_provider_key("default", &row.id, 31, None).await,
        Err(StoreError::NotFound)
    ));
    let changed = all_changes!(s, provider_keys_changed_since, rev_before_delete, 1_000);
    assert_eq!(changed.len(), 1);
    assert_eq!(changed[0].deleted_at, Some(30));
    s.create_provider_key(&pk("default", "openai-prod"), &[], None)
        .await
        .unwrap();
    let (list, total) = s.list_provider_keys("default", P).await.unwrap();
    assert_eq!((list.len(), total), (2, 2), "{}", db.name);
}

pub(super) async fn paging_is_exact(db: &Db) {
    for i in 0..7 {
        db.store
            .create_provider_key(&pk("default", &format!("k{i}")), &[], None)
            .await
            .unwrap();
    }
    let mut seen = Vec::new();
    for page in 1..=4 {
        let (items, total) = db
            .store
            .list_provider_keys("default", Page { page, limit: 3 })
            .await
            .unwrap();
        assert_eq!(total, 7);
        assert!(items.len() <= 3);
        seen.extend(items.into_iter().map(|k| k.name));
    }
    assert_eq!(seen, (0..7).map(|i| format!("k{i}")).collect::<Vec<_>>(), "{}", db.name);
}

pub(super) async fn platform_keys_and_cache_feed(db: &Db) {
    let s = &db.store;
    let rev0 = s.revision().await.unwrap();
    let a = s.create_platform_key(&plk("default", 1), None).await.unwrap();
    let b = s.create_platform_key(&plk("default", 2), None).await.unwrap();
    // A hash is unique.
    assert!(s.create_platform_key(&plk("default", 1), None).await.is_err());
    assert_eq!(s.count_platform_keys().await.unwrap(), 2);
    let mut rotated = a.clone();
    rotated.prev_key_hash = Some(a.key_hash.clone());
    rotated.prev_valid_until = Some(500);
    rotated.key_hash = vec![3; 32];
    let rotated = s.update_platform_key(&rotated, None).await.unwrap();
    assert_eq!(rotated.prev_key_hash.as_deref(), Some(&[1u8; 32][..]));
    let rev1 = s.revision().await.unwrap();
    s.delete_platform_key("default", &b.id, 9, None).await.unwrap();
    let changed = all_changes!(s, platform_keys_changed_since, rev1, 1_000);
    assert_eq!(changed.len(), 1);
    assert_eq!(changed[0].deleted_at, Some(9));
    assert_eq!(all_changes!(s, platform_keys_changed_since, rev0, 1_000).len(), 2);
    // Touching last use is not a change.
    let rev2 = s.revision().await.unwrap();
    s.touch_platform_keys(&[(a.id.clone(), 77)]).await.unwrap();
    assert_eq!(s.revision().await.unwrap(), rev2);
    assert_eq!(
        s.get_platform_key("default", &a.id).await.unwrap().last_used_at,
        Some(77)
    );
    assert!(matches!(
        s.get_platform_key("other", &a.id).await,
        Err(StoreError::NotFound)
    ));
    let (list, total) = s.list_platform_keys("default", P).await.unwrap();
    assert_eq!((list.len(), total), (1, 1), "{}", db.name);
}

pub(super) async fn concurrent_creates_of_one_name_admit_exactly_one(db: &Db) {
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let s = db.store.clone();
        tasks.push(tokio::spawn(async move {
            s.create_provider_key(&pk("default", "race"), &[], None).await
        }));
    }
    let mut ok = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => ok += 1,
            Err(StoreError::Conflict(_)) => {}
            Err(e) => panic!("{}: unexpected {e}", db.name),
        }
    }
    assert_eq!(ok, 1, "{}", db.name);
}

pub(super) async fn virtual_keys_by_id_or_slug(db: &Db) {
    let s = &db.store;
    let rev0 = s.revision().await.unwrap();
    let a = s
        .create_virtual_key(&vk("default", "openai-prod-1a2b"), None)
        .await
        .unwrap();
    // Slugs are unique across workspaces among live keys.
    assert!(matches!(
        s.create_virtual_key(&vk("other", "openai-prod-1a2b"), None).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(
        s.get_virtual_key("default", &a.id).await.unwrap().slug,
        "openai-prod-1a2b"
    );
    assert_eq!(s.get_virtual_key("default", "openai-prod-1a2b").await.unwrap().id, a.id);
    assert!(matches!(
        s.get_virtual_key("other", &a.id).await,
        Err(StoreError::NotFound)
    ));
    let mut b = a.clone();
    b.status = "disabled".into();
    b.note = Some("n".into());
    let b = s.update_virtual_key(&b, None).await.unwrap();
    assert_eq!(b.status, "disabled");
    assert!(b.rev > a.rev);
    assert_eq!(all_changes!(s, virtual_keys_changed_since, rev0, 1_000).len(), 1);
    s.delete_virtual_key("default", &a.id, 5, None).await.unwrap();
    assert!(matches!(
        s.get_virtual_key("default", &a.id).await,
        Err(StoreError::NotFound)
    ));
    // The slug is free again once deleted.
    s.create_virtual_key(&vk("default", "openai-prod-1a2b"), None)
        .await
        .unwrap();
    assert_eq!(s.list_virtual_keys("default", P).await.unwrap().1, 1, "{}", db.name);
}
