//! Tools beyond the capability registry: client tools (declared on an agent or
//! a session, run by the caller, which posts their results) and tool policies
//! (`auto`, `ask` for a person's approval, `deny`), with the canonical
//! argument hash an approval is bound to.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::{capabilities, limits};

/// A tool the client runs: the model may call it, and the turn waits for its
/// result (`POST …/tool-results`) until `timeout_secs` pass.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ClientTool {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// JSON Schema of the arguments object.
    pub parameters: Value,
    pub timeout_secs: i32,
}

/// Checks a list of client tools, on their own and beside `others` (the
/// agent's, when a session adds more): names follow the model's function-name
/// rules, are unique, and collide with no capability tool (400).
pub fn validate_client_tools(tools: &[ClientTool], others: &[ClientTool]) -> Result<()> {
    if tools.len() + others.len() > limits::MAX_CLIENT_TOOLS {
        return Err(Error::invalid("too_many_client_tools", format!("at most {} client tools", limits::MAX_CLIENT_TOOLS)));
    }
    for (i, t) in tools.iter().enumerate() {
        let name_ok = !t.name.is_empty()
            && t.name.chars().count() <= limits::MAX_TOOL_NAME_CHARS
            && t.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !name_ok {
            return Err(Error::invalid(
                "invalid_tool_name",
                format!("a tool name must be 1-{} letters, digits, '_' or '-'", limits::MAX_TOOL_NAME_CHARS),
            ));
        }
        if capabilities::registry().iter().flat_map(|c| c.tools.iter()).any(|c| c.name == t.name) {
            return Err(Error::invalid("tool_name_conflict", format!("{:?} is the name of a capability tool", t.name)));
        }
        if tools[..i].iter().chain(others).any(|o| o.name == t.name) {
            return Err(Error::invalid("tool_name_conflict", format!("client tool {:?} is declared twice", t.name)));
        }
        crate::validate::text("client_tools.description", &t.description, limits::MAX_TOOL_DESCRIPTION_CHARS)?;
        if !t.parameters.is_object() || t.parameters.to_string().len() > limits::MAX_TOOL_PARAMETERS_BYTES {
            return Err(Error::invalid(
                "invalid_tool_parameters",
                format!("parameters must be a JSON Schema object of at most {} bytes", limits::MAX_TOOL_PARAMETERS_BYTES),
            ));
        }
        if !(1..=limits::MAX_WAIT_SECS).contains(&t.timeout_secs) {
            return Err(Error::invalid("invalid_timeout_secs", format!("timeout_secs must be 1-{}", limits::MAX_WAIT_SECS)));
        }
    }
    Ok(())
}

/// What happens when the model calls a tool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Policy {
    /// Run it.
    Auto,
    /// Wait for a person's approval, then run it with the arguments they approved.
    Ask,
    /// Never run it: the model gets `{"error":"denied"}`.
    Deny,
}

/// An agent's `tool_policies`: tool name or glob (`*`, `?`) → policy.
pub type Policies = std::collections::BTreeMap<String, Policy>;

/// Checks an agent's `tool_policies`.
pub fn validate_policies(policies: &Policies) -> Result<()> {
    if policies.len() > limits::MAX_TOOL_POLICIES {
        return Err(Error::invalid("too_many_tool_policies", format!("at most {} tool policies", limits::MAX_TOOL_POLICIES)));
    }
    for pattern in policies.keys() {
        if pattern.is_empty() || pattern.chars().count() > limits::MAX_TOOL_PATTERN_CHARS {
            return Err(Error::invalid(
                "invalid_tool_policy",
                format!("a tool policy's pattern must be 1-{} characters", limits::MAX_TOOL_PATTERN_CHARS),
            ));
        }
        crate::validate::text("tool_policies", pattern, limits::MAX_TOOL_PATTERN_CHARS)?;
    }
    Ok(())
}

/// The policy for `tool`: an exact name wins over globs; among globs, the
/// longest pattern (the most specific) wins, ties by pattern order; `auto`
/// when nothing matches.
pub fn policy_for(policies: &Policies, tool: &str) -> Policy {
    if let Some(p) = policies.get(tool) {
        return *p;
    }
    policies
        .iter()
        .filter(|(pattern, _)| glob_matches(pattern, tool))
        .max_by_key(|(pattern, _)| pattern.chars().count())
        .map_or(Policy::Auto, |(_, p)| *p)
}

/// `*` matches any run of characters, `?` one character; nothing else is special.
fn glob_matches(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    // Iterative match with one backtrack point (the last `*`).
    let (mut pi, mut ti, mut star, mut mark) = (0, 0, None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// The arguments as JSON: parsed when they are valid JSON (an empty string is
/// `{}`), else the string itself.
pub fn arguments_json(arguments: &str) -> Value {
    if arguments.trim().is_empty() {
        return Value::Object(Default::default());
    }
    serde_json::from_str(arguments).unwrap_or_else(|_| Value::String(arguments.to_owned()))
}

/// SHA-256 (lowercase hex) of the arguments' canonical JSON: object keys
/// sorted, no insignificant whitespace. Arguments that are not JSON are
/// hashed as a JSON string.
pub fn arguments_sha256(arguments: &str) -> String {
    hex::encode(Sha256::digest(canonical_json(&arguments_json(arguments)).as_bytes()))
}

/// `value` serialised with every object's keys in sorted order.
pub fn canonical_json(value: &Value) -> String {
    fn write(v: &Value, out: &mut String) {
        match v {
            Value::Object(map) => {
                let mut keys: Vec<&String> = map.keys().collect();
                keys.sort();
                out.push('{');
                for (i, k) in keys.into_iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&Value::String(k.clone()).to_string());
                    out.push(':');
                    write(&map[k], out);
                }
                out.push('}');
            }
            Value::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write(item, out);
                }
                out.push(']');
            }
            scalar => out.push_str(&scalar.to_string()),
        }
    }
    let mut out = String::new();
    write(value, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn globs_and_exact_names_pick_the_policy() {
        let p: Policies =
            [("delete_*".to_string(), Policy::Ask), ("delete_all".into(), Policy::Deny), ("*".into(), Policy::Auto)].into();
        assert_eq!(policy_for(&p, "delete_all"), Policy::Deny, "an exact name wins");
        assert_eq!(policy_for(&p, "delete_row"), Policy::Ask, "the longer glob wins");
        assert_eq!(policy_for(&p, "read"), Policy::Auto);
        assert_eq!(policy_for(&Policies::new(), "x"), Policy::Auto, "auto by default");
        assert!(glob_matches("a?c*", "abcdef"));
        assert!(!glob_matches("a?c", "abcd"));
        assert!(glob_matches("*x*y", "axxbyy"));
    }

    #[test]
    fn the_argument_hash_ignores_key_order_and_whitespace() {
        let a = arguments_sha256(r#"{"b": 1, "a": {"y": [1, 2], "x": "é"}}"#);
        let b = arguments_sha256(r#"{"a":{"x":"é","y":[1,2]},"b":1}"#);
        assert_eq!(a, b);
        assert_ne!(a, arguments_sha256(r#"{"a":{"x":"é","y":[2,1]},"b":1}"#));
        assert_eq!(canonical_json(&json!({"b": 1, "a": null})), r#"{"a":null,"b":1}"#);
        assert_eq!(arguments_sha256(""), arguments_sha256("{}"));
    }

    #[test]
    fn client_tool_names_may_not_collide() {
        let tool =
            |name: &str| ClientTool { name: name.into(), description: String::new(), parameters: json!({}), timeout_secs: 300 };
        assert!(validate_client_tools(&[tool("lookup_order")], &[]).is_ok());
        let err = |r: Result<()>| match r {
            Err(Error::Invalid { code, .. }) => code,
            other => panic!("{other:?}"),
        };
        assert_eq!(err(validate_client_tools(&[tool("math")], &[])), "tool_name_conflict");
        assert_eq!(err(validate_client_tools(&[tool("a")], &[tool("a")])), "tool_name_conflict");
        assert_eq!(err(validate_client_tools(&[tool("a b")], &[])), "invalid_tool_name");
        let mut slow = tool("slow");
        slow.timeout_secs = limits::MAX_WAIT_SECS + 1;
        assert_eq!(err(validate_client_tools(&[slow], &[])), "invalid_timeout_secs");
    }
}
