//! Agents: a name, a system prompt, an optional default model, capabilities and tags.
//! DELETE archives (soft delete); archived agents cannot start new sessions.

use crate::error::{Error, Result};
use crate::ids::{AgentId, ModelId, OrgId, TypedId};
use crate::page::Page;
use crate::tools::{self, ClientTool, Policies};
use crate::{capabilities, limits, providers, validate};
use chrono::{DateTime, Utc};
use sqlx::types::Json;
use sqlx::{AssertSqlSafe, PgConnection};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Agent {
    pub id: AgentId,
    pub name: String,
    pub system_prompt: String,
    pub model_id: Option<ModelId>,
    pub capabilities: Vec<String>,
    pub tags: Vec<String>,
    pub max_iterations: i32,
    pub max_turn_secs: i32,
    /// Tools the client runs (the turn waits for their results).
    pub client_tools: Json<Vec<ClientTool>>,
    /// Tool name or glob → `auto` | `ask` | `deny`.
    pub tool_policies: Json<Policies>,
    pub approval_timeout_secs: i32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub archived_at: Option<DateTime<Utc>>,
}

/// Fields of a new agent, or of an update (`None` = unchanged).
#[derive(Debug, Clone, Default)]
pub struct AgentInput {
    pub name: Option<String>,
    pub system_prompt: Option<String>,
    /// `Some(None)` clears the model.
    pub model_id: Option<Option<ModelId>>,
    pub capabilities: Option<Vec<String>>,
    pub tags: Option<Vec<String>>,
    pub max_iterations: Option<i32>,
    pub max_turn_secs: Option<i32>,
    pub client_tools: Option<Vec<ClientTool>>,
    pub tool_policies: Option<Policies>,
    pub approval_timeout_secs: Option<i32>,
}

const COLUMNS: &str =
    "id, name, system_prompt, model_id, capabilities, tags, max_iterations, max_turn_secs, client_tools, tool_policies,
     approval_timeout_secs, created_at, updated_at, archived_at";

async fn validate_input(conn: &mut PgConnection, org_id: OrgId, input: &AgentInput) -> Result<()> {
    if let Some(name) = &input.name {
        validate::name("name", name)?;
    }
    if let Some(p) = &input.system_prompt {
        validate::text("system_prompt", p, limits::MAX_SYSTEM_PROMPT_CHARS)?;
    }
    if let Some(caps) = &input.capabilities {
        capabilities::validate_names(caps)?;
    }
    if let Some(tags) = &input.tags {
        validate::tags(tags)?;
    }
    if input.max_iterations.is_some_and(|n| !(1..=limits::MAX_ITERATIONS).contains(&n)) {
        return Err(Error::invalid("invalid_max_iterations", format!("max_iterations must be 1-{}", limits::MAX_ITERATIONS)));
    }
    if input.max_turn_secs.is_some_and(|n| !(1..=limits::MAX_TURN_SECS).contains(&n)) {
        return Err(Error::invalid("invalid_max_turn_secs", format!("max_turn_secs must be 1-{}", limits::MAX_TURN_SECS)));
    }
    if let Some(tools) = &input.client_tools {
        tools::validate_client_tools(tools, &[])?;
    }
    if let Some(policies) = &input.tool_policies {
        tools::validate_policies(policies)?;
    }
    if input.approval_timeout_secs.is_some_and(|n| !(1..=limits::MAX_WAIT_SECS).contains(&n)) {
        return Err(Error::invalid("invalid_timeout_secs", format!("approval_timeout_secs must be 1-{}", limits::MAX_WAIT_SECS)));
    }
    if let Some(Some(model_id)) = input.model_id {
        providers::ensure_model(conn, org_id, model_id).await?;
    }
    Ok(())
}

pub async fn create_agent(conn: &mut PgConnection, org_id: OrgId, input: AgentInput) -> Result<Agent> {
    let name = input.name.clone().ok_or_else(|| Error::invalid("missing_field", "name is required"))?;
    validate_input(conn, org_id, &input).await?;
    crate::quotas::check(conn, org_id, crate::quotas::Quota::Agents).await?;
    let agent = sqlx::query_as(AssertSqlSafe(format!(
        "INSERT INTO agents (id, org_id, name, system_prompt, model_id, capabilities, tags, max_iterations, max_turn_secs,
                             client_tools, tool_policies, approval_timeout_secs)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) RETURNING {COLUMNS}"
    )))
    .bind(AgentId::new())
    .bind(org_id)
    .bind(name)
    .bind(input.system_prompt.unwrap_or_default())
    .bind(input.model_id.flatten())
    .bind(input.capabilities.unwrap_or_default())
    .bind(input.tags.unwrap_or_default())
    .bind(input.max_iterations.unwrap_or(10))
    .bind(input.max_turn_secs.unwrap_or(600))
    .bind(Json(input.client_tools.unwrap_or_default()))
    .bind(Json(input.tool_policies.unwrap_or_default()))
    .bind(input.approval_timeout_secs.unwrap_or(limits::DEFAULT_APPROVAL_TIMEOUT_SECS))
    .fetch_one(conn)
    .await?;
    Ok(agent)
}

pub async fn get_agent(conn: &mut PgConnection, org_id: OrgId, id: AgentId) -> Result<Agent> {
    sqlx::query_as(AssertSqlSafe(format!("SELECT {COLUMNS} FROM agents WHERE org_id = $1 AND id = $2")))
        .bind(org_id)
        .bind(id)
        .fetch_optional(conn)
        .await?
        .ok_or(Error::NotFound("agent"))
}

/// Newest first. Archived agents only when asked; `tag` filters by one tag.
pub async fn list_agents(
    conn: &mut PgConnection,
    org_id: OrgId,
    after: Option<AgentId>,
    limit: u32,
    include_archived: bool,
    tag: Option<&str>,
) -> Result<Page<Agent, AgentId>> {
    let rows: Vec<Agent> = sqlx::query_as(AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM agents
          WHERE org_id = $1 AND ($2::uuid IS NULL OR id < $2) AND ($3 OR archived_at IS NULL)
            AND ($4::text IS NULL OR $4 = ANY(tags))
          ORDER BY id DESC LIMIT $5"
    )))
    .bind(org_id)
    .bind(after)
    .bind(include_archived)
    .bind(tag)
    .bind(i64::from(limit) + 1)
    .fetch_all(conn)
    .await?;
    Ok(Page::from_rows(rows, limit, |a| a.id))
}

pub async fn update_agent(conn: &mut PgConnection, org_id: OrgId, id: AgentId, input: AgentInput) -> Result<Agent> {
    validate_input(conn, org_id, &input).await?;
    let clear_model = matches!(input.model_id, Some(None));
    let updated: Option<Agent> = sqlx::query_as(AssertSqlSafe(format!(
        "UPDATE agents SET
            name = coalesce($3, name),
            system_prompt = coalesce($4, system_prompt),
            model_id = CASE WHEN $5 THEN NULL ELSE coalesce($6, model_id) END,
            capabilities = coalesce($7, capabilities),
            tags = coalesce($8, tags),
            max_iterations = coalesce($9, max_iterations),
            max_turn_secs = coalesce($10, max_turn_secs),
            client_tools = coalesce($11, client_tools),
            tool_policies = coalesce($12, tool_policies),
            approval_timeout_secs = coalesce($13, approval_timeout_secs),
            updated_at = now()
          WHERE org_id = $1 AND id = $2 AND archived_at IS NULL
          RETURNING {COLUMNS}"
    )))
    .bind(org_id)
    .bind(id)
    .bind(input.name)
    .bind(input.system_prompt)
    .bind(clear_model)
    .bind(input.model_id.flatten())
    .bind(input.capabilities)
    .bind(input.tags)
    .bind(input.max_iterations)
    .bind(input.max_turn_secs)
    .bind(input.client_tools.map(Json))
    .bind(input.tool_policies.map(Json))
    .bind(input.approval_timeout_secs)
    .fetch_optional(&mut *conn)
    .await?;
    match updated {
        Some(agent) => Ok(agent),
        None => {
            let archived: Option<bool> =
                sqlx::query_scalar("SELECT archived_at IS NOT NULL FROM agents WHERE org_id = $1 AND id = $2")
                    .bind(org_id)
                    .bind(id)
                    .fetch_optional(conn)
                    .await?;
            match archived {
                Some(true) => Err(Error::conflict("agent_archived", "the agent is archived")),
                _ => Err(Error::NotFound("agent")),
            }
        }
    }
}

/// Soft delete. Archiving twice is a no-op that still answers with the agent.
pub async fn archive_agent(conn: &mut PgConnection, org_id: OrgId, id: AgentId) -> Result<Agent> {
    sqlx::query_as(AssertSqlSafe(format!(
        "UPDATE agents SET archived_at = coalesce(archived_at, now()), updated_at = now()
          WHERE org_id = $1 AND id = $2 RETURNING {COLUMNS}"
    )))
    .bind(org_id)
    .bind(id)
    .fetch_optional(conn)
    .await?
    .ok_or(Error::NotFound("agent"))
}
