//! One LISTEN connection per API process, fanned out in-process to SSE streams.
//!
//! The listener receives `turnstone_events` notifications and
//! `turnstone_deltas` payloads. For every session with at least one open
//! stream there is one *reader*: it renders each batch of new events to SSE
//! frames once and broadcasts it to all of that session's streams. A batch
//! comes from the notification itself when the events fit in its payload and
//! follow the reader's cursor without a gap; otherwise (a payload with ids
//! only, a gap, the fallback timer) the reader reads the log once. Streams keep their
//! own cursor and re-read the log themselves only when they see a gap (they
//! joined late or lagged). After the LISTEN connection drops and comes back,
//! every reader re-reads, so a notification missed during the gap loses nothing.
//!
//! The same connection hears `turnstone_auth` and voids the process's cache of
//! key checks ([`crate::auth::AuthCache`]); while it is down, that cache is not used.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use turnstone_core::ids::{OrgId, SessionId};

use rand::Rng;
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::{Notify, broadcast};
use turnstone_core::events::{self, DELTAS_CHANNEL, Delta, EVENTS_CHANNEL, EventFilter};
use turnstone_core::orgs::AUTH_CHANNEL;
use turnstone_core::{db, sessions};

/// Events read per query by a reader.
pub const BATCH: u32 = 500;

/// A stored event, rendered once for every stream of its session.
#[derive(Debug, Clone)]
pub struct Rendered {
    pub sequence: i64,
    /// The whole SSE frame (`id:`, `event:`, `data:`), handed to every stream as is.
    pub wire: bytes::Bytes,
}

/// What a stream is told.
#[derive(Debug, Clone)]
pub enum Signal {
    /// Newly committed events, in sequence order.
    Events(Arc<Vec<Rendered>>),
    /// A live token delta (never stored).
    Delta(Arc<Delta>),
    /// The reader (re)started at the log's current end, or the LISTEN
    /// connection came back: anything committed before may never have been
    /// broadcast, so each stream reads the log from its own cursor. Closes the
    /// race between a stream's first read and its session reader's start, and
    /// the gap a stream's failed catch-up leaves during a database outage.
    Resync,
}

struct Feed {
    tx: broadcast::Sender<Signal>,
    inbox: Arc<Inbox>,
    reader: tokio::task::AbortHandle,
}

/// Batches of events carried in notifications are kept until the reader takes them.
const INBOX_BATCHES: usize = 64;

/// What the listener hands a session's reader.
#[derive(Default)]
struct Inbox {
    /// Event batches from notification payloads, in commit order.
    pushed: Mutex<Vec<Vec<events::Event>>>,
    /// Something committed that no pushed batch carries: read the log.
    reread: AtomicBool,
    nudge: Notify,
}

impl Inbox {
    fn push(&self, batch: Option<Vec<events::Event>>) {
        match batch {
            Some(batch) => {
                let mut pushed = self.pushed.lock().expect("inbox lock");
                if pushed.len() < INBOX_BATCHES {
                    pushed.push(batch);
                } else {
                    self.reread.store(true, Ordering::SeqCst);
                }
            }
            None => self.reread.store(true, Ordering::SeqCst),
        }
        self.nudge.notify_one();
    }
}

/// Per-session feeds; a feed (and its reader) goes away with its last stream.
pub struct Hub {
    pool: PgPool,
    /// The LISTEN connection's own (`db::listen_pool`): a session a transaction pooler cannot give.
    listen_pool: PgPool,
    fallback_poll: Duration,
    /// Told when key checks are void (`turnstone_auth`) and whether LISTEN is up.
    auth_cache: Arc<crate::auth::AuthCache>,
    sessions: Mutex<HashMap<SessionId, Feed>>,
}

/// A stream's subscription; unregisters the session's feed when the last one drops.
pub struct Subscription {
    hub: Arc<Hub>,
    session_id: SessionId,
    /// Always `Some` until dropped (taken under the hub lock, see `Drop`).
    rx: Option<broadcast::Receiver<Signal>>,
}

impl Subscription {
    /// The next signal of this session's feed.
    pub async fn recv(&mut self) -> Result<Signal, broadcast::error::RecvError> {
        match self.rx.as_mut() {
            Some(rx) => rx.recv().await,
            None => Err(broadcast::error::RecvError::Closed),
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut map = self.hub.sessions.lock().expect("hub lock");
        // Drop the receiver under the lock, so two last streams dropping at once
        // cannot both see the other one and leave the feed (and its reader) behind.
        drop(self.rx.take());
        if let Some(feed) = map.get(&self.session_id)
            && feed.tx.receiver_count() == 0
        {
            feed.reader.abort();
            map.remove(&self.session_id);
        }
    }
}

impl Hub {
    pub fn new(pool: PgPool, listen_pool: PgPool, fallback_poll: Duration, auth_cache: Arc<crate::auth::AuthCache>) -> Hub {
        Hub { pool, listen_pool, fallback_poll, auth_cache, sessions: Mutex::default() }
    }

    pub fn subscribe(self: &Arc<Self>, org_id: OrgId, session_id: SessionId) -> Subscription {
        let mut map = self.sessions.lock().expect("hub lock");
        if let Some(feed) = map.get(&session_id) {
            return Subscription { hub: self.clone(), session_id, rx: Some(feed.tx.subscribe()) };
        }
        // The first stream's receiver exists before the reader runs, so it sees the reader's `Resync`.
        let (tx, rx) = broadcast::channel(256);
        let inbox = Arc::new(Inbox::default());
        let reader =
            tokio::spawn(read_session(self.pool.clone(), org_id, session_id, tx.clone(), inbox.clone(), self.fallback_poll));
        map.insert(session_id, Feed { tx, inbox, reader: reader.abort_handle() });
        Subscription { hub: self.clone(), session_id, rx: Some(rx) }
    }

    /// After the LISTEN connection (re)connects: readers re-read, and streams
    /// whose own catch-up failed while the database was away read the log again.
    fn resync_all(&self) {
        for feed in self.sessions.lock().expect("hub lock").values() {
            feed.inbox.push(None);
            let _ = feed.tx.send(Signal::Resync);
        }
    }

    /// Runs the LISTEN loop until `shutdown` resolves, reconnecting with backoff.
    pub async fn run(self: Arc<Self>, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut backoff = Duration::from_millis(100);
        loop {
            let listener = tokio::select! {
                _ = &mut shutdown => return,
                l = connect(&self.listen_pool) => l,
            };
            let mut listener = match listener {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(error = %e, "LISTEN connection failed; retrying");
                    tokio::select! {
                        _ = &mut shutdown => return,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
            };
            backoff = Duration::from_millis(100);
            // Anything committed while we were not listening is found by re-reading,
            // and a key revoked meanwhile by looking every key up again.
            self.auth_cache.set_listening(true);
            self.resync_all();
            loop {
                let next = tokio::select! {
                    _ = &mut shutdown => return,
                    n = listener.try_recv() => n,
                };
                match next {
                    Ok(Some(n)) => self.dispatch(n.channel(), n.payload()),
                    Ok(None) => {
                        tracing::warn!("LISTEN connection lost; reconnecting");
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "LISTEN connection error; reconnecting");
                        break;
                    }
                }
            }
            // Invalidations cannot be heard until LISTEN is back.
            self.auth_cache.set_listening(false);
        }
    }

    fn dispatch(&self, channel: &str, payload: &str) {
        if channel == AUTH_CHANNEL {
            self.auth_cache.invalidate();
        } else if channel == EVENTS_CHANNEL {
            // Events are taken only from payloads signed with this deployment's key.
            match events::parse_appended(payload) {
                Some(a) => {
                    if let Some(feed) = self.sessions.lock().expect("hub lock").get(&a.session_id) {
                        feed.inbox.push(a.events);
                    }
                }
                None => tracing::warn!("ignoring malformed event notification"),
            }
        } else if channel == DELTAS_CHANNEL {
            // Only deltas signed with this deployment's key reach viewers.
            match events::parse_delta(payload) {
                Some(d) => {
                    if let Some(feed) = self.sessions.lock().expect("hub lock").get(&d.session_id) {
                        let _ = feed.tx.send(Signal::Delta(Arc::new(d)));
                    }
                }
                None => tracing::debug!("ignoring an unsigned or malformed delta notification"),
            }
        }
    }
}

async fn connect(pool: &PgPool) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen_all([EVENTS_CHANNEL, DELTAS_CHANNEL, AUTH_CHANNEL]).await?;
    Ok(listener)
}

/// Reads events of `session_id` after `cursor`, up to one batch.
pub async fn read_after(
    pool: &PgPool,
    org_id: OrgId,
    session_id: SessionId,
    cursor: i64,
) -> turnstone_core::Result<Vec<Rendered>> {
    let mut tx = db::begin_org(pool, org_id).await?;
    let filter = EventFilter { after_sequence: cursor, types: Vec::new(), limit: BATCH };
    let batch = events::list(&mut tx, org_id, session_id, &filter).await?;
    Ok(batch.into_iter().map(render).collect())
}

fn render(e: events::Event) -> Rendered {
    use poem_openapi::types::ToJSON;
    let sequence = e.sequence;
    let event = crate::wire::Event::from(e);
    Rendered { sequence, wire: crate::sse::wire_bytes(&event.kind, Some(&event.id), &event.to_json_string()) }
}

/// One session's reader: takes the batches notifications carried (or, for a
/// notification without events, a gap or its fallback timer, reads the log),
/// and broadcasts them. It starts at the session's current end: each stream
/// catches up on older events itself.
async fn read_session(
    pool: PgPool,
    org_id: OrgId,
    session_id: SessionId,
    tx: broadcast::Sender<Signal>,
    inbox: Arc<Inbox>,
    poll: Duration,
) {
    let mut cursor: Option<i64> = None;
    // Test hook, inert unless set: starts the reader late, to prove streams survive it.
    if let Some(ms) = std::env::var("TURNSTONE_TEST_READER_DELAY_MS").ok().and_then(|v| v.parse::<u64>().ok()) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    loop {
        if cursor.is_none() {
            let start = async {
                let mut t = db::begin_org(&pool, org_id).await?;
                Ok::<_, turnstone_core::Error>(sessions::get_session(&mut t, org_id, session_id).await?.last_sequence)
            };
            cursor = start.await.ok();
            if cursor.is_some() {
                let _ = tx.send(Signal::Resync);
            }
        }
        if let Some(mut at) = cursor {
            let pushed = std::mem::take(&mut *inbox.pushed.lock().expect("inbox lock"));
            // Woken by the timer (nothing pushed) or told to: the log is the truth.
            let mut reread = inbox.reread.swap(false, Ordering::SeqCst) || pushed.is_empty();
            for batch in pushed {
                let (Some(first), Some(last)) = (batch.first().map(|e| e.sequence), batch.last().map(|e| e.sequence)) else {
                    continue;
                };
                if last <= at {
                    continue; // already read from the log
                }
                if first != at + 1 {
                    reread = true; // a gap: something was not carried
                    break;
                }
                at = last;
                let _ = tx.send(Signal::Events(Arc::new(batch.into_iter().map(render).collect())));
            }
            while reread {
                match read_after(&pool, org_id, session_id, at).await {
                    Ok(batch) if batch.is_empty() => break,
                    Ok(batch) => {
                        reread = batch.len() == BATCH as usize;
                        at = batch.last().map_or(at, |r| r.sequence);
                        let _ = tx.send(Signal::Events(Arc::new(batch)));
                    }
                    // The database is away: the next wake-up or poll retries.
                    Err(_) => break,
                }
            }
            cursor = Some(at);
        }
        let wait = poll.mul_f64(rand::rng().random_range(0.9..1.1));
        tokio::select! {
            _ = inbox.nudge.notified() => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
}
