//! The capability registry: tools an agent can enable.

use super::*;
use turnstone_core::capabilities;

#[derive(Debug, Object)]
pub struct Tool {
    pub name: String,
    pub description: String,
    /// JSON Schema of the tool's arguments.
    pub parameters: Value,
}

#[derive(Debug, Object)]
pub struct Capability {
    pub name: String,
    pub description: String,
    pub tools: Vec<Tool>,
}

impl From<&capabilities::Capability> for Capability {
    fn from(c: &capabilities::Capability) -> Self {
        Capability {
            name: c.name.into(),
            description: c.description.into(),
            tools: c
                .tools
                .iter()
                .map(|t| Tool { name: t.name.into(), description: t.description.into(), parameters: (t.parameters)() })
                .collect(),
        }
    }
}

#[derive(Debug, Object)]
pub struct CapabilityList {
    pub data: Vec<Capability>,
}
