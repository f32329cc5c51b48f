//! The operator views (`migrations/…_operator_views.sql`): role `turnstone_ops`
//! reads the queue, the workers, the open turns, sessions per org and recent
//! failures across orgs, sees no secrets and no message contents, and can read
//! nothing else nor write anything.

use std::time::Duration;

use serde_json::json;
use sqlx::PgPool;
use turnstone_core::db;
use turnstone_core::ids::{OrgId, TurnId, TypedId};
use turnstone_tests::{Stack, StackOptions, TestDb};
use uuid::Uuid;

/// The views and their columns, in order. Every column is a decision about
/// what an operator may see: a new one must be added here, on purpose.
const VIEWS: [(&str, &[&str]); 5] = [
    ("queue", &["queue", "status", "tasks", "due", "oldest_age", "most_attempts"]),
    ("recent_failures", &["kind", "failed_at", "org_id", "session_id", "turn_id", "task_id", "attempts", "code", "message"]),
    (
        "running_turns",
        &[
            "org_id",
            "session_id",
            "turn_id",
            "status",
            "attempt",
            "iterations",
            "cancel_requested",
            "age",
            "running_for",
            "task_id",
            "task_status",
            "task_attempts",
            "lock_by",
            "locked_for",
        ],
    ),
    ("sessions_by_status", &["org_id", "org_name", "status", "sessions", "last_change_age"]),
    ("workers", &["name", "queue", "live", "accepting", "listener_pid", "last_seen_age", "uptime", "in_flight"]),
];

/// A pool acting as the operator role, checked to really be it.
async fn operator_pool(db: &TestDb) -> PgPool {
    let ops = db::connect(&db.as_role("turnstone_ops"), 2).await.expect("connect as turnstone_ops");
    let who: String = sqlx::query_scalar("SELECT current_user::text").fetch_one(&ops).await.unwrap();
    assert_eq!(who, "turnstone_ops", "the test really reads as the operator role");
    ops
}

/// `turnstone_ops.queue` as (queue, status, tasks, due, most_attempts).
async fn queue(ops: &PgPool) -> Vec<(String, String, i64, i64, i32)> {
    sqlx::query_as("SELECT queue, status, tasks, due, most_attempts FROM turnstone_ops.queue").fetch_all(ops).await.unwrap()
}

/// `turnstone_ops.running_turns` as (turn, status, attempt, task status, lock_by).
async fn open_turns(ops: &PgPool) -> Vec<(TurnId, String, i32, Option<String>, Option<String>)> {
    sqlx::query_as("SELECT turn_id, status, attempt, task_status, lock_by FROM turnstone_ops.running_turns")
        .fetch_all(ops)
        .await
        .unwrap()
}

/// `turnstone_ops.sessions_by_status` as (org, org name, status, sessions).
async fn sessions_by_status(ops: &PgPool) -> Vec<(OrgId, String, String, i64)> {
    sqlx::query_as("SELECT org_id, org_name, status, sessions FROM turnstone_ops.sessions_by_status")
        .fetch_all(ops)
        .await
        .unwrap()
}

/// `turnstone_ops.recent_failures` as (kind, org, turn, task, code, message).
type Failure = (String, Option<OrgId>, Option<TurnId>, Option<i64>, Option<String>, Option<String>);
async fn recent_failures(ops: &PgPool) -> Vec<Failure> {
    sqlx::query_as("SELECT kind, org_id, turn_id, task_id, code, message FROM turnstone_ops.recent_failures")
        .fetch_all(ops)
        .await
        .unwrap()
}

/// The SQLSTATE of a failed statement.
fn sqlstate(err: &sqlx::Error) -> Option<String> {
    err.as_database_error().and_then(|d| d.code()).map(|c| c.into_owned())
}

/// One deployment, two orgs, turns queued, running, completed and failed: each
/// view shows what happened, across orgs, as the operator role.
#[tokio::test]
async fn operators_see_the_queue_workers_turns_sessions_and_failures_of_every_org() {
    // Arrange: no worker yet, so the first turn waits in the queue.
    let mut stack = Stack::start_with(StackOptions { workers: 0, ..Default::default() }).await;
    let api = stack.client();
    let ops = operator_pool(&stack.db).await;
    let owner = db::connect(&stack.db.url, 2).await.unwrap();
    let (org_a, org_a_name): (OrgId, String) = sqlx::query_as("SELECT id, name FROM orgs").fetch_one(&owner).await.unwrap();
    let slow = api.session(&[]).await;
    let slow_turn = TurnId::parse(api.say(&slow, "!sleep 3000 slow").await["turn_id"].as_str().unwrap()).unwrap();

    // A queued turn: one pending, due task and nobody holding it.
    assert_eq!(queue(&ops).await, [("turns".to_owned(), "pending".to_owned(), 1, 1, 0)]);
    assert_eq!(open_turns(&ops).await, [(slow_turn, "queued".to_owned(), 0, Some("pending".to_owned()), None)]);
    assert!(sessions_by_status(&ops).await.iter().any(|(o, _, s, n)| *o == org_a && s == "queued" && *n == 1));

    // A running turn: held by the one worker, which counts it in flight.
    stack.add_worker(|c| c.heartbeat = Duration::from_secs(1)).await;
    api.wait_for(&slow, "turn.started", 1).await;
    let workers: Vec<(String, i64)> =
        sqlx::query_as("SELECT name, in_flight FROM turnstone_ops.workers").fetch_all(&ops).await.unwrap();
    let [(worker, 1)] = workers.as_slice() else { panic!("one worker, one task in flight: {workers:?}") };
    assert_eq!(open_turns(&ops).await, [(slow_turn, "running".to_owned(), 1, Some("running".to_owned()), Some(worker.clone()))]);
    assert_eq!(queue(&ops).await, [("turns".to_owned(), "running".to_owned(), 1, 0, 1)]);

    // A failed turn, a completed one whose text no view may show, and a second org.
    let failing = api.session(&[]).await;
    api.say(&failing, "!fail 400").await;
    let failed = api.wait_for(&failing, "turn.failed", 1).await;
    let failed = failed.iter().find(|e| e["type"] == "turn.failed").unwrap().clone();
    let failed_turn = TurnId::parse(failed["turn_id"].as_str().unwrap()).unwrap();
    let quiet = api.session(&[]).await;
    api.say(&quiet, "OPSCANARY said quietly").await;
    let org_b = stack.operator().post("/v1/orgs", json!({"name": "second org"})).await.expect(201);
    let key_b =
        stack.operator().post(&format!("/v1/orgs/{}/api-keys", org_b["id"].as_str().unwrap()), json!({})).await.expect(201);
    api.with_key(key_b["key"].as_str().unwrap()).session(&[]).await;
    let org_b = OrgId::parse(org_b["id"].as_str().unwrap()).unwrap();
    for session in [&slow, &failing, &quiet] {
        api.wait_for(session, "session.idled", 1).await;
    }

    // Act + Assert: everything finished, so nothing is queued, open or in flight
    // (a task is deleted with its turn's seal or, on some paths, just after it)…
    let deadline = tokio::time::Instant::now() + turnstone_tests::DEADLINE;
    while !queue(&ops).await.is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "finished tasks are deleted: {:?}", queue(&ops).await);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(open_turns(&ops).await, []);
    // The worker is live and accepting, with nothing in flight, and names its
    // LISTEN backend (which a heartbeat writes once the listener is up).
    let listener_pid = loop {
        let (live, accepting, listener_pid, in_flight): (bool, bool, Option<i32>, i64) =
            sqlx::query_as("SELECT live, accepting, listener_pid, in_flight FROM turnstone_ops.workers")
                .fetch_one(&ops)
                .await
                .unwrap();
        assert!(live && accepting && in_flight == 0, "an idle working worker: {live} {accepting} {in_flight}");
        if let Some(pid) = listener_pid {
            break pid;
        }
        assert!(tokio::time::Instant::now() < deadline, "the worker never named its listener");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let listening: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = $1)")
        .bind(listener_pid)
        .fetch_one(&owner)
        .await
        .unwrap();
    assert!(listening, "listener_pid is a live backend");
    // …every org's sessions are counted, each with its own org…
    let mut sessions = sessions_by_status(&ops).await;
    sessions.sort();
    let mut expected = vec![(org_a, org_a_name, "idle".to_owned(), 3), (org_b, "second org".to_owned(), "idle".to_owned(), 1)];
    expected.sort();
    assert_eq!(sessions, expected);
    // …and the failed turn is listed with the code and message of its `turn.failed`.
    let code = failed["data"]["error_code"].as_str().unwrap();
    assert_eq!(code, "provider_bad_request");
    let message = failed["data"]["message"].as_str().unwrap();
    assert_eq!(
        recent_failures(&ops).await,
        [("turn".to_owned(), Some(org_a), Some(failed_turn), None, Some(code.to_owned()), Some(message.to_owned()))]
    );

    // A task out of attempts (the worker gives up on one only after 25 failed
    // runs, so it is written here as the worker's failure path leaves it).
    let task: i64 = sqlx::query_scalar(
        "INSERT INTO task_queue (queue, payload, status, attempts, max_attempts, last_error)
         VALUES ('turns', jsonb_build_object('turn_id', $1::uuid, 'org_id', $2::uuid), 'failed', 25, 25, 'the worker gave up')
         RETURNING id",
    )
    .bind(slow_turn)
    .bind(org_a)
    .fetch_one(&owner)
    .await
    .unwrap();
    assert_eq!(queue(&ops).await, [("turns".to_owned(), "failed".to_owned(), 1, 0, 25)]);
    let failures = recent_failures(&ops).await;
    assert_eq!(failures.len(), 2, "{failures:?}");
    assert_eq!(
        failures[0],
        ("task".to_owned(), Some(org_a), Some(slow_turn), Some(task), None, Some("the worker gave up".to_owned()))
    );
    assert_eq!(failures[1].2, Some(failed_turn));

    // No view shows what a message said.
    for (view, _) in VIEWS {
        let rows: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT v::text FROM turnstone_ops.{view} v")))
            .fetch_all(&ops)
            .await
            .unwrap();
        assert!(rows.iter().all(|r| !r.contains("OPSCANARY")), "{view} shows message contents: {rows:?}");
    }
}

/// The operator role has USAGE on schema `turnstone_ops` and SELECT on its
/// views, and nothing else: no table, no routine schema, no writes.
#[tokio::test]
async fn the_operator_role_reads_the_views_and_nothing_else() {
    let (tdb, owner, _org) = turnstone_tests::org_database().await;
    let ops = operator_pool(&tdb).await;

    // Exactly the views, with exactly their columns (information_schema lists
    // only what the reading role holds a privilege on).
    let columns: Vec<(String, String)> = sqlx::query_as(
        "SELECT table_schema || '.' || table_name, column_name::text FROM information_schema.columns
          WHERE table_schema NOT IN ('pg_catalog', 'information_schema') ORDER BY table_name, ordinal_position",
    )
    .fetch_all(&ops)
    .await
    .unwrap();
    let expected: Vec<(String, String)> = VIEWS
        .iter()
        .flat_map(|(view, cols)| cols.iter().map(move |c| (format!("turnstone_ops.{view}"), (*c).to_owned())))
        .collect();
    assert_eq!(columns, expected);
    let grants: Vec<(String, String)> = sqlx::query_as(
        "SELECT table_schema || '.' || table_name, privilege_type::text FROM information_schema.table_privileges
          WHERE grantee = 'turnstone_ops' ORDER BY 1, 2",
    )
    .fetch_all(&owner)
    .await
    .unwrap();
    let selects: Vec<(String, String)> = VIEWS.iter().map(|(v, _)| (format!("turnstone_ops.{v}"), "SELECT".to_owned())).collect();
    assert_eq!(grants, selects, "SELECT on the views is the role's only table privilege");

    // No base table can be read, written or emptied.
    let tables: Vec<(String, String)> = sqlx::query_as(
        // Each table with a column an UPDATE may name.
        "SELECT DISTINCT ON (c.table_schema, c.table_name)
                quote_ident(c.table_schema) || '.' || quote_ident(c.table_name), quote_ident(c.column_name)
           FROM information_schema.columns c JOIN information_schema.tables t USING (table_schema, table_name)
          WHERE t.table_type = 'BASE TABLE' AND c.is_identity = 'NO' AND c.is_generated = 'NEVER'
            AND c.table_schema NOT IN ('pg_catalog', 'information_schema')
          ORDER BY c.table_schema, c.table_name, c.ordinal_position",
    )
    .fetch_all(&owner)
    .await
    .unwrap();
    for table in ["public.events", "public.api_keys", "public.providers", "public.task_queue", "public.queue_workers"] {
        assert!(tables.iter().any(|(t, _)| t == table), "{table} is a base table: {tables:?}");
    }
    for (table, column) in &tables {
        for sql in [
            format!("SELECT 1 FROM {table} LIMIT 1"),
            format!("INSERT INTO {table} DEFAULT VALUES"),
            format!("UPDATE {table} SET {column} = {column}"),
            format!("DELETE FROM {table}"),
            format!("TRUNCATE {table}"),
        ] {
            let err = sqlx::query(sqlx::AssertSqlSafe(sql.clone())).execute(&ops).await.unwrap_err();
            assert_eq!(sqlstate(&err).as_deref(), Some("42501"), "{sql}: {err}");
        }
    }

    // The views are read-only for it, and the schema takes no new objects.
    for (view, _) in VIEWS {
        for sql in [format!("DELETE FROM turnstone_ops.{view}"), format!("INSERT INTO turnstone_ops.{view} DEFAULT VALUES")] {
            let err = sqlx::query(sqlx::AssertSqlSafe(sql.clone())).execute(&ops).await.unwrap_err();
            // A view that groups cannot take writes at all (55000); a plain one refuses the role (42501).
            assert!(matches!(sqlstate(&err).as_deref(), Some("42501" | "55000")), "{sql}: {err}");
        }
    }
    let err = sqlx::query("CREATE TABLE turnstone_ops.notes (t text)").execute(&ops).await.unwrap_err();
    assert_eq!(sqlstate(&err).as_deref(), Some("42501"), "{err}");
    // Nor the hot path's routines.
    let routines: bool = sqlx::query_scalar("SELECT has_schema_privilege('turnstone', 'USAGE')").fetch_one(&ops).await.unwrap();
    assert!(!routines, "the operator role may not call the routines");
}

/// The documented production owner is no superuser and is held by FORCE
/// ROW LEVEL SECURITY: the views still show operators every org, while the
/// owner's own reads, through the views or not, still see no org's rows.
#[tokio::test]
async fn with_a_non_superuser_owner_operators_still_see_every_org() {
    // Arrange: a database owned and migrated by a role that is neither
    // superuser nor BYPASSRLS (CREATEROLE: migration 0002 creates roles).
    let tdb = TestDb::new().await;
    let admin = db::connect(&tdb.url, 2).await.unwrap();
    sqlx::query(
        "DO $$ BEGIN
             CREATE ROLE turnstone_test_owner NOLOGIN NOSUPERUSER NOBYPASSRLS CREATEROLE;
         EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$",
    )
    .execute(&admin)
    .await
    .unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!("ALTER DATABASE {} OWNER TO turnstone_test_owner", tdb.name)))
        .execute(&admin)
        .await
        .unwrap();
    let owner = db::connect(&tdb.as_role("turnstone_test_owner"), 2).await.unwrap();
    db::migrate(&owner).await.expect("a non-superuser owner migrates");
    let view_owner: String = sqlx::query_scalar(
        "SELECT viewowner::text FROM pg_views WHERE schemaname = 'turnstone_ops' AND viewname = 'recent_failures'",
    )
    .fetch_one(&admin)
    .await
    .unwrap();
    assert_eq!(view_owner, "turnstone_test_owner");

    // Two orgs with a session each; one turn failed in the first.
    let (org_a, org_b, turn) = (OrgId::new(), OrgId::new(), TurnId::new());
    sqlx::query(
        "WITH o AS (INSERT INTO orgs (id, name) VALUES ($1, 'a'), ($2, 'b')),
              a AS (INSERT INTO agents (id, org_id, name) VALUES ($1, $1, 'a'), ($2, $2, 'b')),
              s AS (INSERT INTO sessions (id, org_id, agent_id) VALUES ($1, $1, $1), ($2, $2, $2)),
              e AS (INSERT INTO events (id, org_id, session_id, sequence, type, turn_id, data) VALUES
                     ($3, $1, $1, 1, 'input.message', $3, '{}'),
                     ($4, $1, $1, 2, 'turn.failed', $3, '{\"error_code\": \"provider_bad_request\", \"message\": \"refused\"}'))
         INSERT INTO turns (id, org_id, session_id, input_event_id, input_sequence, status, finished_at)
         VALUES ($3, $1, $1, $3, 1, 'failed', now())",
    )
    .bind(org_a)
    .bind(org_b)
    .bind(turn)
    .bind(Uuid::now_v7())
    .execute(&admin)
    .await
    .unwrap();

    // Act + Assert: the operator sees both orgs and the failure, its code from the event.
    let ops = operator_pool(&tdb).await;
    let mut sessions = sessions_by_status(&ops).await;
    sessions.sort();
    let mut expected = vec![(org_a, "a".to_owned(), "idle".to_owned(), 1), (org_b, "b".to_owned(), "idle".to_owned(), 1)];
    expected.sort();
    assert_eq!(sessions, expected);
    assert_eq!(
        recent_failures(&ops).await,
        [("turn".to_owned(), Some(org_a), Some(turn), None, Some("provider_bad_request".to_owned()), Some("refused".to_owned()))]
    );
    // The owner is no operator: row-level security still hides every org from it.
    for sql in
        ["SELECT count(*) FROM turnstone_ops.sessions_by_status", "SELECT count(*) FROM sessions", "SELECT count(*) FROM events"]
    {
        let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).fetch_one(&owner).await.unwrap();
        assert_eq!(n, 0, "the owner without an org context: {sql}");
    }
    owner.close().await;
}
