//! Ports as Kubernetes writes them: a number or a name.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A port given by number or by name (Kubernetes' IntOrString).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PortRef {
    Number(i64),
    Name(String),
}

impl PortRef {
    /// Checks a port as written in a spec: a number in 1..=65535 or a non-empty name.
    pub fn validate(&self) -> Result<(), String> {
        match self {
            Self::Number(n) if (1..=65535).contains(n) => Ok(()),
            Self::Number(n) => Err(format!("port {n} is outside 1..65535")),
            Self::Name(name) if name.trim().is_empty() => Err("port name is empty".into()),
            Self::Name(name) => match name.parse::<i64>() {
                // YAML `port: "80"` is a string to Kubernetes too; it names no port.
                Ok(_) => Err(format!(
                    "port \"{name}\" is a quoted number; write it unquoted"
                )),
                Err(_) => Ok(()),
            },
        }
    }
}

impl fmt::Display for PortRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Number(n) => write!(f, "{n}"),
            Self::Name(name) => f.write_str(name),
        }
    }
}
