//! Workspaces and the names users give to records.

use serde::{Deserialize, Serialize};

/// The workspace that exists from the first start.
pub const DEFAULT_WORKSPACE: &str = "default";

/// A workspace id: the tenant boundary every record carries.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct WorkspaceId(pub String);

impl WorkspaceId {
    pub fn default_workspace() -> Self {
        WorkspaceId(DEFAULT_WORKSPACE.to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for WorkspaceId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("must be 1 to 64 characters long")]
    Length,
    #[error("may only contain letters, digits, '.', '_' and '-'")]
    Charset,
}

/// Validates a record name: `[A-Za-z0-9._-]{1,64}`.
pub fn validate_name(name: &str) -> Result<(), NameError> {
    if name.is_empty() || name.len() > 64 {
        return Err(NameError::Length);
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err(NameError::Charset);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(validate_name("openAI20240630-2").is_ok());
        assert!(validate_name("a.b_c-d").is_ok());
        assert_eq!(validate_name(""), Err(NameError::Length));
        assert_eq!(validate_name(&"a".repeat(65)), Err(NameError::Length));
        assert!(validate_name(&"a".repeat(64)).is_ok());
        assert_eq!(validate_name("a b"), Err(NameError::Charset));
        assert_eq!(validate_name("a/b"), Err(NameError::Charset));
        assert_eq!(validate_name("ключ"), Err(NameError::Charset));
    }
}
