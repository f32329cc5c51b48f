//! Guards on every turn-queue transition: a stale owner changes nothing,
//! a step commits at most once, a terminal turn cannot restart.

use serde_json::json;
use sqlx::PgPool;
use turnstone_core::events::{NewEvent, types};
use turnstone_core::ids::{OrgId, SessionId, TurnId, TypedId};
use turnstone_core::turns::{self, ContentPart, Outcome, Start, TurnTask, Usage};
use turnstone_core::{Error, agents, db, sessions};
use turnstone_tests::TestDb;

/// A migrated database with an org, agent and session, and no workers. The
/// returned pool acts as the API role (row-level security applies).
async fn setup() -> (TestDb, PgPool, OrgId, SessionId) {
    let (tdb, _owner, org) = turnstone_tests::org_database().await;
    let pool = db::connect(&tdb.as_role("turnstone_api"), 4).await.unwrap();
    let mut conn = db::begin_org(&pool, org).await.unwrap();
    let agent =
        agents::create_agent(&mut conn, org, agents::AgentInput { name: Some("a".into()), ..Default::default() }).await.unwrap();
    let session = sessions::create_session(&mut conn, org, sessions::SessionInput::of_agent(agent.id)).await.unwrap();
    conn.commit().await.unwrap();
    (tdb, pool, org, session.id)
}

async fn post(pool: &PgPool, org: OrgId, session: SessionId, text: &str) -> turns::Posted {
    let mut tx = db::begin_org(pool, org).await.unwrap();
    let posted = turns::post_message(&mut tx, org, session, vec![ContentPart::Text { text: text.into() }], None).await.unwrap();
    tx.commit().await.unwrap();
    posted
}

/// One value, read through an org-scoped transaction of the API role.
async fn scalar<T, I>(pool: &PgPool, org: OrgId, sql: &'static str, id: I) -> T
where
    T: Send + Unpin + for<'r> sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>,
    I: TypedId + for<'q> sqlx::Encode<'q, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>,
{
    let mut tx = db::begin_org(pool, org).await.unwrap();
    sqlx::query_scalar(sql).bind(id).fetch_one(&mut *tx).await.unwrap()
}

async fn count(pool: &PgPool, org: OrgId, sql: &'static str, session: SessionId) -> i64 {
    scalar(pool, org, sql, session).await
}

fn leased(start: Start) -> turns::Lease {
    match start {
        Start::Run(lease, _) => lease,
        Start::Sealed => panic!("expected a lease"),
    }
}

#[tokio::test]
async fn post_commits_message_turn_and_task_together() {
    let (_db, pool, org, session) = setup().await;
    // A rolled-back post leaves nothing behind: no event, no turn, no task, no sequence used.
    let mut tx = db::begin_org(&pool, org).await.unwrap();
    turns::post_message(&mut tx, org, session, vec![ContentPart::Text { text: "x".into() }], None).await.unwrap();
    tx.rollback().await.unwrap();
    assert_eq!(count(&pool, org, "SELECT count(*) FROM events WHERE session_id = $1", session).await, 0);
    assert_eq!(count(&pool, org, "SELECT count(*) FROM turns WHERE session_id = $1", session).await, 0);
    assert_eq!(count(&pool, org, "SELECT count(*) FROM task_queue WHERE $1::uuid IS NOT NULL", session).await, 0);

    let posted = post(&pool, org, session, "hello").await;
    assert_eq!(posted.message.sequence, 1, "the rolled-back post consumed no sequence number");
    assert_eq!(
        count(
            &pool,
            org,
            "SELECT count(*) FROM task_queue WHERE queue = 'turns' AND payload->>'turn_id' IS NOT NULL AND $1::uuid IS NOT NULL",
            session
        )
        .await,
        1
    );
    // A second message while the first is queued waits as pending, with no task yet.
    let second = post(&pool, org, session, "again").await;
    assert_eq!(second.turn_status, "pending");
    assert_eq!(count(&pool, org, "SELECT count(*) FROM task_queue WHERE $1::uuid IS NOT NULL", session).await, 1);
}

#[tokio::test]
async fn a_stale_lease_changes_nothing() {
    let (_db, pool, org, session) = setup().await;
    let posted = post(&pool, org, session, "hello").await;
    let old = leased(turns::start(&pool, TurnTask { turn_id: posted.turn_id, org_id: org, wait: false }, 3).await.unwrap());
    // The turn is reclaimed: a new attempt fences the old one out.
    let new = leased(turns::start(&pool, TurnTask { turn_id: posted.turn_id, org_id: org, wait: false }, 3).await.unwrap());
    assert_eq!(new.attempt, old.attempt + 1);
    let before = count(&pool, org, "SELECT count(*) FROM events WHERE session_id = $1", session).await;

    let step = vec![NewEvent::step(types::OUTPUT_MESSAGE_COMPLETED, "llm:1", json!({}))];
    let stale = turns::commit_step(&pool, &old, step.clone(), 1, Usage { input_tokens: 5, output_tokens: 5 }).await;
    assert!(matches!(stale, Err(Error::LeaseLost)), "{stale:?}");
    assert!(matches!(turns::seal(&pool, &old, Outcome::Completed).await, Err(Error::LeaseLost)));
    assert_eq!(count(&pool, org, "SELECT count(*) FROM events WHERE session_id = $1", session).await, before);
    assert_eq!(count(&pool, org, "SELECT iterations::bigint FROM turns WHERE session_id = $1", session).await, 0);

    // The current owner commits; the same step a second time is rejected by the unique key.
    turns::commit_step(&pool, &new, step.clone(), 1, Usage::default()).await.unwrap();
    let dup = turns::commit_step(&pool, &new, step, 1, Usage::default()).await.unwrap_err();
    assert!(dup.is_unique_violation(), "{dup:?}");
    assert_eq!(
        count(&pool, org, "SELECT count(*) FROM events WHERE session_id = $1 AND type = 'output.message.completed'", session)
            .await,
        1
    );
    assert_eq!(
        count(&pool, org, "SELECT iterations::bigint FROM turns WHERE session_id = $1", session).await,
        1,
        "the rolled-back duplicate added nothing"
    );
}

#[tokio::test]
async fn a_turn_is_sealed_once_and_hands_over_to_the_next_turn() {
    let (_db, pool, org, session) = setup().await;
    let first = post(&pool, org, session, "one").await;
    let second = post(&pool, org, session, "two").await;
    let lease = leased(turns::start(&pool, TurnTask { turn_id: first.turn_id, org_id: org, wait: false }, 3).await.unwrap());
    assert!(
        matches!(
            turns::start(&pool, TurnTask { turn_id: second.turn_id, org_id: org, wait: false }, 3).await.unwrap(),
            Start::Sealed
        ),
        "a pending turn cannot be started"
    );

    turns::seal(&pool, &lease, Outcome::Completed).await.unwrap();
    assert!(matches!(turns::seal(&pool, &lease, Outcome::Completed).await, Err(Error::LeaseLost)), "sealed once");
    assert!(
        matches!(
            turns::start(&pool, TurnTask { turn_id: first.turn_id, org_id: org, wait: false }, 3).await.unwrap(),
            Start::Sealed
        ),
        "a terminal turn never restarts"
    );
    let status: String = {
        let mut tx = db::begin_org(&pool, org).await.unwrap();
        sqlx::query_scalar("SELECT status FROM turns WHERE id = $1").bind(second.turn_id).fetch_one(&mut *tx).await.unwrap()
    };
    assert_eq!(status, "queued", "the next turn was enqueued in the sealing transaction");
    let session_status: String = {
        let mut tx = db::begin_org(&pool, org).await.unwrap();
        sqlx::query_scalar("SELECT status FROM sessions WHERE id = $1").bind(session).fetch_one(&mut *tx).await.unwrap()
    };
    assert_eq!(session_status, "queued");

    let lease = leased(turns::start(&pool, TurnTask { turn_id: second.turn_id, org_id: org, wait: false }, 3).await.unwrap());
    turns::seal(&pool, &lease, Outcome::Failed { code: "x".into(), message: "y".into() }).await.unwrap();
    let session_status: String = {
        let mut tx = db::begin_org(&pool, org).await.unwrap();
        sqlx::query_scalar("SELECT status FROM sessions WHERE id = $1").bind(session).fetch_one(&mut *tx).await.unwrap()
    };
    assert_eq!(session_status, "idle");
    let kinds: Vec<String> = {
        let mut tx = db::begin_org(&pool, org).await.unwrap();
        sqlx::query_scalar("SELECT type FROM events WHERE session_id = $1 ORDER BY sequence")
            .bind(session)
            .fetch_all(&mut *tx)
            .await
            .unwrap()
    };
    assert_eq!(
        kinds,
        [
            "input.message",
            "session.activated",
            "input.message",
            "turn.started",
            "reason.started",
            "turn.completed",
            "turn.started",
            "reason.started",
            "turn.failed",
            "session.idled"
        ]
    );
}

#[tokio::test]
async fn concurrent_appends_keep_sequences_gap_free() {
    let (_db, pool, org, session) = setup().await;
    let mut tasks = Vec::new();
    for i in 0..16 {
        let pool = pool.clone();
        tasks.push(tokio::spawn(async move {
            for j in 0..10 {
                let mut tx = db::begin_org(&pool, org).await.unwrap();
                turnstone_core::events::append(
                    &mut tx,
                    org,
                    session,
                    None,
                    vec![NewEvent::new(types::SESSION_IDLED, json!({"i": i, "j": j}))],
                )
                .await
                .unwrap();
                if j % 3 == 0 {
                    tx.rollback().await.unwrap();
                } else {
                    tx.commit().await.unwrap();
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let seqs: Vec<i64> = {
        let mut tx = db::begin_org(&pool, org).await.unwrap();
        sqlx::query_scalar("SELECT sequence FROM events WHERE session_id = $1 ORDER BY sequence")
            .bind(session)
            .fetch_all(&mut *tx)
            .await
            .unwrap()
    };
    assert_eq!(seqs, (1..=seqs.len() as i64).collect::<Vec<_>>());
    assert_eq!(seqs.len(), 16 * 6);
}

#[tokio::test]
async fn sealing_a_turn_completes_its_task_in_the_same_transaction() {
    let (db, pool, org, session) = setup().await;
    let worker = db::connect(&db.as_role("turnstone_worker"), 2).await.unwrap();
    let posted = post(&pool, org, session, "hello").await;
    turnstone_core::queue::register(&worker, turns::QUEUE, "w1", std::time::Duration::from_secs(5)).await.unwrap();
    let claimed = turnstone_core::queue::claim(&worker, turns::QUEUE, "w1", 10).await.unwrap();
    assert_eq!(claimed.len(), 1);
    let task = turns::QueueTask { held: claimed[0].held(), worker: "w1".into() };
    let tt = TurnTask { turn_id: posted.turn_id, org_id: org, wait: false };
    let mut stale = leased(turns::start(&worker, tt, 3).await.unwrap());
    let mut lease = leased(turns::start(&worker, tt, 3).await.unwrap());
    // A fenced-out seal rolls back, and the task row with it.
    stale.task = Some(task.clone());
    let e = turns::seal(&worker, &stale, Outcome::Completed).await.unwrap_err();
    assert!(matches!(e, Error::LeaseLost), "{e:?}");
    assert_eq!(count(&pool, org, "SELECT count(*) FROM task_queue WHERE $1::uuid IS NOT NULL", session).await, 1);
    // The current lease seals the turn and completes the task in one commit.
    lease.task = Some(task);
    turns::seal(&worker, &lease, Outcome::Completed).await.unwrap();
    assert_eq!(count(&pool, org, "SELECT count(*) FROM task_queue WHERE $1::uuid IS NOT NULL", session).await, 0);
    let status: String = scalar(&pool, org, "SELECT status FROM turns WHERE id = $1", posted.turn_id).await;
    assert_eq!(status, "completed");
}

/// A batch of seals is sealed in one statement: a seal whose lease was taken
/// over writes nothing and leaves its task for the newer run, while the
/// others seal, complete their own tasks and hand their sessions over (the
/// next pending turn queued with a task whose payload a worker can read).
#[tokio::test]
async fn a_batch_of_seals_completes_only_the_sealed_turns_tasks() {
    let (db, pool, org, first) = setup().await;
    let worker = db::connect(&db.as_role("turnstone_worker"), 2).await.unwrap();
    let second = {
        let mut conn = db::begin_org(&pool, org).await.unwrap();
        let agent = agents::create_agent(&mut conn, org, agents::AgentInput { name: Some("b".into()), ..Default::default() })
            .await
            .unwrap();
        let s = sessions::create_session(&mut conn, org, sessions::SessionInput::of_agent(agent.id)).await.unwrap();
        conn.commit().await.unwrap();
        s.id
    };
    let a = post(&pool, org, first, "a").await;
    let b = post(&pool, org, second, "b").await;
    let behind_b = post(&pool, org, second, "b2").await;
    turnstone_core::queue::register(&worker, turns::QUEUE, "w1", std::time::Duration::from_secs(5)).await.unwrap();
    let claimed = turnstone_core::queue::claim(&worker, turns::QUEUE, "w1", 10).await.unwrap();
    assert_eq!(claimed.len(), 2, "one task per active session");
    let task_of = |turn: TurnId| {
        let c = claimed.iter().find(|c| c.payload["turn_id"] == json!(turn)).expect("a task for the turn");
        turns::QueueTask { held: c.held(), worker: "w1".into() }
    };
    let mut stale_a = leased(turns::start(&worker, TurnTask { turn_id: a.turn_id, org_id: org, wait: false }, 3).await.unwrap());
    leased(turns::start(&worker, TurnTask { turn_id: a.turn_id, org_id: org, wait: false }, 3).await.unwrap());
    let mut lease_b = leased(turns::start(&worker, TurnTask { turn_id: b.turn_id, org_id: org, wait: false }, 3).await.unwrap());
    stale_a.task = Some(task_of(a.turn_id));
    lease_b.task = Some(task_of(b.turn_id));

    let mut wakes = sqlx::postgres::PgListener::connect_with(&worker).await.unwrap();
    let own = turnstone_core::queue::worker_channel(&worker, "w1").await.unwrap();
    wakes.listen_all([turnstone_core::queue::CHANNEL, own.as_str()]).await.unwrap();

    let seal = |lease: &turns::Lease| turns::Seal::bare(lease, Outcome::Completed);
    let sealed = turns::seal_many(&worker, org, vec![seal(&stale_a), seal(&lease_b)]).await.unwrap();
    assert_eq!(sealed, vec![false, true]);
    let woken = tokio::time::timeout(std::time::Duration::from_secs(5), wakes.recv()).await.expect("a wake-up").unwrap();
    assert_eq!((woken.channel(), woken.payload()), (own.as_str(), turns::QUEUE), "the hand-over's task wakes the live worker");

    let tasks: Vec<(serde_json::Value, String)> = {
        let mut tx = db::begin_org(&worker, org).await.unwrap();
        sqlx::query_as("SELECT payload, status FROM task_queue ORDER BY id").fetch_all(&mut *tx).await.unwrap()
    };
    assert_eq!(tasks.len(), 2, "{tasks:?}");
    assert_eq!(tasks[0], (json!({ "turn_id": a.turn_id, "org_id": org }), "running".to_owned()), "the stale seal's task stays");
    let next: TurnTask = serde_json::from_value(tasks[1].0.clone()).expect("the hand-over's task is a turn task");
    assert_eq!(next, TurnTask { turn_id: behind_b.turn_id, org_id: org, wait: false });
    assert_eq!(tasks[1].1, "pending");
    let status = |turn: TurnId| scalar::<String, TurnId>(&pool, org, "SELECT status FROM turns WHERE id = $1", turn);
    assert_eq!(status(a.turn_id).await, "running");
    assert_eq!(status(b.turn_id).await, "completed");
    assert_eq!(status(behind_b.turn_id).await, "queued");
}

/// Posts racing one another and the seals that hand their session over (the
/// post is one statement that locks, appends and enqueues): every committed
/// message gets exactly one turn and one task, no rolled-back one leaves a
/// trace, the turns run one at a time in message order, and the log's
/// sequences stay gap-free with one `session.activated` per wake-up.
#[tokio::test]
async fn racing_posts_and_seals_lose_no_turn() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let (db, pool, org, session) = setup().await;
    let worker = db::connect(&db.as_role("turnstone_worker"), 2).await.unwrap();
    turnstone_core::queue::register(&worker, turns::QUEUE, "w1", std::time::Duration::from_secs(5)).await.unwrap();
    let posting = Arc::new(AtomicBool::new(true));
    let mut posters = Vec::new();
    for i in 0..8 {
        let pool = pool.clone();
        posters.push(tokio::spawn(async move {
            let mut committed = 0i64;
            for j in 0..12 {
                let mut tx = db::begin_org(&pool, org).await.unwrap();
                let text = vec![ContentPart::Text { text: format!("{i}:{j}") }];
                turns::post_message(&mut tx, org, session, text, None).await.unwrap();
                if j % 4 == 3 {
                    tx.rollback().await.unwrap();
                } else {
                    tx.commit().await.unwrap();
                    committed += 1;
                }
            }
            committed
        }));
    }
    // One worker claims, starts and seals whatever is queued until the posts are done and nothing is left.
    let sealer = {
        let (pool, posting) = (pool.clone(), posting.clone());
        tokio::spawn(async move {
            let mut sealed = 0i64;
            loop {
                let claimed = turnstone_core::queue::claim(&worker, turns::QUEUE, "w1", 4).await.unwrap();
                for c in &claimed {
                    let tt: TurnTask = serde_json::from_value(c.payload.clone()).unwrap();
                    let mut lease = leased(turns::start(&worker, tt, 3).await.unwrap());
                    lease.task = Some(turns::QueueTask { held: c.held(), worker: "w1".into() });
                    turns::seal(&worker, &lease, Outcome::Completed).await.unwrap();
                    sealed += 1;
                }
                let open =
                    "SELECT count(*) FROM turns WHERE session_id = $1 AND status NOT IN ('completed', 'failed', 'cancelled')";
                if claimed.is_empty() && !posting.load(Ordering::SeqCst) && count(&pool, org, open, session).await == 0 {
                    return sealed;
                }
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            }
        })
    };
    let mut committed = 0;
    for p in posters {
        committed += p.await.unwrap();
    }
    posting.store(false, Ordering::SeqCst);
    let sealed = tokio::time::timeout(std::time::Duration::from_secs(60), sealer).await.expect("the queue drains").unwrap();
    assert_eq!(committed, 8 * 9);
    assert_eq!(sealed, committed, "every committed message ran as one turn");

    let mut tx = db::begin_org(&pool, org).await.unwrap();
    let log: Vec<(i64, String)> = sqlx::query_as("SELECT sequence, type FROM events WHERE session_id = $1 ORDER BY sequence")
        .bind(session)
        .fetch_all(&mut *tx)
        .await
        .unwrap();
    assert_eq!(log.iter().map(|(s, _)| *s).collect::<Vec<_>>(), (1..=log.len() as i64).collect::<Vec<_>>(), "gap-free");
    let of = |t: &str| log.iter().filter(|(_, k)| k == t).count() as i64;
    assert_eq!(of(types::INPUT_MESSAGE), committed, "no rolled-back message left a trace");
    assert_eq!(of(types::SESSION_ACTIVATED), of(types::SESSION_IDLED), "one activation per wake-up, each ended by an idle");
    let runs: Vec<(i64, chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>)> = sqlx::query_as(
        "SELECT input_sequence, started_at, finished_at FROM turns WHERE session_id = $1 AND status = 'completed'
          ORDER BY input_sequence",
    )
    .bind(session)
    .fetch_all(&mut *tx)
    .await
    .unwrap();
    assert_eq!(runs.len() as i64, committed);
    for w in runs.windows(2) {
        assert!(w[1].1 >= w[0].2, "turns run one at a time, in message order: {w:?}");
    }
    drop(tx);
    assert_eq!(count(&pool, org, "SELECT count(*) FROM task_queue WHERE $1::uuid IS NOT NULL", session).await, 0);
    let status: String = scalar(&pool, org, "SELECT status FROM sessions WHERE id = $1", session).await;
    assert_eq!(status, "idle");
}
