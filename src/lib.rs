//! CloudDeck: a Kubernetes operator that turns a cluster into a Vercel/Netlify-style
//! deployment platform.

pub mod api;
pub mod api_client;
pub mod build;
pub mod config;
pub mod controllers;
pub mod delivery;
pub mod dns;
pub mod hostnames;
pub mod labels;
pub mod leader;
pub mod operator;
pub mod responder;
pub mod routing;
pub mod server;
pub mod shutdown;
pub mod telemetry;

use std::error::Error as StdError;

/// Errors the operator's runtime can hit. Each variant has a static [`Error::reason`]
/// used for metric labels and Event reasons, never `Debug` text.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API error")]
    Kube(#[source] Box<kube::Error>),

    #[error("invalid configuration: {0}")]
    InvalidConfig(String),

    #[error(
        "cannot load a Kubernetes configuration (pass --kubeconfig, set KUBECONFIG, or run inside a cluster)"
    )]
    KubeConfig(#[source] Box<dyn StdError + Send + Sync>),

    #[error("cannot talk to the Kubernetes API server at {url}")]
    ApiUnreachable {
        url: String,
        #[source]
        source: Box<kube::Error>,
    },

    #[error("CRD {name} is not installed; run: kubectl apply --server-side -f crds/")]
    CrdMissing { name: String },

    #[error("cannot check whether CRD {name} is installed")]
    CrdCheck {
        name: String,
        #[source]
        source: Box<kube::Error>,
    },

    #[error("leader election on Lease {namespace}/{name} failed")]
    LeaderElection {
        namespace: String,
        name: String,
        #[source]
        source: Box<kube_lease_manager::LeaseManagerError>,
    },

    #[error("cannot listen on {addr}")]
    Listen {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },

    #[error("cannot read or create the delivery origin key, Secret {namespace}/{name}")]
    OriginKey {
        namespace: String,
        name: &'static str,
        #[source]
        source: Option<Box<kube::Error>>,
    },

    #[error("cannot install the {0} signal handler")]
    Signal(&'static str, #[source] std::io::Error),

    #[error("controller {0} stopped while it was leading")]
    ControllerStopped(&'static str),

    #[error("internal task {0} failed")]
    TaskFailed(&'static str, #[source] tokio::task::JoinError),

    /// Not a failure: the namespace's events have made as many WebhookDeliveries as the
    /// fan-out rate allows for now (see `delivery::fanout`). Publish again after
    /// `retry_after`; the caller records its change only once published.
    #[error(
        "namespace {namespace} is over its webhook fan-out rate (--webhook-deliveries-per-minute); the event is published when it has room again"
    )]
    Throttled {
        namespace: String,
        retry_after: std::time::Duration,
    },
}

impl Error {
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Kube(_) => "KubeError",
            Error::InvalidConfig(_) => "InvalidConfig",
            Error::KubeConfig(_) => "KubeConfigError",
            Error::ApiUnreachable { .. } => "ApiUnreachable",
            Error::CrdMissing { .. } => "CrdMissing",
            Error::CrdCheck { .. } => "CrdCheckFailed",
            Error::LeaderElection { .. } => "LeaderElectionFailed",
            Error::Listen { .. } => "ListenFailed",
            Error::Signal(..) => "SignalHandlerFailed",
            Error::OriginKey { .. } => "OriginKeyUnavailable",
            Error::ControllerStopped(_) => "ControllerStopped",
            Error::TaskFailed(..) => "TaskFailed",
            Error::Throttled { .. } => delivery::fanout::THROTTLED,
        }
    }

    /// When to try again, for an error that says when ([`Error::Throttled`]).
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            Error::Throttled { retry_after, .. } => Some(*retry_after),
            _ => None,
        }
    }
}

// kube errors are large; boxing them keeps every `Result<_, Error>` small.
impl From<kube::Error> for Error {
    fn from(err: kube::Error) -> Self {
        Error::Kube(Box::new(err))
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Renders an error and its sources as one line (`outer: cause: root cause`), the form a
/// user sees when `clouddeck` exits: no stack trace, no `Debug` dumps.
///
/// Kubernetes API errors show their status reason and message rather than kube's `Debug`
/// rendering of the whole `Status`; a cause whose text the line already contains is skipped.
pub fn one_line(err: &(dyn StdError + 'static)) -> String {
    let mut line = String::new();
    let mut next = Some(err);
    while let Some(err) = next {
        let (text, last) = describe(err);
        if !text.is_empty() && !line.contains(&text) {
            if !line.is_empty() {
                line.push_str(": ");
            }
            line.push_str(&text);
        }
        next = if last { None } else { err.source() };
    }
    line.replace('\n', " ")
}

/// At most `max_bytes` of `text`, cut on a character boundary (Event notes, condition
/// messages and recorded response bodies have size limits).
pub fn truncate(text: &str, max_bytes: usize) -> String {
    let mut end = text.len().min(max_bytes);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

/// An error's own text, and whether it already says everything its sources would.
fn describe(err: &(dyn StdError + 'static)) -> (String, bool) {
    let kube_error = err
        .downcast_ref::<kube::Error>()
        .or_else(|| err.downcast_ref::<Box<kube::Error>>().map(|b| &**b));
    match kube_error {
        Some(kube::Error::Api(status)) => {
            let reason = if status.reason.is_empty() {
                "Error"
            } else {
                &status.reason
            };
            (
                format!("{reason} ({}): {}", status.code, status.message),
                true,
            )
        }
        _ => (err.to_string(), false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_cuts_on_a_character_boundary() {
        assert_eq!(truncate("héllo", 2), "h");
        assert_eq!(truncate("héllo", 3), "hé");
        assert_eq!(truncate("hello", 10), "hello");
    }

    #[test]
    fn missing_crd_message_tells_the_user_what_to_run() {
        let err = Error::CrdMissing {
            name: "projects.clouddeck.io".into(),
        };
        assert_eq!(
            format!("error: {}", one_line(&err)),
            "error: CRD projects.clouddeck.io is not installed; run: kubectl apply --server-side -f crds/"
        );
    }

    #[test]
    fn api_errors_show_reason_and_message_not_debug() {
        let status = kube::core::Status::failure("leases is forbidden", "Forbidden").with_code(403);
        let err = Error::CrdCheck {
            name: "projects.clouddeck.io".into(),
            source: Box::new(kube::Error::Api(Box::new(status))),
        };
        assert_eq!(
            one_line(&err),
            "cannot check whether CRD projects.clouddeck.io is installed: Forbidden (403): leases is forbidden"
        );
    }

    #[test]
    fn one_line_skips_causes_already_in_the_line() {
        let io = std::io::Error::new(std::io::ErrorKind::AddrInUse, "address in use");
        let err = Error::Listen {
            addr: "127.0.0.1:8080".parse().unwrap(),
            source: io,
        };
        assert_eq!(
            one_line(&err),
            "cannot listen on 127.0.0.1:8080: address in use"
        );
    }
}
