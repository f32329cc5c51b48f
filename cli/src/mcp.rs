//! `mcp`: the org's MCP server catalog (issue 21's routes) — register a server, list and show
//! them, change or remove one, list its cached tools, refresh them from the server.
//!
//! Header values are write-only secrets: they go out in the request body only. The API answers
//! header names, never values, and the CLI prints nothing else (a malformed `--header` is reported
//! without its value).

use serde_json::{Map, Value, json};

use crate::api::{Client, arg, call, types};
use crate::args::{self, McpFields};
use crate::failure::Failure;
use crate::output::{self, Format};
use crate::resources::{after, body, deleted, key};

const SERVER: &[&str] = &["id", "name", "url", "headers", "allowed_tools", "status", "tools_fetched_at"];
const TOOL: &[&str] = &["model_name", "allowed", "description"];
const ID: &str = "mcp server id";

/// `--header 'Name: value'` flags as the `headers` object; `None` when there are none.
fn headers(flags: &[String]) -> Result<Option<Map<String, Value>>, Failure> {
    if flags.is_empty() {
        return Ok(None);
    }
    let mut object = Map::new();
    for flag in flags {
        let Some((name, value)) = flag.split_once(':') else {
            return Err(Failure::usage("--header wants 'Name: value' (a colon after the name)"));
        };
        let (name, value) = (name.trim(), value.trim());
        if name.is_empty() || value.is_empty() {
            return Err(Failure::usage("--header wants 'Name: value' (a name and a value)"));
        }
        object.insert(name.to_owned(), json!(value));
    }
    Ok(Some(object))
}

fn flags(f: &McpFields) -> Result<Value, Failure> {
    Ok(json!({"name": f.name, "url": f.server_url, "headers": headers(&f.headers)?, "allowed_tools": f.allowed_tools}))
}

pub async fn mcp(c: &Client, o: Format, verb: args::Mcp) -> Result<(), Failure> {
    use args::Mcp::*;
    match verb {
        Ls { page } => output::print(o, &call(c.list_mcp_servers(after(&page)?.as_ref(), page.limit)).await?, SERVER),
        Get { id: i } => output::print(o, &call(c.get_mcp_server(&arg(ID, &i)?)).await?, &[]),
        Add { fields, idempotency_key } => {
            let b: types::McpServerCreate = body(&fields.body, flags(&fields)?)?;
            output::print(o, &call(c.create_mcp_server(key(&idempotency_key)?.as_ref(), &b)).await?, &[])
        }
        Update { id: i, fields, status } => {
            let mut f = flags(&fields)?;
            f["status"] = json!(status);
            let b: types::McpServerUpdate = body(&fields.body, f)?;
            output::print(o, &call(c.update_mcp_server(&arg(ID, &i)?, &b)).await?, &[])
        }
        Rm { id: i } => {
            call(c.delete_mcp_server(&arg(ID, &i)?)).await?;
            deleted(o, &i)
        }
        Tools { id: i } => output::print_as(o, &call(c.list_mcp_server_tools(&arg(ID, &i)?)).await?, TOOL, "model_name"),
        Refresh { id: i } => output::print_as(o, &call(c.refresh_mcp_server(&arg(ID, &i)?)).await?, TOOL, "model_name"),
    }
}
