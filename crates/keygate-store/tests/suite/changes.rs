//! The change feeds that load the caches: read in pages by `(rev, id)`, nothing lost or read
//! twice, also when a page ends inside one revision or rows change between pages.

use super::*;

/// Runs one statement on the database directly.
async fn exec_raw(url: &str, sql: &str) {
    use sqlx::Connection;
    sqlx::any::install_default_drivers();
    let mut conn = sqlx::AnyConnection::connect(url).await.unwrap();
    sqlx::query(sql).execute(&mut conn).await.unwrap();
    conn.close().await.unwrap();
}

/// Gives the rows `ids` of `table` one revision (the newest of them), as a bulk insert or an
/// import leaves many rows: the case where a page boundary falls inside one revision.
async fn share_revision(db: &Db, table: &str, ids: &[&str]) {
    let list = ids.iter().map(|id| format!("'{id}'")).collect::<Vec<_>>().join(", ");
    exec_raw(
        &db.url,
        &format!("UPDATE {table} SET rev = (SELECT MAX(rev) FROM {table} WHERE id IN ({list})) WHERE id IN ({list})"),
    )
    .await;
}

/// The middle five of seven ids.
fn shared(ids: &[String]) -> Vec<&str> {
    ids[1..6].iter().map(String::as_str).collect()
}

/// The ids read, checked to be in revision order, each once. (The order of ids within a
/// revision is the database's collation, which need not be Rust's.)
fn ids_in_order<'a>(rows: impl Iterator<Item = (i64, &'a str)>) -> Vec<String> {
    let rows: Vec<(i64, &str)> = rows.collect();
    assert!(
        rows.windows(2).all(|w| w[0].0 <= w[1].0),
        "revisions ascending: {rows:?}"
    );
    let ids: Vec<String> = rows.iter().map(|(_, id)| id.to_string()).collect();
    let unique: std::collections::HashSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "each row once: {rows:?}");
    ids
}

pub(super) async fn changes_are_read_in_pages_without_loss_or_repeat(db: &Db) {
    let s = &db.store;
    let rev0 = s.revision().await.unwrap();
    let mut plks = Vec::new();
    let mut vks = Vec::new();
    let mut pks = Vec::new();
    for i in 0..7u8 {
        plks.push(s.create_platform_key(&plk("default", 40 + i), None).await.unwrap().id);
        vks.push(
            s.create_virtual_key(&vk("default", &format!("paged-{i}")), None)
                .await
                .unwrap()
                .id,
        );
        pks.push(
            s.create_provider_key(&pk("default", &format!("paged-{i}")), &[], None)
                .await
                .unwrap()
                .id,
        );
    }
    // Five of the seven of each kind share one revision: pages of 1, 2 and 3 rows end
    // inside it, a page of 7 ends exactly at the end (and the next page is empty).
    share_revision(db, "platform_keys", &shared(&plks)).await;
    share_revision(db, "virtual_keys", &shared(&vks)).await;
    share_revision(db, "provider_keys", &shared(&pks)).await;
    let sorted = |ids: &[String]| {
        let mut v = ids.to_vec();
        v.sort();
        v
    };
    for limit in [1u32, 2, 3, 7, 1_000] {
        let rows = all_changes!(s, platform_keys_changed_since, rev0, limit);
        let got = ids_in_order(rows.iter().map(|r| (r.rev, r.id.as_str())));
        assert_eq!(
            sorted(&got),
            sorted(&plks),
            "{} platform keys, pages of {limit}",
            db.name
        );
        let rows = all_changes!(s, virtual_keys_changed_since, rev0, limit);
        let got = ids_in_order(rows.iter().map(|r| (r.rev, r.id.as_str())));
        assert_eq!(sorted(&got), sorted(&vks), "{} virtual keys, pages of {limit}", db.name);
        let rows = all_changes!(s, provider_keys_changed_since, rev0, limit);
        let got = ids_in_order(rows.iter().map(|r| (r.rev, r.id.as_str())));
        assert_eq!(
            sorted(&got),
            sorted(&pks),
            "{} provider keys, pages of {limit}",
            db.name
        );
    }
    // Only what changed after `since`: after the shared revision, the last key alone.
    let shared_rev = s.get_platform_key("default", &plks[1]).await.unwrap().rev;
    let after_shared = all_changes!(s, platform_keys_changed_since, shared_rev, 2);
    let got: Vec<&str> = after_shared.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(got, [plks[6].as_str()], "{}", db.name);

    // A change between pages: a row already read moves to a new revision and is read
    // again; a row not yet read is deleted and read once, deleted. Applying the pages in
    // order leaves every key as it now is.
    let first = ChangesPage::first(rev0, 3);
    let page1 = s.platform_keys_changed_since(&first).await.unwrap();
    assert_eq!(page1.len(), 3);
    let read_already = page1[0].clone();
    let mut updated = read_already.clone();
    updated.description = "changed between pages".into();
    s.update_platform_key(&updated, None).await.unwrap();
    let not_yet: Vec<String> = plks
        .iter()
        .filter(|id| !page1.iter().any(|r| &r.id == *id))
        .cloned()
        .collect();
    s.delete_platform_key("default", &not_yet[0], 77, None).await.unwrap();
    let mut applied: std::collections::HashMap<String, PlatformKeyRow> = std::collections::HashMap::new();
    for r in page1.iter().cloned() {
        applied.insert(r.id.clone(), r);
    }
    let mut page = first.next(page1.len(), page1.last().map(|r| (r.rev, r.id.as_str())));
    let mut later = Vec::new();
    while let Some(p) = page {
        let rows = s.platform_keys_changed_since(&p).await.unwrap();
        page = p.next(rows.len(), rows.last().map(|r| (r.rev, r.id.as_str())));
        later.extend(rows);
    }
    assert_eq!(later.iter().filter(|r| r.id == not_yet[0]).count(), 1, "{}", db.name);
    assert_eq!(
        later.iter().filter(|r| r.id == read_already.id).count(),
        1,
        "{}",
        db.name
    );
    for r in later {
        applied.insert(r.id.clone(), r);
    }
    assert_eq!(applied.len(), 7, "{}", db.name);
    assert_eq!(applied[&read_already.id].description, "changed between pages");
    assert_eq!(applied[&not_yet[0]].deleted_at, Some(77));
    for id in &plks {
        let now = s.get_platform_key_any("default", id).await.unwrap();
        assert_eq!(applied[id], now, "{} {id}", db.name);
    }
}
