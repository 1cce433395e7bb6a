//! Why a binding cannot be reconciled.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Why a binding cannot be reconciled; names the field (or the object) that is wrong.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BindingError {
    /// A path into the binding's declaration, e.g. `spec.serviceRef.port`, or the tag key.
    pub field: String,
    pub message: String,
}

impl BindingError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for BindingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.field, self.message)
        }
    }
}

impl std::error::Error for BindingError {}
