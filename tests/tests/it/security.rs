//! The second wall: row-level security and least-privilege roles, proven with
//! raw SQL through the application roles.

use sqlx::Row;
use turnstone_core::db;
use turnstone_core::ids::{OrgId, TypedId};
use turnstone_tests::Stack;

#[tokio::test]
async fn a_query_without_org_context_sees_nothing() {
    let stack = Stack::start().await;
    let api = stack.client();
    let session = api.session(&[]).await;
    api.say(&session, "hello").await;
    api.wait_for(&session, "session.idled", 1).await;

    let app = db::connect(&stack.db.as_role("turnstone_api"), 2).await.unwrap();
    let who: String = sqlx::query_scalar("SELECT current_user::text").fetch_one(&app).await.unwrap();
    assert_eq!(who, "turnstone_api", "the test really runs as the application role");
    // A query that "forgot" its org filter and its org context returns nothing…
    for table in [
        "agents",
        "sessions",
        "events",
        "turns",
        "providers",
        "models",
        "api_keys",
        "idempotency_keys",
        "org_keys",
        "rate_limits",
    ] {
        let n: i64 =
            sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}"))).fetch_one(&app).await.unwrap();
        assert_eq!(n, 0, "{table} leaks rows without org context");
    }
    // …while the owner sees the rows exist, and the right org context shows them.
    let owner = db::connect(&stack.db.url, 2).await.unwrap();
    let org: OrgId = sqlx::query_scalar("SELECT org_id FROM sessions LIMIT 1").fetch_one(&owner).await.unwrap();
    let mut tx = db::begin_org(&app, org).await.unwrap();
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM events").fetch_one(&mut *tx).await.unwrap();
    assert!(n >= 6);
    // Another org's context shows nothing of this org.
    let mut other = db::begin_org(&app, OrgId::new()).await.unwrap();
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM events").fetch_one(&mut *other).await.unwrap();
    assert_eq!(n, 0);
}

#[tokio::test]
async fn rows_cannot_be_written_into_another_org() {
    let stack = Stack::start().await;
    let api = stack.client();
    api.agent(&[]).await;
    let owner = db::connect(&stack.db.url, 2).await.unwrap();
    let org: OrgId = sqlx::query_scalar("SELECT org_id FROM agents LIMIT 1").fetch_one(&owner).await.unwrap();
    let app = db::connect(&stack.db.as_role("turnstone_api"), 2).await.unwrap();
    let mut tx = db::begin_org(&app, OrgId::new()).await.unwrap();
    let err = sqlx::query("INSERT INTO agents (id, org_id, name) VALUES ($1, $2, 'intruder')")
        .bind(uuid::Uuid::now_v7())
        .bind(org)
        .execute(&mut *tx)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("row-level security"), "{err}");
    drop(tx);
    let mut tx = db::begin_org(&app, OrgId::new()).await.unwrap();
    let updated = sqlx::query("UPDATE agents SET name = 'hijacked'").execute(&mut *tx).await.unwrap();
    assert_eq!(updated.rows_affected(), 0, "another org's rows are invisible to UPDATE");
}

#[tokio::test]
async fn the_worker_role_cannot_read_what_it_must_not() {
    let stack = Stack::start().await;
    let worker = db::connect(&stack.db.as_role("turnstone_worker"), 2).await.unwrap();
    for (sql, what) in [
        ("SELECT count(*) FROM api_keys", "API key hashes"),
        ("SELECT count(*) FROM idempotency_keys", "idempotency records"),
        // Of the org registry it reads the storage limits a tool's write checks, nothing else.
        ("SELECT name, disabled FROM orgs", "the org registry"),
    ] {
        let err = sqlx::query(sql).fetch_one(&worker).await.unwrap_err();
        let code = err.as_database_error().and_then(|d| d.code()).map(|c| c.into_owned());
        assert_eq!(code.as_deref(), Some("42501"), "worker read {what}: {err}");
    }
    for sql in ["DELETE FROM events", "UPDATE events SET data = '{}'", "DELETE FROM agents"] {
        let err = sqlx::query(sql).execute(&worker).await.unwrap_err();
        let code = err.as_database_error().and_then(|d| d.code()).map(|c| c.into_owned());
        assert_eq!(code.as_deref(), Some("42501"), "worker may not run {sql}: {err}");
    }
    sqlx::query("SELECT max_file_bytes, max_session_bytes, max_session_files, max_session_keys, max_storage_bytes FROM orgs")
        .fetch_all(&worker)
        .await
        .expect("the worker reads the storage limits");
    // What it needs works: its org-scoped reads of agents succeed.
    let row = sqlx::query("SELECT count(*) AS n FROM agents").fetch_one(&worker).await.unwrap();
    assert_eq!(row.get::<i64, _>("n"), 0);
}

#[tokio::test]
async fn every_tenant_table_has_forced_row_level_security() {
    let db = turnstone_tests::TestDb::new().await;
    let owner = db::connect(&db.url, 1).await.unwrap();
    db::migrate(&owner).await.unwrap();
    let unprotected: Vec<String> = sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
          WHERE n.nspname = 'public' AND c.relkind = 'r'
            AND EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attname = 'org_id' AND NOT a.attisdropped)
            AND NOT (c.relrowsecurity AND c.relforcerowsecurity)",
    )
    .fetch_all(&owner)
    .await
    .unwrap();
    assert!(unprotected.is_empty(), "tables with org_id but no forced RLS: {unprotected:?}");
    let policies: i64 =
        sqlx::query_scalar("SELECT count(*) FROM pg_policies WHERE schemaname = 'public' AND policyname = 'tenant'")
            .fetch_one(&owner)
            .await
            .unwrap();
    assert!(policies >= 10);
}
