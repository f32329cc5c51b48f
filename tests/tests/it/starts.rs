//! Batched turn starts (`turns::start_many`, the worker's `Starter`): many
//! sessions in one transaction, each turn's guards applied on its own, and
//! batches racing over the same turns neither deadlock nor start a turn twice.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use turnstone_core::ids::{EventId, OrgId, SessionId, TurnId, TypedId};

use sqlx::PgPool;
use turnstone_core::events::{self, Event, NewEvent, types};
use turnstone_core::history::{ConversationCache, Prefix};
use turnstone_core::turns::{self, ContentPart, Outcome, Start, Started, TurnTask};
use turnstone_core::{agents, db, sessions};
use turnstone_tests::TestDb;

/// A migrated database with an org, an agent and `n` sessions, no workers.
/// The pool acts as the worker role (row-level security applies).
async fn setup(n: usize) -> (TestDb, PgPool, PgPool, OrgId, Vec<SessionId>) {
    let (tdb, owner, org) = turnstone_tests::org_database().await;
    let api = db::connect(&tdb.as_role("turnstone_api"), 4).await.unwrap();
    let mut tx = db::begin_org(&api, org).await.unwrap();
    let agent =
        agents::create_agent(&mut tx, org, agents::AgentInput { name: Some("a".into()), ..Default::default() }).await.unwrap();
    let mut ids = Vec::new();
    for _ in 0..n {
        let s = sessions::create_session(&mut tx, org, sessions::SessionInput::of_agent(agent.id)).await.unwrap();
        ids.push(s.id);
    }
    tx.commit().await.unwrap();
    let worker = db::connect(&tdb.as_role("turnstone_worker"), 6).await.unwrap();
    (tdb, owner, worker, org, ids)
}

async fn post(pool: &PgPool, org: OrgId, session: SessionId) -> TurnId {
    let mut tx = db::begin_org(pool, org).await.unwrap();
    let text = vec![ContentPart::Text { text: "hi".into() }];
    let posted = turns::post_message(&mut tx, org, session, text, None).await.unwrap();
    tx.commit().await.unwrap();
    posted.turn_id
}

fn lease(s: Started) -> turns::Lease {
    match s {
        Started::Run(l) => l,
        Started::Sealed => panic!("expected a lease"),
    }
}

/// (type, sequence, turn id) of a session's log, read as the owner.
async fn log(owner: &PgPool, session: SessionId) -> Vec<(String, i64, Option<TurnId>)> {
    sqlx::query_as("SELECT type, sequence, turn_id FROM events WHERE session_id = $1 ORDER BY sequence")
        .bind(session)
        .fetch_all(owner)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_batch_starts_each_turn_as_a_start_of_its_own_would() {
    let (_db, owner, worker, org, s) = setup(5).await;
    let mut turn = Vec::new();
    for &session in &s {
        turn.push(post(&owner, org, session).await);
    }
    // Turn 2: running, then its cancellation is requested. Turn 3: completed.
    // Turn 4: started once and never progressed.
    for t in [turn[2], turn[3], turn[4]] {
        lease(turns::start_many(&worker, org, &[t], 10).await.unwrap().pop().unwrap());
    }
    let mut tx = db::begin_org(&owner, org).await.unwrap();
    assert_eq!(turns::cancel(&mut tx, org, s[2], false).await.unwrap().state, "cancelling");
    tx.commit().await.unwrap();
    let done = turns::Lease { attempt: 1, ..lease_of(&owner, turn[3]).await };
    turns::seal(&worker, &done, Outcome::Completed).await.unwrap();

    let mut listener = sqlx::postgres::PgListener::connect_with(&owner).await.unwrap();
    listener.listen(events::EVENTS_CHANNEL).await.unwrap();
    let missing = TurnId::new();
    let batch = [turn[1], missing, turn[0], turn[2], turn[3], turn[4]];
    // max_stalled_starts = 1: a turn retaken without progress is failed at once.
    let started = turns::start_many(&worker, org, &batch, 1).await.unwrap();

    let kinds: Vec<&str> = started.iter().map(|s| if matches!(s, Started::Run(_)) { "run" } else { "sealed" }).collect();
    assert_eq!(kinds, ["run", "sealed", "run", "sealed", "sealed", "sealed"], "answers in the order asked");
    let leases: Vec<turns::Lease> =
        started.into_iter().filter_map(|s| if let Started::Run(l) = s { Some(l) } else { None }).collect();
    assert_eq!((leases[0].turn_id, leases[1].turn_id), (turn[1], turn[0]));
    for (l, session) in leases.iter().zip([s[1], s[0]]) {
        assert_eq!((l.attempt, l.session_id), (1, session));
        let expected = vec![
            ("input.message".to_owned(), 1, Some(l.turn_id)),
            ("session.activated".to_owned(), 2, Some(l.turn_id)),
            ("turn.started".to_owned(), 3, Some(l.turn_id)),
            ("reason.started".to_owned(), 4, Some(l.turn_id)),
        ];
        assert_eq!(log(&owner, session).await, expected, "each session's own events, consecutive");
    }
    let status = |t: TurnId| {
        let owner = owner.clone();
        async move {
            sqlx::query_as::<_, (String, Option<String>, i32)>("SELECT status, error_code, attempt FROM turns WHERE id = $1")
                .bind(t)
                .fetch_one(&owner)
                .await
                .unwrap()
        }
    };
    assert_eq!(status(turn[2]).await, ("cancelled".into(), None, 2), "the cancel guard sealed it");
    assert_eq!(status(turn[3]).await, ("completed".into(), None, 1), "a terminal turn is left alone");
    assert_eq!(status(turn[4]).await, ("failed".into(), Some("no_progress".into()), 2), "the progress guard sealed it");
    for (session, terminal) in [(s[2], types::TURN_CANCELLED), (s[4], types::TURN_FAILED)] {
        let tail: Vec<String> = log(&owner, session).await.into_iter().rev().take(2).map(|(k, _, _)| k).collect();
        assert_eq!(tail, [types::SESSION_IDLED, terminal], "sealed and idled in the batch");
    }
    for (session, want) in [(s[1], "running"), (s[0], "running"), (s[2], "idle"), (s[4], "idle")] {
        let got: String =
            sqlx::query_scalar("SELECT status FROM sessions WHERE id = $1").bind(session).fetch_one(&owner).await.unwrap();
        assert_eq!(got, want);
    }
    // One notification per session written to, each naming its own last sequence.
    let mut last: HashMap<SessionId, i64> = HashMap::new();
    for _ in 0..4 {
        let n = tokio::time::timeout(Duration::from_secs(5), listener.recv()).await.expect("a notification").unwrap();
        let a = events::parse_appended(n.payload()).unwrap();
        assert!(last.insert(a.session_id, a.last_sequence).is_none(), "one notification per session: {last:?}");
    }
    for session in [s[0], s[1], s[2], s[4]] {
        let max = log(&owner, session).await.last().unwrap().1;
        assert_eq!(last.get(&session), Some(&max), "the notification announces the session's last event");
    }
    // The contexts of the batch, read together, are each turn's own.
    let contexts = turns::load_contexts(&worker, org, &leases, &ConversationCache::new(0)).await.unwrap();
    for (l, c) in leases.iter().zip(&contexts) {
        let c = c.as_ref().expect("a context");
        assert!(c.history.iter().all(|e| e.session_id == l.session_id), "no other session's events");
        assert_eq!(c.history.iter().filter(|e| e.kind == types::TURN_STARTED).count(), 1);
        assert_eq!(c.history.first().unwrap().turn_id, Some(l.turn_id));
    }
    // A lease whose session cannot be read fails alone; its batch mates still load.
    let stray = turns::Lease { session_id: SessionId::new(), turn_id: TurnId::new(), ..leases[0].clone() };
    let mixed = turns::load_contexts(&worker, org, &[stray, leases[1].clone()], &ConversationCache::new(0)).await.unwrap();
    assert!(matches!(mixed[0], Err(turnstone_core::Error::NotFound("session"))), "{:?}", mixed[0].as_ref().err());
    assert_eq!(mixed[1].as_ref().expect("loads").history.first().unwrap().turn_id, Some(leases[1].turn_id));
}

async fn lease_of(owner: &PgPool, turn: TurnId) -> turns::Lease {
    sqlx::query_as(
        "SELECT id AS turn_id, org_id, session_id, attempt, input_sequence, model_id, started_at FROM turns WHERE id = $1",
    )
    .bind(turn)
    .fetch_one(owner)
    .await
    .unwrap()
}

/// Two batches over the same turns in opposite orders, again and again: they
/// serialise on the sessions' locks (taken in id order) instead of deadlocking,
/// each retake fences out the one before, and no turn is started twice.
#[tokio::test]
async fn racing_batches_over_the_same_turns_neither_deadlock_nor_start_twice() {
    let (_db, owner, worker, org, s) = setup(6).await;
    let mut ids = Vec::new();
    for &session in &s {
        ids.push(post(&owner, org, session).await);
    }
    let reversed: Vec<TurnId> = ids.iter().rev().copied().collect();
    let rounds = 15;
    for _ in 0..rounds {
        let (a, b) = tokio::join!(turns::start_many(&worker, org, &ids, 1000), turns::start_many(&worker, org, &reversed, 1000));
        let (a, b) = (a.expect("no deadlock, no error"), b.expect("no deadlock, no error"));
        assert!(a.iter().chain(&b).all(|s| matches!(s, Started::Run(_))));
    }
    let rows: Vec<(i32, i64)> = sqlx::query_as(
        "SELECT t.attempt, (SELECT count(*) FROM events e WHERE e.turn_id = t.id AND e.type = 'turn.started')
           FROM turns t WHERE t.id = ANY($1)",
    )
    .bind(&ids)
    .fetch_all(&owner)
    .await
    .unwrap();
    assert_eq!(rows.len(), ids.len());
    for (attempt, started) in rows {
        assert_eq!(attempt, 2 * rounds, "every start of every batch took the turn once");
        assert_eq!(started, 1, "turn.started is appended by the first start only");
    }
    // Only the latest lease may write.
    let latest = lease_of(&owner, ids[0]).await;
    let stale = turns::Lease { attempt: latest.attempt - 1, ..latest.clone() };
    assert!(matches!(turns::seal(&worker, &stale, Outcome::Completed).await, Err(turnstone_core::Error::LeaseLost)));
    turns::seal(&worker, &latest, Outcome::Completed).await.unwrap();
}

/// The worker's start batches: every task of a batch is answered with its own
/// turn, and a duplicate starts after its twin, as if it came later.
#[tokio::test]
async fn a_start_batch_answers_every_task_and_starts_a_duplicate_after_its_twin() {
    let (_db, owner, worker, org, s) = setup(12).await;
    let mut ids = Vec::new();
    for &session in &s {
        ids.push(post(&owner, org, session).await);
    }
    let mut tasks: Vec<TurnTask> = ids.iter().map(|&turn_id| TurnTask { turn_id, org_id: org, wait: false }).collect();
    tasks.push(tasks[3]);
    // One batch holding both twins, as the worker's starter would form it.
    let history = std::sync::Arc::new(ConversationCache::new(1 << 20));
    let mut answers = turnstone_worker::start::start_all(&worker, 10, &history, tasks.clone()).await;
    // And the starter itself, for one more request through its channel.
    let starter = turnstone_worker::start::Starter::spawn(worker.clone(), 10, history);
    answers.push(starter.start(tasks[5]).await);
    tasks.push(tasks[5]);
    let mut attempts: HashMap<TurnId, Vec<i32>> = HashMap::new();
    for (task, answer) in tasks.iter().zip(answers) {
        match answer.expect("started") {
            Start::Run(lease, context) => {
                assert_eq!(lease.turn_id, task.turn_id);
                assert!(context.history.iter().any(|e| e.kind == types::TURN_STARTED && e.turn_id == Some(task.turn_id)));
                attempts.entry(task.turn_id).or_default().push(lease.attempt);
            }
            Start::Sealed => panic!("nothing here is sealed"),
        }
    }
    for (turn, mut a) in attempts {
        a.sort();
        let want = if turn == ids[3] || turn == ids[5] { vec![1, 2] } else { vec![1] };
        assert_eq!(a, want, "turn {turn}");
    }
}

/// A batch of seals: each is checked against its own lease (a stale one writes
/// nothing and the rest still land), each session is handed to its next
/// pending turn or idled, and only the sealed turns' queue tasks are completed.
#[tokio::test]
async fn a_batch_of_seals_guards_each_turn_and_hands_each_session_over() {
    let (_db, owner, worker, org, s) = setup(3).await;
    let mut first = Vec::new();
    for &session in &s {
        first.push(post(&owner, org, session).await);
    }
    let leases: Vec<turns::Lease> = turns::start_many(&worker, org, &first, 10).await.unwrap().into_iter().map(lease).collect();
    // Session 1 has a second message waiting behind its running turn.
    let waiting = post(&owner, org, s[1]).await;
    // Turn 2 is retaken: the lease above is stale.
    let current = lease(turns::start_many(&worker, org, &[first[2]], 10).await.unwrap().pop().unwrap());
    let answer = |iteration: i32| {
        events::NewEvent::step(
            types::OUTPUT_MESSAGE_COMPLETED,
            format!("llm:{iteration}"),
            serde_json::json!({ "iteration": iteration }),
        )
    };
    let seals = vec![
        turns::Seal {
            lease: leases[0].clone(),
            events: vec![answer(1)],
            iterations: 1,
            usage: turns::Usage { input_tokens: 3, output_tokens: 4 },
            outcome: Outcome::Completed,
        },
        turns::Seal::bare(&leases[2], Outcome::Completed),
        turns::Seal::bare(&leases[1], Outcome::Failed { code: "x".into(), message: "boom".into() }),
    ];
    let sealed = turns::seal_many(&worker, org, seals).await.unwrap();
    assert_eq!(sealed, [true, false, true], "only the stale lease is refused");

    let tail = |session| {
        let owner = owner.clone();
        async move { log(&owner, session).await.into_iter().skip(4).map(|(k, _, _)| k).collect::<Vec<_>>() }
    };
    assert_eq!(tail(s[0]).await, ["output.message.completed", "turn.completed", "session.idled"]);
    assert_eq!(tail(s[1]).await, ["input.message", "turn.failed"], "handed over to the waiting turn, not idled");
    assert_eq!(tail(s[2]).await, Vec::<String>::new(), "the stale seal wrote nothing");
    let state: Vec<(String, String)> = sqlx::query_as(
        "SELECT s.status, t.status FROM unnest($1::uuid[], $2::uuid[]) WITH ORDINALITY AS x(session, turn, ord)
           JOIN sessions s ON s.id = x.session JOIN turns t ON t.id = x.turn ORDER BY x.ord",
    )
    .bind(&s)
    .bind([first[0], waiting, first[2]])
    .fetch_all(&owner)
    .await
    .unwrap();
    let want = [("idle", "completed"), ("queued", "queued"), ("running", "running")].map(|(a, b)| (a.to_owned(), b.to_owned()));
    assert_eq!(state, want);
    let queued: i64 = sqlx::query_scalar("SELECT count(*) FROM task_queue WHERE payload->>'turn_id' = $1")
        .bind(waiting.uuid().to_string())
        .fetch_one(&owner)
        .await
        .unwrap();
    assert_eq!(queued, 1, "the waiting turn's task was enqueued with the hand-over");
    let usage: (i32, i64, i64) = sqlx::query_as("SELECT iterations, input_tokens, output_tokens FROM turns WHERE id = $1")
        .bind(first[0])
        .fetch_one(&owner)
        .await
        .unwrap();
    assert_eq!(usage, (1, 3, 4));
    // Each sealed turn got its own seal's values (they are looked up by position in the batch's arrays).
    let failed: (String, Option<String>, i32, i64, i64) =
        sqlx::query_as("SELECT status, error_code, iterations, input_tokens, output_tokens FROM turns WHERE id = $1")
            .bind(first[1])
            .fetch_one(&owner)
            .await
            .unwrap();
    assert_eq!(failed, ("failed".into(), Some("x".into()), 0, 0, 0));
    // The terminal events carry each turn's totals (read from its sealed row), a
    // failure its code and message; `session.idled` is the session's, not the turn's.
    let ends = |session| {
        let owner = owner.clone();
        async move {
            let rows: Vec<(String, serde_json::Value, Option<TurnId>, i64)> = sqlx::query_as(
                "SELECT type, data, turn_id, sequence FROM events WHERE session_id = $1 AND sequence > 4 ORDER BY sequence",
            )
            .bind(session)
            .fetch_all(&owner)
            .await
            .unwrap();
            rows
        }
    };
    let done = ends(s[0]).await;
    assert_eq!(done.iter().map(|r| r.3).collect::<Vec<_>>(), [5, 6, 7], "gap-free, in order");
    let mut completed = done[1].1.clone();
    assert!(completed["duration_ms"].as_i64().is_some_and(|d| d >= 0), "{completed}");
    completed.as_object_mut().unwrap().remove("duration_ms");
    assert_eq!(completed, serde_json::json!({ "usage": { "input_tokens": 3, "output_tokens": 4 }, "iterations": 1 }));
    assert_eq!((done[1].2, done[2].2), (Some(first[0]), None), "the idling is the session's");
    let mut failed = ends(s[1]).await.pop().unwrap().1;
    failed.as_object_mut().unwrap().remove("duration_ms");
    assert_eq!(
        failed,
        serde_json::json!({ "usage": { "input_tokens": 0, "output_tokens": 0 }, "iterations": 0, "error_code": "x", "message": "boom" })
    );
    // The current lease still seals its turn afterwards.
    turns::seal(&worker, &current, Outcome::Completed).await.unwrap();
}

/// The worker's seal batches: when one seal of a batch cannot be written (its step
/// was already committed: a unique violation), the batch is retried seal by
/// seal, so every other turn of it is still sealed.
#[tokio::test]
async fn one_bad_seal_does_not_sink_its_batch() {
    let (_db, owner, worker, org, s) = setup(8).await;
    let mut ids = Vec::new();
    for &session in &s {
        ids.push(post(&owner, org, session).await);
    }
    let leases: Vec<turns::Lease> = turns::start_many(&worker, org, &ids, 10).await.unwrap().into_iter().map(lease).collect();
    let step = || events::NewEvent::step(types::OUTPUT_MESSAGE_COMPLETED, "llm:1", serde_json::json!({}));
    turns::commit_step(&worker, &leases[0], vec![step()], 1, turns::Usage::default()).await.unwrap();
    let seals = leases
        .iter()
        .map(|l| turns::Seal {
            lease: l.clone(),
            events: vec![step()],
            iterations: 1,
            usage: turns::Usage::default(),
            outcome: Outcome::Completed,
        })
        .collect();
    let results = turnstone_worker::seal::seal_all(&worker, seals).await;
    assert!(results[0].as_ref().is_err_and(|e| e.is_unique_violation()), "{:?}", results[0]);
    for r in &results[1..] {
        assert!(r.is_ok(), "{r:?}");
    }
    let completed: i64 =
        sqlx::query_scalar("SELECT count(*) FROM turns WHERE status = 'completed'").fetch_one(&owner).await.unwrap();
    assert_eq!(completed, ids.len() as i64 - 1);
}

/// Seal batches racing with start batches over the same sessions (ids in
/// opposite orders) never deadlock: sessions are always locked in id order.
#[tokio::test]
async fn racing_seal_and_start_batches_do_not_deadlock() {
    let (_db, owner, worker, org, s) = setup(6).await;
    for _ in 0..10 {
        let mut ids = Vec::new();
        for &session in &s {
            ids.push(post(&owner, org, session).await);
        }
        let leases: Vec<turns::Lease> = turns::start_many(&worker, org, &ids, 10).await.unwrap().into_iter().map(lease).collect();
        // Queue one more message per session, then seal (forward) while retaking (backward).
        for &session in &s {
            post(&owner, org, session).await;
        }
        let seals: Vec<turns::Seal> = leases.iter().map(|l| turns::Seal::bare(l, Outcome::Completed)).collect();
        let reversed: Vec<TurnId> = ids.iter().rev().copied().collect();
        let (sealed, retaken) =
            tokio::join!(turns::seal_many(&worker, org, seals), turns::start_many(&worker, org, &reversed, 10));
        let (sealed, retaken) = (sealed.expect("no deadlock"), retaken.expect("no deadlock"));
        // Per turn, exactly one of them won: sealed (then the retake found nothing to run) or retaken (then the seal's lease was stale).
        for (i, won_seal) in sealed.iter().enumerate() {
            let ri = ids.len() - 1 - i;
            assert_ne!(*won_seal, matches!(retaken[ri], Started::Run(_)), "turn {i}: exactly one winner");
        }
        // Seal whatever the retakes hold, and start the next turns, so the sessions are ready for the next round.
        let held: Vec<turns::Seal> = retaken
            .into_iter()
            .filter_map(|r| if let Started::Run(l) = r { Some(turns::Seal::bare(&l, Outcome::Completed)) } else { None })
            .collect();
        assert!(turns::seal_many(&worker, org, held).await.unwrap().iter().all(|s| *s));
        let next: Vec<TurnId> =
            sqlx::query_scalar("SELECT id FROM turns WHERE status = 'queued'").fetch_all(&owner).await.unwrap();
        assert_eq!(next.len(), s.len(), "every session handed over to its next turn");
        let leases: Vec<turns::Lease> =
            turns::start_many(&worker, org, &next, 10).await.unwrap().into_iter().map(lease).collect();
        let seals = leases.iter().map(|l| turns::Seal::bare(l, Outcome::Completed)).collect();
        assert!(turns::seal_many(&worker, org, seals).await.unwrap().iter().all(|s| *s));
    }
    let idle: i64 = sqlx::query_scalar("SELECT count(*) FROM sessions WHERE status = 'idle'").fetch_one(&owner).await.unwrap();
    assert_eq!(idle, s.len() as i64);
}

/// What a context read returns, comparable: (id, sequence, type, data) in order.
fn shape(events: &[Arc<Event>]) -> Vec<(EventId, i64, String, serde_json::Value)> {
    events.iter().map(|e| (e.id, e.sequence, e.kind.clone(), e.data.clone())).collect()
}

/// Each lease's history read through `cache`, checked against a full read.
async fn load_checked(worker: &PgPool, org: OrgId, leases: &[turns::Lease], cache: &ConversationCache) -> Vec<Vec<Arc<Event>>> {
    let cached = turns::load_contexts(worker, org, leases, cache).await.unwrap();
    let full = turns::load_contexts(worker, org, leases, &ConversationCache::new(0)).await.unwrap();
    let mut out = Vec::new();
    for ((c, f), l) in cached.into_iter().zip(full).zip(leases) {
        let (c, f) = (c.expect("cached read").history, f.expect("full read").history);
        assert_eq!(shape(&c), shape(&f), "turn {}: the cached read is the full read", l.turn_id);
        out.push(c);
    }
    out
}

/// One model step of a running turn: an assistant message and a tool result.
async fn step(worker: &PgPool, lease: &turns::Lease, i: i32) {
    let events = vec![
        NewEvent::step(
            types::OUTPUT_MESSAGE_COMPLETED,
            format!("{i}.message"),
            serde_json::json!({ "text": format!("answer {i}") }),
        ),
        NewEvent::step(types::TOOL_COMPLETED, format!("{i}.tool"), serde_json::json!({ "result": i })),
        NewEvent::new(types::REASON_STARTED, serde_json::json!({ "iteration": i + 1 })),
    ];
    turns::commit_step(worker, lease, events, 1, turns::Usage::default()).await.unwrap();
}

/// The conversation cache (`turnstone_core::history`) only ever shortens a
/// read: through many turns — messages queued while a turn runs, steps
/// committed, retakes mid-turn, a second "worker" whose cache sees every other
/// turn only, two sessions in one read — every cached read equals a full one.
/// And the cache is really read from: a prefix it holds is not fetched again.
#[tokio::test]
async fn a_cached_context_read_is_the_full_read() {
    let (_db, owner, worker, org, s) = setup(2).await;
    let (every, alternate) = (ConversationCache::new(1 << 20), ConversationCache::new(1 << 20));
    let mut next = vec![post(&owner, org, s[0]).await, post(&owner, org, s[1]).await];
    for round in 0..6 {
        let leases: Vec<turns::Lease> =
            turns::start_many(&worker, org, &next, 10).await.unwrap().into_iter().map(lease).collect();
        load_checked(&worker, org, &leases, &every).await;
        if round % 2 == 0 {
            load_checked(&worker, org, &leases[..1], &alternate).await;
        }
        // A message arrives while the turn runs: its input sits in the middle of this turn's events.
        let queued = [post(&owner, org, s[0]).await, post(&owner, org, s[1]).await];
        for l in &leases {
            step(&worker, l, 1).await;
        }
        // A retake mid-turn reads the turn's own events after the prefix, and the queued input is left out.
        let retaken: Vec<turns::Lease> =
            turns::start_many(&worker, org, &next, 10).await.unwrap().into_iter().map(lease).collect();
        let histories = load_checked(&worker, org, &retaken, &every).await;
        for (h, l) in histories.iter().zip(&retaken) {
            assert!(h.iter().all(|e| e.kind != types::INPUT_MESSAGE || e.sequence <= l.input_sequence));
            assert_eq!(h.iter().filter(|e| e.kind == types::TOOL_COMPLETED && e.turn_id == Some(l.turn_id)).count(), 1);
        }
        for l in &retaken {
            step(&worker, l, 2).await;
            turns::seal(&worker, l, Outcome::Completed).await.unwrap();
        }
        next = queued.to_vec();
    }
    let lease = lease(turns::start_many(&worker, org, &next[..1], 10).await.unwrap().pop().unwrap());
    load_checked(&worker, org, std::slice::from_ref(&lease), &every).await;
    let (sessions, bytes) = every.usage();
    assert_eq!(sessions, 2);
    assert!(bytes > 0);
    let last_conversation: i64 = sqlx::query_scalar("SELECT max(sequence) FROM events WHERE session_id = $1 AND type = ANY($2)")
        .bind(s[0])
        .bind(events::CONVERSATION)
        .fetch_one(&owner)
        .await
        .unwrap();
    assert_eq!(every.get(org, s[0]).upto, last_conversation, "the cache holds the conversation up to its end");

    // A prefix the cache holds is taken as it is, not read again: doctor one
    // and the read returns the doctored copy (events are immutable, so in real
    // use the copy is always the stored event).
    let known = every.get(org, s[0]);
    let mut doctored: Vec<Arc<Event>> = known.events.as_ref().clone();
    let mut first = doctored[0].as_ref().clone();
    first.data = serde_json::json!({ "doctored": true });
    doctored[0] = Arc::new(first);
    let spy = ConversationCache::new(1 << 20);
    spy.put(org, s[0], Prefix { upto: known.upto, events: Arc::new(doctored), bytes: known.bytes });
    let read = turns::load_contexts(&worker, org, std::slice::from_ref(&lease), &spy).await.unwrap().pop().unwrap().unwrap();
    assert_eq!(read.history[0].data, serde_json::json!({ "doctored": true }));
}

/// Messages POSTed while contexts are read: every read through the shared
/// cache still equals a full read, and so do the reads of the turns those
/// messages start later, whose inputs the cache took in while they were queued.
#[tokio::test]
async fn context_reads_racing_new_messages_match_full_reads() {
    let (_db, owner, worker, org, s) = setup(1).await;
    let cache = ConversationCache::new(1 << 20);
    let first = post(&owner, org, s[0]).await;
    let mut current = lease(turns::start_many(&worker, org, &[first], 10).await.unwrap().pop().unwrap());
    let posting = {
        let owner = owner.clone();
        tokio::spawn(async move {
            let mut turns = Vec::new();
            for _ in 0..20 {
                turns.push(post(&owner, org, s[0]).await);
            }
            turns
        })
    };
    for _ in 0..40 {
        load_checked(&worker, org, std::slice::from_ref(&current), &cache).await;
    }
    let queued = posting.await.unwrap();
    for (i, t) in queued.into_iter().enumerate() {
        step(&worker, &current, 1).await;
        turns::seal(&worker, &current, Outcome::Completed).await.unwrap();
        current = lease(turns::start_many(&worker, org, &[t], 10).await.unwrap().pop().unwrap());
        let h = load_checked(&worker, org, std::slice::from_ref(&current), &cache).await.pop().unwrap();
        let inputs = h.iter().filter(|e| e.kind == types::INPUT_MESSAGE).count();
        assert_eq!(inputs, i + 2, "every earlier input and this turn's, none of the later ones");
    }
}

/// A batched append numbers each session's events on their own, whatever the
/// batch's order and sizes, and each session's notification carries exactly its
/// own events, signed, ending at its last sequence.
#[tokio::test]
async fn a_batched_append_numbers_and_notifies_each_session_on_its_own() {
    let (_db, owner, worker, org, s) = setup(4).await;
    events::sign_notifications([7; 32]);
    for &session in &s[..3] {
        post(&owner, org, session).await;
    }
    let mut listener = sqlx::postgres::PgListener::connect_with(&owner).await.unwrap();
    listener.listen(events::EVENTS_CHANNEL).await.unwrap();
    // Sessions interleaved in the batch, 3, 1, 2 and 1 events; s[3] has no earlier events.
    let note = |i: usize| NewEvent::of_session(types::SESSION_IDLED, serde_json::json!({ "i": i }));
    let plan = [(s[2], 3), (s[0], 1), (s[3], 2), (s[1], 1), (s[2], 0)];
    let mut batches = Vec::new();
    for (k, &(session, n)) in plan.iter().enumerate() {
        let events = (0..n).map(|i| note(10 * k + i)).collect();
        batches.push(events::SessionEvents { session_id: session, turn_id: None, events });
    }
    let mut tx = db::begin_sessions(&worker, org, &s).await.unwrap();
    let stored = events::append_many(&mut tx, org, batches).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(stored.len(), 7);

    let before = [(s[0], 2), (s[1], 2), (s[2], 2), (s[3], 0)];
    let mut seen = HashMap::new();
    for _ in 0..4 {
        let n = tokio::time::timeout(Duration::from_secs(5), listener.recv()).await.expect("a notification").unwrap();
        let a = events::parse_appended(n.payload()).expect("parses");
        let carried = a.events.expect("signed payloads carry their events");
        assert!(seen.insert(a.session_id, (a.last_sequence, carried)).is_none(), "one notification per session");
    }
    for (session, earlier) in before {
        let (last, carried) = &seen[&session];
        let logged: Vec<(EventId, i64, serde_json::Value)> =
            sqlx::query_as("SELECT id, sequence, data FROM events WHERE session_id = $1 AND sequence > $2 ORDER BY sequence")
                .bind(session)
                .bind(earlier)
                .fetch_all(&owner)
                .await
                .unwrap();
        let want: Vec<i64> = (earlier + 1..=*last).collect();
        assert_eq!(logged.iter().map(|e| e.1).collect::<Vec<_>>(), want, "consecutive from the session's own last");
        let got: Vec<(EventId, i64, serde_json::Value)> = carried.iter().map(|e| (e.id, e.sequence, e.data.clone())).collect();
        assert_eq!(got, logged, "the notification carries this session's events, in order");
        assert!(carried.iter().all(|e| e.session_id == session));
    }
    let order: Vec<i64> = seen[&s[2]].1.iter().map(|e| e.data["i"].as_i64().unwrap()).collect();
    assert_eq!(order, [0, 1, 2], "a session's events keep the order they were given in");
}
