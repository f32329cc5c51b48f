//! Sessions: one conversation with an agent. `status` is derived in the same
//! transactions that enqueue and finish turns (see [`crate::turns`]).

use crate::error::{Error, Result};
use crate::ids::{AgentId, ModelId, OrgId, SessionId, TypedId};
use crate::page::Page;
use crate::tools::ClientTool;
use crate::{limits, providers, validate};
use chrono::{DateTime, Utc};
use sqlx::types::Json;
use sqlx::{AssertSqlSafe, PgConnection};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Session {
    pub id: SessionId,
    pub agent_id: AgentId,
    pub model_id: Option<ModelId>,
    pub title: Option<String>,
    pub tags: Vec<String>,
    /// `idle`, `queued`, `running`, `cancelling` or `waiting`.
    pub status: String,
    /// Client tools the session adds to its agent's.
    pub client_tools: Json<Vec<ClientTool>>,
    pub last_sequence: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub struct SessionInput {
    pub agent_id: AgentId,
    pub model_id: Option<ModelId>,
    pub title: Option<String>,
    pub tags: Vec<String>,
    pub client_tools: Vec<ClientTool>,
}

impl SessionInput {
    /// A session of this agent with its defaults: the agent's model, no title, no tags, no client tools of its own.
    pub fn of_agent(agent_id: AgentId) -> Self {
        SessionInput { agent_id, model_id: None, title: None, tags: Vec::new(), client_tools: Vec::new() }
    }
}

/// Session columns plus its event counter (`q` = `session_sequences`).
const COLUMNS: &str =
    "s.id, s.agent_id, s.model_id, s.title, s.tags, s.status, s.client_tools, q.last_sequence, s.created_at, s.updated_at";
const FROM: &str = "sessions s JOIN session_sequences q ON q.session_id = s.id AND q.org_id = s.org_id";

pub async fn create_session(conn: &mut PgConnection, org_id: OrgId, input: SessionInput) -> Result<Session> {
    if let Some(t) = &input.title {
        validate::text("title", t, limits::MAX_TITLE_CHARS)?;
    }
    validate::tags(&input.tags)?;
    let agent: Option<(Option<DateTime<Utc>>, Json<Vec<ClientTool>>)> =
        sqlx::query_as("SELECT archived_at, client_tools FROM agents WHERE org_id = $1 AND id = $2")
            .bind(org_id)
            .bind(input.agent_id)
            .fetch_optional(&mut *conn)
            .await?;
    let agent_tools = match agent {
        None => return Err(Error::NotFound("agent")),
        Some((Some(_), _)) => return Err(Error::conflict("agent_archived", "the agent is archived")),
        Some((None, tools)) => tools.0,
    };
    crate::tools::validate_client_tools(&input.client_tools, &agent_tools)?;
    if let Some(m) = input.model_id {
        providers::ensure_model(conn, org_id, m).await?;
    }
    crate::quotas::check(conn, org_id, crate::quotas::Quota::Sessions).await?;
    let id = SessionId::new();
    sqlx::query(
        "INSERT INTO sessions (id, org_id, agent_id, model_id, title, tags, client_tools) VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(id)
    .bind(org_id)
    .bind(input.agent_id)
    .bind(input.model_id)
    .bind(input.title)
    .bind(input.tags)
    .bind(Json(input.client_tools))
    .execute(&mut *conn)
    .await?;
    sqlx::query("INSERT INTO session_sequences (session_id, org_id) VALUES ($1, $2)")
        .bind(id)
        .bind(org_id)
        .execute(&mut *conn)
        .await?;
    get_session(conn, org_id, id).await
}

pub async fn get_session(conn: &mut PgConnection, org_id: OrgId, id: SessionId) -> Result<Session> {
    sqlx::query_as(AssertSqlSafe(format!("SELECT {COLUMNS} FROM {FROM} WHERE s.org_id = $1 AND s.id = $2")))
        .bind(org_id)
        .bind(id)
        .fetch_optional(conn)
        .await?
        .ok_or(Error::NotFound("session"))
}

/// Newest first, optionally only one agent's sessions.
pub async fn list_sessions(
    conn: &mut PgConnection,
    org_id: OrgId,
    after: Option<SessionId>,
    limit: u32,
    agent_id: Option<AgentId>,
) -> Result<Page<Session, SessionId>> {
    let rows: Vec<Session> = sqlx::query_as(AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM {FROM}
          WHERE s.org_id = $1 AND ($2::uuid IS NULL OR s.id < $2) AND ($3::uuid IS NULL OR s.agent_id = $3)
          ORDER BY s.id DESC LIMIT $4"
    )))
    .bind(org_id)
    .bind(after)
    .bind(agent_id)
    .bind(i64::from(limit) + 1)
    .fetch_all(conn)
    .await?;
    Ok(Page::from_rows(rows, limit, |s| s.id))
}
