//! [`ApiError`]: what went wrong, as a kind a program can match on and a message for the
//! user. The kind crosses the admin socket unchanged, so "not found" stays "not found"
//! whether the node runs in-process or as a daemon. (A fetch's errors are mapped in
//! [`crate::fetch`].)

use serde::{Deserialize, Serialize};

use crate::{export::ExportError, net::NetError, resolve::ResolveError, store::StoreError};

/// The kind of an [`ApiError`] (`"kind"` in `--json` errors).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorKind {
    /// What was named is not here (a hash, a name, a file, a provider).
    NotFound,
    /// The request itself is wrong (a malformed hash, name, pattern or path).
    InvalidInput,
    /// A file to write already exists and replacing it was not asked for.
    AlreadyExists,
    /// Stored data failed verification.
    Corrupt,
    /// Reading or writing local files or the store failed.
    Io,
    /// Peers failed or misbehaved: none could serve what was asked.
    Peer,
    /// The request needs a running node (`commons node run`) and none runs.
    NotRunning,
    /// Another process holds the store.
    Busy,
    /// The work was cancelled (its caller went away).
    Cancelled,
    /// A bug or an unexpected state of the node.
    Internal,
}

/// Why a request failed: a kind, and one line for the user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    /// What kind of failure.
    pub kind: ErrorKind,
    /// What went wrong, for the user.
    pub message: String,
}

impl ApiError {
    /// An error of `kind` saying `message`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    /// The same error with `context: ` before its message (its kind kept).
    pub fn context(self, context: impl std::fmt::Display) -> Self {
        Self {
            kind: self.kind,
            message: format!("{context}: {}", self.message),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        let kind = match &e {
            StoreError::NotFound { .. } | StoreError::NotComplete { .. } => ErrorKind::NotFound,
            StoreError::AmbiguousPrefix { .. }
            | StoreError::UnsupportedEntry { .. }
            | StoreError::Limit(_) => ErrorKind::InvalidInput,
            StoreError::Corrupt { .. }
            | StoreError::Damaged(_)
            | StoreError::Manifest(_)
            | StoreError::HubIdMismatch { .. } => ErrorKind::Corrupt,
            StoreError::InvalidOptions(_) => ErrorKind::Internal,
            StoreError::InUse { .. } => ErrorKind::Busy,
            StoreError::Cancelled => ErrorKind::Cancelled,
            StoreError::SizeConflict { .. } => ErrorKind::Peer,
            _ => ErrorKind::Io,
        };
        Self::new(kind, e.to_string())
    }
}

impl From<ResolveError> for ApiError {
    fn from(e: ResolveError) -> Self {
        match e {
            ResolveError::Store(e) => e.into(),
            ResolveError::NoName(_) | ResolveError::NoMatch(_) => {
                Self::new(ErrorKind::NotFound, e.to_string())
            }
            _ => Self::new(ErrorKind::InvalidInput, e.to_string()),
        }
    }
}

impl From<ExportError> for ApiError {
    fn from(e: ExportError) -> Self {
        match e {
            ExportError::Store(e) => e.into(),
            ExportError::Bundle(e) => e.into(),
            ExportError::Exists { .. } => Self::new(ErrorKind::AlreadyExists, e.to_string()),
            ExportError::Incomplete { .. } => Self::new(ErrorKind::NotFound, e.to_string()),
            ExportError::Escapes { .. } | ExportError::NothingIncluded(_) => {
                Self::new(ErrorKind::InvalidInput, e.to_string())
            }
            _ => Self::new(ErrorKind::Io, e.to_string()),
        }
    }
}

impl From<commons_protocol::archive::ArchiveError> for ApiError {
    fn from(e: commons_protocol::archive::ArchiveError) -> Self {
        use commons_protocol::archive::ArchiveError as A;
        let kind = match &e {
            A::Io(_) => ErrorKind::Io,
            A::NotABundle(_) | A::Version(_) | A::Limit { .. } => ErrorKind::InvalidInput,
            A::Requires { .. } => ErrorKind::NotFound,
            _ => ErrorKind::Corrupt,
        };
        Self::new(kind, e.to_string())
    }
}

impl From<NetError> for ApiError {
    fn from(e: NetError) -> Self {
        let kind = match &e {
            NetError::Listen { .. } => ErrorKind::Io,
            NetError::Stopped => ErrorKind::Internal,
            _ => ErrorKind::Peer,
        };
        Self::new(kind, e.to_string())
    }
}

impl From<commons_protocol::NameError> for ApiError {
    fn from(e: commons_protocol::NameError) -> Self {
        Self::new(ErrorKind::InvalidInput, e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_snake_case_on_the_wire() {
        let e = ApiError::new(ErrorKind::NotFound, "x is not here");
        let json = serde_json::to_string(&e).expect("json");
        assert_eq!(json, r#"{"kind":"not_found","message":"x is not here"}"#);
        assert_eq!(serde_json::from_str::<ApiError>(&json).expect("parse"), e);
    }

    #[test]
    fn store_errors_keep_their_meaning() {
        let hash = commons_protocol::Hash::of(b"x");
        assert_eq!(
            ApiError::from(StoreError::NotFound { hash }).kind,
            ErrorKind::NotFound
        );
        assert_eq!(
            ApiError::from(ResolveError::NotAHash("zz".into())).kind,
            ErrorKind::InvalidInput
        );
        assert_eq!(
            ApiError::from(ExportError::Exists {
                path: "/tmp/x".into()
            })
            .kind,
            ErrorKind::AlreadyExists
        );
        let context = ApiError::new(ErrorKind::NotFound, "gone").context("cannot export");
        assert_eq!(
            (context.kind, context.message.as_str()),
            (ErrorKind::NotFound, "cannot export: gone")
        );
    }
}
