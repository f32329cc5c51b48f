//! Input values whose OpenAPI schema states the rule that `turnstone_core` enforces:
//! an id's prefix and form (`pattern`), a page size's bounds (`minimum`/`maximum`), a tag's
//! characters, a header value's characters.
//!
//! Parsing only checks the JSON or parameter type. The rule itself is checked where it
//! always was — `TypedId::parse`, `validate::tags`, `page_limit`… — so a breach answers with that
//! rule's own stable `code` (`invalid_id`, `invalid_tag`, `invalid_limit`…) instead of
//! poem-openapi's generic `invalid_body`/`invalid_parameter`; the schema keywords exist so that
//! generated clients, documentation and fuzzers see the rule (docs/decisions/0016).

use std::borrow::Cow;
use std::marker::PhantomData;

use poem_openapi::registry::{MetaSchema, MetaSchemaRef, Registry};
use poem_openapi::types::{ParseFromJSON, ParseFromParameter, ParseResult, ToJSON, Type};
use serde_json::Value;
use turnstone_core::ids::TypedId;
use turnstone_core::limits;

use super::Text;
use crate::error::ApiError;

/// A schema rule: what `Ruled<_, Self>` adds to its base type's schema.
pub trait Rule: Send + Sync + 'static {
    /// Distinguishes the ruled type's name from its base type's.
    const NAME: &'static str;
    fn describe(schema: &mut MetaSchema);
    /// `Debug` prints `[redacted]` instead of the value (secrets).
    const REDACT: bool = false;
}

/// A value of type `T` (as parsed by `T`) whose schema carries rule `R`.
pub struct Ruled<T, R>(pub T, PhantomData<fn() -> R>);

impl<T, R> Ruled<T, R> {
    pub fn new(value: T) -> Self {
        Ruled(value, PhantomData)
    }
}

impl<T: Default, R> Default for Ruled<T, R> {
    fn default() -> Self {
        Ruled::new(T::default())
    }
}

impl<T: Clone, R> Clone for Ruled<T, R> {
    fn clone(&self) -> Self {
        Ruled::new(self.0.clone())
    }
}

impl<T: PartialEq, R> PartialEq for Ruled<T, R> {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}

impl<T: std::fmt::Debug, R: Rule> std::fmt::Debug for Ruled<T, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if R::REDACT { f.write_str("[redacted]") } else { self.0.fmt(f) }
    }
}

impl<T: std::ops::Deref, R> std::ops::Deref for Ruled<T, R> {
    type Target = T::Target;
    fn deref(&self) -> &T::Target {
        &self.0
    }
}

impl<T: Type, R: Rule> Type for Ruled<T, R> {
    const IS_REQUIRED: bool = T::IS_REQUIRED;
    type RawValueType = T::RawValueType;
    type RawElementValueType = T::RawElementValueType;

    fn name() -> Cow<'static, str> {
        format!("{}_{}", T::name(), R::NAME).into()
    }

    fn schema_ref() -> MetaSchemaRef {
        match T::schema_ref() {
            MetaSchemaRef::Inline(mut schema) => {
                R::describe(&mut schema);
                MetaSchemaRef::Inline(schema)
            }
            reference => reference,
        }
    }

    fn register(registry: &mut Registry) {
        T::register(registry);
    }

    fn as_raw_value(&self) -> Option<&Self::RawValueType> {
        self.0.as_raw_value()
    }

    fn raw_element_iter<'a>(&'a self) -> Box<dyn Iterator<Item = &'a Self::RawElementValueType> + 'a> {
        self.0.raw_element_iter()
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<R> From<Ruled<Text, R>> for String {
    fn from(value: Ruled<Text, R>) -> String {
        value.0.0
    }
}

impl<T: ParseFromJSON, R: Rule> ParseFromJSON for Ruled<T, R> {
    fn parse_from_json(value: Option<Value>) -> ParseResult<Self> {
        T::parse_from_json(value).map(Ruled::new).map_err(|e| e.propagate())
    }
}

impl<T: ParseFromParameter, R: Rule> ParseFromParameter for Ruled<T, R> {
    fn parse_from_parameter(value: &str) -> ParseResult<Self> {
        T::parse_from_parameter(value).map(Ruled::new).map_err(|e| e.propagate())
    }

    fn parse_from_parameters<I: IntoIterator<Item = A>, A: AsRef<str>>(iter: I) -> ParseResult<Self> {
        T::parse_from_parameters(iter).map(Ruled::new).map_err(|e| e.propagate())
    }
}

impl<T: ToJSON, R: Rule> ToJSON for Ruled<T, R> {
    fn to_json(&self) -> Option<Value> {
        self.0.to_json()
    }
}

// ---------------------------------------------------------------- ids

/// The id types of the resources, by the names the wire rules use: `Id<Agent>`
/// parses to an [`ids::AgentId`], which cannot be passed where a session id is wanted.
pub use turnstone_core::ids::{
    AgentId as Agent, ApiKeyId as ApiKey, ApprovalId as Approval, EventId as Event, McpServerId as McpServer, ModelId as Model,
    OrgId as Org, ProviderId as Provider, SessionId as Session,
};

/// `<prefix>_<32 hex digits>`, as `TypedId::parse` accepts it.
pub struct PrefixedId<K>(PhantomData<fn() -> K>);

impl<K: TypedId> Rule for PrefixedId<K> {
    const NAME: &'static str = "id";
    fn describe(schema: &mut MetaSchema) {
        let prefix = K::KIND.prefix();
        schema.pattern = Some(format!("^{prefix}_[0-9a-fA-F]{{32}}$"));
        schema.min_length = Some(prefix.len() + 33);
        schema.max_length = Some(prefix.len() + 33);
        schema.example = Some(Value::String(format!("{prefix}_0190b5e3a1c47d2e8f0a1b2c3d4e5f60")));
    }
}

/// A prefixed id from a path, query or body; [`Id::id`] checks it (400 `invalid_id`).
pub type Id<K> = Ruled<Text, PrefixedId<K>>;

impl<K: TypedId> Ruled<Text, PrefixedId<K>> {
    /// The id, or 400 `invalid_id` when it is malformed or of another kind.
    pub fn id(&self) -> Result<K, ApiError> {
        K::parse(&self.0).map_err(ApiError::from)
    }

    /// An optional id: `None` stays `None`.
    pub fn opt(value: &Option<Self>) -> Result<Option<K>, ApiError> {
        value.as_ref().map(Self::id).transpose()
    }
}

/// [`PrefixedId`] or the empty string (a PATCH's "clear").
pub struct PrefixedIdOrEmpty<K>(PhantomData<fn() -> K>);

impl<K: TypedId> Rule for PrefixedIdOrEmpty<K> {
    const NAME: &'static str = "id_or_empty";
    fn describe(schema: &mut MetaSchema) {
        PrefixedId::<K>::describe(schema);
        schema.pattern = Some(format!("^({}_[0-9a-fA-F]{{32}})?$", K::KIND.prefix()));
        schema.min_length = None;
    }
}

/// An id, or `""`; `TypedId::parse` checks a non-empty one (400 `invalid_id`).
pub type IdOrEmpty<K> = Ruled<Text, PrefixedIdOrEmpty<K>>;

// ---------------------------------------------------------------- numbers

/// `minimum: MIN`, `maximum: MAX`.
pub struct Range<const MIN: i64, const MAX: i64>;

impl<const MIN: i64, const MAX: i64> Rule for Range<MIN, MAX> {
    const NAME: &'static str = "range";
    fn describe(schema: &mut MetaSchema) {
        schema.minimum = Some(MIN as f64);
        schema.maximum = Some(MAX as f64);
    }
}

/// An integer the domain bounds to `MIN..=MAX` (its own code when out of range).
pub type Bounded<T, const MIN: i64, const MAX: i64> = Ruled<T, Range<MIN, MAX>>;

/// `limit` of a list: 1..=MAX, default [`limits::DEFAULT_PAGE_LIMIT`]; `page_limit` checks it (400 `invalid_limit`).
pub type Limit<const MAX: i64> = Bounded<u32, 1, MAX>;
pub type PageLimit = Limit<{ limits::MAX_PAGE_LIMIT as i64 }>;
pub type EventsLimit = Limit<{ limits::MAX_EVENTS_LIMIT as i64 }>;

impl<R> From<Ruled<u32, R>> for u32 {
    fn from(value: Ruled<u32, R>) -> u32 {
        value.0
    }
}

impl<R> From<Ruled<i64, R>> for i64 {
    fn from(value: Ruled<i64, R>) -> i64 {
        value.0
    }
}

impl<R> From<Ruled<i32, R>> for i32 {
    fn from(value: Ruled<i32, R>) -> i32 {
        value.0
    }
}

/// `minimum: MIN` (the type's own range is the maximum).
pub struct AtLeast<const MIN: i64>;

impl<const MIN: i64> Rule for AtLeast<MIN> {
    const NAME: &'static str = "at_least";
    fn describe(schema: &mut MetaSchema) {
        schema.minimum = Some(MIN as f64);
    }
}

/// `after_sequence`: 0 or more (400 `invalid_after_sequence`).
pub type AfterSequence = Ruled<i64, AtLeast<0>>;

// ---------------------------------------------------------------- strings

/// A string of 1 to `max` characters of the regex character class `class`, with an example.
fn one_to_max_of(schema: &mut MetaSchema, class: &str, max: usize, example: &str) {
    schema.pattern = Some(format!("^{class}{{1,{max}}}$"));
    schema.min_length = Some(1);
    schema.max_length = Some(max);
    schema.example = Some(Value::String(example.into()));
}

/// A tag: 1-64 characters of `[A-Za-z0-9_.:-]` (`validate::tags`, 400 `invalid_tag`).
pub struct TagRule;

impl Rule for TagRule {
    const NAME: &'static str = "tag";
    fn describe(schema: &mut MetaSchema) {
        one_to_max_of(schema, "[A-Za-z0-9_.:-]", limits::MAX_TAG_CHARS, "team:support");
    }
}

pub type Tag = Ruled<Text, TagRule>;

/// A provider's API key: sent as an HTTP header, so 1-4096 visible ASCII characters
/// (`validate::header_secret`, 400 `invalid_api_key`). Never printed.
pub struct ProviderKeyRule;

impl Rule for ProviderKeyRule {
    const NAME: &'static str = "provider_key";
    const REDACT: bool = true;
    fn describe(schema: &mut MetaSchema) {
        one_to_max_of(schema, "[!-~]", limits::MAX_SECRET_CHARS, "sk-your-provider-key");
        schema.write_only = true;
    }
}

pub type ProviderKey = Ruled<Text, ProviderKeyRule>;

/// An MCP server's name (`mcp::validate_input`, 400 `invalid_mcp_server_name`): a slug
/// without `_`, so `mcp__<server>__<tool>` always splits one way.
pub struct McpServerNameRule;

impl Rule for McpServerNameRule {
    const NAME: &'static str = "mcp_server_name";
    fn describe(schema: &mut MetaSchema) {
        schema.pattern = Some("^[a-z0-9]([a-z0-9-]*[a-z0-9])?$".into());
        schema.min_length = Some(1);
        schema.max_length = Some(turnstone_core::mcp::MAX_SERVER_NAME_CHARS);
        schema.example = Some(Value::String("everything".into()));
    }
}

pub type McpServerName = Ruled<Text, McpServerNameRule>;

/// A header value sent to an MCP server: printable ASCII, no leading or trailing
/// space (400 `invalid_mcp_header`). Write-only; never printed.
pub struct McpHeaderValueRule;

impl Rule for McpHeaderValueRule {
    const NAME: &'static str = "mcp_header_value";
    const REDACT: bool = true;
    fn describe(schema: &mut MetaSchema) {
        schema.pattern = Some("^[!-~]([ -~]*[!-~])?$".into());
        schema.min_length = Some(1);
        schema.max_length = Some(limits::MAX_SECRET_CHARS);
        schema.example = Some(Value::String("Bearer your-mcp-token".into()));
        schema.write_only = true;
    }
}

pub type McpHeaderValue = Ruled<Text, McpHeaderValueRule>;

/// `Idempotency-Key`: 1-255 visible ASCII characters (`idempotency::validate_key`, 400 `invalid_idempotency_key`).
pub struct IdempotencyKeyRule;

impl Rule for IdempotencyKeyRule {
    const NAME: &'static str = "idempotency_key";
    fn describe(schema: &mut MetaSchema) {
        one_to_max_of(schema, "[!-~]", limits::MAX_IDEMPOTENCY_KEY_CHARS, "create-agent-7f3c");
    }
}

pub type IdempotencyKey = Ruled<Text, IdempotencyKeyRule>;

/// A stored event type, one of `events::types::PERSISTED` (400 `unknown_event_type`).
pub struct EventTypeRule;

impl Rule for EventTypeRule {
    const NAME: &'static str = "event_type";
    fn describe(schema: &mut MetaSchema) {
        schema.enum_items = turnstone_core::events::types::PERSISTED.iter().map(|t| Value::String((*t).into())).collect();
    }
}

pub type EventType = Ruled<Text, EventTypeRule>;

/// A name (`validate::name`): not blank, no control characters (400 `invalid_field`).
pub struct NameRule;

/// Control characters, as Rust's `char::is_control` (Unicode category Cc).
const CONTROL: &str = "\\u0000-\\u001F\\u007F-\\u009F";

impl Rule for NameRule {
    const NAME: &'static str = "name";
    fn describe(schema: &mut MetaSchema) {
        schema.pattern = Some(format!("^[^{CONTROL}]*[^\\s{CONTROL}][^{CONTROL}]*$"));
    }
}

pub type Name = Ruled<Text, NameRule>;

/// Free text (`validate::text`): no NUL character, which PostgreSQL cannot store (400 `invalid_field`).
pub struct FreeTextRule;

impl Rule for FreeTextRule {
    const NAME: &'static str = "free_text";
    fn describe(schema: &mut MetaSchema) {
        schema.pattern = Some("^[^\\u0000]*$".into());
    }
}

pub type FreeText = Ruled<Text, FreeTextRule>;

/// A capability name from the registry, or `mcp:<MCP server id>` (`capabilities::validate_names`,
/// `mcp::ensure_capabilities`, 400 `unknown_capability`).
pub struct CapabilityRule;

impl Rule for CapabilityRule {
    const NAME: &'static str = "capability";
    fn describe(schema: &mut MetaSchema) {
        let names: Vec<&str> = turnstone_core::capabilities::registry().iter().map(|c| c.name).collect();
        schema.pattern = Some(format!("^({}|mcp:mcp_[0-9a-fA-F]{{32}})$", names.join("|")));
    }
}

pub type CapabilityName = Ruled<Text, CapabilityRule>;

/// A file or directory path (`storage::FilePath`, 400 `invalid_path`): absolute, `/`-separated,
/// segments of 1-255 bytes that are not `.` or `..`, no control characters, at most 1,024 bytes.
pub struct FilePathRule;

impl Rule for FilePathRule {
    const NAME: &'static str = "file_path";
    fn describe(schema: &mut MetaSchema) {
        schema.pattern = Some(format!("^(/(?!\\.\\.?(/|$))[^/{CONTROL}]{{1,255}})+$"));
        schema.min_length = Some(2);
        schema.max_length = Some(turnstone_core::storage::MAX_PATH_BYTES);
        schema.example = Some(Value::String("/notes/todo.md".into()));
    }
}

pub type FilePath = Ruled<Text, FilePathRule>;

/// A directory path: a [`FilePathRule`] path, or the root `/`.
pub struct DirPathRule;

impl Rule for DirPathRule {
    const NAME: &'static str = "dir_path";
    fn describe(schema: &mut MetaSchema) {
        schema.pattern = Some(format!("^(/|(/(?!\\.\\.?(/|$))[^/{CONTROL}]{{1,255}})+)$"));
        schema.min_length = Some(1);
        schema.max_length = Some(turnstone_core::storage::MAX_PATH_BYTES);
        schema.example = Some(Value::String("/notes".into()));
    }
}

pub type DirPath = Ruled<Text, DirPathRule>;

/// A key of the key-value store: 1-256 characters of `[A-Za-z0-9._:-]` (400 `invalid_key`).
pub struct KvKeyRule;

impl Rule for KvKeyRule {
    const NAME: &'static str = "kv_key";
    fn describe(schema: &mut MetaSchema) {
        one_to_max_of(schema, "[A-Za-z0-9._:-]", turnstone_core::storage::MAX_KEY_BYTES, "user:name");
    }
}

pub type KvKey = Ruled<Text, KvKeyRule>;

/// A key prefix: 0-256 characters of `[A-Za-z0-9._:-]` (400 `invalid_key`).
pub struct KvPrefixRule;

impl Rule for KvPrefixRule {
    const NAME: &'static str = "kv_prefix";
    fn describe(schema: &mut MetaSchema) {
        schema.pattern = Some(format!("^[A-Za-z0-9._:-]{{0,{}}}$", turnstone_core::storage::MAX_KEY_BYTES));
        schema.max_length = Some(turnstone_core::storage::MAX_KEY_BYTES);
        schema.example = Some(Value::String("user:".into()));
    }
}

pub type KvPrefix = Ruled<Text, KvPrefixRule>;

/// No item twice (`uniqueItems`); the item's own rule names the code of a repeat.
pub struct Distinct;

impl Rule for Distinct {
    const NAME: &'static str = "distinct";
    fn describe(schema: &mut MetaSchema) {
        schema.unique_items = Some(true);
    }
}

/// Distinct tags (400 `invalid_tag` for a repeat).
pub type Tags = Ruled<Vec<Tag>, Distinct>;
/// Distinct capability names (400 `unknown_capability` for a repeat).
pub type CapabilityNames = Ruled<Vec<CapabilityName>, Distinct>;

/// At most `MAX` items (`maxItems`).
pub struct AtMost<const MAX: usize>;

impl<const MAX: usize> Rule for AtMost<MAX> {
    const NAME: &'static str = "at_most";
    fn describe(schema: &mut MetaSchema) {
        schema.max_items = Some(MAX);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema<T: Type>() -> MetaSchema {
        match T::schema_ref() {
            MetaSchemaRef::Inline(s) => *s,
            MetaSchemaRef::Reference(r) => panic!("inline schema expected, got {r}"),
        }
    }

    #[test]
    fn the_id_pattern_is_what_ids_parse_accepts() {
        let s = schema::<Id<Agent>>();
        assert_eq!(s.ty, "string");
        assert_eq!(s.pattern.as_deref(), Some("^agt_[0-9a-fA-F]{32}$"));
        let example = s.example.as_ref().and_then(Value::as_str).unwrap();
        assert!(Agent::parse(example).is_ok(), "the example is a valid id");
        assert_eq!(s.max_length, Some(example.len()));
    }

    #[test]
    fn bounds_and_lists_come_from_the_limits() {
        let s = schema::<PageLimit>();
        assert_eq!((s.minimum, s.maximum), (Some(1.0), Some(limits::MAX_PAGE_LIMIT as f64)));
        assert_eq!(schema::<EventsLimit>().maximum, Some(limits::MAX_EVENTS_LIMIT as f64));
        assert_eq!((schema::<AfterSequence>().minimum, schema::<AfterSequence>().maximum), (Some(0.0), None));
        assert_eq!(schema::<EventType>().enum_items.len(), turnstone_core::events::types::PERSISTED.len());
    }

    #[test]
    fn the_examples_pass_the_rules_they_illustrate() {
        let tag = schema::<Tag>().example.unwrap();
        assert!(turnstone_core::validate::tags(&[tag.as_str().unwrap().to_owned()]).is_ok());
        let key = schema::<IdempotencyKey>().example.unwrap();
        assert!(turnstone_core::idempotency::validate_key(key.as_str().unwrap()).is_ok());
        let secret = schema::<ProviderKey>().example.unwrap();
        assert!(turnstone_core::validate::header_secret("api_key", secret.as_str().unwrap()).is_ok());
    }

    #[test]
    fn the_name_and_text_patterns_are_what_validate_accepts() {
        let name = schema::<Name>().pattern.unwrap();
        assert_eq!(name, r"^[^\u0000-\u001F\u007F-\u009F]*[^\s\u0000-\u001F\u007F-\u009F][^\u0000-\u001F\u007F-\u009F]*$");
        assert_eq!(schema::<FreeText>().pattern.unwrap(), r"^[^\u0000]*$");
        let pattern = schema::<CapabilityName>().pattern.unwrap();
        for c in turnstone_core::capabilities::registry() {
            assert!(pattern.contains(c.name), "{pattern}");
            assert!(turnstone_core::capabilities::validate_names(&[c.name.to_owned()]).is_ok());
        }
        assert!(pattern.contains("mcp:mcp_"));
    }

    #[test]
    fn secrets_are_not_printed() {
        let key = ProviderKey::new(Text("sk-live-secret".into()));
        assert_eq!(format!("{key:?}"), "[redacted]");
        assert!(format!("{:?}", Tag::new(Text("team:a".into()))).contains("team:a"));
    }
}
