//! `sse_fanout`: N concurrent SSE clients on one API process while turns run.
//! Reports the API's PostgreSQL connections (the backends named after it in
//! `pg_stat_activity`), its RSS per idle SSE connection (VmRSS delta / N), and
//! insert → client delivery latency (client `Utc::now()` − event `ts`, where
//! `ts` is `now()` of the appending transaction, i.e. its start), with each
//! phase's CPU seconds per process (the API's also per 1,000 paced
//! deliveries: what the fan-out and its HTTP writes cost). The N clients
//! read with [`TsReader`], which takes only `ts` out of each stored event's
//! frame: the load generator shares the machine's two CPUs with the system
//! under test, and parsing every frame's JSON (as the tests' reader does) made
//! it a large part of the load it was measuring.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{Value, json};

use crate::Ctx;
use crate::scenarios::turns::{open_sse, run_turn};
use crate::stack::{API_CONNECTIONS, CpuUse, Deployment, Options, connections_named, proc_kb};
use crate::stats::{Samples, r2};

/// A turn per session this often in the paced phase (20 sessions: 20 turns/s).
const PACE: Duration = Duration::from_secs(1);

pub async fn run(ctx: &Ctx) -> Value {
    let n = ctx.pick(1_000usize, 10_000);
    let sessions = 20usize;
    let window = Duration::from_secs(ctx.pick(8, 20));
    let d = Deployment::start(
        ctx,
        Options {
            workers: 1,
            // No cycling during the run; heartbeats as shipped.
            api_env: vec![("TURNSTONE_SSE_MAX_CONNECTION_SECS", "3600".into())],
            ..Options::default()
        },
    )
    .await;
    let api_pid = d.api.pid();
    let mut ids = Vec::new();
    for _ in 0..sessions {
        ids.push(d.session().await);
    }
    // One warm-up turn per session, so lazily-initialised state is not counted as per-connection cost.
    for s in &ids {
        let mut sse = open_sse(&d.client, s).await;
        run_turn(&d.client, &mut sse, s, "warm up").await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss0 = proc_kb(api_pid, "VmRSS");
    let conns0 = connections_named(&d, API_CONNECTIONS).await;

    // Open N clients, 200 at a time; each records delivery latency while `measuring`.
    // Which phase deliveries are counted for: 0 none, 1 paced, 2 saturated.
    let measuring = Arc::new(AtomicU8::new(0));
    let stop = Arc::new(tokio::sync::Notify::new());
    let http = reqwest::Client::builder().pool_max_idle_per_host(0).build().expect("http");
    let client = turnstone_tests::Client { http, ..d.client.clone() };
    let t_open = Instant::now();
    let readers: Vec<_> = futures::stream::iter(0..n)
        .map(|i| {
            let client = client.clone();
            let session = ids[i % sessions].clone();
            async move { TsReader::open(&client, &session).await }
        })
        .buffer_unordered(200)
        .collect()
        .await;
    let open_s = t_open.elapsed().as_secs_f64();
    let mut tasks = Vec::new();
    for mut sse in readers {
        let (measuring, stop) = (measuring.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = [Samples::default(), Samples::default()];
            let stopped = stop.notified();
            tokio::pin!(stopped);
            loop {
                tokio::select! {
                    _ = &mut stopped => return lat,
                    f = sse.next_ts() => {
                        let Some(ts) = f else { return lat };
                        let phase = measuring.load(Ordering::Relaxed);
                        if let Some(ts) = ts && phase > 0 {
                            lat[phase as usize - 1].push((chrono::Utc::now() - ts).num_microseconds().unwrap_or(0) as f64 / 1000.0);
                        }
                    }
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_idle = proc_kb(api_pid, "VmRSS");
    let conns_idle = connections_named(&d, API_CONNECTIONS).await;

    // Turns, twice for the window: first paced (each session starts a turn every
    // `PACE`, a steady offered load), then closed-loop (each session starts its
    // next turn as soon as the last completes: the machine saturated).
    let (mut conns_peak, mut rss_peak) = (conns_idle, rss_idle);
    let mut turns = [0u64; 2];
    let mut cpu = [Value::Null, Value::Null];
    for (phase, pace) in [(1u8, Some(PACE)), (2, None)] {
        let cpu0 = CpuUse::now(&d);
        measuring.store(phase, Ordering::Relaxed);
        let driving = Arc::new(AtomicBool::new(true));
        let mut drivers = Vec::new();
        for (i, s) in ids.clone().into_iter().enumerate() {
            let (client, driving) = (d.client.clone(), driving.clone());
            drivers.push(tokio::spawn(async move {
                let mut sse = open_sse(&client, &s).await;
                let mut done = 0u64;
                // Paced sessions start spread over one period.
                let mut next = tokio::time::Instant::now() + pace.map_or(Duration::ZERO, |p| p * i as u32 / sessions as u32);
                while driving.load(Ordering::Relaxed) {
                    if let Some(p) = pace {
                        tokio::time::sleep_until(next).await;
                        next += p;
                    }
                    run_turn(&client, &mut sse, &s, "hello").await;
                    done += 1;
                }
                done
            }));
        }
        let t0 = Instant::now();
        while t0.elapsed() < window {
            conns_peak = conns_peak.max(connections_named(&d, API_CONNECTIONS).await);
            rss_peak = rss_peak.max(proc_kb(api_pid, "VmRSS"));
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        driving.store(false, Ordering::Relaxed);
        for dr in drivers {
            turns[phase as usize - 1] += dr.await.unwrap_or(0);
        }
        cpu[phase as usize - 1] = CpuUse::now(&d).since(&cpu0);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    measuring.store(0, Ordering::Relaxed);
    let db_total: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()")
        .fetch_one(&d.admin)
        .await
        .unwrap_or(-1);
    stop.notify_waiters();
    let (mut lat, mut lat_saturated) = (Samples::default(), Samples::default());
    for t in tasks {
        if let Ok([paced, saturated]) = t.await {
            lat.0.extend(paced.0);
            lat_saturated.0.extend(saturated.0);
        }
    }
    let per_conn_kb = (rss_idle as f64 - rss0 as f64) / n as f64;
    // What the API spends per delivery, fan-out and HTTP writes included (the paced phase's
    // turns' own requests too, a small share of 20 sessions against N streams).
    let api_cpu_ms_per_1000 = cpu[0]["api"].as_f64().unwrap_or(0.0) * 1e6 / lat.0.len().max(1) as f64;
    let mut targets = serde_json::Map::new();
    super::target(&mut targets, "api db connections constant in N", conns_peak <= conns0.max(16) + 1);
    // Restated from 16 KB when streams moved back onto hyper (docs/decisions/0001-sse-through-hyper.md).
    super::target(&mut targets, "<= 32 KB per idle connection", per_conn_kb <= 32.0);
    // The target is for the steady load; the saturated run shows what queueing for the CPUs adds.
    super::target(&mut targets, "delivery p99 <= 20 ms (paced)", lat.pct(99.0) <= 20.0);
    json!({
        "name": "sse_fanout",
        "clients": n, "sessions": sessions, "window_s": window.as_secs(),
        "open_clients_s": r2(open_s),
        "turns_paced": turns[0], "pace_per_session_ms": PACE.as_millis() as u64,
        "turns_saturated": turns[1],
        "api_db_connections": { "before_clients": conns0, "idle_with_clients": conns_idle, "peak_during_turns": conns_peak, "pool_max": 16 },
        "db_connections_all_processes_end": db_total,
        "api_rss_kb": { "before": rss0, "idle_with_clients": rss_idle, "peak": rss_peak },
        "api_rss_per_idle_connection_kb": r2(per_conn_kb),
        "delivery": lat.summary(),
        "delivery_saturated": lat_saturated.summary(),
        "cpu_s_paced": cpu[0],
        "cpu_s_saturated": cpu[1],
        "api_cpu_ms_per_1000_deliveries_paced": r2(api_cpu_ms_per_1000),
        "definition": "delivery = paced phase (one turn per session per pace); delivery_saturated = closed loop (each session's next turn at once)",
        "targets": targets,
    })
}

/// An SSE client that keeps only what the scenario measures: the `ts` of each
/// stored event (frames with an `id:` line), found by searching the frame's
/// bytes instead of parsing its JSON.
struct TsReader {
    stream: futures::stream::BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    buf: Vec<u8>,
}

impl TsReader {
    /// Opens the session's stream and reads its `connected` frame.
    async fn open(client: &turnstone_tests::Client, session: &str) -> TsReader {
        let resp = client
            .http
            .get(format!("{}/v1/sessions/{session}/sse", client.base))
            .bearer_auth(&client.key)
            .send()
            .await
            .expect("open stream");
        assert_eq!(resp.status(), 200, "stream refused");
        let mut reader = TsReader { stream: resp.bytes_stream().boxed(), buf: Vec::new() };
        let first = reader.frame().await.expect("connected frame");
        assert!(first.starts_with(b"event: connected\n"), "first frame: {}", String::from_utf8_lossy(&first));
        reader
    }

    /// The next frame's bytes (heartbeats included), or `None` at the end of the stream.
    async fn frame(&mut self) -> Option<Vec<u8>> {
        loop {
            if let Some(end) = self.buf.windows(2).position(|w| w == b"\n\n") {
                let frame: Vec<u8> = self.buf.drain(..end + 2).collect();
                return Some(frame);
            }
            let chunk = self.stream.next().await?.ok()?;
            self.buf.extend_from_slice(&chunk);
        }
    }

    /// `Some(Some(ts))` for a stored event, `Some(None)` for any other frame, `None` at the end.
    async fn next_ts(&mut self) -> Option<Option<chrono::DateTime<chrono::Utc>>> {
        let frame = self.frame().await?;
        if !frame.starts_with(b"id: ") {
            return Some(None);
        }
        const KEY: &[u8] = b"\"ts\":\"";
        let at = frame.windows(KEY.len()).position(|w| w == KEY)? + KEY.len();
        let len = frame[at..].iter().position(|&b| b == b'"')?;
        let ts = std::str::from_utf8(&frame[at..at + len]).ok()?;
        Some(chrono::DateTime::parse_from_rfc3339(ts).ok().map(|t| t.to_utc()))
    }
}
