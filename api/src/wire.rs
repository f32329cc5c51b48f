//! The wire format: poem-openapi objects and their conversions from core types.
//! Ids gain their prefixes here and nowhere else.
//!
//! Rules of the contract (docs/decisions/0016): a response property is always present,
//! and `null` when it has no value ([`Nullable`]); a request property may be left out
//! (`Option`); the schema states each input rule core enforces ([`rules`]); every request
//! object carries an example that works as sent. Doc comments here become the public
//! descriptions: internal notes go in `//` comments.
//!
//! One file per resource group (`providers`, `agents`, `sessions`, `storage`, `waiting`, `capabilities`, `orgs`);
//! this root holds the shared rules, id parsing, health and problem types.

mod agents;
mod capabilities;
mod nullable;
mod orgs;
mod providers;
pub mod rules;
mod sessions;
mod storage;
mod waiting;

use chrono::{DateTime, Utc};
use poem_openapi::types::{Example, MaybeUndefined};
use poem_openapi::{Enum, Object};
use serde_json::{Value, json};
use turnstone_core::ids::TypedId;
use turnstone_core::{events, limits, turns};

use crate::error::ApiError;
pub use crate::text::Text;
pub use agents::*;
pub use capabilities::*;
pub use nullable::Nullable;
pub use orgs::*;
pub use providers::*;
pub use rules::{
    AfterSequence, Bounded, CapabilityNames, EventType, EventsLimit, FreeText, Id, IdOrEmpty, IdempotencyKey, Name, PageLimit,
    ProviderKey, Tag, Tags,
};
pub use sessions::*;
pub use storage::*;
pub use waiting::*;

/// Parses a request object from its JSON example: the examples are written as JSON, as a
/// client sends them, and a test proves each one is accepted as sent.
fn example<T: poem_openapi::types::ParseFromJSON>(value: Value) -> T {
    T::parse_from_json(Some(value)).unwrap_or_else(|e| panic!("a request example does not parse: {}", e.into_message()))
}

/// Parses a prefixed id from a path or body, mapping a bad one to 400 `invalid_id`.
pub fn parse_id<T: TypedId>(s: &str) -> Result<T, ApiError> {
    T::parse(s).map_err(ApiError::from)
}

pub fn parse_opt_id<T: TypedId>(s: Option<&str>) -> Result<Option<T>, ApiError> {
    s.map(parse_id).transpose()
}

/// A process is alive.
#[derive(Debug, Object)]
pub struct Health {
    /// Always `ok`.
    pub status: String,
}

/// The database is reachable and migrations are applied.
#[derive(Debug, Object)]
pub struct Ready {
    /// `ready`.
    pub status: String,
}

/// What a problem `code` means.
#[derive(Debug, Object)]
pub struct ProblemTypeDoc {
    /// The stable code, as in a problem's `code`.
    pub code: String,
    /// The HTTP status it answers with.
    pub status: u16,
    pub meaning: String,
}

impl From<&crate::error::ProblemType> for ProblemTypeDoc {
    fn from(p: &crate::error::ProblemType) -> Self {
        ProblemTypeDoc { code: p.code.into(), status: p.status, meaning: p.meaning.into() }
    }
}

#[derive(Debug, Object)]
pub struct ProblemTypeList {
    pub data: Vec<ProblemTypeDoc>,
}
