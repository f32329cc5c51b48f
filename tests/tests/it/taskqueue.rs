//! The task queue and the workers' apalis backend over it: racing claimers,
//! dead workers, failures and hand-backs, against a real PostgreSQL.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use apalis::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sqlx::PgPool;
use turnstone_core::db;
use turnstone_core::queue::{self, Failure, Held};
use turnstone_tests::TestDb;
use turnstone_worker::queue::{PgQueue, QueueConfig};

const Q: &str = "test_q";

/// A migrated database; `owner` inspects, `worker` acts as the worker role.
async fn setup() -> (TestDb, PgPool, PgPool) {
    let tdb = TestDb::new().await;
    let owner = db::connect(&tdb.url, 2).await.unwrap();
    db::migrate(&owner).await.unwrap();
    let worker = db::connect(&tdb.as_role("turnstone_worker"), 10).await.unwrap();
    (tdb, owner, worker)
}

async fn fill(pool: &PgPool, n: usize, max_attempts: i32) {
    let payloads: Vec<Value> = (0..n).map(|i| json!({ "n": i })).collect();
    let mut tx = pool.begin().await.unwrap();
    assert_eq!(queue::enqueue_many(&mut tx, Q, &payloads, max_attempts).await.unwrap(), n as u64);
    tx.commit().await.unwrap();
}

async fn rows(pool: &PgPool, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
}

#[tokio::test]
async fn racing_claimers_never_share_a_task() {
    let (_db, owner, worker) = setup().await;
    fill(&worker, 400, 5).await;
    let claimers: Vec<_> = (0..6)
        .map(|i| {
            let pool = worker.clone();
            tokio::spawn(async move {
                let me = format!("racer-{i}");
                queue::register(&pool, Q, &me, Duration::from_secs(5)).await.unwrap();
                let mut mine = Vec::new();
                loop {
                    let batch = queue::claim(&pool, Q, &me, 7).await.unwrap();
                    if batch.is_empty() {
                        return mine;
                    }
                    let held: Vec<Held> = batch.iter().map(|c| c.held()).collect();
                    assert!(batch.iter().all(|c| c.attempts == 1), "first claim is attempt 1");
                    assert_eq!(queue::complete(&pool, &me, &held).await.unwrap(), held.len() as u64);
                    mine.extend(held.iter().map(|h| h.id));
                }
            })
        })
        .collect();
    let mut all = Vec::new();
    for c in claimers {
        all.extend(c.await.unwrap());
    }
    let unique: HashSet<i64> = all.iter().copied().collect();
    assert_eq!(all.len(), 400, "every task claimed once");
    assert_eq!(unique.len(), 400, "no task claimed twice");
    assert_eq!(rows(&owner, "SELECT count(*) FROM task_queue").await, 0, "completed tasks are deleted");
}

#[tokio::test]
async fn a_dead_workers_tasks_are_reclaimed_and_its_late_acks_change_nothing() {
    let (_db, owner, worker) = setup().await;
    fill(&worker, 3, 5).await;
    queue::register(&worker, Q, "a", Duration::from_secs(5)).await.unwrap();
    let held: Vec<Held> = queue::claim(&worker, Q, "a", 10).await.unwrap().iter().map(|c| c.held()).collect();
    assert_eq!(held.len(), 3);
    // A live holder keeps its tasks.
    assert_eq!(queue::heartbeat(&worker, Q, "b", Duration::from_secs(5), Duration::from_secs(60)).await.unwrap(), 0);
    // "a" stops heart-beating.
    sqlx::query("UPDATE queue_workers SET last_seen = now() - interval '2 minutes' WHERE name = 'a'")
        .execute(&owner)
        .await
        .unwrap();
    assert_eq!(queue::heartbeat(&worker, Q, "b", Duration::from_secs(5), Duration::from_secs(60)).await.unwrap(), 3);
    assert_eq!(rows(&owner, "SELECT count(*) FROM queue_workers WHERE name = 'a'").await, 0, "the dead worker's row is gone");
    assert_eq!(rows(&owner, "SELECT count(*) FROM task_queue WHERE status = 'pending' AND lock_by IS NULL").await, 3);
    // The dead worker wakes up late: its acknowledgements and failures are fenced out.
    assert_eq!(queue::complete(&worker, "a", &held).await.unwrap(), 0);
    let late = [Failure { held: held[0], error: "late".into(), retry_in: Duration::ZERO }];
    assert_eq!(queue::fail(&worker, "a", &late).await.unwrap(), 0);
    let again = queue::claim(&worker, Q, "b", 10).await.unwrap();
    assert_eq!(again.len(), 3);
    assert!(again.iter().all(|c| c.attempts == 2), "the lost run counts as an attempt");
    // Tasks held by a worker with no row at all (it was deleted) are reclaimed too.
    sqlx::query("DELETE FROM queue_workers WHERE name = 'b'").execute(&owner).await.unwrap();
    assert_eq!(queue::heartbeat(&worker, Q, "c", Duration::from_secs(5), Duration::from_secs(60)).await.unwrap(), 3);
    // A task whose worker dies on its last attempt fails instead of looping.
    sqlx::query("UPDATE task_queue SET max_attempts = 3").execute(&owner).await.unwrap();
    assert_eq!(queue::claim(&worker, Q, "c", 10).await.unwrap().len(), 3, "third attempt");
    sqlx::query("DELETE FROM queue_workers WHERE name = 'c'").execute(&owner).await.unwrap();
    assert_eq!(queue::heartbeat(&worker, Q, "d", Duration::from_secs(5), Duration::from_secs(60)).await.unwrap(), 3);
    assert_eq!(rows(&owner, "SELECT count(*) FROM task_queue WHERE status = 'failed' AND last_error IS NOT NULL").await, 3);
    assert!(queue::claim(&worker, Q, "d", 10).await.unwrap().is_empty());
}

#[tokio::test]
async fn failures_retry_after_their_delay_and_stop_at_max_attempts() {
    let (_db, owner, worker) = setup().await;
    fill(&worker, 1, 2).await;
    queue::register(&worker, Q, "w", Duration::from_secs(5)).await.unwrap();
    let c = queue::claim(&worker, Q, "w", 1).await.unwrap().remove(0);
    // Not started: handed back with the attempt refunded.
    assert_eq!(queue::unclaim(&worker, "w", &[c.held()]).await.unwrap(), 1);
    let c = queue::claim(&worker, Q, "w", 1).await.unwrap().remove(0);
    assert_eq!(c.attempts, 1, "an unstarted claim costs no attempt");
    // A failure with a delay is not claimable before it.
    queue::fail(&worker, "w", &[Failure { held: c.held(), error: "boom".into(), retry_in: Duration::from_secs(3600) }])
        .await
        .unwrap();
    assert!(queue::claim(&worker, Q, "w", 1).await.unwrap().is_empty());
    sqlx::query("UPDATE task_queue SET run_at = now()").execute(&owner).await.unwrap();
    let c = queue::claim(&worker, Q, "w", 1).await.unwrap().remove(0);
    assert_eq!(c.attempts, 2);
    // Out of attempts: kept as failed, with the error, and never claimed again.
    // An error text PostgreSQL cannot store (U+0000) must not make the outcome unwritable.
    let error = "boom\0again".to_owned();
    assert_eq!(queue::fail(&worker, "w", &[Failure { held: c.held(), error, retry_in: Duration::ZERO }]).await.unwrap(), 1);
    let (status, error): (String, String) =
        sqlx::query_as("SELECT status, last_error FROM task_queue").fetch_one(&owner).await.unwrap();
    assert_eq!(status, "failed");
    assert!(error.starts_with("boom") && error.ends_with("again") && !error.contains('\0'), "{error:?}");
    assert!(queue::claim(&worker, Q, "w", 1).await.unwrap().is_empty());
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Job {
    n: usize,
}

#[derive(Default)]
struct Seen {
    ran: Mutex<Vec<usize>>,
    failed: AtomicUsize,
    running: AtomicUsize,
    peak: AtomicUsize,
}

/// Jobs below 1,000 finish after a short pause (n % 7 == 0 fail once first);
/// jobs from 1,000 on never finish.
async fn job(job: Job, seen: Data<Arc<Seen>>, attempt: Attempt) -> Result<(), BoxDynError> {
    let now = seen.running.fetch_add(1, Ordering::SeqCst) + 1;
    seen.peak.fetch_max(now, Ordering::SeqCst);
    let result = if job.n >= 1000 {
        std::future::pending::<()>().await;
        Ok(())
    } else {
        tokio::time::sleep(Duration::from_millis(2)).await;
        if job.n.is_multiple_of(7) && attempt.current() <= 1 {
            seen.failed.fetch_add(1, Ordering::SeqCst);
            Err("first try fails".into())
        } else {
            seen.ran.lock().unwrap().push(job.n);
            Ok(())
        }
    };
    seen.running.fetch_sub(1, Ordering::SeqCst);
    result
}

fn config(worker: &str) -> QueueConfig {
    QueueConfig {
        queue: Q.into(),
        worker: worker.into(),
        concurrency: 8,
        batch: 4,
        poll_interval: Duration::from_millis(250),
        heartbeat: Duration::from_millis(500),
        reclaim_after: Duration::from_secs(2),
    }
}

/// Runs an apalis worker over [`Q`] with `config` (its name, concurrency and
/// poll) until `stop` flips: what its jobs saw, its queue handle, and its run.
fn spawn_worker(
    pool: &PgPool,
    config: QueueConfig,
    stop: &tokio::sync::watch::Receiver<bool>,
) -> (Arc<Seen>, turnstone_worker::queue::QueueHandle, tokio::task::JoinHandle<impl std::fmt::Debug>) {
    let seen = Arc::new(Seen::default());
    let (name, concurrency) = (config.worker.clone(), config.concurrency);
    let (backend, handle) = PgQueue::<Job>::start(pool.clone(), config, stop.clone());
    let worker = WorkerBuilder::new(name).backend(backend).data(seen.clone()).concurrency(concurrency).build(job);
    let mut stop = stop.clone();
    let running = tokio::spawn(worker.run_until(async move {
        let _ = stop.wait_for(|s| *s).await;
        Ok::<(), std::io::Error>(())
    }));
    (seen, handle, running)
}

/// Stops a worker of [`spawn_worker`]: a handler still running after half a
/// second is abandoned with it (like the worker's drain deadline).
async fn stop_worker(handle: turnstone_worker::queue::QueueHandle, mut running: tokio::task::JoinHandle<impl std::fmt::Debug>) {
    if tokio::time::timeout(Duration::from_millis(500), &mut running).await.is_err() {
        running.abort();
        let _ = running.await;
    }
    handle.finish(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn an_apalis_worker_runs_every_task_once_within_its_concurrency_and_hands_back_on_stop() {
    let (_db, owner, pool) = setup().await;
    let seen = Arc::new(Seen::default());
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let (backend, handle) = PgQueue::<Job>::start(pool.clone(), config("apalis-1"), stop.clone());
    let worker = WorkerBuilder::new("apalis-1").backend(backend).data(seen.clone()).concurrency(8).build(job);
    let mut running = Box::pin(worker.run_until({
        let mut stop = stop.clone();
        async move {
            let _ = stop.wait_for(|s| *s).await;
            Ok::<(), std::io::Error>(())
        }
    }));
    // Enqueued while the worker waits: NOTIFY wakes it.
    tokio::time::sleep(Duration::from_millis(200)).await;
    fill(&pool, 200, 5).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        tokio::select! {
            r = &mut running => panic!("worker stopped early: {r:?}"),
            _ = tokio::time::sleep(Duration::from_millis(50)) => {}
        }
        if rows(&owner, "SELECT count(*) FROM task_queue").await == 0 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "queue not drained");
    }
    let ran: Vec<usize> = seen.ran.lock().unwrap().clone();
    let unique: HashSet<usize> = ran.iter().copied().collect();
    assert_eq!((ran.len(), unique.len()), (200, 200), "each task succeeded exactly once");
    assert_eq!(seen.failed.load(Ordering::SeqCst), 29, "every n % 7 == 0 failed once and was retried");
    assert!(seen.peak.load(Ordering::SeqCst) <= 8, "never more than the concurrency at once");

    // Tasks that never finish, then the process stops: released for others, attempts kept.
    let payloads: Vec<Value> = (1000..1020).map(|n| json!({ "n": n })).collect();
    let mut tx = pool.begin().await.unwrap();
    queue::enqueue_many(&mut tx, Q, &payloads, 5).await.unwrap();
    tx.commit().await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        tokio::select! {
            r = &mut running => panic!("worker stopped early: {r:?}"),
            _ = tokio::time::sleep(Duration::from_millis(50)) => {}
        }
        if rows(&owner, "SELECT count(*) FROM task_queue WHERE status = 'running'").await == 8 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "stuck tasks never claimed");
    }
    assert_eq!(rows(&owner, "SELECT count(*) FROM task_queue WHERE status = 'pending'").await, 12, "no claim beyond free slots");
    stop_tx.send(true).unwrap();
    // Like the worker's drain deadline: the stuck handlers are abandoned with the worker.
    let _ = tokio::time::timeout(Duration::from_millis(500), &mut running).await;
    drop(running);
    handle.finish(Duration::from_secs(5)).await;
    assert_eq!(queue::release_worker(&pool, "apalis-1").await.unwrap(), 8);
    assert_eq!(rows(&owner, "SELECT count(*) FROM task_queue WHERE status = 'pending' AND lock_by IS NULL").await, 20);
    assert_eq!(rows(&owner, "SELECT count(*) FROM task_queue WHERE attempts = 1").await, 8, "the abandoned runs count");
}

#[tokio::test]
async fn a_stale_run_cannot_settle_a_newer_claim_by_the_same_worker() {
    let (_db, owner, worker) = setup().await;
    fill(&worker, 1, 5).await;
    queue::register(&worker, Q, "a", Duration::from_secs(5)).await.unwrap();
    let first = queue::claim(&worker, Q, "a", 1).await.unwrap().remove(0).held();
    // "a" is cut off long enough to be declared dead; its task goes back...
    sqlx::query("UPDATE queue_workers SET last_seen = now() - interval '2 minutes' WHERE name = 'a'")
        .execute(&owner)
        .await
        .unwrap();
    assert_eq!(queue::heartbeat(&worker, Q, "b", Duration::from_secs(5), Duration::from_secs(60)).await.unwrap(), 1);
    // ...a dead worker claims nothing until its heartbeat registers it again...
    assert!(queue::claim(&worker, Q, "a", 1).await.unwrap().is_empty());
    queue::register(&worker, Q, "a", Duration::from_secs(5)).await.unwrap();
    // ...then "a" claims the same task again, under the same name.
    let second = queue::claim(&worker, Q, "a", 1).await.unwrap().remove(0).held();
    assert_eq!((second.id, second.attempts), (first.id, first.attempts + 1));
    // The first run finishing late touches nothing: not a completion, not a failure, not a hand-back.
    assert_eq!(queue::complete(&worker, "a", &[first]).await.unwrap(), 0);
    let late = Failure { held: first, error: "late".into(), retry_in: Duration::ZERO };
    assert_eq!(queue::fail(&worker, "a", &[late]).await.unwrap(), 0);
    assert_eq!(queue::unclaim(&worker, "a", &[first]).await.unwrap(), 0);
    let mut tx = worker.begin().await.unwrap();
    assert!(!queue::complete_in(&mut tx, first, "a").await.unwrap());
    tx.commit().await.unwrap();
    assert_eq!(rows(&owner, "SELECT count(*) FROM task_queue WHERE status = 'running' AND lock_by = 'a'").await, 1);
    // The current claim completes.
    assert_eq!(queue::complete(&worker, "a", &[second]).await.unwrap(), 1);
    assert_eq!(rows(&owner, "SELECT count(*) FROM task_queue").await, 0);
}

#[tokio::test]
async fn a_restarted_worker_of_the_same_name_hands_back_what_its_predecessor_held() {
    let (_db, owner, pool) = setup().await;
    fill(&pool, 3, 5).await;
    // The predecessor claimed and died; its name's row is still fresh.
    queue::register(&pool, Q, "fixed-name", Duration::from_secs(5)).await.unwrap();
    assert_eq!(queue::claim(&pool, Q, "fixed-name", 10).await.unwrap().len(), 3);
    let seen = Arc::new(Seen::default());
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let (backend, handle) = PgQueue::<Job>::start(pool.clone(), config("fixed-name"), stop.clone());
    let worker = WorkerBuilder::new("fixed-name").backend(backend).data(seen.clone()).concurrency(8).build(job);
    let running = tokio::spawn(worker.run_until({
        let mut stop = stop.clone();
        async move {
            let _ = stop.wait_for(|s| *s).await;
            Ok::<(), std::io::Error>(())
        }
    }));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while rows(&owner, "SELECT count(*) FROM task_queue").await > 0 {
        assert!(tokio::time::Instant::now() < deadline, "the predecessor's tasks were never run");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut ran = seen.ran.lock().unwrap().clone();
    ran.sort_unstable();
    assert_eq!(ran, vec![0, 1, 2], "each ran once");
    stop_tx.send(true).unwrap();
    let _ = tokio::time::timeout(Duration::from_secs(5), running).await;
    handle.finish(Duration::from_secs(5)).await;
}

/// A worker out of free slots claims again as each of its tasks finishes (the
/// finished task wakes it), not at its next poll: with the poll an hour away,
/// 25 times its concurrency in tasks still drain. And a task enqueued once
/// the queue was drained is woken by its own NOTIFY.
#[tokio::test]
async fn a_saturated_worker_claims_as_slots_free_up_without_its_poll() {
    let (_db, owner, pool) = setup().await;
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let config = QueueConfig { poll_interval: Duration::from_secs(3600), ..config("saturated") };
    let (seen, handle, mut running) = spawn_worker(&pool, config, &stop);
    // None of these fails (a retry would wait out its delay for the poll).
    let ns: Vec<usize> = (1..1000usize).filter(|n| !n.is_multiple_of(7)).take(200).collect();
    let drained = |want: usize| {
        let (owner, seen) = (owner.clone(), seen.clone());
        async move {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
            while rows(&owner, "SELECT count(*) FROM task_queue").await > 0 || seen.ran.lock().unwrap().len() < want {
                assert!(tokio::time::Instant::now() < deadline, "the queue stalled with the poll an hour away");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut tx = pool.begin().await.unwrap();
    let payloads: Vec<Value> = ns.iter().map(|n| json!({ "n": n })).collect();
    queue::enqueue_many(&mut tx, Q, &payloads, 5).await.unwrap();
    tx.commit().await.unwrap();
    tokio::select! {
        r = &mut running => panic!("worker stopped early: {r:?}"),
        _ = drained(200) => {}
    }
    let mut tx = pool.begin().await.unwrap();
    queue::enqueue_many(&mut tx, Q, &[json!({ "n": 1 })], 5).await.unwrap();
    tx.commit().await.unwrap();
    tokio::select! {
        r = &mut running => panic!("worker stopped early: {r:?}"),
        _ = drained(201) => {}
    }
    assert!(seen.peak.load(Ordering::SeqCst) <= 8, "never more than the concurrency at once");
    assert_eq!(seen.failed.load(Ordering::SeqCst), 0);
    stop_tx.send(true).unwrap();
    stop_worker(handle, running).await;
}

/// Each enqueue wakes one worker: a live one that accepts work, picked at
/// random, on its own channel — never one that stopped accepting or missed its
/// heartbeats — and every worker only when no worker qualifies.
#[tokio::test]
async fn an_enqueue_wakes_one_live_accepting_worker() {
    let (_db, owner, pool) = setup().await;
    for w in ["a", "b", "stopped", "silent"] {
        queue::register(&pool, Q, w, Duration::from_secs(5)).await.unwrap();
    }
    queue::stop_accepting(&pool, "stopped").await.unwrap();
    sqlx::query("UPDATE queue_workers SET last_seen = now() - interval '16 seconds' WHERE name = 'silent'")
        .execute(&owner)
        .await
        .unwrap();
    let mut channels = std::collections::HashMap::new();
    for w in ["a", "b", "stopped", "silent"] {
        channels.insert(queue::worker_channel(&pool, w).await.unwrap(), w);
    }
    channels.insert(queue::CHANNEL.to_owned(), "everyone");
    let mut heard = sqlx::postgres::PgListener::connect_with(&owner).await.unwrap();
    heard.listen_all(channels.keys().map(String::as_str)).await.unwrap();
    let mut woken = std::collections::HashMap::new();
    for n in 0..40 {
        fill_one(&pool, n).await;
        let got = tokio::time::timeout(Duration::from_secs(5), heard.recv()).await.expect("a wake-up").unwrap();
        assert_eq!(got.payload(), Q);
        *woken.entry(channels[got.channel()]).or_insert(0) += 1;
    }
    assert!(tokio::time::timeout(Duration::from_millis(200), heard.recv()).await.is_err(), "one wake-up per enqueue");
    assert_eq!(woken.keys().copied().collect::<HashSet<_>>(), HashSet::from(["a", "b"]), "{woken:?}");
    // Nobody left to pick: every worker is woken.
    for w in ["a", "b"] {
        queue::stop_accepting(&pool, w).await.unwrap();
    }
    fill_one(&pool, 40).await;
    let got = tokio::time::timeout(Duration::from_secs(5), heard.recv()).await.expect("a wake-up").unwrap();
    assert_eq!(channels[got.channel()], "everyone");
}

/// A worker whose process died — its connections closed, though its row is
/// still fresh — stops being woken at the next heartbeat of any other worker,
/// instead of after three missed heartbeats of its own; a worker whose
/// listening connection lives stays woken.
#[tokio::test]
async fn a_worker_whose_listening_connection_closed_is_no_longer_woken() {
    let (_db, owner, pool) = setup().await;
    let beat = Duration::from_secs(5);
    let mut listeners = Vec::new(); // held open for the whole test
    for w in ["alive", "killed"] {
        let mut l = sqlx::postgres::PgListener::connect_with(&pool).await.unwrap();
        l.listen(&queue::worker_channel(&pool, w).await.unwrap()).await.unwrap();
        queue::register_listener(&mut l, Q, w, beat, true).await.unwrap();
        listeners.push(l);
    }
    queue::register(&pool, Q, "beating", beat).await.unwrap();
    let accepting = |name: &'static str| {
        let owner = owner.clone();
        async move {
            sqlx::query_scalar::<_, bool>("SELECT accepting FROM queue_workers WHERE name = $1")
                .bind(name)
                .fetch_one(&owner)
                .await
                .unwrap()
        }
    };
    queue::heartbeat(&pool, Q, "beating", beat, Duration::from_secs(60)).await.unwrap();
    assert!(accepting("alive").await && accepting("killed").await, "live listeners keep their workers woken");

    let pid: i32 =
        sqlx::query_scalar("SELECT listener_pid FROM queue_workers WHERE name = 'killed'").fetch_one(&owner).await.unwrap();
    // The process dies: the kernel closes its connections and their backends
    // exit. (Dropping a `PgListener` would only return its connection to the pool.)
    sqlx::query("SELECT pg_terminate_backend($1)").bind(pid).execute(&owner).await.unwrap();
    let gone = async {
        while sqlx::query_scalar::<_, bool>("SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = $1)")
            .bind(pid)
            .fetch_one(&owner)
            .await
            .unwrap()
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), gone).await.expect("the closed connection's backend exits");
    queue::heartbeat(&pool, Q, "beating", beat, Duration::from_secs(60)).await.unwrap();
    assert!(!accepting("killed").await, "a worker with no listening backend is no longer picked");
    assert!(accepting("alive").await);
    assert!(accepting("beating").await, "a worker with no recorded listener keeps the heartbeat rule alone");
    let alive = queue::worker_channel(&pool, "alive").await.unwrap();
    let beating = queue::worker_channel(&pool, "beating").await.unwrap();
    for _ in 0..30 {
        let picked: String = sqlx::query_scalar("SELECT turnstone_wake_channel($1)").bind(Q).fetch_one(&pool).await.unwrap();
        assert!(picked == alive || picked == beating, "picked {picked}");
    }
}

/// A running worker records the backend that carries its LISTEN, records the
/// new one when that connection is lost and re-established, and puts both
/// back (accepting again) when another worker wrongly found them gone — the
/// rule of the test above must never silence a live worker for good.
#[tokio::test]
async fn a_worker_records_its_listening_backend_across_reconnects() {
    let (_db, owner, pool) = setup().await;
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let (_seen, handle, running) = spawn_worker(&pool, config("w"), &stop);
    let live_listener = |not: Option<i32>| {
        let owner = owner.clone();
        async move {
            loop {
                let pid: Option<i32> = sqlx::query_scalar(
                    "SELECT w.listener_pid FROM queue_workers w JOIN pg_stat_activity a ON a.pid = w.listener_pid
                      WHERE w.name = 'w' AND w.accepting",
                )
                .fetch_optional(&owner)
                .await
                .unwrap();
                match pid {
                    Some(p) if Some(p) != not => return p,
                    _ => tokio::time::sleep(Duration::from_millis(20)).await,
                }
            }
        }
    };
    let first = tokio::time::timeout(Duration::from_secs(10), live_listener(None)).await.expect("the listener is recorded");
    sqlx::query("SELECT pg_terminate_backend($1)").bind(first).execute(&owner).await.unwrap();
    // The listener's next receive reconnects and records the new backend.
    let second =
        tokio::time::timeout(Duration::from_secs(10), live_listener(Some(first))).await.expect("the new listener is recorded");
    // Another worker's heartbeat whose snapshot of pg_stat_activity predated a
    // reconnect can find a live listener gone: the worker's own heartbeat
    // (every 500 ms here) puts its row right again.
    sqlx::query("UPDATE queue_workers SET accepting = false, listener_pid = $1 WHERE name = 'w'")
        .bind(first)
        .execute(&owner)
        .await
        .unwrap();
    let back = tokio::time::timeout(Duration::from_secs(10), live_listener(None)).await.expect("the worker accepts again");
    assert_eq!(back, second);
    stop_tx.send(true).unwrap();
    stop_worker(handle, running).await;
}

async fn fill_one(pool: &PgPool, n: usize) {
    let mut tx = pool.begin().await.unwrap();
    queue::enqueue_many(&mut tx, Q, &[json!({ "n": n })], 5).await.unwrap();
    tx.commit().await.unwrap();
}

/// A worker woken alone while it has no free slot passes the wake-up on to
/// every worker: with every enqueue aimed at a saturated worker and every poll
/// an hour away, another worker still runs each task.
#[tokio::test]
async fn a_full_worker_passes_its_wake_ups_on() {
    let (_db, owner, pool) = setup().await;
    let hour = Duration::from_secs(3600);
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let run = |name: &'static str, concurrency: usize| {
        spawn_worker(&pool, QueueConfig { poll_interval: hour, concurrency, ..config(name) }, &stop)
    };
    let until = |sql: &'static str, want: i64| {
        let owner = owner.clone();
        async move {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
            while rows(&owner, sql).await != want {
                assert!(tokio::time::Instant::now() < deadline, "{sql} never reached {want}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    // "full" holds a task that never finishes in its only slot.
    let (_, full_handle, full) = run("full", 1);
    until("SELECT count(*) FROM queue_workers WHERE name = 'full' AND accepting", 1).await;
    fill_one(&pool, 1000).await;
    until("SELECT count(*) FROM task_queue WHERE status = 'running' AND lock_by = 'full'", 1).await;
    // "spare" hears only the wake-ups every worker hears: enqueues never pick it.
    let (spare_seen, spare_handle, spare) = run("spare", 8);
    until("SELECT count(*) FROM queue_workers WHERE name = 'spare' AND accepting", 1).await;
    sqlx::query("UPDATE queue_workers SET accepting = false WHERE name = 'spare'").execute(&owner).await.unwrap();
    // None of these fails (a retry would wait out its delay for a poll).
    for n in (1..1000usize).filter(|n| !n.is_multiple_of(7)).take(20) {
        fill_one(&pool, n).await;
        until("SELECT count(*) FROM task_queue WHERE status = 'pending'", 0).await;
    }
    until("SELECT count(*) FROM task_queue", 1).await;
    assert_eq!(spare_seen.ran.lock().unwrap().len(), 20, "the spare worker ran every task aimed at the full one");
    stop_tx.send(true).unwrap();
    stop_worker(full_handle, full).await;
    stop_worker(spare_handle, spare).await;
}

/// Heartbeats racing each other never deadlock. Two workers that each find the
/// other's listening backend gone (as after a database restart, before their
/// listeners reconnect) both mark the other, each in its own heartbeat; before,
/// each locked its own row and then waited for the other's, and PostgreSQL
/// aborted one of them as a deadlock.
#[tokio::test]
async fn racing_heartbeats_that_each_find_the_other_deaf_never_deadlock() {
    let (_db, owner, pool) = setup().await;
    let beat = Duration::from_secs(5);
    for w in ["a", "b"] {
        queue::register(&pool, Q, w, beat).await.unwrap();
    }
    for round in 0..40 {
        // No backend has pid 0: each worker's recorded listener is gone.
        sqlx::query(
            "UPDATE queue_workers SET accepting = true, listener_pid = 0, listener_started = NULL WHERE name IN ('a', 'b')",
        )
        .execute(&owner)
        .await
        .unwrap();
        let (a, b) = tokio::join!(
            queue::heartbeat(&pool, Q, "a", beat, Duration::from_secs(60)),
            queue::heartbeat(&pool, Q, "b", beat, Duration::from_secs(60))
        );
        if let Err(e) = a.and(b) {
            panic!("round {round}: a heartbeat failed: {e}");
        }
    }
    // Unraced, a heartbeat still marks the other's gone listener.
    sqlx::query("UPDATE queue_workers SET accepting = true WHERE name IN ('a', 'b')").execute(&owner).await.unwrap();
    queue::heartbeat(&pool, Q, "a", beat, Duration::from_secs(60)).await.unwrap();
    let b: bool = sqlx::query_scalar("SELECT accepting FROM queue_workers WHERE name = 'b'").fetch_one(&owner).await.unwrap();
    assert!(!b, "b's listener is gone: a's heartbeat stops waking it");
}

/// A recorded listener whose pid now belongs to another backend (the worker
/// died and the pid was reused) counts as gone: the heartbeat also compares the
/// backend's start time wherever `pg_stat_activity` shows it — here, to the
/// superuser (the tests' other pools act as a role, and are shown no start times).
#[tokio::test]
async fn a_reused_listener_pid_counts_as_gone() {
    let (_db, owner, pool) = setup().await;
    let beat = Duration::from_secs(5);
    for w in ["w", "beater"] {
        queue::register(&pool, Q, w, beat).await.unwrap();
    }
    // A live backend, held open for the whole test.
    let mut live = owner.acquire().await.unwrap();
    let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()").fetch_one(&mut *live).await.unwrap();
    let record = |shift: &'static str| {
        let owner = owner.clone();
        async move {
            sqlx::query(
                "UPDATE queue_workers w SET accepting = true, listener_pid = a.pid,
                        listener_started = a.backend_start - $2::interval
                   FROM pg_stat_activity a WHERE a.pid = $1 AND w.name = 'w'",
            )
            .bind(pid)
            .bind(shift)
            .execute(&owner)
            .await
            .unwrap()
            .rows_affected()
        }
    };
    let accepting = || async {
        sqlx::query_scalar::<_, bool>("SELECT accepting FROM queue_workers WHERE name = 'w'").fetch_one(&owner).await.unwrap()
    };
    assert_eq!(record("0 seconds").await, 1);
    queue::heartbeat(&owner, Q, "beater", beat, Duration::from_secs(60)).await.unwrap();
    assert!(accepting().await, "its own backend, started when recorded: still listening");
    assert_eq!(record("1 hour").await, 1);
    queue::heartbeat(&owner, Q, "beater", beat, Duration::from_secs(60)).await.unwrap();
    assert!(!accepting().await, "the pid is another backend's now: the worker is no longer woken");
    drop(live);
}
