//! What a Webhook's status says, computed from its spec checks and its delivery log:
//! pure functions, unit-tested with plain values.

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::api::webhook_delivery::{DeliveryPhase, WebhookDelivery};

/// Consecutive failed attempts after which a Webhook is `Degraded`.
pub const DEGRADED_AFTER: i32 = 5;

/// Condition reasons of a Webhook.
pub const SUBSCRIBED: &str = "Subscribed";
pub const DISABLED: &str = "Disabled";
pub const INVALID_SPEC: &str = "InvalidSpec";
pub const DESTINATION_REFUSED: &str = "DestinationRefused";
pub const SECRET_UNAVAILABLE: &str = "SigningSecretUnavailable";
pub const DELIVERIES_FAILING: &str = "DeliveriesFailing";
pub const DELIVERIES_SUCCEEDING: &str = "DeliveriesSucceeding";

/// The endpoint's health as its delivery log shows it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EndpointHealth {
    /// Failed attempts since the last success, newest first counted.
    pub consecutive_failures: i32,
    pub last_success: Option<Timestamp>,
    pub last_failure: Option<Timestamp>,
    /// What the newest failed attempt got, e.g. `HTTP 500` or `timed out after 15s`.
    pub last_error: Option<String>,
}

impl EndpointHealth {
    pub fn degraded(&self) -> bool {
        self.consecutive_failures >= DEGRADED_AFTER
    }
}

/// Reads every recorded attempt of every delivery in time order. Attempts still in flight
/// are not counted either way.
pub fn endpoint_health(deliveries: &[WebhookDelivery]) -> EndpointHealth {
    let mut attempts: Vec<(Timestamp, bool, String)> = deliveries
        .iter()
        .filter_map(|d| d.status.as_ref())
        .flat_map(|s| s.attempts.iter())
        .filter(|a| a.status_code.is_some() || a.error.is_some())
        .map(|a| {
            let ok = a.status_code.is_some_and(|c| (200..300).contains(&c)) && a.error.is_none();
            let what = match (&a.error, a.status_code) {
                (Some(e), _) => e.clone(),
                (None, Some(c)) => format!("HTTP {c}"),
                (None, None) => String::new(),
            };
            (a.time.0, ok, what)
        })
        .collect();
    attempts.sort_by_key(|(at, ..)| *at);
    let mut health = EndpointHealth::default();
    for (at, ok, what) in attempts {
        if ok {
            health.consecutive_failures = 0;
            health.last_success = Some(at);
        } else {
            health.consecutive_failures += 1;
            health.last_failure = Some(at);
            health.last_error = Some(what);
        }
    }
    health
}

/// How long finished deliveries are kept, and how many.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retention {
    /// Delivered deliveries older than this are deleted.
    pub delivered_ttl: SignedDuration,
    /// Failed deliveries older than this are deleted (kept longer: they need a look).
    pub failed_ttl: SignedDuration,
    /// At most this many finished deliveries are kept per Webhook, newest first.
    pub keep_newest: usize,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            delivered_ttl: SignedDuration::from_hours(24),
            failed_ttl: SignedDuration::from_hours(7 * 24),
            keep_newest: 100,
        }
    }
}

/// The deliveries retention deletes: finished ones past their TTL, and finished ones
/// beyond the newest `keep_newest`. Pending and Retrying deliveries are never pruned, nor
/// is one with a redelivery request not yet handled.
pub fn to_prune(
    deliveries: &[WebhookDelivery],
    retention: &Retention,
    now: Timestamp,
) -> Vec<String> {
    let mut finished: Vec<(&WebhookDelivery, DeliveryPhase, Timestamp)> = deliveries
        .iter()
        .filter_map(|d| {
            let status = d.status.as_ref()?;
            let phase = status.phase?;
            if !matches!(phase, DeliveryPhase::Delivered | DeliveryPhase::Failed) {
                return None;
            }
            let redelivery = d
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(crate::api::webhook_delivery::REDELIVER_ANNOTATION));
            if redelivery.is_some() && redelivery != status.redelivery_handled.as_ref() {
                return None;
            }
            let finished_at = status
                .attempts
                .last()
                .map(|a| a.time.0)
                .or_else(|| d.metadata.creation_timestamp.as_ref().map(|Time(t)| *t))
                .unwrap_or(now);
            Some((d, phase, finished_at))
        })
        .collect();
    finished.sort_by_key(|(_, _, at)| std::cmp::Reverse(*at));
    finished
        .iter()
        .enumerate()
        .filter(|(rank, (_, phase, at))| {
            let ttl = match phase {
                DeliveryPhase::Failed => retention.failed_ttl,
                _ => retention.delivered_ttl,
            };
            *rank >= retention.keep_newest || now.duration_since(*at) > ttl
        })
        .filter_map(|(_, (d, ..))| d.metadata.name.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::webhook_delivery::{DeliveryAttempt, WebhookDeliveryStatus};

    fn t(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + seconds).unwrap()
    }

    fn attempt(at: i64, code: Option<i32>, error: Option<&str>) -> DeliveryAttempt {
        DeliveryAttempt {
            time: Time(t(at)),
            status_code: code,
            latency_ms: Some(3),
            response_body: None,
            error: error.map(str::to_owned),
        }
    }

    fn delivery(
        name: &str,
        phase: Option<DeliveryPhase>,
        attempts: Vec<DeliveryAttempt>,
    ) -> WebhookDelivery {
        let mut d: WebhookDelivery = serde_json::from_value(serde_json::json!({
            "apiVersion": "clouddeck.io/v1alpha1", "kind": "WebhookDelivery",
            "metadata": { "name": name, "creationTimestamp": "2027-01-15T08:00:00Z" },
            "spec": { "webhookRef": { "name": "w" }, "eventType": "deployment.ready",
                      "webhookId": "msg_1", "timestamp": "2027-01-15T08:00:00Z", "payload": {} }
        }))
        .unwrap();
        d.status = Some(WebhookDeliveryStatus {
            phase,
            attempts,
            ..Default::default()
        });
        d
    }

    #[test]
    fn consecutive_failures_count_across_deliveries_in_time_order() {
        let a = delivery(
            "a",
            None,
            vec![attempt(1, Some(200), None), attempt(10, Some(500), None)],
        );
        let b = delivery(
            "b",
            None,
            vec![
                attempt(0, None, Some("timed out after 15s")),
                attempt(12, Some(503), None),
            ],
        );
        let health = endpoint_health(&[a.clone(), b.clone()]);
        assert_eq!(health.consecutive_failures, 2, "{health:?}");
        assert_eq!(health.last_success, Some(t(1)));
        assert_eq!(health.last_failure, Some(t(12)));
        assert_eq!(health.last_error.as_deref(), Some("HTTP 503"));
        assert!(!health.degraded());

        let c = delivery(
            "c",
            None,
            (20..23)
                .map(|i| attempt(i, None, Some("connection failed")))
                .collect(),
        );
        let health = endpoint_health(&[a.clone(), b.clone(), c]);
        assert_eq!(health.consecutive_failures, 5);
        assert!(health.degraded());

        let ok = delivery(
            "d",
            None,
            vec![attempt(30, Some(204), None), attempt(31, None, None)],
        );
        let health = endpoint_health(&[a, b, ok]);
        assert_eq!(
            health.consecutive_failures, 0,
            "a success resets; in-flight attempts do not count"
        );
    }

    #[test]
    fn retention_prunes_old_and_excess_finished_deliveries_only() {
        let day = 24 * 3600;
        let now = t(30 * day);
        let ds = vec![
            delivery(
                "fresh-delivered",
                Some(DeliveryPhase::Delivered),
                vec![attempt(30 * day - 60, Some(200), None)],
            ),
            delivery(
                "old-delivered",
                Some(DeliveryPhase::Delivered),
                vec![attempt(28 * day, Some(200), None)],
            ),
            delivery(
                "old-failed",
                Some(DeliveryPhase::Failed),
                vec![attempt(28 * day, Some(500), None)],
            ),
            delivery(
                "ancient-failed",
                Some(DeliveryPhase::Failed),
                vec![attempt(20 * day, Some(500), None)],
            ),
            delivery(
                "ancient-retrying",
                Some(DeliveryPhase::Retrying),
                vec![attempt(day, Some(500), None)],
            ),
            delivery("never-attempted", None, vec![]),
        ];
        let mut pruned = to_prune(&ds, &Retention::default(), now);
        pruned.sort();
        assert_eq!(pruned, ["ancient-failed", "old-delivered"]);

        let keep_two = Retention {
            keep_newest: 2,
            ..Retention::default()
        };
        let mut pruned = to_prune(&ds, &keep_two, now);
        pruned.sort();
        assert_eq!(
            pruned,
            ["ancient-failed", "old-delivered", "old-failed"],
            "beyond the newest two, or past the TTL"
        );
        let keep_one = Retention {
            keep_newest: 1,
            ..Retention::default()
        };
        assert_eq!(to_prune(&ds, &keep_one, now).len(), 3);
    }

    #[test]
    fn a_pending_redelivery_request_protects_a_delivery() {
        let mut d = delivery(
            "x",
            Some(DeliveryPhase::Delivered),
            vec![attempt(0, Some(200), None)],
        );
        d.metadata.annotations = Some(
            [(
                crate::api::webhook_delivery::REDELIVER_ANNOTATION.to_string(),
                "1".to_string(),
            )]
            .into(),
        );
        assert!(
            to_prune(
                std::slice::from_ref(&d),
                &Retention::default(),
                t(100 * 24 * 3600)
            )
            .is_empty()
        );
        d.status.as_mut().unwrap().redelivery_handled = Some("1".into());
        assert_eq!(
            to_prune(&[d], &Retention::default(), t(100 * 24 * 3600)),
            ["x"]
        );
    }
}
