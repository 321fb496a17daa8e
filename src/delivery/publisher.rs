//! Publishing: the outbox half of delivery. A controller that raises a platform event
//! calls [`Publisher::publish`]; it writes one WebhookDelivery per subscribed Webhook and
//! returns. The WebhookDelivery controller then sends it, however long that takes and
//! whatever restarts in between.
//!
//! ```ignore
//! let event = PlatformEvent::new("deployment.ready", format!("{uid}/deployment.ready"), &ns,
//!         format!("{project}: deployment {name} is ready"))
//!     .with_project(&project, project_labels)
//!     .with("deployment", name)
//!     .with("url", url);
//! ctx.publisher().publish(&event).await?;
//! ```
//!
//! Publishing is idempotent: delivery names are derived from (event id, Webhook), so a
//! controller that publishes the same occurrence again (it crashed before recording that
//! it had) creates nothing new.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use futures::FutureExt;
use kube::runtime::reflector::Store;

use super::OriginKey;
use super::fanout::{self, FanOut};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelectorRequirement, Time};
use kube::api::{Api, ListParams, ObjectMeta, PostParams};
use kube::core::DeserializeGuard;
use kube::{Client, Resource, ResourceExt};
use tracing::warn;

use super::payload::{self, EventProject, PlatformEvent};
use super::{EVENT_LABEL, WEBHOOK_LABEL};
use crate::Result;
use crate::api::common::ProjectReference;
use crate::api::webhook::{ProjectSelector, Webhook, event_matches};
use crate::api::webhook_delivery::{WebhookDelivery, WebhookDeliverySpec, WebhookReference};
use crate::labels::{MANAGED_BY, MANAGER, PROJECT_LABEL};

/// The condition reason with which a Webhook is stopped after its endpoint answered
/// `410 Gone`, until its spec changes.
pub const ENDPOINT_GONE: &str = "EndpointGone";

/// Whether the Webhook was stopped by a `410 Gone` at its current generation.
pub fn endpoint_gone(webhook: &Webhook) -> bool {
    webhook
        .stalled_because(ENDPOINT_GONE)
        .is_some_and(|c| c.observed_generation == webhook.metadata.generation)
}

/// Whether `webhook` receives `event`: enabled, not gone, subscribed to the type, and
/// selecting the event's Project. Events about no Project go only to Webhooks without a
/// project selector.
pub fn subscribes(webhook: &Webhook, event: &PlatformEvent) -> bool {
    !webhook.spec.disabled
        && !endpoint_gone(webhook)
        && webhook
            .spec
            .events
            .iter()
            .any(|pattern| event_matches(pattern, &event.event_type))
        && webhook
            .spec
            .project_selector
            .as_ref()
            .is_none_or(|selector| selects(selector, event.project.as_ref()))
}

/// Whether `selector` selects the Project: by name, or by labels (when it has label
/// requirements), either one sufficing.
pub fn selects(selector: &ProjectSelector, project: Option<&EventProject>) -> bool {
    let Some(project) = project else {
        return false;
    };
    if selector.names.contains(&project.name) {
        return true;
    }
    let has_labels = selector
        .match_labels
        .as_ref()
        .is_some_and(|m| !m.is_empty())
        || selector
            .match_expressions
            .as_ref()
            .is_some_and(|e| !e.is_empty());
    has_labels && labels_match(selector, &project.labels)
}

fn labels_match(selector: &ProjectSelector, labels: &BTreeMap<String, String>) -> bool {
    let pairs = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    pairs
        && selector
            .match_expressions
            .iter()
            .flatten()
            .all(|r| requirement_matches(r, labels))
}

fn requirement_matches(req: &LabelSelectorRequirement, labels: &BTreeMap<String, String>) -> bool {
    let value = labels.get(&req.key);
    let values = req.values.as_deref().unwrap_or_default();
    match req.operator.as_str() {
        "In" => value.is_some_and(|v| values.contains(v)),
        "NotIn" => value.is_none_or(|v| !values.contains(v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        // An operator the apiserver would refuse selects nothing.
        _ => false,
    }
}

/// The WebhookDelivery for (event, Webhook): deterministic name, payload rendered in the
/// Webhook's format, owned by the Webhook (deleting a Webhook deletes its log).
pub fn delivery_for(webhook: &Webhook, event: &PlatformEvent) -> WebhookDelivery {
    let name = payload::delivery_name(event, &webhook.name_any());
    let mut labels = BTreeMap::from([
        (MANAGED_BY.to_string(), MANAGER.to_string()),
        (EVENT_LABEL.to_string(), event.event_type.clone()),
    ]);
    // Label values are at most 63 characters; longer Webhook names are found through the
    // `spec.webhookRef.name` field selector instead.
    if webhook.name_any().len() <= 63 {
        labels.insert(WEBHOOK_LABEL.to_string(), webhook.name_any());
    }
    if let Some(project) = &event.project {
        labels.insert(PROJECT_LABEL.to_string(), project.name.clone());
    }
    let timestamp =
        jiff::Timestamp::from_second(event.timestamp.as_second()).unwrap_or(event.timestamp);
    let mut body = event.clone();
    body.timestamp = timestamp;
    WebhookDelivery {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: Some(event.namespace.clone()),
            labels: Some(labels),
            owner_references: webhook.controller_owner_ref(&()).map(|r| vec![r]),
            ..ObjectMeta::default()
        },
        spec: WebhookDeliverySpec {
            webhook_ref: WebhookReference {
                name: webhook.name_any(),
            },
            event_type: event.event_type.clone(),
            webhook_id: payload::webhook_id(event),
            timestamp: Time(timestamp),
            project_ref: event.project.as_ref().map(|p| ProjectReference {
                name: p.name.clone(),
            }),
            payload: payload::render(webhook.spec.format, &body).to_string(),
        },
        status: None,
    }
}

/// What one [`Publisher::publish`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Published {
    /// Deliveries written now.
    pub created: Vec<String>,
    /// Deliveries that already existed: this occurrence had been published before.
    pub existing: Vec<String>,
}

/// The Webhooks this replica's Webhook controller watches, for every publisher to read
/// instead of listing a namespace's Webhooks per event (issue #13: three lists per
/// Project while it converges). Empty until that controller runs and its cache has its
/// first list; publishers then ask the API. A Webhook gets events from the moment the
/// watch brings it (milliseconds after it is created). Cheap to clone.
#[derive(Clone, Default)]
pub struct KnownWebhooks(Arc<RwLock<Option<Store<DeserializeGuard<Webhook>>>>>);

impl KnownWebhooks {
    /// From now on, `store` (the Webhook controller's cache) answers.
    pub fn serve_from(&self, store: Store<DeserializeGuard<Webhook>>) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Some(store);
    }

    /// The Webhooks of `namespace`, if a synced cache holds them.
    fn in_namespace(&self, namespace: &str) -> Option<Vec<Arc<DeserializeGuard<Webhook>>>> {
        let store = self.0.read().unwrap_or_else(|e| e.into_inner()).clone()?;
        store.wait_until_ready().now_or_never()?.ok()?;
        Some(store.state_filter(|w| w.meta().namespace.as_deref() == Some(namespace)))
    }
}

/// Writes WebhookDeliveries, within the namespace's fan-out limits. Cheap to clone.
#[derive(Clone)]
pub struct Publisher {
    client: Client,
    origin: OriginKey,
    fan_out: FanOut,
    webhooks: KnownWebhooks,
}

impl Publisher {
    /// A publisher that lists a namespace's Webhooks for each event.
    pub fn new(client: Client, origin: OriginKey, fan_out: FanOut) -> Self {
        Publisher {
            client,
            origin,
            fan_out,
            webhooks: KnownWebhooks::default(),
        }
    }

    /// Reads Webhooks from `webhooks` once it holds them.
    pub fn reading(mut self, webhooks: KnownWebhooks) -> Self {
        self.webhooks = webhooks;
        self
    }

    /// One WebhookDelivery per Webhook in the event's namespace that subscribes to it,
    /// among those the fan-out cap lets receive events. Returns after they are written (not
    /// sent). On an error, publish again: what was written is found, not duplicated. Over
    /// the namespace's fan-out rate, nothing is written and the error is
    /// [`crate::Error::Throttled`].
    pub async fn publish(&self, event: &PlatformEvent) -> Result<Published> {
        self.publish_except(event, "").await
    }

    /// Like [`Publisher::publish`], leaving out the Webhook named `skip` (an alert about a
    /// failing Webhook is not sent to that Webhook).
    pub async fn publish_except(&self, event: &PlatformEvent, skip: &str) -> Result<Published> {
        // Guarded: one malformed Webhook (reported by the Webhook controller) must not
        // keep the event from the others.
        let webhooks = match self.webhooks.in_namespace(&event.namespace) {
            Some(cached) => cached,
            None => {
                Api::<DeserializeGuard<Webhook>>::namespaced(self.client.clone(), &event.namespace)
                    .list(&ListParams::default())
                    .await?
                    .items
                    .into_iter()
                    .map(Arc::new)
                    .collect()
            }
        };
        let receiving = fanout::receiving(
            webhooks.iter().map(|guard| guard.meta()),
            self.fan_out.max_webhooks,
        );
        let subscribed: Vec<&Webhook> = webhooks
            .iter()
            .filter_map(|guard| match &guard.0 {
                Ok(webhook) => Some(webhook),
                Err(invalid) => {
                    warn!(webhook = %guard.name_any(), event = %event.event_type, error = %invalid.error,
                        "a malformed Webhook gets no delivery");
                    None
                }
            })
            .filter(|w| {
                let name = w.name_any();
                name != skip && receiving.contains(&name.as_str()) && subscribes(w, event)
            })
            .collect();
        self.take(&event.namespace, subscribed.len())?;
        let mut published = Published::default();
        for webhook in subscribed {
            let (name, created) = self.create(webhook, event).await?;
            if created {
                published.created.push(name)
            } else {
                published.existing.push(name)
            }
        }
        Ok(published)
    }

    /// Delivers `event` to one Webhook whatever it subscribes to (a `webhook.ping`).
    /// Returns the delivery's name and whether it was created now.
    pub async fn publish_to(
        &self,
        webhook: &Webhook,
        event: &PlatformEvent,
    ) -> Result<(String, bool)> {
        self.take(&event.namespace, 1)?;
        self.create(webhook, event).await
    }

    fn take(&self, namespace: &str, deliveries: usize) -> Result<()> {
        self.fan_out
            .take(namespace, deliveries)
            .map_err(|retry_after| crate::Error::Throttled {
                namespace: namespace.to_owned(),
                retry_after,
            })
    }

    async fn create(&self, webhook: &Webhook, event: &PlatformEvent) -> Result<(String, bool)> {
        let delivery = self.origin.sealed(delivery_for(webhook, event));
        let name = delivery.name_any();
        let api = Api::<WebhookDelivery>::namespaced(self.client.clone(), &event.namespace);
        match api.create(&PostParams::default(), &delivery).await {
            Ok(_) => Ok((name, true)),
            Err(kube::Error::Api(status)) if status.code == 409 => Ok((name, false)),
            Err(err) => Err(err.into()),
        }
    }
}

/// A Webhook's label for its deliveries, or the field selector when its name is too long
/// for a label value.
pub fn deliveries_of(webhook_name: &str) -> ListParams {
    if webhook_name.len() <= 63 {
        ListParams::default().labels(&format!("{WEBHOOK_LABEL}={webhook_name}"))
    } else {
        ListParams::default().fields(&format!("spec.webhookRef.name={webhook_name}"))
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
    use serde_json::json;

    use super::*;
    use crate::api::webhook::{WebhookFormat, WebhookSpec, WebhookStatus};

    fn webhook(name: &str, spec: serde_json::Value) -> Webhook {
        let mut spec_json =
            json!({ "url": "https://hooks.example.com/x", "events": ["deployment.*"] });
        spec_json
            .as_object_mut()
            .unwrap()
            .extend(spec.as_object().unwrap().clone());
        let spec: WebhookSpec = serde_json::from_value(spec_json).unwrap();
        let mut w = Webhook::new(name, spec);
        w.metadata.namespace = Some("shop".into());
        w.metadata.uid = Some("uid-1".into());
        w.metadata.generation = Some(1);
        w
    }

    fn event(project: Option<(&str, &[(&str, &str)])>) -> PlatformEvent {
        let mut e = PlatformEvent::new(
            "deployment.ready",
            "d-uid/deployment.ready",
            "shop",
            "ready",
        );
        e.timestamp = "2026-11-29T10:15:00.5Z".parse().unwrap();
        if let Some((name, labels)) = project {
            e = e.with_project(
                name,
                labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            );
        }
        e
    }

    #[test]
    fn event_types_and_wildcards() {
        let e = event(Some(("web", &[])));
        assert!(subscribes(&webhook("a", json!({})), &e));
        assert!(subscribes(&webhook("a", json!({ "events": ["*"] })), &e));
        assert!(subscribes(
            &webhook(
                "a",
                json!({ "events": ["domain.verified", "deployment.ready"] })
            ),
            &e
        ));
        assert!(!subscribes(
            &webhook("a", json!({ "events": ["alert.*", "deployment.failed"] })),
            &e
        ));
        assert!(!subscribes(&webhook("a", json!({ "disabled": true })), &e));
    }

    #[test]
    fn project_selectors() {
        let storefront = event(Some(("storefront", &[("team", "shop"), ("tier", "web")])));
        let blog = event(Some(("blog", &[("team", "content")])));
        let none = event(None);
        let by_name = webhook(
            "a",
            json!({ "projectSelector": { "names": ["storefront"] } }),
        );
        assert!(subscribes(&by_name, &storefront));
        assert!(!subscribes(&by_name, &blog));
        assert!(
            !subscribes(&by_name, &none),
            "events about no project only go to unfiltered webhooks"
        );
        assert!(subscribes(&webhook("a", json!({})), &none));

        let by_labels = webhook(
            "a",
            json!({ "projectSelector": { "matchLabels": { "team": "shop" } } }),
        );
        assert!(subscribes(&by_labels, &storefront));
        assert!(!subscribes(&by_labels, &blog));

        let expressions = webhook(
            "a",
            json!({ "projectSelector": { "matchExpressions": [
                { "key": "team", "operator": "In", "values": ["shop", "content"] },
                { "key": "tier", "operator": "DoesNotExist" },
            ] } }),
        );
        assert!(!subscribes(&expressions, &storefront));
        assert!(subscribes(&expressions, &blog));

        let either = webhook(
            "a",
            json!({ "projectSelector": { "names": ["blog"], "matchLabels": { "tier": "web" } } }),
        );
        assert!(subscribes(&either, &storefront) && subscribes(&either, &blog));
        let not_in = ProjectSelector {
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "team".into(),
                operator: "NotIn".into(),
                values: Some(vec!["shop".into()]),
            }]),
            ..ProjectSelector::default()
        };
        assert!(selects(&not_in, blog.project.as_ref()));
        assert!(!selects(&not_in, storefront.project.as_ref()));
    }

    #[test]
    fn a_gone_endpoint_stops_deliveries_until_the_spec_changes() {
        let mut w = webhook("a", json!({}));
        let gone = Condition {
            type_: crate::api::conditions::STALLED.into(),
            status: "True".into(),
            reason: ENDPOINT_GONE.into(),
            message: "410".into(),
            observed_generation: Some(1),
            last_transition_time: Time(jiff::Timestamp::UNIX_EPOCH),
        };
        w.status = Some(WebhookStatus {
            conditions: vec![gone],
            ..WebhookStatus::default()
        });
        assert!(endpoint_gone(&w));
        assert!(!subscribes(&w, &event(None)));
        w.metadata.generation = Some(2);
        assert!(!endpoint_gone(&w));
        assert!(subscribes(&w, &event(None)));
    }

    #[test]
    fn the_delivery_object() {
        let w = webhook("storefront-events", json!({}));
        let e = event(Some(("storefront", &[]))).with("deployment", "storefront-3f9c2ab");
        let d = delivery_for(&w, &e);
        assert_eq!(
            d.name_any(),
            payload::delivery_name(&e, "storefront-events")
        );
        assert_eq!(d.metadata.namespace.as_deref(), Some("shop"));
        let labels = d.metadata.labels.as_ref().unwrap();
        assert_eq!(labels[WEBHOOK_LABEL], "storefront-events");
        assert_eq!(labels[EVENT_LABEL], "deployment.ready");
        assert_eq!(labels[PROJECT_LABEL], "storefront");
        let owner = &d.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str(), owner.controller),
            ("Webhook", "uid-1", Some(true))
        );
        assert_eq!(d.spec.webhook_id, payload::webhook_id(&e));
        assert_eq!(d.spec.project_ref.as_ref().unwrap().name, "storefront");
        assert_eq!(
            d.spec.timestamp.0.to_string(),
            "2026-11-29T10:15:00Z",
            "whole seconds, as the apiserver keeps"
        );
        assert_eq!(d.spec.payload_json()["timestamp"], "2026-11-29T10:15:00Z");
        assert_eq!(
            d.spec.payload_json()["data"]["deployment"],
            "storefront-3f9c2ab"
        );
        assert_eq!(delivery_for(&w, &e), d, "deterministic");

        let mut slack = webhook("alerts", json!({ "format": "slack" }));
        slack.spec.format = WebhookFormat::Slack;
        assert_eq!(
            delivery_for(&slack, &e).spec.payload_json()["text"],
            "ready"
        );
    }

    #[test]
    fn long_webhook_names_are_selected_by_field() {
        let lp = deliveries_of("short");
        assert_eq!(
            lp.label_selector.as_deref(),
            Some("clouddeck.io/webhook=short")
        );
        let long = "a".repeat(64);
        let lp = deliveries_of(&long);
        assert_eq!(
            lp.field_selector,
            Some(format!("spec.webhookRef.name={long}"))
        );
    }
}
