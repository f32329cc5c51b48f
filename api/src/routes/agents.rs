//! Agents (`/v1/agents`): create, list, get, update, archive.

use poem_openapi::param::{Header, Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::types::ToJSON;
use poem_openapi::{ApiResponse, OpenApi};
use turnstone_core::agents::{self, AgentInput};
use turnstone_core::ids::{ModelId, TypedId};
use turnstone_core::limits;

use super::{Tag, page_limit};
use crate::AppState;
use crate::auth::ApiKey;
use crate::error::ApiError;
use crate::idempotency::create_once;
use crate::text::strings;
use crate::wire::rules::{self, Id};
use crate::wire::{self, Agent, AgentCreate, AgentList, AgentUpdate, ClientTool, IdempotencyKey, PageLimit, core_policies};

pub struct AgentsApi {
    pub state: AppState,
}

#[derive(ApiResponse)]
enum AgentCreated {
    #[oai(status = 201)]
    Created(Json<Agent>),
}

#[OpenApi(prefix_path = "/v1", tag = "Tag::Agents")]
impl AgentsApi {
    /// Create an agent. Unknown capability names are a 400 (`unknown_capability`).
    #[oai(path = "/agents", method = "post", operation_id = "createAgent")]
    async fn create(
        &self,
        auth: ApiKey,
        body: Json<AgentCreate>,
        /// Replays the first answer to a retry with the same key (24 hours).
        #[oai(name = "Idempotency-Key")]
        idempotency_key: Header<Option<IdempotencyKey>>,
    ) -> Result<AgentCreated, ApiError> {
        let org = auth.0.org_id;
        let request = format!("createAgent:{}", body.0.to_json_string());
        let b = body.0;
        let input = AgentInput {
            name: Some(b.name.into()),
            system_prompt: Some(b.system_prompt.into()),
            model_id: Some(Id::opt(&b.model_id)?),
            capabilities: Some(strings(b.capabilities.0)),
            tags: Some(strings(b.tags.0)),
            max_iterations: b.max_iterations.map(Into::into),
            max_turn_secs: b.max_turn_secs.map(Into::into),
            client_tools: Some(ClientTool::cores(&b.client_tools)),
            tool_policies: Some(core_policies(&b.tool_policies)),
            approval_timeout_secs: b.approval_timeout_secs.map(Into::into),
        };
        let agent = create_once(&self.state, org, idempotency_key.0.as_deref(), &request, move |c| {
            Box::pin(async move { Ok(Agent::from(agents::create_agent(c, org, input).await?)) })
        })
        .await?;
        Ok(AgentCreated::Created(Json(agent)))
    }

    /// List agents, newest first. Archived agents are hidden unless `include_archived`.
    #[oai(path = "/agents", method = "get", operation_id = "listAgents")]
    async fn list(
        &self,
        auth: ApiKey,
        /// Page size (default 50).
        limit: Query<Option<PageLimit>>,
        /// Cursor: `next_cursor` of the previous page.
        after: Query<Option<Id<rules::Agent>>>,
        /// Include archived agents.
        #[oai(default)]
        include_archived: Query<bool>,
        /// Only agents carrying this tag.
        tag: Query<Option<wire::Tag>>,
    ) -> Result<Json<AgentList>, ApiError> {
        let limit = page_limit(limit.0, limits::MAX_PAGE_LIMIT)?;
        let after = Id::opt(&after.0)?;
        let tag = tag.0.map(String::from);
        if let Some(t) = &tag {
            turnstone_core::validate::tags(std::slice::from_ref(t))?;
        }
        let page = agents::list_agents(
            &mut *self.state.org_tx(auth.0.org_id).await?,
            auth.0.org_id,
            after,
            limit,
            include_archived.0,
            tag.as_deref(),
        )
        .await?;
        Ok(Json(AgentList {
            data: page.items.into_iter().map(Into::into).collect(),
            next_cursor: page.next_after.map(|id| id.wire()).into(),
        }))
    }

    /// Get one agent (archived ones too).
    #[oai(path = "/agents/:agent_id", method = "get", operation_id = "getAgent")]
    async fn get(&self, auth: ApiKey, agent_id: Path<Id<rules::Agent>>) -> Result<Json<Agent>, ApiError> {
        let id = agent_id.0.id()?;
        Ok(Json(agents::get_agent(&mut *self.state.org_tx(auth.0.org_id).await?, auth.0.org_id, id).await?.into()))
    }

    /// Update an agent; absent fields are unchanged. Archived agents cannot be updated.
    #[oai(path = "/agents/:agent_id", method = "patch", operation_id = "updateAgent")]
    async fn update(
        &self,
        auth: ApiKey,
        agent_id: Path<Id<rules::Agent>>,
        body: Json<AgentUpdate>,
    ) -> Result<Json<Agent>, ApiError> {
        let id = agent_id.0.id()?;
        let b = body.0;
        let model_id = match b.model_id.as_deref() {
            None => None,
            Some("") => Some(None),
            Some(m) => Some(Some(ModelId::parse(m)?)),
        };
        let input = AgentInput {
            name: b.name.map(Into::into),
            system_prompt: b.system_prompt.map(Into::into),
            model_id,
            capabilities: b.capabilities.map(|c| strings(c.0)),
            tags: b.tags.map(|t| strings(t.0)),
            max_iterations: b.max_iterations.map(Into::into),
            max_turn_secs: b.max_turn_secs.map(Into::into),
            client_tools: b.client_tools.as_deref().map(ClientTool::cores),
            tool_policies: b.tool_policies.as_ref().map(core_policies),
            approval_timeout_secs: b.approval_timeout_secs.map(Into::into),
        };
        let mut tx = self.state.org_tx(auth.0.org_id).await?;
        let agent = agents::update_agent(&mut tx, auth.0.org_id, id, input).await?;
        tx.commit().await.map_err(turnstone_core::Error::from)?;
        Ok(Json(agent.into()))
    }

    /// Archive an agent (soft delete). Its sessions and events stay readable.
    #[oai(path = "/agents/:agent_id", method = "delete", operation_id = "archiveAgent")]
    async fn archive(&self, auth: ApiKey, agent_id: Path<Id<rules::Agent>>) -> Result<Json<Agent>, ApiError> {
        let id = agent_id.0.id()?;
        let mut tx = self.state.org_tx(auth.0.org_id).await?;
        let agent = agents::archive_agent(&mut tx, auth.0.org_id, id).await?;
        tx.commit().await.map_err(turnstone_core::Error::from)?;
        Ok(Json(agent.into()))
    }
}
