//! The Webhook controller: checks a subscription (`Stalled` naming the field), shows it
//! `Ready`, reads the endpoint's health from the delivery log (`Degraded` and a
//! `WebhookFailing` Warning Event after repeated failures), sends a `webhook.ping` when the
//! Webhook is created or its `clouddeck.io/ping` annotation changes, and prunes old
//! deliveries (retention: after each reconcile, which a delivery's change triggers, and
//! again when the next kept delivery's TTL runs out).

pub mod reconcile;
pub mod status;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use crate::controllers::events::Recorder;
use futures::future::BoxFuture;
use futures::{FutureExt, Stream, StreamExt};
use kube::core::DeserializeGuard;
use kube::runtime::WatchStreamExt;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Api, ResourceExt};

use super::webhook_delivery::egress_policy;
use super::webhook_delivery::reconcile::project_log;
use super::{Context, ControllerRun, KindController, WatchEvent};
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
    /// Every Webhook (the controller's cache): who is within the fan-out cap.
    pub webhooks: Store<DeserializeGuard<Webhook>>,
    /// Every WebhookDelivery without its payload, seal checked (see
    /// [`crate::controllers::webhook_delivery::reconcile::project_log`]): health and retention
    /// read the log from here, never from a list of the Webhook's whole history.
    pub deliveries: Store<DeserializeGuard<WebhookDelivery>>,
}

fn run(run: ControllerRun) -> BoxFuture<'static, ()> {
    async move {
        // For the caches: lists and watches are not paced (see `Context::watch_client`).
        let client = run.ctx.watch_client.clone();
        // The guard keeps one malformed Webhook (or delivery) from stopping the controller.
        let (webhooks, webhook_events) = run.cache(
            Api::<DeserializeGuard<Webhook>>::all(client.clone()),
            watcher::Config::default(),
            |_| {},
        );
        // One watch of the Webhooks for both: the controller's own triggers, and those that
        // come or go for the Webhooks over the cap.
        let (webhook_events, comings_and_goings) = comings_and_goings(webhook_events);
        let controller = run.controller_on(webhooks.clone(), webhook_events.applied_objects());
        run.ctx.webhooks.serve_from(webhooks.clone());
        let origin = run.ctx.origin.clone();
        let (deliveries, delivery_events) = run.cache(
            Api::<DeserializeGuard<WebhookDelivery>>::all(client.clone()),
            watcher::Config::default(),
            move |guard| {
                if let Ok(delivery) = &mut guard.0 {
                    project_log(delivery, &origin);
                }
            },
        );
        let ctx = Arc::new(WebhookContext {
            ctx: run.ctx.clone(),
            recorder: run.ctx.recorder.clone(),
            publisher: run.ctx.publisher(),
            policy: egress_policy(&run.ctx.config),
            retention: Retention::from_config(&run.ctx.config.webhooks),
            webhooks: webhooks.clone(),
            deliveries,
        });
        let controller = controller
            // A delivery's outcome changes its Webhook's health, and a delivery that finishes
            // may push an older one out of retention's newest N.
            .owns_stream(delivery_events.touched_objects())
            // A Webhook that goes away makes room under the fan-out cap for the next one.
            .watches_stream(comings_and_goings, move |changed| {
                let namespace = changed.namespace();
                webhooks
                    .state()
                    .iter()
                    .filter(|w| w.namespace() == namespace && reconcile::over_cap(w))
                    .map(|w| ObjectRef::from_obj(&**w))
                    .collect::<Vec<_>>()
            })
            // A burst of deliveries changes the health of the same Webhook many times:
            // reconcile it once per burst.
            .with_config(super::controller_config().debounce(Duration::from_secs(1)));
        run.run(controller, ctx).await;
    }
    .boxed()
}

/// `events`, passed through, and the objects among them that come and go: each one the
/// first time it is seen (created, or listed after a relist) and each one deleted, never
/// an update of one already seen. Only those change which Webhooks of a namespace are
/// under the fan-out cap; an update (every delivery's outcome is a status write of its
/// Webhook) would otherwise wake every Webhook over the cap each time: with 450 over it,
/// their reconciles took the operator's whole client-side rate limit (issue #13's
/// 500 x 80 burst). The second stream moves as the first is polled.
fn comings_and_goings<K: kube::Resource + Clone>(
    events: impl Stream<Item = WatchEvent<K>>,
) -> (
    impl Stream<Item = WatchEvent<K>>,
    impl Stream<Item = Result<K, watcher::Error>>,
) {
    let (tx, rx) = futures::channel::mpsc::unbounded();
    let mut seen = HashSet::new();
    let events = events.inspect(move |event| {
        let uid = |obj: &K| obj.meta().uid.clone().unwrap_or_default();
        let passed = match event {
            Ok(watcher::Event::Init) => {
                seen.clear();
                None
            }
            Ok(watcher::Event::InitApply(obj)) => {
                seen.insert(uid(obj));
                Some(obj)
            }
            Ok(watcher::Event::Apply(obj)) => seen.insert(uid(obj)).then_some(obj),
            Ok(watcher::Event::Delete(obj)) => {
                seen.remove(&uid(obj));
                Some(obj)
            }
            Ok(watcher::Event::InitDone) | Err(_) => None,
        };
        if let Some(obj) = passed {
            // The receiver goes only with the controller, which stops polling both.
            let _ = tx.unbounded_send(obj.clone());
        }
    });
    (events, rx.map(Ok))
}

#[cfg(test)]
mod tests {
    use futures::{StreamExt, stream};
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::ObjectMeta;
    use kube::runtime::watcher::Event;

    use super::comings_and_goings;

    fn object(name: &str, version: &str) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta {
                name: Some(name.into()),
                uid: Some(format!("uid-{name}")),
                resource_version: Some(version.into()),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn only_new_and_deleted_objects_pass_and_a_relist_passes_all_once() {
        let events = [
            Event::Init,
            Event::InitApply(object("a", "1")),
            Event::InitDone,
            Event::Apply(object("a", "2")),
            Event::Apply(object("b", "3")),
            Event::Apply(object("b", "4")),
            Event::Delete(object("a", "5")),
            Event::Apply(object("a", "6")),
            Event::Init,
            Event::InitApply(object("b", "7")),
            Event::InitDone,
            Event::Apply(object("b", "8")),
        ];
        let (events, comings_and_goings) = comings_and_goings(stream::iter(events.map(Ok)));
        // Every event passes through; the objects that come and go, as it does.
        assert_eq!(events.count().await, 12);
        let passed: Vec<String> = comings_and_goings
            .map(|o| {
                let o = o.unwrap();
                format!(
                    "{}@{}",
                    o.metadata.name.unwrap(),
                    o.metadata.resource_version.unwrap()
                )
            })
            .collect()
            .await;
        assert_eq!(passed, ["a@1", "b@3", "a@5", "a@6", "b@7"]);
    }
}
