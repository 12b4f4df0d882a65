//! Helpers shared by the binary's integration tests: a PostgreSQL database of their own.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

/// `KEYGATE_TEST_DATABASE_URL` when it is set (a PostgreSQL server the tests may create
/// databases on), else `None` with a notice that the PostgreSQL part is skipped.
pub fn test_database_url(what: &str) -> Option<String> {
    match std::env::var("KEYGATE_TEST_DATABASE_URL") {
        Ok(u) if !u.is_empty() => Some(u),
        _ => {
            eprintln!("KEYGATE_TEST_DATABASE_URL is not set: {what} skipped on PostgreSQL");
            None
        }
    }
}

/// A fresh database for one test on the server of `base`, dropped when this is dropped, so
/// also when the test fails (a panic unwinds through the drop).
pub struct TempDb {
    admin_url: String,
    name: String,
    pub url: String,
}

impl TempDb {
    pub fn new(base: &str) -> TempDb {
        let name = format!("kg_test_{}", uuid::Uuid::new_v4().simple());
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            use sqlx::Connection;
            let mut c = sqlx::PgConnection::connect(base).await.unwrap();
            sqlx::query(&format!("CREATE DATABASE {name}"))
                .execute(&mut c)
                .await
                .unwrap();
        });
        let mut u = url::Url::parse(base).unwrap();
        u.set_path(&format!("/{name}"));
        TempDb {
            admin_url: base.to_string(),
            name,
            url: u.to_string(),
        }
    }
}

impl Drop for TempDb {
    fn drop(&mut self) {
        let (admin, name) = (self.admin_url.clone(), self.name.clone());
        // A runtime of its own on a thread of its own: the drop may run inside a test's runtime.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Runtime::new().unwrap();
            rt.block_on(async move {
                use sqlx::Connection;
                if let Ok(mut c) = sqlx::PgConnection::connect(&admin).await {
                    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .execute(&mut c)
                        .await;
                }
            });
        })
        .join();
    }
}
