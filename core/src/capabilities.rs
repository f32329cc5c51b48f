//! The capability registry: each capability adds system-prompt text and tools
//! to an agent that enables it. The registry is code, read-only over the API.

use crate::error::{Error, Result};
use crate::storage::tools as storage_tools;
use crate::{limits, math};
use serde_json::{Value, json};

/// A tool the model may call.
#[derive(Debug, Clone)]
pub struct ToolDef {
    pub name: &'static str,
    pub description: &'static str,
    /// JSON Schema of the arguments object.
    pub parameters: fn() -> Value,
}

/// A named bundle of prompt text and tools.
#[derive(Debug, Clone)]
pub struct Capability {
    pub name: &'static str,
    pub description: &'static str,
    pub system_prompt: &'static str,
    pub tools: &'static [ToolDef],
}

static REGISTRY: &[Capability] = &[
    Capability {
        name: "current_time",
        description: "Tells the current date and time in UTC.",
        system_prompt: "You can call `current_time` to learn the current date and time (UTC).",
        tools: &[ToolDef {
            name: "current_time",
            description: "Returns the current date and time in UTC, RFC 3339.",
            parameters: || json!({"type": "object", "properties": {}, "additionalProperties": false}),
        }],
    },
    Capability {
        name: "math",
        description: "Evaluates arithmetic expressions exactly instead of guessing.",
        system_prompt: "For any arithmetic, call `math` with an expression using + - * / % ^ and parentheses.",
        tools: &[ToolDef {
            name: "math",
            description: "Evaluates an arithmetic expression (+ - * / % ^, parentheses) and returns the number.",
            parameters: || {
                json!({
                    "type": "object",
                    "properties": {"expression": {"type": "string", "maxLength": math::MAX_EXPRESSION_BYTES}},
                    "required": ["expression"],
                    "additionalProperties": false
                })
            },
        }],
    },
    Capability {
        name: "files",
        description: "A private filesystem for the session: read, write, edit, list, search, delete and move files.",
        system_prompt: storage_tools::FILES_PROMPT,
        tools: storage_tools::FILE_TOOLS,
    },
    Capability {
        name: "kv",
        description: "A private key-value store for the session: JSON values under keys, with versions and optional expiry.",
        system_prompt: storage_tools::KV_PROMPT,
        tools: storage_tools::KV_TOOLS,
    },
];

pub fn registry() -> &'static [Capability] {
    REGISTRY
}

pub fn get(name: &str) -> Option<&'static Capability> {
    REGISTRY.iter().find(|c| c.name == name)
}

/// Unknown names are a 400 (`unknown_capability`); duplicates too.
pub fn validate_names(names: &[String]) -> Result<()> {
    if names.len() > limits::MAX_CAPABILITIES {
        return Err(Error::invalid("too_many_capabilities", format!("at most {} capabilities", limits::MAX_CAPABILITIES)));
    }
    for (i, n) in names.iter().enumerate() {
        if let Some(server) = crate::mcp::capability_server(n) {
            // An MCP server of the org: `mcp::ensure_capabilities` checks it exists.
            server?;
        } else if get(n).is_none() {
            let known: Vec<&str> = REGISTRY.iter().map(|c| c.name).collect();
            return Err(Error::invalid(
                "unknown_capability",
                format!("unknown capability {n:?}; known: {}, or mcp:<MCP server id>", known.join(", ")),
            ));
        }
        if names[..i].contains(n) {
            return Err(Error::invalid("unknown_capability", format!("capability {n:?} listed twice")));
        }
    }
    Ok(())
}

/// The tools an agent with these capabilities offers the model.
pub fn tools_for(names: &[String]) -> Vec<&'static ToolDef> {
    names.iter().filter_map(|n| get(n)).flat_map(|c| c.tools.iter()).collect()
}

/// The agent's system prompt followed by each capability's prompt text.
pub fn system_prompt(agent_prompt: &str, names: &[String]) -> String {
    let mut out = agent_prompt.to_owned();
    for c in names.iter().filter_map(|n| get(n)) {
        if !out.is_empty() {
            out.push_str("\n\n");
        }
        out.push_str(c.system_prompt);
    }
    out
}

/// Whether `tool` is enabled by these capabilities and reaches the session's
/// storage: it then runs on its step's transaction ([`crate::storage::tools::execute`]),
/// not through [`execute`].
pub fn uses_storage(enabled: &[String], tool: &str) -> bool {
    storage_tools::handles(tool) && tools_for(enabled).iter().any(|t| t.name == tool)
}

/// Runs a tool. An `Err` is a tool error: it goes back to the model as the
/// tool's result (marked as an error), it does not fail the turn.
pub fn execute(enabled: &[String], tool: &str, arguments: &str) -> std::result::Result<String, String> {
    if !tools_for(enabled).iter().any(|t| t.name == tool) {
        return Err(format!("tool {tool:?} is not enabled for this agent"));
    }
    let args: Value = if arguments.trim().is_empty() {
        json!({})
    } else {
        serde_json::from_str(arguments).map_err(|e| format!("arguments are not valid JSON: {e}"))?
    };
    match tool {
        "current_time" => Ok(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
        "math" => {
            let expr = args.get("expression").and_then(Value::as_str).ok_or("missing string argument \"expression\"")?;
            math::evaluate(expr).map(math::format_number)
        }
        other => Err(format!("tool {other:?} has no implementation")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_rules_and_tools() {
        assert!(validate_names(&["math".into(), "current_time".into()]).is_ok());
        assert!(matches!(validate_names(&["shell".into()]), Err(Error::Invalid { code: "unknown_capability", .. })));
        let caps = vec!["math".to_string()];
        assert_eq!(execute(&caps, "math", r#"{"expression":"6*7"}"#).unwrap(), "42");
        assert!(execute(&caps, "current_time", "{}").is_err(), "not enabled");
        assert!(execute(&caps, "math", "not json").is_err());
        assert!(system_prompt("Be kind.", &caps).contains("`math`"));
    }
}
