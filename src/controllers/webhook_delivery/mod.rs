//! The WebhookDelivery controller: the sending half of the outbox. Each WebhookDelivery is
//! attempted when due, every attempt recorded in its status, retried on the Webhook's
//! schedule, and attempted again when its `clouddeck.io/redeliver` annotation changes:
//!
//! ```sh
//! kubectl annotate whd <name> clouddeck.io/redeliver="$(date +%s)" --overwrite
//! ```
//!
//! Requeues are timed to `status.nextAttemptTime`; the apiserver holds the schedule, so a
//! restarted (or newly elected) operator resumes every pending delivery where it was.

pub mod reconcile;
pub mod status;

use std::sync::Arc;
use std::time::Duration;

use crate::controllers::events::Recorder;
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use kube::Api;
use kube::core::DeserializeGuard;
use kube::runtime::reflector::{self, ObjectRef, Store, reflector};
use kube::runtime::watcher;
use tracing::warn;

use super::{Context, ControllerRun, KindController};
use crate::api::webhook::Webhook;
use crate::api::webhook_delivery::{DeliveryPhase, WebhookDelivery};
use crate::config::OperatorConfig;
use crate::delivery::fairness::Shares;
use crate::delivery::metrics::DeliveryMetrics;
use crate::delivery::{EgressPolicy, Sender};

/// Attempts (and other delivery reconciles) at a time, cluster-wide. Shares per Webhook and
/// namespace (see [`crate::delivery::fairness`]) keep one tenant from taking them all.
pub const CONCURRENCY: u16 = 32;

pub const CONTROLLER: KindController = KindController {
    name: "webhookdelivery",
    run,
};

/// What a delivery reconcile needs besides the shared [`Context`]: the HTTP sender (one
/// connection pool for all deliveries) and an Event recorder.
pub struct DeliveryContext {
    pub ctx: Arc<Context>,
    pub sender: Sender,
    pub recorder: Recorder,
    pub metrics: DeliveryMetrics,
    /// Every Webhook, from a watch: one API call less per attempt. A Webhook missing from
    /// it (just created) is read from the API; a malformed one is an `Err` and is looked up
    /// as missing.
    pub webhooks: Store<DeserializeGuard<Webhook>>,
    /// Attempts in flight per Webhook and per namespace, and the deliveries waiting for
    /// them (see [`crate::delivery::fairness`]).
    pub shares: Shares<ObjectRef<DeserializeGuard<WebhookDelivery>>>,
}

/// The egress policy of this operator: `--webhook-allow-cidrs` (checked when parsed).
pub fn egress_policy(config: &OperatorConfig) -> EgressPolicy {
    EgressPolicy::from_allowlist(&config.webhooks.allow_cidrs).unwrap_or_else(|err| {
        warn!(error = %err, "ignoring an invalid --webhook-allow-cidrs: only public destinations are allowed");
        EgressPolicy::default()
    })
}

fn run(run: ControllerRun) -> BoxFuture<'static, ()> {
    async move {
        // For the caches: lists and watches are not paced (see `Context::watch_client`).
        let client = run.ctx.watch_client.clone();
        let metrics = run.ctx.metrics.delivery.clone();
        let (webhooks, writer) = reflector::store::<DeserializeGuard<Webhook>>();
        // Its own backoff and error reports, as every controller's watch (see
        // `ControllerRun::watch`).
        let watch = reflector(
            writer,
            run.watch(
                Api::<DeserializeGuard<Webhook>>::all(client.clone()),
                watcher::Config::default(),
            ),
        );
        let stopped = run.stopped();
        tokio::spawn(async move {
            tokio::select! {
                _ = watch.for_each(|_| async {}) => {}
                _ = stopped => {}
            }
        });
        // A delivery over its share waits in line and is woken through `woken` when its
        // turn comes.
        let (shares, mut woken) = Shares::new();
        let ctx = Arc::new(DeliveryContext {
            ctx: run.ctx.clone(),
            sender: Sender::new(egress_policy(&run.ctx.config)),
            recorder: run.ctx.recorder.clone(),
            metrics: metrics.clone(),
            webhooks,
            shares,
        });
        // The guard keeps one delivery the operator cannot decode (a timestamp chrono
        // cannot hold, a payload nested too deep) from stopping every delivery.
        let api = Api::<DeserializeGuard<WebhookDelivery>>::all(client);
        // Cached without payloads (up to 256 KiB each): the seal is checked as each version
        // arrives and remembered on the cached copy; an attempt reads the full object.
        let origin = run.ctx.origin.clone();
        let controller = run.projected_controller(api, watcher::Config::default(), move |guard| {
            if let Ok(delivery) = &mut guard.0 {
                reconcile::project(delivery, &origin);
            }
        });
        tokio::spawn(report_backlog(controller.store(), metrics, run.stopped()));
        // Attempts are network-bound: allow a few in parallel, bounded.
        let controller = controller
            .with_config(kube::runtime::controller::Config::default().concurrency(CONCURRENCY))
            .reconcile_on(futures::stream::poll_fn(move |cx| woken.poll_recv(cx)));
        run.run(controller, ctx).await;
    }
    .boxed()
}

/// Pending depth and the age of the oldest pending delivery, from the watch cache.
async fn report_backlog(
    store: Store<DeserializeGuard<WebhookDelivery>>,
    metrics: DeliveryMetrics,
    stopped: impl Future<Output = ()>,
) {
    tokio::pin!(stopped);
    loop {
        let now = jiff::Timestamp::now();
        let pending: Vec<jiff::Timestamp> = store
            .state()
            .iter()
            .filter_map(|guard| guard.0.as_ref().ok())
            .filter(|d| {
                let phase = d.status.as_ref().and_then(|s| s.phase);
                matches!(
                    phase,
                    None | Some(DeliveryPhase::Pending | DeliveryPhase::Retrying)
                )
            })
            .map(|d| d.spec.timestamp.0)
            .collect();
        let oldest = pending
            .iter()
            .min()
            .and_then(|t| Duration::try_from(now.duration_since(*t)).ok());
        metrics.backlog(pending.len(), oldest);
        tokio::select! {
            _ = &mut stopped => return,
            _ = tokio::time::sleep(Duration::from_secs(15)) => {}
        }
    }
}
