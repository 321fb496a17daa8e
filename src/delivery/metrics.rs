//! Delivery metrics, for dashboards and the PrometheusRule (`WebhookEndpointFailing`,
//! `WebhookDeliveryBacklog`):
//!
//! - `clouddeck_webhook_attempts_total{result}`: attempts by result (`success`,
//!   `http_error`, `timeout`, `connection_error`, `refused`, `other`);
//! - `clouddeck_webhook_deliveries_total{outcome}`: finished deliveries (`delivered`,
//!   `failed`, `gone`);
//! - `clouddeck_webhook_attempt_duration_seconds`: attempt latency histogram;
//! - `clouddeck_webhook_pending_deliveries`: deliveries Pending or Retrying;
//! - `clouddeck_webhook_oldest_pending_age_seconds`: age of the oldest of them.
//!
//! Label values are constants: never a URL, a namespace or a Webhook name.

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

use super::sender::AttemptOutcome;

#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum AttemptResult {
    success,
    http_error,
    timeout,
    connection_error,
    refused,
    other,
}

impl AttemptResult {
    pub fn of(outcome: &AttemptOutcome) -> Self {
        match (outcome.status, outcome.error.as_deref()) {
            (Some(_), _) if outcome.succeeded() => AttemptResult::success,
            (Some(_), _) => AttemptResult::http_error,
            (None, Some(e)) if e.starts_with("timed out") => AttemptResult::timeout,
            (None, Some(e)) if e.starts_with("connection failed") => {
                AttemptResult::connection_error
            }
            (None, Some(e)) if e.starts_with("destination ") => AttemptResult::refused,
            _ => AttemptResult::other,
        }
    }
}

#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum DeliveryOutcome {
    delivered,
    failed,
    gone,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AttemptLabels {
    pub result: AttemptResult,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: DeliveryOutcome,
}

/// Cheap to clone: every metric is a shared handle.
#[derive(Clone, Debug)]
pub struct DeliveryMetrics {
    pub attempts: Family<AttemptLabels, Counter>,
    pub deliveries: Family<OutcomeLabels, Counter>,
    pub attempt_duration: Histogram,
    pub pending: Gauge,
    pub oldest_pending_age: Gauge<f64, AtomicU64>,
}

impl DeliveryMetrics {
    pub fn new(registry: &mut Registry) -> Self {
        let metrics = DeliveryMetrics {
            attempts: Family::default(),
            deliveries: Family::default(),
            // 5ms .. ~80s: covers the 60s maximum timeout.
            attempt_duration: Histogram::new(exponential_buckets(0.005, 2.0, 15)),
            pending: Gauge::default(),
            oldest_pending_age: Gauge::default(),
        };
        registry.register(
            "webhook_attempts",
            "Webhook delivery attempts, by result",
            metrics.attempts.clone(),
        );
        registry.register(
            "webhook_deliveries",
            "Webhook deliveries finished, by outcome",
            metrics.deliveries.clone(),
        );
        registry.register_with_unit(
            "webhook_attempt_duration",
            "Time one webhook delivery attempt took, to the answer or the error",
            Unit::Seconds,
            metrics.attempt_duration.clone(),
        );
        registry.register(
            "webhook_pending_deliveries",
            "Webhook deliveries Pending or Retrying",
            metrics.pending.clone(),
        );
        registry.register_with_unit(
            "webhook_oldest_pending_age",
            "Age of the oldest webhook delivery still Pending or Retrying",
            Unit::Seconds,
            metrics.oldest_pending_age.clone(),
        );
        metrics
    }

    pub fn attempt(&self, outcome: &AttemptOutcome) {
        self.attempts
            .get_or_create(&AttemptLabels {
                result: AttemptResult::of(outcome),
            })
            .inc();
        self.attempt_duration.observe(outcome.latency.as_secs_f64());
    }

    pub fn finished(&self, outcome: DeliveryOutcome) {
        self.deliveries
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }

    pub fn backlog(&self, pending: usize, oldest: Option<Duration>) {
        self.pending.set(i64::try_from(pending).unwrap_or(i64::MAX));
        self.oldest_pending_age
            .set(oldest.map_or(0.0, |d| d.as_secs_f64()));
    }
}

#[cfg(test)]
mod tests {
    use jiff::Timestamp;

    use super::*;

    fn outcome(status: Option<u16>, error: Option<&str>) -> AttemptOutcome {
        AttemptOutcome {
            started: Timestamp::UNIX_EPOCH,
            status,
            latency: Duration::from_millis(20),
            response_body: None,
            error: error.map(str::to_owned),
            retry_after: None,
        }
    }

    #[test]
    fn attempts_are_labelled_by_a_bounded_result() {
        assert_eq!(
            AttemptResult::of(&outcome(Some(204), None)),
            AttemptResult::success
        );
        assert_eq!(
            AttemptResult::of(&outcome(Some(500), None)),
            AttemptResult::http_error
        );
        assert_eq!(
            AttemptResult::of(&outcome(Some(307), Some("redirect to x not followed"))),
            AttemptResult::http_error
        );
        assert_eq!(
            AttemptResult::of(&outcome(None, Some("timed out after 15s"))),
            AttemptResult::timeout
        );
        assert_eq!(
            AttemptResult::of(&outcome(None, Some("connection failed: refused"))),
            AttemptResult::connection_error
        );
        assert_eq!(
            AttemptResult::of(&outcome(
                None,
                Some("destination 10.0.0.1 is a private address; refused")
            )),
            AttemptResult::refused
        );
        assert_eq!(
            AttemptResult::of(&outcome(None, Some("request failed: x"))),
            AttemptResult::other
        );
    }

    #[test]
    fn metrics_are_exported_with_the_prefix() {
        let mut registry = Registry::with_prefix("clouddeck");
        let metrics = DeliveryMetrics::new(&mut registry);
        metrics.attempt(&outcome(Some(200), None));
        metrics.attempt(&outcome(None, Some("timed out after 1s")));
        metrics.finished(DeliveryOutcome::delivered);
        metrics.backlog(3, Some(Duration::from_secs(90)));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        for line in [
            "clouddeck_webhook_attempts_total{result=\"success\"} 1",
            "clouddeck_webhook_attempts_total{result=\"timeout\"} 1",
            "clouddeck_webhook_deliveries_total{outcome=\"delivered\"} 1",
            "clouddeck_webhook_attempt_duration_seconds_count 2",
            "clouddeck_webhook_pending_deliveries 3",
            "clouddeck_webhook_oldest_pending_age_seconds 90.0",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
    }
}
