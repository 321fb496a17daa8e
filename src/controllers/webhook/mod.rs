//! The Webhook controller: checks a subscription (`Stalled` naming the field), shows it
//! `Ready`, reads the endpoint's health from the delivery log (`Degraded` and a
//! `WebhookFailing` Warning Event after repeated failures), sends a `webhook.ping` when the
//! Webhook is created or its `clouddeck.io/ping` annotation changes, and prunes old
//! deliveries (retention: after each reconcile, which a delivery's change triggers, and
//! again when the next kept delivery's TTL runs out).

pub mod reconcile;
pub mod status;

use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use kube::core::DeserializeGuard;
use kube::runtime::controller::Action;
use kube::runtime::events::Recorder;
use kube::runtime::watcher;
use kube::{Api, ResourceExt};
use tracing::warn;

use super::webhook_delivery::egress_policy;
use super::{Context, ControllerRun, KindController};
use crate::api::webhook::Webhook;
use crate::api::webhook_delivery::WebhookDelivery;
use crate::delivery::{EgressPolicy, Publisher};
use status::Retention;

pub const CONTROLLER: KindController = KindController {
    name: "webhook",
    run,
};

pub struct WebhookContext {
    pub ctx: Arc<Context>,
    pub recorder: Recorder,
    pub publisher: Publisher,
    pub policy: EgressPolicy,
    /// From `--webhook-delivered-ttl`, `--webhook-failed-ttl`, `--webhook-keep-per-webhook`.
    pub retention: Retention,
}

fn run(run: ControllerRun) -> BoxFuture<'static, ()> {
    async move {
        let client = run.ctx.client.clone();
        let ctx = Arc::new(WebhookContext {
            ctx: run.ctx.clone(),
            recorder: run.ctx.recorder.clone(),
            publisher: run.ctx.publisher(),
            policy: egress_policy(&run.ctx.config),
            retention: Retention::from_config(&run.ctx.config.webhooks),
        });
        // The guard keeps one malformed Webhook from stopping the controller.
        let controller = run
            .controller(
                Api::<DeserializeGuard<Webhook>>::all(client.clone()),
                watcher::Config::default(),
            )
            // A delivery's outcome changes its Webhook's health, and a delivery that finishes
            // may push an older one out of retention's newest N.
            .owns_stream(run.children::<WebhookDelivery>(watcher::Config::default()))
            // A burst of deliveries changes the health of the same Webhook many times:
            // reconcile it once per burst.
            .with_config(
                kube::runtime::controller::Config::default().debounce(Duration::from_secs(1)),
            );
        run.drive(controller.run(run.tracked(reconcile::reconcile), error_policy, ctx))
            .await;
    }
    .boxed()
}

fn error_policy(
    webhook: Arc<DeserializeGuard<Webhook>>,
    err: &crate::Error,
    _: Arc<WebhookContext>,
) -> Action {
    warn!(webhook = %webhook.name_any(), reason = err.reason(), error = %crate::one_line(err), "reconcile failed");
    Action::requeue(Duration::from_secs(10))
}
