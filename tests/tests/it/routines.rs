//! The hot path's routines (`db::Routine`): functions of the migrations in
//! schema `turnstone`, so a POST and a turn's start are each one round trip.
//! A connection that dies is replaced by one that calls them as before, a
//! POST outside a transaction writes all or nothing, and nothing needs a
//! temporary object.

use sqlx::PgPool;
use turnstone_core::ids::{OrgId, SessionId};
use turnstone_core::turns::{self, ContentPart, Started};
use turnstone_core::{agents, db, sessions};
use turnstone_tests::TestDb;

/// A migrated database with one idle session; the API role's pool has one connection.
async fn setup() -> (TestDb, PgPool, PgPool, OrgId, SessionId) {
    let (tdb, owner, org) = turnstone_tests::org_database().await;
    let api = db::connect(&tdb.as_role("turnstone_api"), 1).await.unwrap();
    let session = idle_session(&api, org).await;
    (tdb, owner, api, org, session)
}

/// A new agent's idle session in `org`.
async fn idle_session(api: &PgPool, org: OrgId) -> SessionId {
    let mut tx = db::begin_org(api, org).await.unwrap();
    let agent =
        agents::create_agent(&mut tx, org, agents::AgentInput { name: Some("a".into()), ..Default::default() }).await.unwrap();
    let session = sessions::create_session(&mut tx, org, sessions::SessionInput::of_agent(agent.id)).await.unwrap().id;
    tx.commit().await.unwrap();
    session
}

fn hi() -> Vec<ContentPart> {
    vec![ContentPart::Text { text: "hi".into() }]
}

/// The backend of a one-connection pool.
async fn backend(pool: &PgPool) -> i32 {
    sqlx::query_scalar("SELECT pg_backend_pid()").fetch_one(pool).await.unwrap()
}

/// A connection killed under the pool is replaced by a new one, which calls
/// the same routines: the POST (outside any transaction) and the worker's start
/// both work on the new backend, and each message and start landed once.
#[tokio::test]
async fn a_killed_connection_is_replaced_by_one_with_the_routines() {
    let (tdb, owner, api, org, session) = setup().await;
    let worker = db::connect_worker(&tdb.as_role("turnstone_worker"), 1, "w-routines").unwrap();
    let first = turns::post_message(&mut api.acquire().await.unwrap(), org, session, hi(), None).await.unwrap();
    let started = turns::start_many(&worker, org, &[first.turn_id], 3).await.unwrap();
    assert!(matches!(started.as_slice(), [Started::Run(_)]), "{started:?}");

    let killed = [backend(&api).await, backend(&worker).await];
    for pid in killed {
        sqlx::query("SELECT pg_terminate_backend($1)").bind(pid).execute(&owner).await.unwrap();
    }

    // The dead connection fails its next statement and is discarded; the next one has the routines.
    let mut second = None;
    for _ in 0..3 {
        match turns::post_message(&mut api.acquire().await.unwrap(), org, session, hi(), None).await {
            Ok(p) => {
                second = Some(p);
                break;
            }
            Err(e) => assert!(matches!(e, turnstone_core::Error::Database(_)), "a dead connection's error: {e:?}"),
        }
    }
    let second = second.expect("a POST on a new connection");
    assert_eq!(second.turn_status, "pending", "queued behind the running turn");
    assert_ne!(backend(&api).await, killed[0], "a new backend");

    // The worker's start, on its own new connection, still takes a turn exactly once.
    let mut retaken = None;
    for _ in 0..3 {
        if let Ok(s) = turns::start_many(&worker, org, &[first.turn_id], 3).await {
            retaken = Some(s);
            break;
        }
    }
    let retaken = retaken.expect("a start on a new connection");
    let [Started::Run(lease)] = retaken.as_slice() else { panic!("{retaken:?}") };
    assert_eq!(lease.attempt, 2, "retaken once, after the first start");
    let (inputs, starts): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE type = 'input.message'), count(*) FILTER (WHERE type = 'turn.started')
           FROM events WHERE session_id = $1",
    )
    .bind(session)
    .fetch_one(&owner)
    .await
    .unwrap();
    assert_eq!((inputs, starts), (2, 1), "two messages, one turn.started (a retake appends none)");
}

/// Outside a transaction the POST's routine is its own transaction, so it
/// must write all or nothing by itself: a session without its sequence row
/// (which never happens but by hand) fails the POST and leaves no turn, no
/// task and the session idle.
#[tokio::test]
async fn a_post_outside_a_transaction_writes_nothing_when_it_cannot_append() {
    let (_tdb, owner, api, org, session) = setup().await;
    sqlx::query("DELETE FROM session_sequences WHERE session_id = $1").bind(session).execute(&owner).await.unwrap();
    let err = turns::post_message(&mut api.acquire().await.unwrap(), org, session, hi(), None).await.unwrap_err();
    assert!(matches!(err, turnstone_core::Error::Database(_)), "{err:?}");
    let (events, turns, tasks, status): (i64, i64, i64, String) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM events WHERE session_id = $1), (SELECT count(*) FROM turns WHERE session_id = $1),
                (SELECT count(*) FROM task_queue), (SELECT status FROM sessions WHERE id = $1)",
    )
    .bind(session)
    .fetch_one(&owner)
    .await
    .unwrap();
    assert_eq!((events, turns, tasks, status.as_str()), (0, 0, 0, "idle"));
}

/// The routines are the migrations' own: schema `turnstone`, named
/// parameters, visible to an operator (`\df turnstone.*`), callable by both
/// roles; and a role that may not create temporary objects works as well,
/// since nothing is created per connection.
#[tokio::test]
async fn the_routines_live_in_the_migrations_and_need_no_temporary_objects() {
    let (tdb, owner, org) = turnstone_tests::org_database().await;
    let listed: Vec<(String, String)> = sqlx::query_as(
        "SELECT p.proname::text, pg_get_function_identity_arguments(p.oid)
           FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'turnstone' ORDER BY 1",
    )
    .fetch_all(&owner)
    .await
    .unwrap();
    let names: Vec<&str> = listed.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "commit_step",
            "delete_files",
            "enter_org",
            "kv_delete",
            "kv_set",
            "move_file",
            "post_message",
            "seal_turns",
            "seal_turns_and_tasks",
            "start_turns",
            "write_file"
        ]
    );
    let (_, post_args) = listed.iter().find(|(n, _)| n == "post_message").unwrap();
    assert!(post_args.starts_with("org uuid, channel text"), "named parameters: {post_args}");

    sqlx::query(sqlx::AssertSqlSafe(format!("REVOKE TEMPORARY ON DATABASE {} FROM PUBLIC", tdb.name)))
        .execute(&owner)
        .await
        .unwrap();
    let api = db::connect(&tdb.as_role("turnstone_api"), 1).await.unwrap();
    let session = idle_session(&api, org).await;
    let posted = turns::post_message(&mut api.acquire().await.unwrap(), org, session, hi(), None).await.unwrap();
    assert_eq!(posted.turn_status, "queued");
    let temp_schemas: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_namespace n
          WHERE n.nspname LIKE 'pg_temp_%' AND EXISTS (SELECT 1 FROM pg_proc p WHERE p.pronamespace = n.oid)",
    )
    .fetch_one(&owner)
    .await
    .unwrap();
    assert_eq!(temp_schemas, 0, "no function lives in a temporary schema");
}

/// The step commit and the seal are one statement each, outside any
/// transaction: neither may write half. With the session's sequence row gone
/// (never but by hand) the step's lease check fails before its usage is
/// added, and the seal leaves the turn running: no event, no total, no hand-over.
#[tokio::test]
async fn a_step_or_seal_that_cannot_append_writes_nothing() {
    let (tdb, owner, api, org, session) = setup().await;
    let worker = db::connect_worker(&tdb.as_role("turnstone_worker"), 1, "w-halves").unwrap();
    let posted = turns::post_message(&mut api.acquire().await.unwrap(), org, session, hi(), None).await.unwrap();
    let started = turns::start_many(&worker, org, &[posted.turn_id], 3).await.unwrap();
    let [Started::Run(lease)] = started.as_slice() else { panic!("{started:?}") };
    sqlx::query("DELETE FROM session_sequences WHERE session_id = $1").bind(session).execute(&owner).await.unwrap();
    let usage = turns::Usage { input_tokens: 7, output_tokens: 9 };
    let step = vec![turnstone_core::events::NewEvent::step("output.message.completed", "llm:1", serde_json::json!({}))];
    let err = turns::commit_step(&worker, lease, step.clone(), 1, usage).await.unwrap_err();
    assert!(matches!(err, turnstone_core::Error::LeaseLost), "{err:?}");
    let seal = turns::Seal { lease: lease.clone(), events: step, iterations: 1, usage, outcome: turns::Outcome::Completed };
    assert_eq!(turns::seal_many(&worker, org, vec![seal]).await.unwrap(), [false]);
    let (events, status, iterations, tokens, session_status): (i64, String, i32, i64, String) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM events WHERE session_id = $1), t.status, t.iterations, t.input_tokens, s.status
           FROM turns t JOIN sessions s ON s.id = t.session_id WHERE t.id = $2",
    )
    .bind(session)
    .bind(posted.turn_id)
    .fetch_one(&owner)
    .await
    .unwrap();
    assert_eq!((events, status.as_str(), iterations, tokens, session_status.as_str()), (4, "running", 0, 0, "running"));
}
