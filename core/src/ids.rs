//! Resource ids: UUIDv7 in the database, `<prefix>_<32 hex>` at the API edge.
//!
//! Each kind of resource has its own id type ([`OrgId`], [`SessionId`], …), a
//! `#[sqlx(transparent)]` newtype over [`Uuid`], so passing a session id where an
//! org id belongs fails to compile. Prefixes exist only at the edge
//! ([`TypedId::parse`], [`TypedId::wire`]). A wrong prefix is a client error, so
//! parsing returns [`Error::Invalid`] with code `invalid_id` rather than a not-found.
//!
//! ```compile_fail
//! use turnstone_core::ids::{OrgId, SessionId, TypedId};
//! fn archive(_org: OrgId) {}
//! archive(SessionId::new()); // a session id where an org id belongs: does not compile
//! ```
//! ```
//! use turnstone_core::ids::{OrgId, TypedId};
//! let org = OrgId::new();
//! assert_eq!(OrgId::parse(&org.wire()).unwrap(), org);
//! assert!(org.to_string().starts_with("org_"));
//! ```

use crate::error::{Error, Result};
use uuid::Uuid;

/// What every id type offers: its kind, its uuid, and its wire form.
pub trait TypedId: Copy + Eq + std::hash::Hash + std::fmt::Debug + Send + Sync + 'static {
    const KIND: Kind;
    fn from_uuid(id: Uuid) -> Self;
    fn uuid(self) -> Uuid;

    /// A fresh time-ordered id.
    fn new() -> Self {
        Self::from_uuid(new_id())
    }

    /// Parses `<prefix>_<32 hex>`; anything else is `invalid_id`.
    fn parse(s: &str) -> Result<Self> {
        parse(Self::KIND, s).map(Self::from_uuid)
    }

    /// The wire form, `<prefix>_<32 hex>`.
    fn wire(self) -> String {
        format(Self::KIND, self.uuid())
    }
}

macro_rules! typed_ids {
    ($($(#[$doc:meta])* $name:ident => $kind:ident;)*) => {$(
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, sqlx::Type, serde::Serialize, serde::Deserialize)]
        #[sqlx(transparent)]
        #[serde(transparent)]
        pub struct $name(Uuid);

        impl TypedId for $name {
            const KIND: Kind = Kind::$kind;
            fn from_uuid(id: Uuid) -> Self {
                Self(id)
            }
            fn uuid(self) -> Uuid {
                self.0
            }
        }

        /// The wire form, for logs and messages.
        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "{}_{}", Kind::$kind.prefix(), self.0.simple())
            }
        }
    )*};
}

typed_ids! {
    /// An org: the tenant every other row belongs to.
    OrgId => Org;
    /// An API key (its id, never its secret).
    ApiKeyId => ApiKey;
    /// A provider: an LLM endpoint and its sealed key.
    ProviderId => Provider;
    /// A model of a provider.
    ModelId => Model;
    /// An agent: prompt, capabilities and model.
    AgentId => Agent;
    /// A session: one conversation and its event log.
    SessionId => Session;
    /// An event of a session's log.
    EventId => Event;
    /// A turn: one input message and the work that answers it.
    TurnId => Turn;
    /// A pending tool approval (`pending_calls.id`; a client tool call's row has one too).
    ApprovalId => Approval;
}

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
fn new_id() -> Uuid {
    Uuid::now_v7()
}

/// `agt_0190…` for an agent id.
fn format(kind: Kind, id: Uuid) -> String {
    format!("{}_{}", kind.prefix(), id.simple())
}

/// Parses `<prefix>_<32 hex>`; anything else is `invalid_id`.
fn parse(kind: Kind, s: &str) -> Result<Uuid> {
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
