//! The conversation: the order in which a session's messages are read back,
//! by the model (a turn's prompt) and by people (`GET …/messages`).
//!
//! The event log keeps arrival order: a message posted while a turn runs gets
//! a sequence between that turn's outputs. The conversation is a different
//! projection of the same rows: each turn's input followed by that turn's
//! outputs, turns in the order of their inputs. An event's place is therefore
//! `(position, sequence)`, where `position` is the sequence of the input
//! message of the turn it belongs to (the turn's `input_sequence`), or its own
//! sequence when it belongs to no turn; [`messages`] orders by the same key in SQL.

use crate::ids::{OrgId, SessionId, TurnId};
use std::collections::HashMap;
use std::sync::Arc;

use sqlx::PgConnection;

use crate::Result;
use crate::events::{Event, types};

/// Orders events of one session into conversation order: for each turn, in
/// the order of its input message, that input and then the turn's other
/// events in sequence order. Events of a turn whose input is not among them,
/// and events of no turn, keep their own sequence as position.
pub fn sort(events: &mut [Arc<Event>]) {
    let inputs: HashMap<TurnId, i64> =
        events.iter().filter(|e| e.kind == types::INPUT_MESSAGE).filter_map(|e| e.turn_id.map(|t| (t, e.sequence))).collect();
    let position = |e: &Event| e.turn_id.and_then(|t| inputs.get(&t).copied()).unwrap_or(e.sequence);
    events.sort_by_key(|e| (position(e), e.sequence));
}

/// The event types that are messages (`GET …/messages`).
pub const MESSAGE_TYPES: &[&str] = &[types::INPUT_MESSAGE, types::OUTPUT_MESSAGE_COMPLETED];

/// The order a message list is read in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Order {
    /// Each turn's input, then that turn's outputs (what the model saw).
    #[default]
    Conversation,
    /// Sequence order: the order the log received them.
    Arrival,
}

/// A session's messages after the one with sequence `after` (in `order`; 0:
/// from the start), at most `limit`. A cursor that names no message of the
/// session is read as a position: messages placed after that sequence.
pub async fn messages(
    conn: &mut PgConnection,
    org_id: OrgId,
    session_id: SessionId,
    after: i64,
    limit: u32,
    order: Order,
) -> Result<Vec<Event>> {
    let sql = match order {
        Order::Arrival => {
            "SELECT e.id, e.session_id, e.sequence, e.type, e.turn_id, e.data, e.ts
               FROM events e
              WHERE e.org_id = $1 AND e.session_id = $2 AND e.type = ANY($4) AND e.sequence > $3
              ORDER BY e.sequence LIMIT $5"
        }
        Order::Conversation => {
            "WITH cursor AS (
                SELECT coalesce((SELECT coalesce(t.input_sequence, e.sequence)
                                   FROM events e LEFT JOIN turns t ON t.org_id = $1 AND t.id = e.turn_id
                                  WHERE e.org_id = $1 AND e.session_id = $2 AND e.sequence = $3), $3) AS position
             )
             SELECT e.id, e.session_id, e.sequence, e.type, e.turn_id, e.data, e.ts
               FROM events e LEFT JOIN turns t ON t.org_id = $1 AND t.id = e.turn_id, cursor c
              WHERE e.org_id = $1 AND e.session_id = $2 AND e.type = ANY($4)
                AND (coalesce(t.input_sequence, e.sequence), e.sequence) > (c.position, $3)
              ORDER BY coalesce(t.input_sequence, e.sequence), e.sequence LIMIT $5"
        }
    };
    Ok(sqlx::query_as(sql)
        .bind(org_id)
        .bind(session_id)
        .bind(after)
        .bind(MESSAGE_TYPES)
        .bind(i64::from(limit))
        .fetch_all(conn)
        .await?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{EventId, TypedId};
    use serde_json::json;
    use uuid::Uuid;

    fn ev(sequence: i64, kind: &str, turn: TurnId) -> Arc<Event> {
        Arc::new(Event {
            id: EventId::new(),
            session_id: SessionId::from_uuid(Uuid::nil()),
            sequence,
            kind: kind.into(),
            turn_id: Some(turn),
            data: json!({}),
            ts: chrono::Utc::now(),
        })
    }

    #[test]
    fn a_queued_input_follows_the_outputs_of_the_turn_before_it() {
        let (t1, t2) = (TurnId::new(), TurnId::new());
        // Arrival: U1, A1(tool call), U2 (queued), tool result, A1', A2.
        let mut log = vec![
            ev(1, types::INPUT_MESSAGE, t1),
            ev(2, types::OUTPUT_MESSAGE_COMPLETED, t1),
            ev(3, types::INPUT_MESSAGE, t2),
            ev(4, types::TOOL_COMPLETED, t1),
            ev(5, types::OUTPUT_MESSAGE_COMPLETED, t1),
            ev(6, types::OUTPUT_MESSAGE_COMPLETED, t2),
        ];
        sort(&mut log);
        let order: Vec<i64> = log.iter().map(|e| e.sequence).collect();
        assert_eq!(order, [1, 2, 4, 5, 3, 6]);
    }

    #[test]
    fn events_without_their_input_keep_their_own_place() {
        let (t1, orphan) = (TurnId::new(), TurnId::new());
        let mut log = vec![
            ev(2, types::OUTPUT_MESSAGE_COMPLETED, orphan),
            ev(1, types::INPUT_MESSAGE, t1),
            ev(3, types::TOOL_COMPLETED, t1),
        ];
        sort(&mut log);
        let order: Vec<i64> = log.iter().map(|e| e.sequence).collect();
        assert_eq!(order, [1, 3, 2]);
    }
}
