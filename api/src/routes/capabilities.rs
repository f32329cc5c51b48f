//! `GET /v1/capabilities`: the read-only capability registry.

use poem_openapi::OpenApi;
use poem_openapi::payload::Json;
use turnstone_core::capabilities;

use super::Tag;
use crate::auth::ApiKey;
use crate::error::ApiError;
use crate::wire::{Capability, CapabilityList};

pub struct CapabilitiesApi;

#[OpenApi(prefix_path = "/v1", tag = "Tag::Capabilities")]
impl CapabilitiesApi {
    /// List capabilities an agent can enable, with the tools each contributes.
    #[oai(path = "/capabilities", method = "get", operation_id = "listCapabilities")]
    async fn list(&self, _auth: ApiKey) -> Result<Json<CapabilityList>, ApiError> {
        Ok(Json(CapabilityList { data: capabilities::registry().iter().map(Capability::from).collect() }))
    }
}
