//! The one error every controller's reconcile fails with, and what each kind of failure
//! means for the next try (see [`super::retry`]).

use std::time::Duration;

use crate::api::validation::InvalidField;
use crate::delivery::fanout;

/// What a reconcile can fail with. Each variant has a bounded [`ReconcileError::reason`]
/// for metrics and Events; none carries a Secret's content.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("Kubernetes API error: {0}")]
    Kube(#[source] Box<kube::Error>),

    /// A spec field the controller cannot use; the object is Stalled until it changes.
    #[error("{0}")]
    InvalidSpec(#[source] InvalidField),

    /// A reference that does not resolve (yet); Stalled until the referent appears.
    #[error("{0}")]
    MissingReference(String),

    /// Writing the WebhookDeliveries of a lifecycle event failed, or the namespace is over
    /// its fan-out rate; retried.
    #[error("cannot publish webhook event")]
    Publish(#[source] Box<crate::Error>),
}

impl ReconcileError {
    /// For `map_err` on a publish.
    pub fn publish(err: crate::Error) -> Self {
        ReconcileError::Publish(Box::new(err))
    }

    /// Bounded reason for metrics and Events.
    pub fn reason(&self) -> &'static str {
        match self {
            ReconcileError::Kube(err) if is_conflict(err) => "Conflict",
            ReconcileError::Kube(_) => "KubeError",
            ReconcileError::InvalidSpec(_) => "InvalidSpec",
            ReconcileError::MissingReference(_) => "MissingReference",
            ReconcileError::Publish(err) if err.retry_after().is_some() => fanout::THROTTLED,
            ReconcileError::Publish(_) => "PublishFailed",
        }
    }

    /// When to try again, for an error that says when (a publish over the namespace's
    /// fan-out rate).
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ReconcileError::Publish(err) => err.retry_after(),
            _ => None,
        }
    }

    /// Whether waiting for a change of the object (or what it points to) is the only way
    /// forward, rather than retrying.
    pub fn awaits_change(&self) -> bool {
        matches!(
            self,
            ReconcileError::InvalidSpec(_) | ReconcileError::MissingReference(_)
        )
    }
}

/// A write lost an optimistic-locking race (HTTP 409): the next try reads afresh.
fn is_conflict(err: &kube::Error) -> bool {
    matches!(err, kube::Error::Api(status) if status.code == 409)
}

impl crate::telemetry::ErrorReason for ReconcileError {
    fn reason(&self) -> &'static str {
        ReconcileError::reason(self)
    }
}

// kube errors are large; boxing them keeps every `Result` small.
impl From<kube::Error> for ReconcileError {
    fn from(err: kube::Error) -> Self {
        ReconcileError::Kube(Box::new(err))
    }
}

pub type Result<T, E = ReconcileError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    fn api_error(code: u16) -> ReconcileError {
        kube::Error::Api(Box::new(
            kube::core::Status::failure("nope", "Whatever").with_code(code),
        ))
        .into()
    }

    #[test]
    fn each_failure_has_its_reason_and_its_next_try() {
        let conflict = api_error(409);
        assert_eq!(conflict.reason(), "Conflict");
        assert!(!conflict.awaits_change());
        assert_eq!(api_error(500).reason(), "KubeError");
        let missing = ReconcileError::MissingReference("Project web not found".into());
        assert_eq!(missing.reason(), "MissingReference");
        assert!(missing.awaits_change());
        let invalid = ReconcileError::InvalidSpec(InvalidField::new("spec.x", "bad"));
        assert!(invalid.awaits_change());
        let throttled = ReconcileError::publish(crate::Error::Throttled {
            namespace: "team".into(),
            retry_after: Duration::from_secs(3),
        });
        assert_eq!(throttled.reason(), fanout::THROTTLED);
        assert_eq!(throttled.retry_after(), Some(Duration::from_secs(3)));
        assert!(!throttled.awaits_change());
    }
}
