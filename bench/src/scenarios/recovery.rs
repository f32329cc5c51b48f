//! `recovery`: SIGKILL the worker holding a turn mid-model-call (`!sleep 3000`)
//! and time how long until another worker resumes it.
//!
//! Resumed = the turn's `turns.attempt` becomes 2 (the new lease is taken in
//! `turns::start`, the first thing the next handler does). `reason.started` is
//! keyed once per iteration, so it is not re-emitted and cannot mark resumption.
//! Also reported: kill → `turn.completed` row state (includes the 3 s model call
//! repeated by the new worker). Workers run with heartbeat 0.5 s and reclaim 2 s.
//!
//! Also: pickups right after each kill. For 1.5 s after it, a message every
//! 100 ms on an idle session of its own; pickup = `turns.started_at -
//! turns.created_at` (DB clock). A wake-up sent to the killed worker's channel
//! is heard by nobody, so its turn waits for the other worker's poll (250 ms);
//! `pickups_after_kill_over_50ms` counts those turns.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::Ctx;
use crate::stack::{Deployment, Options, turn_of};
use crate::stats::Samples;

const RECLAIM_SECS: f64 = 2.0;
const HEARTBEAT_SECS: f64 = 0.5;
/// Messages posted after each kill, one every [`PROBE_EVERY`].
const PROBES: usize = 15;
const PROBE_EVERY: Duration = Duration::from_millis(100);

pub async fn run(ctx: &Ctx) -> Value {
    let reps = ctx.pick(3, 8);
    let mut d = Deployment::start(
        ctx,
        Options {
            workers: 2,
            worker_env: vec![
                ("TURNSTONE_WORKER_RECLAIM_SECS", RECLAIM_SECS.to_string()),
                ("TURNSTONE_WORKER_HEARTBEAT_SECS", HEARTBEAT_SECS.to_string()),
            ],
            ..Options::default()
        },
    )
    .await;
    let (mut resume, mut complete, mut probed) = (Samples::default(), Samples::default(), Samples::default());
    for _ in 0..reps {
        let session = d.session().await;
        let mut spare = Vec::with_capacity(PROBES);
        for _ in 0..PROBES {
            spare.push(d.session().await);
        }
        let turn = turn_of(&d.client.say(&session, "!sleep 3000").await);
        // Wait until a worker holds it, then let the model call get going.
        let deadline = Instant::now() + Duration::from_secs(20);
        let holder: String = loop {
            let row: Option<(i32, Option<String>)> = sqlx::query_as(
                "SELECT t.attempt, (SELECT lock_by FROM task_queue WHERE queue = $2 AND status = 'running' AND payload->>'turn_id' = t.id::text)
                   FROM turns t WHERE t.id = $1 AND t.status = 'running'",
            )
            .bind(turn)
            .bind(turnstone_core::turns::QUEUE)
            .fetch_optional(&d.admin)
            .await
            .expect("poll");
            if let Some((1, Some(lock_by))) = row {
                break lock_by;
            }
            assert!(Instant::now() < deadline, "turn never started");
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        tokio::time::sleep(Duration::from_millis(500)).await;
        let idx = d.worker_names.iter().position(|w| holder.starts_with(w.as_str())).expect("holder is one of ours");
        let mut victim = d.workers.remove(idx);
        d.worker_names.remove(idx);
        victim.signal("KILL");
        let t_kill = Instant::now();
        let _ = victim.wait().await;
        let prober = {
            let client = d.client.clone();
            tokio::spawn(async move {
                let mut turns = Vec::with_capacity(spare.len());
                for s in spare {
                    turns.push(turn_of(&client.say(&s, "hello").await));
                    tokio::time::sleep(PROBE_EVERY).await;
                }
                turns
            })
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut resumed = None;
        loop {
            let (attempt, status): (i32, String) = sqlx::query_as("SELECT attempt, status FROM turns WHERE id = $1")
                .bind(turn)
                .fetch_one(&d.admin)
                .await
                .expect("poll");
            if attempt >= 2 && resumed.is_none() {
                resumed = Some(t_kill.elapsed().as_secs_f64() * 1000.0);
            }
            if status == "completed" {
                complete.push(t_kill.elapsed().as_secs_f64() * 1000.0);
                break;
            }
            assert!(status == "running" || status == "queued", "turn ended {status}");
            assert!(Instant::now() < deadline, "turn not completed 60 s after the kill");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        resume.push(resumed.expect("resumed before completing"));
        let probes = prober.await.expect("the probes were posted");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let picked: Vec<f64> = sqlx::query_scalar(
                "SELECT (extract(epoch FROM started_at - created_at) * 1000)::float8 FROM turns
                  WHERE id = ANY($1) AND started_at IS NOT NULL",
            )
            .bind(&probes)
            .fetch_all(&d.admin)
            .await
            .expect("probe pickups");
            if picked.len() == probes.len() {
                picked.into_iter().for_each(|ms| probed.push(ms));
                break;
            }
            assert!(Instant::now() < deadline, "probe turns not all started 20 s after the kill");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Keep two workers for the next round.
        d.add_worker().await;
    }
    let budget_ms = (RECLAIM_SECS + 1.0) * 1000.0;
    let mut targets = serde_json::Map::new();
    super::target(&mut targets, "max resume <= reclaim + 1 s", resume.max() <= budget_ms);
    json!({
        "name": "recovery",
        "kills": reps,
        "reclaim_secs_configured": RECLAIM_SECS,
        "heartbeat_secs_configured": HEARTBEAT_SECS,
        "kill_to_resume": resume.summary(),
        "kill_to_completed": complete.summary(),
        "pickup_after_kill": probed.summary(),
        "pickups_after_kill_over_50ms": probed.0.iter().filter(|ms| **ms > 50.0).count(),
        "definition": "resume = turns.attempt becomes 2 (new lease in turns::start); completed includes the repeated 3 s model call",
        "targets": targets,
    })
}
