//! [`Nullable`]: a response field that is always present and `null` when it has no value.
//!
//! poem-openapi renders `Option<T>` as an optional, non-nullable property, yet serialises
//! `None` as `null`: the contract said "absent" while the server sent `null`, and clients
//! generated from it rejected the responses. The rule (docs/decisions/0016) is that a response
//! property is always present, and one that may lack a value is declared `nullable` —
//! required + nullable in the schema, `null` on the wire. Request bodies keep `Option`
//! (a property that may be left out).

use std::borrow::Cow;

use poem_openapi::registry::{MetaSchema, MetaSchemaRef, Registry};
use poem_openapi::types::{ParseFromJSON, ParseResult, ToJSON, Type};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Always present in a response; `null` when `None`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Nullable<T>(pub Option<T>);

impl<T> From<Option<T>> for Nullable<T> {
    fn from(value: Option<T>) -> Self {
        Nullable(value)
    }
}

impl<T> Nullable<T> {
    pub fn as_ref(&self) -> Option<&T> {
        self.0.as_ref()
    }
}

impl<T: Type> Type for Nullable<T> {
    const IS_REQUIRED: bool = true;
    type RawValueType = T::RawValueType;
    type RawElementValueType = T::RawElementValueType;

    fn name() -> Cow<'static, str> {
        format!("nullable_{}", T::name()).into()
    }

    fn schema_ref() -> MetaSchemaRef {
        match T::schema_ref() {
            MetaSchemaRef::Inline(mut schema) => {
                schema.nullable = true;
                MetaSchemaRef::Inline(schema)
            }
            // OpenAPI 3.0 ignores siblings of `$ref`: wrap it.
            reference => {
                MetaSchemaRef::Inline(Box::new(MetaSchema { all_of: vec![reference], nullable: true, ..MetaSchema::ANY }))
            }
        }
    }

    fn register(registry: &mut Registry) {
        T::register(registry);
    }

    fn as_raw_value(&self) -> Option<&Self::RawValueType> {
        self.0.as_ref().and_then(Type::as_raw_value)
    }

    fn raw_element_iter<'a>(&'a self) -> Box<dyn Iterator<Item = &'a Self::RawElementValueType> + 'a> {
        match &self.0 {
            Some(value) => value.raw_element_iter(),
            None => Box::new(std::iter::empty()),
        }
    }

    fn is_none(&self) -> bool {
        self.0.is_none()
    }
}

impl<T: ParseFromJSON> ParseFromJSON for Nullable<T> {
    fn parse_from_json(value: Option<Value>) -> ParseResult<Self> {
        match value {
            None | Some(Value::Null) => Ok(Nullable(None)),
            value => T::parse_from_json(value).map(|v| Nullable(Some(v))).map_err(|e| e.propagate()),
        }
    }
}

impl<T: ToJSON> ToJSON for Nullable<T> {
    fn to_json(&self) -> Option<Value> {
        Some(self.0.as_ref().and_then(ToJSON::to_json).unwrap_or(Value::Null))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn required_nullable_and_null_on_the_wire() {
        const { assert!(<Nullable<String> as Type>::IS_REQUIRED) };
        let MetaSchemaRef::Inline(schema) = Nullable::<String>::schema_ref() else { panic!("inline") };
        assert!(schema.nullable);
        assert_eq!(schema.ty, "string");
        assert_eq!(Nullable::<String>(None).to_json(), Some(Value::Null));
        assert_eq!(Nullable(Some("x".to_owned())).to_json(), Some(Value::String("x".into())));
        assert_eq!(serde_json::to_value(Nullable::<i64>(None)).unwrap(), Value::Null);
        assert_eq!(serde_json::from_value::<Nullable<i64>>(Value::from(3)).unwrap(), Nullable(Some(3)));
    }
}
