//! Resource ids: UUIDv7 in the database, `<prefix>_<32 hex>` at the API edge.
//!
//! A wrong prefix is a client error, so parsing returns [`Error::Invalid`]
//! with code `invalid_id` rather than a not-found.

use crate::error::{Error, Result};
use uuid::Uuid;

/// A kind of resource and its wire prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Org,
    ApiKey,
    Provider,
    Model,
    Agent,
    Session,
    Event,
    Turn,
    /// A pending tool approval (`pending_calls.id`).
    Approval,
}

impl Kind {
    pub const fn prefix(self) -> &'static str {
        match self {
            Kind::Org => "org",
            Kind::ApiKey => "key",
            Kind::Provider => "prv",
            Kind::Model => "mdl",
            Kind::Agent => "agt",
            Kind::Session => "ses",
            Kind::Event => "evt",
            Kind::Turn => "trn",
            Kind::Approval => "apr",
        }
    }

    pub const fn noun(self) -> &'static str {
        match self {
            Kind::Org => "org",
            Kind::ApiKey => "API key",
            Kind::Provider => "provider",
            Kind::Model => "model",
            Kind::Agent => "agent",
            Kind::Session => "session",
            Kind::Event => "event",
            Kind::Turn => "turn",
            Kind::Approval => "approval",
        }
    }

    /// The noun with its indefinite article, for messages: "an agent", "a session".
    pub const fn a_noun(self) -> &'static str {
        match self {
            Kind::Org => "an org",
            Kind::ApiKey => "an API key",
            Kind::Provider => "a provider",
            Kind::Model => "a model",
            Kind::Agent => "an agent",
            Kind::Session => "a session",
            Kind::Event => "an event",
            Kind::Turn => "a turn",
            Kind::Approval => "an approval",
        }
    }
}

/// A fresh time-ordered id.
pub fn new_id() -> Uuid {
    Uuid::now_v7()
}

/// `agt_0190…` for an agent id.
pub fn format(kind: Kind, id: Uuid) -> String {
    format!("{}_{}", kind.prefix(), id.simple())
}

/// Parses `<prefix>_<32 hex>`; anything else is `invalid_id`.
pub fn parse(kind: Kind, s: &str) -> Result<Uuid> {
    let bad = || Error::invalid("invalid_id", format!("expected {} id like {}_<32 hex digits>", kind.a_noun(), kind.prefix()));
    let rest = s.strip_prefix(kind.prefix()).and_then(|r| r.strip_prefix('_')).ok_or_else(bad)?;
    if rest.len() != 32 || !rest.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad());
    }
    Uuid::parse_str(rest).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_wrong_prefix() {
        let id = new_id();
        let s = format(Kind::Agent, id);
        assert!(s.starts_with("agt_"));
        assert_eq!(parse(Kind::Agent, &s).unwrap(), id);
        assert!(matches!(parse(Kind::Session, &s), Err(Error::Invalid { code: "invalid_id", .. })));
        assert!(parse(Kind::Agent, "agt_xyz").is_err());
        assert!(parse(Kind::Agent, &format!("agt_{}", "g".repeat(32))).is_err());
        let Err(Error::Invalid { message, .. }) = parse(Kind::Event, "x") else { panic!("invalid") };
        assert_eq!(message, "expected an event id like evt_<32 hex digits>");
    }
}
