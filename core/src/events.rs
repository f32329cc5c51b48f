//! The append-only event log, and the NOTIFY wake-ups that announce it.
//!
//! Appending allocates sequence numbers from `session_sequences.last_sequence`
//! under that row's lock, inserts the rows and calls `pg_notify` — one statement, in
//! the caller's transaction, so the wake-up is delivered exactly when (and only
//! if) the events commit. The payload carries the events themselves when they
//! fit under PostgreSQL's payload limit, and only the session and last sequence
//! otherwise; listeners that miss a sequence re-read the log.
//! Token deltas are never stored: they ride in a NOTIFY payload of their own.

use crate::error::{Error, Result};
use crate::ids::{EventId, OrgId, SessionId, TurnId, TypedId};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::{PgConnection, PgPool};

/// Channel announcing committed events: payload `{"s": session uuid, "q": last sequence}`,
/// or — when the process signs notifications ([`sign_notifications`]) and the events fit —
/// the hex HMAC-SHA256 of `{"s", "q", "e": [events]}` followed by that JSON.
pub const EVENTS_CHANNEL: &str = "turnstone_events";
/// Channel carrying ephemeral token deltas: payload is a [`Delta`], signed like
/// event payloads (see [`sign_notifications`]).
pub const DELTAS_CHANNEL: &str = "turnstone_deltas";
/// PostgreSQL rejects NOTIFY payloads of 8000 bytes or more; stay well below.
pub const MAX_NOTIFY_BYTES: usize = 7900;

/// Hex characters of the HMAC-SHA256 that prefixes a payload carrying events.
const MAC_HEX: usize = 64;

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// The HMAC-SHA256 key of event and delta payloads (docs/decisions/0014).
///
/// Rust signs and verifies with the `hmac` crate. The padded keys exist for the
/// appending statement alone: PostgreSQL has no HMAC function, so the statement
/// computes `sha256(opad || sha256(ipad || json))` (RFC 2104) with its built-in
/// `sha256()` and these two bound as parameters.
struct NotifyKey {
    /// Keyed once; each payload's MAC starts from a clone.
    mac: HmacSha256,
    /// The key, zero-padded to SHA-256's 64-byte block, XOR `0x36`: `$4` of [`append_ctes`].
    ipad: [u8; 64],
    /// The same XOR `0x5c`: `$5` of [`append_ctes`].
    opad: [u8; 64],
}

impl NotifyKey {
    /// `key` is at most one SHA-256 block (64 bytes), so RFC 2104 uses it as it is.
    fn new(key: &[u8]) -> NotifyKey {
        use hmac::KeyInit;
        assert!(key.len() <= 64, "a notify key longer than a SHA-256 block would be hashed first");
        let (mut ipad, mut opad) = ([0x36u8; 64], [0x5cu8; 64]);
        for (i, b) in key.iter().enumerate() {
            ipad[i] ^= b;
            opad[i] ^= b;
        }
        NotifyKey { mac: HmacSha256::new_from_slice(key).expect("HMAC takes a key of any length"), ipad, opad }
    }

    /// `json` prefixed with its MAC in lowercase hex, as the appending statement writes it.
    fn sign(&self, json: &str) -> String {
        use hmac::Mac;
        let mac = self.mac.clone().chain_update(json.as_bytes()).finalize().into_bytes();
        hex::encode(mac) + json
    }

    /// Whether `mac_hex` is the MAC of `json`, compared in constant time.
    fn verify(&self, mac_hex: &str, json: &str) -> bool {
        use hmac::Mac;
        let mut mac = [0u8; MAC_HEX / 2];
        hex::decode_to_slice(mac_hex, &mut mac).is_ok()
            && self.mac.clone().chain_update(json.as_bytes()).verify_slice(&mac).is_ok()
    }
}

static NOTIFY_KEY: std::sync::OnceLock<NotifyKey> = std::sync::OnceLock::new();

/// Lets this process put events in its notifications, signed with `key`
/// ([`crate::crypto::KeyRing::notify_key`]), and trust signed ones. Any role
/// connected to the database can NOTIFY on any channel: without a valid
/// signature a payload's events are ignored and the log is read instead.
/// Until this is called, payloads carry ids only. The first key set stays.
pub fn sign_notifications(key: [u8; 32]) {
    let _ = NOTIFY_KEY.set(NotifyKey::new(&key));
}

/// A payload's JSON, and whether its signature (a hex HMAC prefix) verifies
/// with `key`. An unsigned payload is JSON only: not trusted.
fn unwrap_payload<'p>(key: Option<&NotifyKey>, payload: &'p str) -> (&'p str, bool) {
    if payload.len() <= MAC_HEX || payload.starts_with('{') {
        return (payload, false);
    }
    let Some((mac, json)) = payload.split_at_checked(MAC_HEX) else { return (payload, false) };
    (json, key.is_some_and(|key| key.verify(mac, json)))
}

/// `json` prefixed with its signature, when this process signs notifications.
fn signed(json: String) -> String {
    match NOTIFY_KEY.get() {
        Some(key) => key.sign(&json),
        None => json,
    }
}

/// Parses an events-channel payload. Events are kept only when the payload is
/// signed with this process's key; anything else counts as ids only.
pub fn parse_appended(payload: &str) -> Option<Appended> {
    let (json, trusted) = unwrap_payload(NOTIFY_KEY.get(), payload);
    let mut appended: Appended = serde_json::from_str(json).ok()?;
    if !trusted {
        appended.events = None;
    }
    Some(appended)
}

/// Parses a deltas-channel payload; `None` unless it is signed with this
/// process's key (a delta is shown to viewers as the model's live output).
pub fn parse_delta(payload: &str) -> Option<Delta> {
    match unwrap_payload(NOTIFY_KEY.get(), payload) {
        (json, true) => serde_json::from_str(json).ok(),
        _ => None,
    }
}

/// Event types, dot-named. Stable: clients switch on them.
pub mod types {
    pub const INPUT_MESSAGE: &str = "input.message";
    pub const SESSION_ACTIVATED: &str = "session.activated";
    pub const SESSION_IDLED: &str = "session.idled";
    pub const TURN_STARTED: &str = "turn.started";
    pub const REASON_STARTED: &str = "reason.started";
    pub const OUTPUT_MESSAGE_DELTA: &str = "output.message.delta";
    pub const OUTPUT_MESSAGE_COMPLETED: &str = "output.message.completed";
    pub const TOOL_STARTED: &str = "tool.started";
    pub const TOOL_COMPLETED: &str = "tool.completed";
    pub const TURN_COMPLETED: &str = "turn.completed";
    pub const TURN_FAILED: &str = "turn.failed";
    pub const TURN_CANCELLED: &str = "turn.cancelled";
    /// The model called client tools: the client runs them and posts their results.
    pub const TOOL_CALL_REQUESTED: &str = "tool.call_requested";
    /// A call waits for a person's decision.
    pub const TOOL_APPROVAL_REQUESTED: &str = "tool.approval_requested";
    pub const TOOL_APPROVAL_RESOLVED: &str = "tool.approval_resolved";
    /// The turn holds nothing until what it waits for is resolved.
    pub const TURN_WAITING: &str = "turn.waiting";
    /// The last pending call was resolved: the turn is queued to go on.
    pub const TURN_RESUMED: &str = "turn.resumed";
    pub use crate::storage::files::types::{FILE_DELETED, FILE_MOVED, FILE_WRITTEN};
    pub use crate::storage::kv::types::{KV_DELETED, KV_SET};

    /// Every persisted type (deltas are not persisted), for filter validation.
    pub const PERSISTED: &[&str] = &[
        INPUT_MESSAGE,
        SESSION_ACTIVATED,
        SESSION_IDLED,
        TURN_STARTED,
        REASON_STARTED,
        OUTPUT_MESSAGE_COMPLETED,
        TOOL_STARTED,
        TOOL_COMPLETED,
        TURN_COMPLETED,
        TURN_FAILED,
        TURN_CANCELLED,
        TOOL_CALL_REQUESTED,
        TOOL_APPROVAL_REQUESTED,
        TOOL_APPROVAL_RESOLVED,
        TURN_WAITING,
        TURN_RESUMED,
        FILE_WRITTEN,
        FILE_DELETED,
        FILE_MOVED,
        KV_SET,
        KV_DELETED,
    ];
}

/// One stored event.
#[derive(Debug, Clone, sqlx::FromRow, Serialize, Deserialize)]
pub struct Event {
    pub id: EventId,
    pub session_id: SessionId,
    pub sequence: i64,
    #[sqlx(rename = "type")]
    #[serde(alias = "type")]
    pub kind: String,
    pub turn_id: Option<TurnId>,
    pub data: Value,
    pub ts: DateTime<Utc>,
}

/// An event to append. `step_key`, when set, must be unique within the turn:
/// it is how a step's result is recorded at most once.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub kind: &'static str,
    pub data: Value,
    pub step_key: Option<String>,
    /// A session-level event (`session.idled`): stored without the turn id
    /// it is appended with.
    pub detached: bool,
}

impl NewEvent {
    pub fn new(kind: &'static str, data: Value) -> Self {
        Self { kind, data, step_key: None, detached: false }
    }
    pub fn step(kind: &'static str, step_key: impl Into<String>, data: Value) -> Self {
        Self { kind, data, step_key: Some(step_key.into()), detached: false }
    }
    /// An event of the session, not of the turn it is appended with.
    pub fn of_session(kind: &'static str, data: Value) -> Self {
        Self { kind, data, step_key: None, detached: true }
    }
}

/// The NOTIFY payload for committed events.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Appended {
    #[serde(rename = "s")]
    pub session_id: SessionId,
    #[serde(rename = "q")]
    pub last_sequence: i64,
    /// The committed events in sequence order, when they fit in the payload.
    #[serde(rename = "e", default, skip_serializing_if = "Option::is_none")]
    pub events: Option<Vec<Event>>,
}

/// An ephemeral token delta, carried in a NOTIFY payload.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Delta {
    #[serde(rename = "s")]
    pub session_id: SessionId,
    #[serde(rename = "t")]
    pub turn_id: TurnId,
    #[serde(rename = "i")]
    pub iteration: i32,
    #[serde(rename = "d")]
    pub text: String,
    pub ts: DateTime<Utc>,
}

/// Appends events to a session's log in the caller's transaction and announces them.
/// The session must belong to `org_id`; the caller should already hold its row
/// lock if it needs ordering with other writes (the UPDATE takes it anyway).
pub async fn append(
    conn: &mut PgConnection,
    org_id: OrgId,
    session_id: SessionId,
    turn_id: Option<TurnId>,
    events: Vec<NewEvent>,
) -> Result<Vec<Event>> {
    append_many(conn, org_id, vec![SessionEvents { session_id, turn_id, events }]).await
}

/// Events for one session's log, appended by [`append_many`].
#[derive(Debug, Clone)]
pub struct SessionEvents {
    pub session_id: SessionId,
    /// The turn they belong to (events marked [`NewEvent::of_session`] are stored without it).
    pub turn_id: Option<TurnId>,
    pub events: Vec<NewEvent>,
}

/// Appends to several sessions' logs in one statement (a batch of turn starts
/// needs one round trip, not one per turn): each session gets consecutive
/// sequence numbers in the order given and one notification of its own.
/// Sessions may repeat; their events then follow one another in input order.
/// Returns the stored events ordered by session, then sequence. Fails with
/// `NotFound("session")` (and the caller's transaction must roll back) when a
/// session is not the org's. Callers that append to several sessions lock them
/// in id order first, as every multi-session writer does.
pub async fn append_many(conn: &mut PgConnection, org_id: OrgId, batches: Vec<SessionEvents>) -> Result<Vec<Event>> {
    let n: usize = batches.iter().map(|b| b.events.len()).sum();
    if n == 0 {
        return Ok(Vec::new());
    }
    let mut rows = EventArrays::default();
    for b in batches {
        for e in b.events {
            rows.push(b.session_id, b.turn_id, e);
        }
    }
    static APPEND: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        format!(
            "WITH new_events AS (
                SELECT * FROM unnest($6::uuid[], $7::uuid[], $8::text[], $9::jsonb[], $10::text[], $11::uuid[])
                       WITH ORDINALITY AS u(session_id, id, type, data, step_key, turn_id, ord)
             ), {}
             SELECT ins.* FROM ins, wake ORDER BY session_id, sequence",
            append_ctes("$6")
        )
    });
    let stored: Vec<Event> =
        rows.bind(bind_append(sqlx::query_as(sqlx::AssertSqlSafe(APPEND.as_str())), org_id)).fetch_all(conn).await?;
    if stored.len() != n {
        return Err(Error::NotFound("session"));
    }
    Ok(stored)
}

/// New events as the arrays a batched statement unnests, in this order:
/// `(session_id, id, type, data, step_key, turn_id)`. Each gets a fresh id;
/// an event of the session ([`NewEvent::of_session`]) gets no turn.
#[derive(Default)]
pub(crate) struct EventArrays {
    sessions: Vec<SessionId>,
    ids: Vec<EventId>,
    kinds: Vec<&'static str>,
    data: Vec<Value>,
    step_keys: Vec<Option<String>>,
    turn_ids: Vec<Option<TurnId>>,
}

/// The parameters [`EventArrays::bind`] binds, for a routine's signature ([`crate::db::Routine`]).
pub(crate) const EVENT_ARRAY_PARAMS: [(&str, &str); 6] = [
    ("event_sessions", "uuid[]"),
    ("event_ids", "uuid[]"),
    ("event_types", "text[]"),
    ("event_data", "jsonb[]"),
    ("event_step_keys", "text[]"),
    ("event_turns", "uuid[]"),
];

impl EventArrays {
    /// Adds `e`, appended to `session_id`'s log with `turn_id`.
    pub(crate) fn push(&mut self, session_id: SessionId, turn_id: Option<TurnId>, e: NewEvent) {
        self.sessions.push(session_id);
        self.ids.push(EventId::new());
        self.kinds.push(e.kind);
        self.data.push(e.data);
        self.step_keys.push(e.step_key);
        self.turn_ids.push(if e.detached { None } else { turn_id });
    }

    /// Binds the six arrays, in the order above, as the statement's next parameters.
    pub(crate) fn bind<'q, O>(
        &'q self,
        q: sqlx::query::QueryAs<'q, sqlx::Postgres, O, sqlx::postgres::PgArguments>,
    ) -> sqlx::query::QueryAs<'q, sqlx::Postgres, O, sqlx::postgres::PgArguments> {
        q.bind(&self.sessions).bind(&self.ids).bind(&self.kinds).bind(&self.data).bind(&self.step_keys).bind(&self.turn_ids)
    }
}

/// The common table expressions of an append, for statements that append
/// events alongside other writes (one round trip for both). They read a CTE the
/// statement defines before them, `new_events(session_id, id, type, data,
/// step_key, turn_id, ord)` — the events in order (`ord` ascending; gaps are
/// fine) — and define `ins` (the stored rows, as [`Event`]s) and `wake` (their
/// notifications), which the statement must read (`FROM ins, wake`) for the
/// notifications to be sent. They use `$1` (the org) and `$2`–`$5`, bound by
/// [`bind_append`]; the statement's own parameters start at `$6`. `sessions`
/// is an SQL expression of type `uuid[]` holding the sessions appended to: it
/// keeps the sequence update on its primary key whatever the planner guesses of
/// `new_events` (under a generic plan, too).
///
/// Sequences come from `session_sequences` (whose `UPDATE` takes the row's
/// lock and, under a concurrent writer, re-reads its latest value); each
/// session gets one notification, carrying its events when they fit.
///
/// No CTE is joined to another: under a generic plan PostgreSQL guesses one
/// row for every CTE, and a join of two becomes a nested loop that rescans
/// one of them per row of the other — quadratic in a batch (a 128-turn start
/// spent most of its time there). Each session's count and first sequence are
/// looked up by position in one-row arrays instead (`array_position`, a scan
/// in C; `counts` is materialized, or it would be aggregated again for each
/// row it is joined to), and each session's notification is grouped from
/// `ins` alone.
pub(crate) fn append_ctes(sessions: &str) -> String {
    format!(
        "counts AS MATERIALIZED (
            SELECT array_agg(session_id) AS ids, array_agg(n) AS ns
              FROM (SELECT session_id, count(*) AS n FROM new_events GROUP BY session_id) c
         ), seq AS (
            UPDATE session_sequences s SET last_sequence = s.last_sequence + c.ns[array_position(c.ids, s.session_id)]
              FROM counts c
             WHERE s.org_id = $1 AND s.session_id = ANY(c.ids) AND s.session_id = ANY({sessions})
            RETURNING s.session_id, s.last_sequence - c.ns[array_position(c.ids, s.session_id)] AS before
         ), base AS (
            SELECT array_agg(session_id) AS ids, array_agg(before) AS befores FROM seq
         ), ins AS (
            INSERT INTO events (id, org_id, session_id, sequence, type, turn_id, step_key, data)
            SELECT u.id, $1, u.session_id,
                   b.befores[array_position(b.ids, u.session_id)] + row_number() OVER (PARTITION BY u.session_id ORDER BY u.ord),
                   u.type, u.turn_id, u.step_key, u.data
              FROM new_events u, base b WHERE u.session_id = ANY(b.ids)
            RETURNING id, session_id, sequence, type, turn_id, data, ts
         ), payload AS MATERIALIZED (
            SELECT json_build_object('s', session_id, 'q', max(sequence))::text AS ids,
                   json_build_object('s', session_id, 'q', max(sequence), 'e', json_agg(ins ORDER BY sequence))::text AS whole
              FROM ins GROUP BY session_id
         ), wake AS (
            SELECT count(pg_notify($2, CASE
                     WHEN $4::bytea IS NOT NULL AND octet_length(whole) <= $3
                     THEN encode(sha256($5::bytea || sha256($4::bytea || convert_to(whole, 'UTF8'))), 'hex') || whole
                     ELSE ids END)) AS sent
              FROM payload
         )"
    )
}

/// [`append_ctes`]'s parameters `$1`–`$5` (the org, the NOTIFY channel, the
/// payload's byte limit, the signing key's inner and outer pads), for a routine's signature ([`crate::db::Routine`]).
pub(crate) const APPEND_PARAMS: [(&str, &str); 5] =
    [("org", "uuid"), ("channel", "text"), ("notify_limit", "int4"), ("notify_ipad", "bytea"), ("notify_opad", "bytea")];

/// Binds the parameters of [`append_ctes`], `$1`–`$5`, to a statement built around them.
pub(crate) fn bind_append<'q, O>(
    q: sqlx::query::QueryAs<'q, sqlx::Postgres, O, sqlx::postgres::PgArguments>,
    org_id: OrgId,
) -> sqlx::query::QueryAs<'q, sqlx::Postgres, O, sqlx::postgres::PgArguments> {
    q.bind(org_id)
        .bind(EVENTS_CHANNEL)
        // Room for the JSON once the signature prefixes it.
        .bind((MAX_NOTIFY_BYTES - MAC_HEX) as i32)
        .bind(NOTIFY_KEY.get().map(|k| k.ipad.to_vec()))
        .bind(NOTIFY_KEY.get().map(|k| k.opad.to_vec()))
}

/// [`bind_append`] for a statement whose rows are read by column name.
pub(crate) fn bind_append_query(
    q: sqlx::query::Query<'_, sqlx::Postgres, sqlx::postgres::PgArguments>,
    org_id: OrgId,
) -> sqlx::query::Query<'_, sqlx::Postgres, sqlx::postgres::PgArguments> {
    q.bind(org_id)
        .bind(EVENTS_CHANNEL)
        .bind((MAX_NOTIFY_BYTES - MAC_HEX) as i32)
        .bind(NOTIFY_KEY.get().map(|k| k.ipad.to_vec()))
        .bind(NOTIFY_KEY.get().map(|k| k.opad.to_vec()))
}

/// Publishes a token delta (never stored). Splits text so each payload stays
/// under PostgreSQL's NOTIFY limit. Outside any transaction: a lost delta only
/// costs a viewer some live typing, the completed message is persisted.
pub async fn publish_delta(pool: &PgPool, delta: Delta) -> Result<()> {
    let mut c = crate::db::autocommit(pool).await?;
    for payload in delta_payloads(delta) {
        sqlx::query("SELECT pg_notify($1, $2)").bind(DELTAS_CHANNEL).bind(signed(payload)).execute(&mut *c).await?;
    }
    c.commit().await
}

/// Serialises a delta into one or more payloads that stay under
/// [`MAX_NOTIFY_BYTES`] once signed.
pub fn delta_payloads(delta: Delta) -> Vec<String> {
    let json = serde_json::to_string(&delta).expect("delta serialises");
    if json.len() <= MAX_NOTIFY_BYTES - MAC_HEX || delta.text.chars().count() < 2 {
        return vec![json];
    }
    let mid = delta.text.char_indices().nth(delta.text.chars().count() / 2).map(|(i, _)| i).unwrap_or(0);
    let (a, b) = delta.text.split_at(mid);
    let mut out = delta_payloads(Delta { text: a.to_owned(), ..delta.clone() });
    out.extend(delta_payloads(Delta { text: b.to_owned(), ..delta }));
    out
}

/// Filters for listing a session's events.
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    pub after_sequence: i64,
    /// Empty = all types.
    pub types: Vec<String>,
    pub limit: u32,
}

/// Events of a session in sequence order, after a sequence number.
pub async fn list(conn: &mut PgConnection, org_id: OrgId, session_id: SessionId, filter: &EventFilter) -> Result<Vec<Event>> {
    let rows = sqlx::query_as(
        "SELECT id, session_id, sequence, type, turn_id, data, ts FROM events
          WHERE org_id = $1 AND session_id = $2 AND sequence > $3
            AND (cardinality($4::text[]) = 0 OR type = ANY($4))
          ORDER BY sequence LIMIT $5",
    )
    .bind(org_id)
    .bind(session_id)
    .bind(filter.after_sequence)
    .bind(&filter.types)
    .bind(i64::from(filter.limit))
    .fetch_all(conn)
    .await?;
    Ok(rows)
}

/// The sequence number of an event of this session (to resume a stream from it).
pub async fn sequence_of(conn: &mut PgConnection, org_id: OrgId, session_id: SessionId, event_id: EventId) -> Result<i64> {
    sqlx::query_scalar("SELECT sequence FROM events WHERE org_id = $1 AND session_id = $2 AND id = $3")
        .bind(org_id)
        .bind(session_id)
        .bind(event_id)
        .fetch_optional(conn)
        .await?
        .ok_or(Error::NotFound("event"))
}

/// Event types the model sees from earlier turns (`worker::plan::prompt`).
pub const CONVERSATION: &[&str] = &[types::INPUT_MESSAGE, types::OUTPUT_MESSAGE_COMPLETED, types::TOOL_COMPLETED];

/// What a worker rebuilds a turn from, in sequence order: every event of
/// the turn (its markers and step results: where to resume) and, of the rest
/// of its session, only the [`CONVERSATION`] — lifecycle markers of earlier
/// turns are most of a log and the prompt has no use for them.
///
/// For several turns at once (`sessions[i]` is the session of `turns[i]`), in
/// one statement; keyed by turn. `after[i]` skips the conversation events of
/// `sessions[i]` up to that sequence (what the caller already holds, see
/// [`crate::history`]; 0 skips nothing); the turn's other events always come.
/// Two index scans per turn: `(session_id, type, sequence)` for the
/// conversation, `(turn_id, …)` for the turn's markers — not every event of the session.
pub async fn for_turn_contexts(
    conn: &mut PgConnection,
    org_id: OrgId,
    sessions: &[SessionId],
    turns: &[TurnId],
    after: &[i64],
) -> Result<std::collections::HashMap<TurnId, Vec<Event>>> {
    #[derive(sqlx::FromRow)]
    struct Row {
        for_turn: TurnId,
        #[sqlx(flatten)]
        event: Event,
    }
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT l.turn_id AS for_turn, e.id, e.session_id, e.sequence, e.type, e.turn_id, e.data, e.ts
           FROM unnest($2::uuid[], $3::uuid[], $5::int8[]) AS l(session_id, turn_id, after)
           CROSS JOIN LATERAL (
                SELECT c.id, c.session_id, c.sequence, c.type, c.turn_id, c.data, c.ts FROM events c
                 WHERE c.session_id = l.session_id AND c.type = ANY($4) AND c.sequence > l.after AND c.org_id = $1
                UNION ALL
                SELECT o.id, o.session_id, o.sequence, o.type, o.turn_id, o.data, o.ts FROM events o
                 WHERE o.turn_id = l.turn_id AND o.type <> ALL($4) AND o.org_id = $1
           ) e
          ORDER BY l.turn_id, e.sequence",
    )
    .bind(org_id)
    .bind(sessions)
    .bind(turns)
    .bind(CONVERSATION)
    .bind(after)
    .fetch_all(conn)
    .await?;
    let mut by_turn: std::collections::HashMap<TurnId, Vec<Event>> = std::collections::HashMap::with_capacity(turns.len());
    for r in rows {
        by_turn.entry(r.for_turn).or_default().push(r.event);
    }
    Ok(by_turn)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the appending statement computes, in Rust: PostgreSQL's
    /// `encode(sha256($5 || sha256($4 || json)), 'hex')` over the bound pads.
    fn sql_construction(key: &NotifyKey, json: &str) -> String {
        use sha2::{Digest, Sha256};
        let inner = Sha256::new().chain_update(key.ipad).chain_update(json).finalize();
        hex::encode(Sha256::new().chain_update(key.opad).chain_update(inner).finalize())
    }

    #[test]
    fn the_hmac_crate_and_the_sql_construction_agree_on_rfc_4231_case_2() {
        // RFC 4231, test case 2: a key shorter than the block, HMAC-SHA256.
        let key = NotifyKey::new(b"Jefe");
        let json = "what do ya want for nothing?";
        let expected = "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843";

        let signed = key.sign(json);

        assert_eq!(&signed[..MAC_HEX], expected);
        assert_eq!(&signed[MAC_HEX..], json);
        assert_eq!(sql_construction(&key, json), expected);
    }

    #[test]
    fn payloads_verify_only_unchanged_and_under_the_same_key() {
        let key = NotifyKey::new(&[7u8; 32]);
        let json = r#"{"s":"00000000-0000-0000-0000-000000000000","q":3,"e":[]}"#;
        let signed = key.sign(json);
        assert_eq!(signed[..MAC_HEX], sql_construction(&key, json), "what SQL signs, Rust verifies");

        assert_eq!(unwrap_payload(Some(&key), &signed), (json, true));

        let tampered = signed.replacen("\"q\":3", "\"q\":4", 1);
        assert!(!unwrap_payload(Some(&key), &tampered).1, "a changed payload");
        let mut flipped = signed.clone().into_bytes();
        flipped[0] = if flipped[0] == b'0' { b'1' } else { b'0' };
        assert!(!unwrap_payload(Some(&key), std::str::from_utf8(&flipped).unwrap()).1, "a changed MAC");
        let other = NotifyKey::new(&[8u8; 32]);
        assert!(!unwrap_payload(Some(&other), &signed).1, "another key");
        assert!(!unwrap_payload(None, &signed).1, "a process that does not sign");
        assert_eq!(unwrap_payload(Some(&key), json), (json, false), "an unsigned payload");
        let not_hex = format!("{}{json}", "z".repeat(MAC_HEX));
        assert!(!unwrap_payload(Some(&key), &not_hex).1, "a prefix that is not hex");
    }

    #[test]
    fn big_deltas_split_under_the_notify_limit() {
        let d = Delta {
            session_id: SessionId::new(),
            turn_id: TurnId::new(),
            iteration: 1,
            text: "é\"".repeat(9000),
            ts: Utc::now(),
        };
        let parts = delta_payloads(d.clone());
        assert!(parts.len() > 1);
        let mut joined = String::new();
        for p in &parts {
            assert!(p.len() + MAC_HEX <= MAX_NOTIFY_BYTES);
            joined.push_str(&serde_json::from_str::<Delta>(p).unwrap().text);
        }
        assert_eq!(joined, d.text);
    }
}
