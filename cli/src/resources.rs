//! Noun-verb commands over the API's resources: each parses its arguments into the generated
//! client's types (a value the contract rejects is a usage error, found before sending), makes one
//! call, and prints the answer.

use std::io::Read;

use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};

use crate::api::{self, Client, arg, call, types};
use crate::args::{self, BodyFile, Page};
use crate::failure::Failure;
use crate::output::{self, Format};

const AGENT: &[&str] = &["id", "name", "model_id", "capabilities", "tags", "created_at", "archived_at"];
const SESSION: &[&str] = &["id", "agent_id", "status", "title", "tags", "last_sequence", "updated_at"];
const MESSAGE: &[&str] = &["sequence", "role", "turn_id", "content"];
const EVENT: &[&str] = &["sequence", "type", "turn_id", "ts", "data"];
const PROVIDER: &[&str] = &["id", "name", "base_url", "has_api_key", "created_at"];
const MODEL: &[&str] = &["id", "provider_id", "name", "is_default", "created_at"];
const KEY: &[&str] = &["id", "name", "display_prefix", "created_at", "expires_at", "revoked_at", "last_used_at"];
const CAPABILITY: &[&str] = &["name", "description"];
const ORG: &[&str] = &["id", "name", "disabled", "max_agents", "max_sessions", "max_concurrent_turns", "created_at"];

/// A request body: the --file object (if any) with the flags set over it, parsed into `T`.
pub(crate) fn body<T: DeserializeOwned>(file: &BodyFile, flags: Value) -> Result<T, Failure> {
    let mut object = match &file.file {
        None => Map::new(),
        Some(path) => {
            let text = if path.as_os_str() == "-" {
                let mut s = String::new();
                std::io::stdin().read_to_string(&mut s).map_err(|e| Failure::usage(format!("stdin: {e}")))?;
                s
            } else {
                std::fs::read_to_string(path).map_err(|e| Failure::usage(format!("{}: {e}", path.display())))?
            };
            match serde_json::from_str(&text) {
                Ok(Value::Object(o)) => o,
                Ok(_) => return Err(Failure::usage(format!("{}: not a JSON object", path.display()))),
                Err(e) => return Err(Failure::usage(format!("{}: {e}", path.display()))),
            }
        }
    };
    for (k, v) in flags.as_object().into_iter().flatten() {
        let unset = v.is_null() || v.as_array().is_some_and(|a| a.is_empty());
        if !unset {
            object.insert(k.clone(), v.clone());
        }
    }
    serde_json::from_value(Value::Object(object)).map_err(|e| Failure::usage(format!("request body: {e}")))
}

pub(crate) fn key<T: std::str::FromStr>(value: &Option<String>) -> Result<Option<T>, Failure>
where
    T::Err: std::fmt::Display,
{
    value.as_deref().map(|v| arg("--idempotency-key", v)).transpose()
}

pub(crate) fn after<T: std::str::FromStr>(page: &Page) -> Result<Option<T>, Failure>
where
    T::Err: std::fmt::Display,
{
    page.after.as_deref().map(|v| arg("--after", v)).transpose()
}

fn agent_flags(f: &args::AgentFields) -> Value {
    json!({
        "name": f.name, "system_prompt": f.system_prompt, "model_id": f.model_id,
        "capabilities": f.capabilities, "tags": f.tags,
        "max_iterations": f.max_iterations, "max_turn_secs": f.max_turn_secs,
    })
}

pub async fn agents(c: &Client, o: Format, verb: args::Agents) -> Result<(), Failure> {
    use args::Agents::*;
    match verb {
        List { tag, include_archived, page } => {
            let tag = tag.as_deref().map(|t| arg("--tag", t)).transpose()?;
            let r = call(c.list_agents(after(&page)?.as_ref(), Some(include_archived), page.limit, tag.as_ref())).await?;
            output::print(o, &r, AGENT)
        }
        Get { id } => output::print(o, &call(c.get_agent(&arg("agent id", &id)?)).await?, &[]),
        Create { fields, idempotency_key } => {
            let b: types::AgentCreate = body(&fields.body, agent_flags(&fields))?;
            output::print(o, &call(c.create_agent(key(&idempotency_key)?.as_ref(), &b)).await?, &[])
        }
        Update { id, fields } => {
            let b: types::AgentUpdate = body(&fields.body, agent_flags(&fields))?;
            output::print(o, &call(c.update_agent(&arg("agent id", &id)?, &b)).await?, &[])
        }
        Archive { id } => output::print(o, &call(c.archive_agent(&arg("agent id", &id)?)).await?, &[]),
    }
}

pub async fn sessions(c: &Client, o: Format, verb: args::Sessions) -> Result<(), Failure> {
    use args::Sessions::*;
    match verb {
        List { agent, page } => {
            let agent = agent.as_deref().map(|a| arg("--agent", a)).transpose()?;
            output::print(o, &call(c.list_sessions(after(&page)?.as_ref(), agent.as_ref(), page.limit)).await?, SESSION)
        }
        Get { id } => output::print(o, &call(c.get_session(&arg("session id", &id)?)).await?, &[]),
        Create { agent_id, model_id, title, tags, body: file, idempotency_key } => {
            let b: types::SessionCreate =
                body(&file, json!({"agent_id": agent_id, "model_id": model_id, "title": title, "tags": tags}))?;
            output::print(o, &call(c.create_session(key(&idempotency_key)?.as_ref(), &b)).await?, &[])
        }
        Cancel { id, all } => output::print(o, &call(c.cancel_turn(&arg("session id", &id)?, Some(all))).await?, &[]),
        Watch { id, since, until } => crate::watch::run(c, o, id, since, until).await,
        Pending { id } => crate::waiting::pending(c, o, &id).await,
        Approve { id, approval_id, reason } => crate::waiting::approve(c, o, &id, &approval_id, true, reason.as_deref()).await,
        Deny { id, approval_id, reason } => crate::waiting::approve(c, o, &id, &approval_id, false, reason.as_deref()).await,
        ToolResult { id, call_id, result, error } => crate::waiting::tool_result(c, o, &id, &call_id, &result, error).await,
    }
}

pub async fn messages(c: &Client, o: Format, verb: args::Messages) -> Result<(), Failure> {
    use args::Messages::*;
    match verb {
        List { session, after_sequence, limit, order } => {
            let order = order.as_deref().map(|v| arg("--order", v)).transpose()?;
            let r = call(c.list_messages(&arg("session id", &session)?, after_sequence, limit, order)).await?;
            output::print(o, &r, MESSAGE)
        }
        Send { session, text, model_id, body: file, idempotency_key } => {
            let content = text.map(|t| json!([{"type": "text", "text": t}]));
            let controls = model_id.map(|m| json!({"model_id": m}));
            let b: types::MessageCreate = body(&file, json!({"content": content, "controls": controls}))?;
            let r = call(c.post_message(&arg("session id", &session)?, key(&idempotency_key)?.as_ref(), &b)).await?;
            output::print(o, &r, &[])
        }
    }
}

pub async fn events(c: &Client, o: Format, verb: args::Events) -> Result<(), Failure> {
    let args::Events::List { session, types, after_sequence, limit } = verb;
    let types = match types.is_empty() {
        true => None,
        false => Some(types.iter().map(|t| arg("--type", t)).collect::<Result<Vec<_>, _>>()?),
    };
    let r = call(c.list_events(&arg("session id", &session)?, after_sequence, limit, types.as_ref())).await?;
    output::print(o, &r, EVENT)
}

pub async fn providers(c: &Client, o: Format, verb: args::Providers) -> Result<(), Failure> {
    use args::Providers::*;
    match verb {
        List { page } => output::print(o, &call(c.list_providers(after(&page)?.as_ref(), page.limit)).await?, PROVIDER),
        Get { id } => output::print(o, &call(c.get_provider(&arg("provider id", &id)?)).await?, &[]),
        Create { name, base_url, api_key, body: file, idempotency_key } => {
            let b: types::ProviderCreate = body(&file, json!({"name": name, "base_url": base_url, "api_key": api_key}))?;
            output::print(o, &call(c.create_provider(key(&idempotency_key)?.as_ref(), &b)).await?, &[])
        }
        Update { id, name, base_url, api_key, body: file } => {
            let b: types::ProviderUpdate = body(&file, json!({"name": name, "base_url": base_url, "api_key": api_key}))?;
            output::print(o, &call(c.update_provider(&arg("provider id", &id)?, &b)).await?, &[])
        }
        Delete { id } => {
            call(c.delete_provider(&arg("provider id", &id)?)).await?;
            deleted(o, &id)
        }
    }
}

pub async fn models(c: &Client, o: Format, verb: args::Models) -> Result<(), Failure> {
    use args::Models::*;
    match verb {
        List { page } => output::print(o, &call(c.list_models(after(&page)?.as_ref(), page.limit)).await?, MODEL),
        Get { id } => output::print(o, &call(c.get_model(&arg("model id", &id)?)).await?, &[]),
        Create { provider_id, name, default, body: file, idempotency_key } => {
            let default = default.then_some(true);
            let b: types::ModelCreate = body(&file, json!({"provider_id": provider_id, "name": name, "is_default": default}))?;
            output::print(o, &call(c.create_model(key(&idempotency_key)?.as_ref(), &b)).await?, &[])
        }
        Delete { id } => {
            call(c.delete_model(&arg("model id", &id)?)).await?;
            deleted(o, &id)
        }
    }
}

/// A 204 has no body: `-o json` prints `{"deleted": id}` so that scripts still read JSON.
pub(crate) fn deleted(o: Format, id: &str) -> Result<(), Failure> {
    match o {
        Format::Json => output::print(o, &json!({ "deleted": id }), &[]),
        Format::Table => {
            println!("deleted {id}");
            Ok(())
        }
        Format::Id => {
            println!("{id}");
            Ok(())
        }
    }
}

pub async fn keys(c: &Client, o: Format, verb: args::Keys) -> Result<(), Failure> {
    use args::Keys::*;
    match verb {
        List { page } => output::print(o, &call(c.list_api_keys(after(&page)?.as_ref(), page.limit)).await?, KEY),
        Create { name, expires_at, body: file, idempotency_key } => {
            let b: types::ApiKeyCreate = body(&file, json!({"name": name, "expires_at": expires_at}))?;
            output::print(o, &call(c.create_api_key(key(&idempotency_key)?.as_ref(), &b)).await?, &[])
        }
        Revoke { id } => output::print(o, &call(c.revoke_api_key(&arg("key id", &id)?)).await?, &[]),
    }
}

pub async fn capabilities(c: &Client, o: Format, verb: args::Capabilities) -> Result<(), Failure> {
    let args::Capabilities::List = verb;
    output::print(o, &call(c.list_capabilities()).await?, CAPABILITY)
}

pub async fn orgs(c: &Client, o: Format, verb: args::Orgs) -> Result<(), Failure> {
    use args::Orgs::*;
    match verb {
        List { page } => output::print(o, &call(c.list_orgs(after(&page)?.as_ref(), page.limit)).await?, ORG),
        Get { id } => output::print(o, &call(c.get_org(&arg("org id", &id)?)).await?, &[]),
        Create { name, body: file } => {
            let b: types::OrgCreate = body(&file, json!({"name": name}))?;
            output::print(o, &call(c.create_org(&b)).await?, &[])
        }
        Update { id, fields: f } => {
            let b: types::OrgUpdate = body(
                &f.body,
                json!({"name": f.name, "disabled": f.disabled, "max_agents": f.max_agents, "max_sessions": f.max_sessions,
                       "max_concurrent_turns": f.max_concurrent_turns, "rate_limit_per_minute": f.rate_limit_per_minute}),
            )?;
            output::print(o, &call(c.update_org(&arg("org id", &id)?, &b)).await?, &[])
        }
        CreateKey { id, name, expires_at, body: file } => {
            let b: types::ApiKeyCreate = body(&file, json!({"name": name, "expires_at": expires_at}))?;
            output::print(o, &call(c.create_org_api_key(&arg("org id", &id)?, &b)).await?, &[])
        }
    }
}

/// Which credential each noun needs.
pub fn credential(command: &args::Command) -> api::Credential {
    match command {
        args::Command::Orgs(_) => api::Credential::Operator,
        _ => api::Credential::ApiKey,
    }
}
