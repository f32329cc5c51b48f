//! A worker's memory of the conversations it has read: per session, the
//! [`crate::events::CONVERSATION`] events up to some sequence, so that the next
//! context read of that session fetches only what came after.
//!
//! Why: a turn's context is its session's whole conversation, so reading it
//! costs the database work in proportion to the session's length, every turn
//! (the costliest statement per turn in `turn_throughput` once sessions are a
//! hundred turns long, docs/benchmarks.md).
//!
//! Why it is sound: events are never updated or deleted (the application role
//! may only insert them), and a session's sequences are handed out under its
//! counter row's lock, so they commit in sequence order. A read that saw a
//! conversation event with sequence `s` therefore saw every event up to `s`
//! that will ever exist: the prefix it read is final. An entry is only a
//! shortcut past such a prefix; losing it (eviction, restart, another worker
//! taking the session's next turn) costs a longer read, never a wrong one.
//!
//! Bounded by an approximate byte budget (`TURNSTONE_WORKER_HISTORY_CACHE_MB`),
//! least recently used sessions leave first; budget 0 keeps nothing.

use crate::ids::{OrgId, SessionId};
use std::sync::{Arc, Mutex};

use hashlink::LinkedHashMap;
use serde_json::Value;

use crate::events::Event;

/// Cached conversation prefixes, keyed by session.
pub struct ConversationCache {
    budget: usize,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Least recently used first.
    entries: LinkedHashMap<SessionId, Entry>,
    bytes: usize,
}

struct Entry {
    org_id: OrgId,
    prefix: Prefix,
}

/// A session's conversation events with sequence `<= upto`, all of them, in order.
#[derive(Clone, Debug, Default)]
pub struct Prefix {
    pub upto: i64,
    pub events: Arc<Vec<Arc<Event>>>,
    /// About what `events` occupy ([`Prefix::extended`] keeps it up to date).
    pub bytes: usize,
}

impl Prefix {
    /// This prefix followed by `more` (conversation events after `upto`, in
    /// order), sized without walking what was sized before.
    pub fn extended(&self, more: Vec<Arc<Event>>) -> Prefix {
        let upto = more.last().map_or(self.upto, |e| e.sequence.max(self.upto));
        let bytes = self.bytes + more.iter().map(|e| size_of_event(e)).sum::<usize>();
        let mut events = Vec::with_capacity(self.events.len() + more.len());
        events.extend(self.events.iter().cloned());
        events.extend(more);
        Prefix { upto, events: Arc::new(events), bytes }
    }
}

impl ConversationCache {
    /// A cache holding about `budget_bytes` of event data (0: holds nothing).
    pub fn new(budget_bytes: usize) -> Self {
        ConversationCache { budget: budget_bytes, inner: Mutex::default() }
    }

    /// Whether it keeps anything at all.
    pub fn enabled(&self) -> bool {
        self.budget > 0
    }

    /// What is known of `session`'s conversation (empty: read it all).
    pub fn get(&self, org_id: OrgId, session_id: SessionId) -> Prefix {
        let mut inner = self.inner.lock().expect("history cache lock");
        match inner.entries.to_back(&session_id) {
            Some(e) if e.org_id == org_id => e.prefix.clone(),
            _ => Prefix::default(),
        }
    }

    /// Remembers a longer prefix of `session`'s conversation; a shorter or
    /// equal one than what is kept already is ignored, as is one bigger than
    /// the whole budget.
    pub fn put(&self, org_id: OrgId, session_id: SessionId, prefix: Prefix) {
        if self.budget == 0 {
            return;
        }
        let mut inner = self.inner.lock().expect("history cache lock");
        if let Some(old) = inner.entries.get(&session_id)
            && old.org_id == org_id
            && old.prefix.upto >= prefix.upto
        {
            return;
        }
        if let Some(old) = inner.entries.remove(&session_id) {
            inner.bytes -= old.prefix.bytes;
        }
        if prefix.bytes > self.budget {
            return;
        }
        while inner.bytes + prefix.bytes > self.budget {
            let Some((_, evicted)) = inner.entries.pop_front() else { break };
            inner.bytes -= evicted.prefix.bytes;
        }
        inner.bytes += prefix.bytes;
        inner.entries.insert(session_id, Entry { org_id, prefix });
    }

    /// Sessions and approximate bytes held (for tests and metrics).
    pub fn usage(&self) -> (usize, usize) {
        let inner = self.inner.lock().expect("history cache lock");
        (inner.entries.len(), inner.bytes)
    }
}

/// Bytes an event costs beyond its data: ids, sequence, type, timestamp, allocations.
const ENTRY_OVERHEAD: usize = 160;

/// About what an event occupies in memory.
fn size_of_event(e: &Event) -> usize {
    ENTRY_OVERHEAD + size_of_value(&e.data)
}

/// About what a JSON value occupies in memory.
fn size_of_value(v: &Value) -> usize {
    const NODE: usize = 32;
    NODE + match v {
        Value::String(s) => s.len(),
        Value::Array(a) => a.iter().map(size_of_value).sum(),
        Value::Object(o) => o.iter().map(|(k, v)| NODE + k.len() + size_of_value(v)).sum(),
        Value::Null | Value::Bool(_) | Value::Number(_) => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{EventId, TypedId};
    use serde_json::json;
    use uuid::Uuid;

    fn prefix(upto: i64, text_len: usize) -> Prefix {
        let event = Event {
            id: EventId::from_uuid(Uuid::nil()),
            session_id: SessionId::from_uuid(Uuid::nil()),
            sequence: upto,
            kind: "input.message".into(),
            turn_id: None,
            data: json!({ "text": "x".repeat(text_len) }),
            ts: chrono::Utc::now(),
        };
        Prefix::default().extended(vec![Arc::new(event)])
    }

    #[test]
    fn keeps_the_longest_prefix_of_the_right_org() {
        let (org, other, s) = (OrgId::new(), OrgId::new(), SessionId::new());
        let c = ConversationCache::new(1 << 20);
        c.put(org, s, prefix(5, 10));
        c.put(org, s, prefix(3, 10));
        assert_eq!(c.get(org, s).upto, 5, "a shorter prefix does not replace a longer one");
        assert_eq!(c.get(other, s).upto, 0, "another org sees nothing");
        c.put(org, s, prefix(9, 10));
        assert_eq!(c.get(org, s).upto, 9);
        assert_eq!(c.usage().0, 1);
    }

    #[test]
    fn evicts_least_recently_used_sessions_to_stay_in_budget() {
        let org = OrgId::new();
        let one = ENTRY_OVERHEAD + size_of_value(&json!({ "text": "x".repeat(1000) }));
        let c = ConversationCache::new(2 * one + one / 2);
        let (a, b, d) = (SessionId::new(), SessionId::new(), SessionId::new());
        c.put(org, a, prefix(1, 1000));
        c.put(org, b, prefix(1, 1000));
        assert_eq!(c.get(org, a).upto, 1, "touches a: b is now the oldest");
        c.put(org, d, prefix(1, 1000));
        assert_eq!((c.get(org, a).upto, c.get(org, b).upto, c.get(org, d).upto), (1, 0, 1));
        let (n, bytes) = c.usage();
        assert_eq!((n, bytes), (2, 2 * one));
        c.put(org, a, prefix(2, 100_000));
        assert_eq!(c.get(org, a).upto, 0, "bigger than the budget: not kept, and the old entry is gone");
        assert_eq!(c.usage(), (1, one));
        let off = ConversationCache::new(0);
        off.put(org, a, prefix(1, 1));
        assert_eq!(off.usage(), (0, 0));
    }
}
