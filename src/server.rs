//! The HTTP endpoints kubelet and Prometheus use: `/healthz` (liveness), `/readyz`
//! (readiness, and which role this replica has) and `/metrics` (OpenMetrics).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

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
    /// The last watch error of each controller, and when it came.
    pub watch_failures: BTreeMap<&'static str, (Instant, String)>,
    /// When each controller last logged a watch error, and how many it left unlogged since.
    pub watch_logs: BTreeMap<&'static str, (Instant, u64)>,
    /// When each reconcile in flight started, by controller and a number of its own.
    pub reconciles: BTreeMap<(&'static str, u64), Instant>,
    pub shutting_down: bool,
}

/// A watch error this recent makes a leader not ready. Failing watches retry at least every
/// [`crate::controllers::watch_backoff::MAX`], so while one keeps failing this never lapses; once
/// the apiserver is back, readiness returns this long after the last error.
pub const WATCH_FAILURE_WINDOW: Duration = Duration::from_secs(15);

/// A controller logs its first watch error, then at most one line this often while errors
/// keep coming: an outage is a few lines a minute per controller, not one per retry.
pub const WATCH_LOG_EVERY: Duration = Duration::from_secs(10);

/// A reconcile running this long is wedged (every call it makes has a timeout far below
/// this): `/healthz` fails so that the kubelet restarts the process.
pub const WEDGED_AFTER: Duration = Duration::from_secs(600);

impl Default for ReadinessState {
    fn default() -> Self {
        ReadinessState {
            crds_verified: false,
            leadership: Leadership::Unknown,
            unsynced_caches: BTreeSet::new(),
            watch_failures: BTreeMap::new(),
            watch_logs: BTreeMap::new(),
            reconciles: BTreeMap::new(),
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
    /// for its controllers' caches, and is not ready while a watch fails (the apiserver is
    /// unreachable, or refuses a watch). Standbys are ready too: they take over without a
    /// restart.
    pub fn readiness(&self, now: Instant) -> Readiness {
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
            Leadership::Leader => {
                let failing: Vec<_> = self
                    .watch_failures
                    .iter()
                    .filter(|(_, (at, _))| {
                        now.saturating_duration_since(*at) < WATCH_FAILURE_WINDOW
                    })
                    .collect();
                let names: Vec<_> = failing.iter().map(|(name, _)| **name).collect();
                match failing.iter().max_by_key(|(_, (at, _))| *at) {
                    None => Readiness::Ready("ok: leader"),
                    Some((_, (_, latest))) => Readiness::NotReady(format!(
                        "leader: watches failing, retrying ({}): {latest}",
                        names.join(", ")
                    )),
                }
            }
        }
    }

    /// Alive unless a controller is wedged: a reconcile in flight for [`WEDGED_AFTER`].
    /// Nothing here depends on the apiserver being reachable, so an outage does not make
    /// the kubelet restart every replica.
    pub fn liveness(&self, now: Instant) -> Result<(), String> {
        match self
            .reconciles
            .iter()
            .map(|((name, _), started)| (name, now.saturating_duration_since(*started)))
            .max_by_key(|(_, running)| *running)
        {
            Some((name, running)) if running >= WEDGED_AFTER => Err(format!(
                "controller {name}: a reconcile has run for {}s",
                running.as_secs()
            )),
            _ => Ok(()),
        }
    }
}

/// Held while a reconcile runs (see [`Health::reconcile_started`]).
pub struct ReconcileInFlight {
    health: Health,
    key: (&'static str, u64),
}

impl Drop for ReconcileInFlight {
    fn drop(&mut self) {
        self.health.state().reconciles.remove(&self.key);
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
        self.state().readiness(Instant::now())
    }

    pub fn liveness(&self) -> Result<(), String> {
        self.state().liveness(Instant::now())
    }

    /// A controller's watch failed (it retries after a backoff). Returns `Some(n)` when this
    /// error should be logged, `n` being the errors left unlogged before it.
    pub fn watch_failed(&self, controller: &'static str, error: String) -> Option<u64> {
        let now = Instant::now();
        let mut state = self.state();
        state.watch_failures.insert(controller, (now, error));
        match state.watch_logs.get_mut(controller) {
            Some((logged, unlogged))
                if now.saturating_duration_since(*logged) < WATCH_LOG_EVERY =>
            {
                *unlogged += 1;
                None
            }
            Some((logged, unlogged)) => {
                *logged = now;
                Some(std::mem::take(unlogged))
            }
            None => {
                state.watch_logs.insert(controller, (now, 0));
                Some(0)
            }
        }
    }

    /// Marks a reconcile of `controller` in flight until the returned guard is dropped.
    pub fn reconcile_started(&self, controller: &'static str) -> ReconcileInFlight {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let key = (
            controller,
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        );
        self.state().reconciles.insert(key, Instant::now());
        ReconcileInFlight {
            health: self.clone(),
            key,
        }
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

    /// Controllers stopped (leadership lost or shutdown): no caches to wait for, no
    /// watches to report on.
    pub fn clear_caches(&self) {
        let mut state = self.state();
        state.unsynced_caches.clear();
        state.watch_failures.clear();
        state.watch_logs.clear();
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

/// Liveness: the process and its runtime answer, and no controller is wedged (see
/// [`ReadinessState::liveness`]).
async fn healthz(State(state): State<AppState>) -> Response {
    match state.health.liveness() {
        Ok(()) => (StatusCode::OK, "ok").into_response(),
        Err(reason) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("wedged: {reason}"),
        )
            .into_response(),
    }
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
        assert!(
            matches!(state.readiness(Instant::now()), Readiness::NotReady(r) if r.contains("CRDs"))
        );
    }

    #[test]
    fn not_ready_while_the_role_is_unknown() {
        assert!(
            matches!(ready_state(Leadership::Unknown).readiness(Instant::now()), Readiness::NotReady(r) if r.contains("Lease"))
        );
    }

    #[test]
    fn leaders_and_standbys_are_both_ready_and_say_which() {
        assert_eq!(
            ready_state(Leadership::Leader).readiness(Instant::now()),
            Readiness::Ready("ok: leader")
        );
        assert_eq!(
            ready_state(Leadership::Standby).readiness(Instant::now()),
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
        assert_eq!(
            state.readiness(Instant::now()),
            Readiness::Ready("ok: standby")
        );
    }

    #[test]
    fn a_leader_whose_watch_fails_is_not_ready_until_the_errors_stop() {
        let now = Instant::now();
        let mut state = ready_state(Leadership::Leader);
        state
            .watch_failures
            .insert("deployment", (now, "client error (Connect)".into()));
        assert_eq!(
            state.readiness(now + Duration::from_secs(5)),
            Readiness::NotReady(
                "leader: watches failing, retrying (deployment): client error (Connect)".into()
            )
        );
        assert_eq!(
            state.readiness(now + WATCH_FAILURE_WINDOW),
            Readiness::Ready("ok: leader")
        );
        let mut standby = state.clone();
        standby.leadership = Leadership::Standby;
        assert_eq!(standby.readiness(now), Readiness::Ready("ok: standby"));
    }

    #[test]
    fn watch_errors_are_logged_first_then_at_most_every_few_seconds() {
        let health = Health::default();
        assert_eq!(health.watch_failed("project", "refused".into()), Some(0));
        assert_eq!(health.watch_failed("project", "refused".into()), None);
        assert_eq!(health.watch_failed("project", "refused".into()), None);
        assert_eq!(health.watch_failed("domain", "refused".into()), Some(0));
        let mut state = health.state();
        let logged = state.watch_logs.get_mut("project").unwrap();
        logged.0 -= WATCH_LOG_EVERY;
        drop(state);
        assert_eq!(health.watch_failed("project", "refused".into()), Some(2));
    }

    #[test]
    fn a_reconcile_that_never_ends_fails_liveness() {
        let now = Instant::now();
        let mut state = ready_state(Leadership::Leader);
        assert_eq!(state.liveness(now), Ok(()));
        state.reconciles.insert(("domain", 7), now);
        state.reconciles.insert(("project", 8), now + WEDGED_AFTER);
        assert_eq!(state.liveness(now + WEDGED_AFTER / 2), Ok(()));
        assert_eq!(
            state.liveness(now + WEDGED_AFTER),
            Err("controller domain: a reconcile has run for 600s".into())
        );
    }

    #[test]
    fn a_finished_reconcile_leaves_nothing_in_flight() {
        let health = Health::default();
        let first = health.reconcile_started("project");
        let second = health.reconcile_started("project");
        assert_eq!(health.snapshot().reconciles.len(), 2);
        drop(first);
        drop(second);
        assert!(health.snapshot().reconciles.is_empty());
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
