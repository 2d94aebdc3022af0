//! The one place where a refused or failed call becomes a `tonic::Status`.
//!
//! Handlers return [`ApiError`]; its conversion attaches the standard `google.rpc` details
//! (`BadRequest` field violations, `ErrorInfo` with a stable reason) so a client in any
//! language can branch on them. Internal causes are logged here, once, and never reach the
//! caller.

use std::collections::HashMap;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, FieldViolation, StatusExt};

/// Stable reasons carried in `ErrorInfo.reason`. Clients branch on these strings, so they are
/// added sparingly and never renamed.
pub mod reason {
    /// The token is missing, malformed, expired or signed by an unknown key.
    pub const UNAUTHENTICATED: &str = "UNAUTHENTICATED";
    /// The caller's roles do not allow the action.
    pub const MISSING_ROLE: &str = "MISSING_ROLE";
    /// The action is reserved for the Aegis service identity.
    pub const SERVICE_ONLY: &str = "SERVICE_ONLY";
    /// The transition table does not allow the requested status change.
    pub const INVALID_STATE_TRANSITION: &str = "INVALID_STATE_TRANSITION";
    /// The etag sent with an edit no longer matches the resource.
    pub const ETAG_MISMATCH: &str = "ETAG_MISMATCH";
    /// The resource does not exist.
    pub const NOT_FOUND: &str = "NOT_FOUND";
    /// The resource already exists.
    pub const ALREADY_EXISTS: &str = "ALREADY_EXISTS";
    /// The requester of an exception tried to approve it.
    pub const SELF_APPROVAL_FORBIDDEN: &str = "SELF_APPROVAL_FORBIDDEN";
    /// The state of the resource does not allow the action.
    pub const FAILED_PRECONDITION: &str = "FAILED_PRECONDITION";
    /// A dependency (database, another service) is not reachable right now.
    pub const UNAVAILABLE: &str = "UNAVAILABLE";
}

/// One invalid field of a request: its path (`filter.statuses[2]`) and the rule it breaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Path of the field in the request message, in protobuf field names.
    pub field: String,
    /// The rule the value breaks, in words a person can act on.
    pub description: String,
}

impl Violation {
    /// A violation of `field` described by `description`.
    pub fn new(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            description: description.into(),
        }
    }
}

/// Every way a call can be refused or fail, as the boundary reports it.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request is malformed; nothing changed.
    #[error("invalid request: {}", describe(.0))]
    InvalidArgument(Vec<Violation>),
    /// No usable token was presented.
    #[error("{0}")]
    Unauthenticated(String),
    /// The caller is known but may not do this; nothing changed.
    #[error("{message}")]
    PermissionDenied {
        /// Stable reason, from [`reason`].
        reason: &'static str,
        /// What was refused and why.
        message: String,
    },
    /// The named resource does not exist.
    #[error("{kind} {id} not found")]
    NotFound {
        /// The kind of resource (`case`, `finding`).
        kind: &'static str,
        /// The id as the caller gave it.
        id: String,
    },
    /// The resource already exists.
    #[error("{0}")]
    AlreadyExists(String),
    /// The state of the resource does not allow the action; nothing changed.
    #[error("{message}")]
    FailedPrecondition {
        /// Stable reason, from [`reason`].
        reason: &'static str,
        /// What is in the way and what would allow the action.
        message: String,
        /// Structured facts for clients (for example the allowed targets).
        metadata: Vec<(String, String)>,
    },
    /// A concurrent change won; the caller should read again and retry.
    #[error("{message}")]
    Aborted {
        /// Stable reason, from [`reason`].
        reason: &'static str,
        /// What conflicted.
        message: String,
    },
    /// A dependency is unreachable; the call may be retried.
    #[error("{0}")]
    Unavailable(String),
    /// A bug or an unexpected failure; the cause is logged, never returned.
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

fn describe(violations: &[Violation]) -> String {
    violations
        .iter()
        .map(|v| format!("{}: {}", v.field, v.description))
        .collect::<Vec<_>>()
        .join("; ")
}

impl ApiError {
    /// One invalid field.
    pub fn invalid(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self::InvalidArgument(vec![Violation::new(field, description)])
    }

    /// A refused action because of the resource's state.
    pub fn precondition(reason: &'static str, message: impl Into<String>) -> Self {
        Self::FailedPrecondition {
            reason,
            message: message.into(),
            metadata: Vec::new(),
        }
    }

    /// An unexpected failure, with its cause kept for the log.
    pub fn internal(cause: impl Into<anyhow::Error>) -> Self {
        Self::Internal(cause.into())
    }

    /// The gRPC code this error maps to.
    pub fn code(&self) -> Code {
        match self {
            Self::InvalidArgument(_) => Code::InvalidArgument,
            Self::Unauthenticated(_) => Code::Unauthenticated,
            Self::PermissionDenied { .. } => Code::PermissionDenied,
            Self::NotFound { .. } => Code::NotFound,
            Self::AlreadyExists(_) => Code::AlreadyExists,
            Self::FailedPrecondition { .. } => Code::FailedPrecondition,
            Self::Aborted { .. } => Code::Aborted,
            Self::Unavailable(_) => Code::Unavailable,
            Self::Internal(_) => Code::Internal,
        }
    }

    /// Converts into a status whose `ErrorInfo` names `domain` (the protobuf package).
    pub fn into_status(self, domain: &str) -> Status {
        let code = self.code();
        let message = self.to_string();
        let info = |reason: &str, metadata: HashMap<String, String>| {
            ErrorDetails::with_error_info(reason, domain, metadata)
        };
        let details = match self {
            Self::InvalidArgument(violations) => ErrorDetails::with_bad_request(
                violations
                    .into_iter()
                    .map(|v| FieldViolation::new(v.field, v.description))
                    .collect::<Vec<_>>(),
            ),
            Self::Unauthenticated(_) => info(reason::UNAUTHENTICATED, HashMap::new()),
            Self::PermissionDenied { reason, .. } => info(reason, HashMap::new()),
            Self::NotFound { kind, id } => info(
                reason::NOT_FOUND,
                HashMap::from([("kind".to_owned(), kind.to_owned()), ("id".to_owned(), id)]),
            ),
            Self::AlreadyExists(_) => info(reason::ALREADY_EXISTS, HashMap::new()),
            Self::FailedPrecondition {
                reason, metadata, ..
            } => info(reason, metadata.into_iter().collect()),
            Self::Aborted { reason, .. } => info(reason, HashMap::new()),
            Self::Unavailable(_) => info(reason::UNAVAILABLE, HashMap::new()),
            Self::Internal(cause) => {
                tracing::error!(error = ?cause, "internal error");
                return Status::internal("internal error; the cause is in the server log");
            }
        };
        Status::with_error_details(code, message, details)
    }
}

/// A result whose error is an [`ApiError`].
pub type ApiResult<T> = Result<T, ApiError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_argument_carries_each_field_violation() {
        let status = ApiError::InvalidArgument(vec![
            Violation::new("title", "must be 1 to 255 characters"),
            Violation::new("severity", "must be set"),
        ])
        .into_status("aegis.cases.v1");

        assert_eq!(status.code(), Code::InvalidArgument);
        let details = status.get_error_details();
        let violations = &details.bad_request().expect("bad request").field_violations;
        assert_eq!(violations.len(), 2);
        assert_eq!(violations[0].field, "title");
        assert_eq!(violations[1].description, "must be set");
    }

    #[test]
    fn internal_errors_hide_their_cause() {
        let status = ApiError::internal(anyhow::anyhow!("syntax error at or near SELECT"))
            .into_status("aegis.cases.v1");

        assert_eq!(status.code(), Code::Internal);
        assert!(!status.message().contains("SELECT"));
    }

    #[test]
    fn precondition_reports_reason_and_metadata() {
        let status = ApiError::FailedPrecondition {
            reason: reason::INVALID_STATE_TRANSITION,
            message: "no".into(),
            metadata: vec![("allowed_statuses".into(), "OPEN".into())],
        }
        .into_status("aegis.cases.v1");

        let details = status.get_error_details();
        let info = details.error_info().expect("error info");
        assert_eq!(info.reason, "INVALID_STATE_TRANSITION");
        assert_eq!(info.domain, "aegis.cases.v1");
        assert_eq!(info.metadata["allowed_statuses"], "OPEN");
    }
}
