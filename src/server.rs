//! The HTTP endpoints kubelet and Prometheus use: `/healthz` (liveness), `/readyz`
//! (readiness, and which role this replica has) and `/metrics` (OpenMetrics).

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

use crate::leader::Leadership;
use crate::shutdown::Stop;
use crate::telemetry;

/// What `/readyz` answers is derived from this state alone (see [`ReadinessState::readiness`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadinessState {
    /// Every CloudDeck CRD was found on the API server.
    pub crds_verified: bool,
    pub leadership: Leadership,
    /// Controllers started while leading whose caches have not synced yet.
    pub unsynced_caches: BTreeSet<&'static str>,
    pub shutting_down: bool,
}

impl Default for ReadinessState {
    fn default() -> Self {
        ReadinessState {
            crds_verified: false,
            leadership: Leadership::Unknown,
            unsynced_caches: BTreeSet::new(),
            shutting_down: false,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Readiness {
    /// 200, with a body naming the role: `ok: leader` or `ok: standby`.
    Ready(&'static str),
    /// 503, with the reason.
    NotReady(String),
}

impl ReadinessState {
    /// Ready once the CRDs are there and the replica knows its role; a leader also waits
    /// for its controllers' caches. Standbys are ready too: they take over without a restart.
    pub fn readiness(&self) -> Readiness {
        if self.shutting_down {
            return Readiness::NotReady("shutting down".into());
        }
        if !self.crds_verified {
            return Readiness::NotReady("checking that the CloudDeck CRDs are installed".into());
        }
        match self.leadership {
            Leadership::Unknown => {
                Readiness::NotReady("leader election: waiting to learn who holds the Lease".into())
            }
            Leadership::Standby => Readiness::Ready("ok: standby"),
            Leadership::Leader if !self.unsynced_caches.is_empty() => {
                let pending: Vec<_> = self.unsynced_caches.iter().copied().collect();
                Readiness::NotReady(format!(
                    "leader: waiting for caches to sync: {}",
                    pending.join(", ")
                ))
            }
            Leadership::Leader => Readiness::Ready("ok: leader"),
        }
    }
}

/// Shared handle to the [`ReadinessState`]; every part of the operator reports into it.
#[derive(Clone, Debug, Default)]
pub struct Health(Arc<Mutex<ReadinessState>>);

impl Health {
    fn state(&self) -> MutexGuard<'_, ReadinessState> {
        // The state is plain data, always consistent between statements: a panic elsewhere
        // while holding the lock cannot leave it half-written, so poisoning is ignored.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn snapshot(&self) -> ReadinessState {
        self.state().clone()
    }

    pub fn readiness(&self) -> Readiness {
        self.state().readiness()
    }

    pub fn crds_verified(&self) {
        self.state().crds_verified = true;
    }

    pub fn set_leadership(&self, leadership: Leadership) {
        self.state().leadership = leadership;
    }

    /// A controller started and its cache is filling.
    pub fn cache_pending(&self, controller: &'static str) {
        self.state().unsynced_caches.insert(controller);
    }

    /// A controller's cache holds the full initial list.
    pub fn cache_synced(&self, controller: &'static str) {
        self.state().unsynced_caches.remove(controller);
    }

    /// Controllers stopped (leadership lost or shutdown): no caches to wait for.
    pub fn clear_caches(&self) {
        self.state().unsynced_caches.clear();
    }

    pub fn shutting_down(&self) {
        self.state().shutting_down = true;
    }
}

#[derive(Clone)]
struct AppState {
    registry: Arc<Registry>,
    health: Health,
}

pub fn router(registry: Arc<Registry>, health: Health) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(AppState { registry, health })
}

/// Serves until `stop` fires.
pub async fn serve(
    listener: TcpListener,
    registry: Arc<Registry>,
    health: Health,
    stop: Stop,
) -> std::io::Result<()> {
    axum::serve(listener, router(registry, health))
        .with_graceful_shutdown(stop.stopped())
        .await
}

/// Liveness: the process and its runtime answer. Nothing here depends on the API server,
/// so an apiserver outage does not make kubelet restart every replica.
async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(state): State<AppState>) -> Response {
    match state.health.readiness() {
        Readiness::Ready(body) => (StatusCode::OK, body).into_response(),
        Readiness::NotReady(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {reason}"),
        )
            .into_response(),
    }
}

async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        telemetry::encode(&state.registry),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ready_state(leadership: Leadership) -> ReadinessState {
        ReadinessState {
            crds_verified: true,
            leadership,
            ..ReadinessState::default()
        }
    }

    #[test]
    fn not_ready_until_crds_are_verified() {
        let state = ReadinessState {
            leadership: Leadership::Leader,
            ..ReadinessState::default()
        };
        assert!(matches!(state.readiness(), Readiness::NotReady(r) if r.contains("CRDs")));
    }

    #[test]
    fn not_ready_while_the_role_is_unknown() {
        assert!(
            matches!(ready_state(Leadership::Unknown).readiness(), Readiness::NotReady(r) if r.contains("Lease"))
        );
    }

    #[test]
    fn leaders_and_standbys_are_both_ready_and_say_which() {
        assert_eq!(
            ready_state(Leadership::Leader).readiness(),
            Readiness::Ready("ok: leader")
        );
        assert_eq!(
            ready_state(Leadership::Standby).readiness(),
            Readiness::Ready("ok: standby")
        );
    }

    #[test]
    fn a_leader_waits_for_its_caches() {
        let health = Health::default();
        health.crds_verified();
        health.set_leadership(Leadership::Leader);
        health.cache_pending("project");
        health.cache_pending("domain");
        assert_eq!(
            health.readiness(),
            Readiness::NotReady("leader: waiting for caches to sync: domain, project".into())
        );
        health.cache_synced("project");
        health.cache_synced("domain");
        assert_eq!(health.readiness(), Readiness::Ready("ok: leader"));
    }

    #[test]
    fn a_standby_does_not_wait_for_caches_it_does_not_run() {
        let mut state = ready_state(Leadership::Standby);
        state.unsynced_caches.insert("project");
        assert_eq!(state.readiness(), Readiness::Ready("ok: standby"));
    }

    #[test]
    fn shutting_down_is_not_ready() {
        let health = Health::default();
        health.crds_verified();
        health.set_leadership(Leadership::Leader);
        health.shutting_down();
        assert_eq!(
            health.readiness(),
            Readiness::NotReady("shutting down".into())
        );
    }

    #[tokio::test]
    async fn endpoints_answer_over_http() {
        let mut registry = telemetry::registry();
        let _metrics = telemetry::Metrics::new(&mut registry);
        let health = Health::default();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (trigger, stop) = crate::shutdown::channel();
        let server = tokio::spawn(serve(listener, Arc::new(registry), health.clone(), stop));

        let get = |path: &'static str| async move {
            let resp = reqwest::get(format!("http://{addr}{path}")).await.unwrap();
            (resp.status().as_u16(), resp.text().await.unwrap())
        };
        assert_eq!(get("/healthz").await, (200, "ok".into()));
        let (status, body) = get("/readyz").await;
        assert_eq!(status, 503);
        assert!(body.starts_with("not ready: "), "{body}");
        health.crds_verified();
        health.set_leadership(Leadership::Standby);
        assert_eq!(get("/readyz").await, (200, "ok: standby".into()));
        let (status, body) = get("/metrics").await;
        assert_eq!(status, 200);
        assert!(body.contains("clouddeck_leader 0"), "{body}");

        trigger.stop();
        server.await.unwrap().unwrap();
    }
}
