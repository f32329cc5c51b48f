//! What a worker runs a turn from: [`TurnContext`], read fresh at every
//! (re)start by [`load_contexts`], with the conversation prefixes a worker
//! caches ([`ConversationCache`]).

use crate::ids::{ModelId, OrgId, SessionId, TurnId};
use std::sync::Arc;

use serde_json::Value;
use sqlx::PgPool;

use super::Lease;
use crate::db;
use crate::error::{Error, Result};
use crate::events::{self, Event, types};
use crate::history::{ConversationCache, Prefix};

/// What a worker needs to run a turn, read fresh from the database at every (re)start.
#[derive(Debug, Clone)]
pub struct TurnContext {
    pub system_prompt: String,
    pub capabilities: Vec<String>,
    pub max_iterations: i32,
    /// Wall-clock cap for the whole turn, from the agent.
    pub max_turn_secs: i32,
    /// The durable cancellation flag is set.
    pub cancel_requested: bool,
    /// Seconds the turn has spent waiting for people: not counted against `max_turn_secs`.
    pub waited_secs: f64,
    /// The agent's client tools, then the session's.
    pub client_tools: Vec<crate::tools::ClientTool>,
    pub tool_policies: crate::tools::Policies,
    pub approval_timeout_secs: i32,
    /// Message control → session → agent; `None` means the org default.
    pub model_id: Option<ModelId>,
    /// The session's conversation up to now and every event of this turn
    /// ([`events::for_turn_contexts`]), in conversation order
    /// ([`crate::conversation`]); input messages of later turns are excluded.
    /// Shared with the worker's [`ConversationCache`]: a turn's context costs no copy of its conversation.
    pub history: Vec<Arc<Event>>,
    /// The model to call and its provider, key still sealed; `None`: no model
    /// is configured (the turn fails `no_model` when it needs one).
    pub endpoint: Option<crate::providers::StoredEndpoint>,
}

/// Re-reads a running turn's context (a worker that lost track of its log).
pub async fn load_context(pool: &PgPool, lease: &Lease) -> Result<TurnContext> {
    let mut contexts = load_contexts(pool, lease.org_id, std::slice::from_ref(lease), &ConversationCache::new(0)).await?;
    contexts.pop().unwrap_or(Err(Error::NotFound("session")))
}

/// Reads the contexts of running turns of one org in one read-only
/// transaction (three statements however many turns; one more per distinct
/// provider key), one per lease in the order of `leases`: `NotFound("session")`
/// for a lease whose session is gone, without failing the others. The outer
/// error is the database's. Conversations known to `cache` are read from
/// where it ends, and what is read extends it.
pub async fn load_contexts(
    pool: &PgPool,
    org_id: OrgId,
    leases: &[Lease],
    cache: &ConversationCache,
) -> Result<Vec<Result<TurnContext>>> {
    if leases.is_empty() {
        return Ok(Vec::new());
    }
    let mut tx = db::begin_org(pool, org_id).await?;
    let sessions: Vec<SessionId> = leases.iter().map(|l| l.session_id).collect();
    let turns: Vec<TurnId> = leases.iter().map(|l| l.turn_id).collect();
    type Row = (i64, String, Vec<String>, i32, i32, Option<ModelId>, Option<ModelId>, bool, f64, Value, Value, i32);
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT l.ord, a.system_prompt, a.capabilities, a.max_iterations, a.max_turn_secs, s.model_id, a.model_id,
                coalesce(t.cancel_requested_at IS NOT NULL, false), coalesce(extract(epoch FROM t.waited), 0)::float8,
                a.client_tools || s.client_tools, a.tool_policies, a.approval_timeout_secs
           FROM unnest($2::uuid[], $3::uuid[]) WITH ORDINALITY AS l(session_id, turn_id, ord)
           JOIN sessions s ON s.org_id = $1 AND s.id = l.session_id AND s.id = ANY($2)
           JOIN agents a ON a.id = s.agent_id AND a.org_id = s.org_id
           LEFT JOIN turns t ON t.id = l.turn_id",
    )
    .bind(org_id)
    .bind(&sessions)
    .bind(&turns)
    .fetch_all(&mut *tx)
    .await?;
    let prefixes: Vec<Prefix> = leases.iter().map(|l| cache.get(org_id, l.session_id)).collect();
    let after: Vec<i64> = prefixes.iter().map(|p| p.upto).collect();
    let mut histories = events::for_turn_contexts(&mut tx, org_id, &sessions, &turns, &after).await?;
    let mut endpoints: Vec<(Option<ModelId>, Option<crate::providers::StoredEndpoint>)> = Vec::new();
    let mut contexts: Vec<Result<TurnContext>> = leases.iter().map(|_| Err(Error::NotFound("session"))).collect();
    for row in rows {
        let (ord, system_prompt, capabilities, max_iterations, max_turn_secs, session_model, agent_model, cancel_requested, ..) =
            row;
        let (waited_secs, client_tools, tool_policies, approval_timeout_secs) = (row.8, row.9, row.10, row.11);
        let lease = &leases[ord as usize - 1];
        let model_id = lease.model_id.or(session_model).or(agent_model);
        // In this read-only transaction too, once per model: no transaction of its own per turn.
        let endpoint = match endpoints.iter().find(|(m, _)| *m == model_id) {
            Some((_, e)) => e.clone(),
            None => {
                let e = crate::providers::stored_endpoint(&mut tx, org_id, model_id).await?;
                endpoints.push((model_id, e.clone()));
                e
            }
        };
        let read = histories.remove(&lease.turn_id).unwrap_or_default();
        let mut history = with_prefix(cache, org_id, lease.session_id, &prefixes[ord as usize - 1], read);
        history.retain(|e| !(e.kind == types::INPUT_MESSAGE && e.sequence > lease.input_sequence));
        crate::conversation::sort(&mut history);
        let context = TurnContext {
            endpoint,
            system_prompt,
            capabilities,
            max_iterations,
            max_turn_secs,
            cancel_requested,
            waited_secs,
            // Validated when stored: a row that no longer parses offers no client tools, all auto.
            client_tools: serde_json::from_value(client_tools).unwrap_or_default(),
            tool_policies: serde_json::from_value(tool_policies).unwrap_or_default(),
            approval_timeout_secs,
            model_id,
            history,
        };
        contexts[ord as usize - 1] = Ok(context);
    }
    // Read-only: dropping it rolls back on the connection's next use, no round trip here.
    drop(tx);
    Ok(contexts)
}

/// A turn's events as read after `prefix`, completed with the prefix, in
/// sequence order; the conversation now known goes back into `cache`.
fn with_prefix(
    cache: &ConversationCache,
    org_id: OrgId,
    session_id: SessionId,
    prefix: &Prefix,
    read: Vec<Event>,
) -> Vec<Arc<Event>> {
    if !cache.enabled() {
        return read.into_iter().map(Arc::new).collect();
    }
    let (conversation, own): (Vec<Arc<Event>>, Vec<Arc<Event>>) =
        read.into_iter().map(Arc::new).partition(|e| events::CONVERSATION.contains(&e.kind.as_str()));
    let known = prefix.extended(conversation);
    let mut history: Vec<Arc<Event>> = known.events.iter().cloned().chain(own).collect();
    history.sort_by_key(|e| e.sequence);
    cache.put(org_id, session_id, known);
    history
}
