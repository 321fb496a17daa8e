//! Bounded fan-out: how many WebhookDeliveries one namespace's events may create. Without
//! a bound, a tenant with 500 Webhooks and 80 Deployments going Ready wrote 40,000
//! deliveries in two minutes and took etcd (and every other tenant) down with it (issue
//! #13). Two limits, both per namespace and both set by the platform team:
//!
//! - **Webhooks that receive events** (`--webhook-max-per-namespace`): the oldest ones, by
//!   creation time then name, so that a new Webhook never pushes out one that works. The
//!   others are Stalled `TooManyWebhooks` by the Webhook controller; one event makes at
//!   most this many deliveries.
//! - **Deliveries per minute** (`--webhook-deliveries-per-minute`), a token bucket holding a
//!   minute's worth. An event whose deliveries do not fit is not written now: publishing
//!   fails with [`crate::Error::Throttled`], and the object that raised the event records
//!   its change only once it is published (the controllers publish before they write
//!   status). So the backlog is at most one pending change per object, kept in the
//!   apiserver, never lost on restart, and never a pile of deliveries.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

use crate::config::WebhookConfig;

/// The reason of a publish over the fan-out rate (a Normal Event: nothing failed).
pub const THROTTLED: &str = "WebhookEventsDeferred";

/// The namespace limits of this operator. Cheap to clone; one per process, shared by every
/// controller that publishes.
#[derive(Clone)]
pub struct FanOut {
    /// `--webhook-max-per-namespace`.
    pub max_webhooks: usize,
    limiter: Arc<DefaultKeyedRateLimiter<String>>,
}

impl std::fmt::Debug for FanOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FanOut")
            .field("max_webhooks", &self.max_webhooks)
            .field("namespaces", &self.limiter.len())
            .finish()
    }
}

impl FanOut {
    pub fn new(max_webhooks: u32, deliveries_per_minute: u32) -> Self {
        let per_minute = NonZeroU32::new(deliveries_per_minute).unwrap_or(NonZeroU32::MIN);
        FanOut {
            max_webhooks: max_webhooks.max(1) as usize,
            limiter: Arc::new(RateLimiter::keyed(Quota::per_minute(per_minute))),
        }
    }

    pub fn from_config(config: &WebhookConfig) -> Self {
        FanOut::new(config.max_per_namespace, config.deliveries_per_minute)
    }

    /// Takes room for `deliveries` new deliveries in `namespace`, all or none. `Err` says
    /// when there will be room.
    pub fn take(&self, namespace: &str, deliveries: usize) -> Result<(), Duration> {
        let Some(n) = NonZeroU32::new(deliveries.min(u32::MAX as usize) as u32) else {
            return Ok(());
        };
        // Namespaces whose bucket is full again cost nothing to forget.
        if self.limiter.len() > 1_000 {
            self.limiter.retain_recent();
        }
        match self.limiter.check_key_n(&namespace.to_owned(), n) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(not_until)) => Err(not_until.wait_time_from(DefaultClock::default().now())),
            // More than a minute's worth at once: config validation rules it out (at most
            // `max_webhooks` per event); wait a minute rather than never publish.
            Err(_) => Err(Duration::from_secs(60)),
        }
    }
}

/// The Webhooks of one namespace that receive events: the `max` oldest, by creation time
/// and then name. `webhooks` is the metadata of every Webhook of the namespace, in any
/// order.
pub fn receiving<'a>(
    webhooks: impl IntoIterator<Item = &'a ObjectMeta>,
    max: usize,
) -> Vec<&'a str> {
    let mut ranked: Vec<(Option<&Time>, &str)> = webhooks
        .into_iter()
        .map(|meta| {
            let name = meta.name.as_deref().unwrap_or_default();
            (meta.creation_timestamp.as_ref(), name)
        })
        .collect();
    ranked.sort_by(|a, b| {
        let at = |t: Option<&Time>| t.map(|t| t.0);
        at(a.0).cmp(&at(b.0)).then(a.1.cmp(b.1))
    });
    ranked.into_iter().take(max).map(|(_, name)| name).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn created(name: &str, second: i64) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.into()),
            creation_timestamp: Some(Time(
                jiff::Timestamp::from_second(1_800_000_000 + second).unwrap(),
            )),
            ..ObjectMeta::default()
        }
    }

    #[test]
    fn the_oldest_webhooks_receive_events() {
        let hooks = [
            created("newest", 3),
            created("b-old", 1),
            created("a-old", 1),
            created("middle", 2),
        ];
        assert_eq!(receiving(&hooks, 3), ["a-old", "b-old", "middle"]);
        assert_eq!(receiving(&hooks, 10).len(), 4);
        assert_eq!(receiving(&hooks, 1), ["a-old"], "same time: by name");
    }

    #[test]
    fn a_namespace_gets_a_minutes_worth_then_waits() {
        let fan_out = FanOut::new(5, 60);
        assert_eq!(fan_out.take("team-a", 0), Ok(()), "nothing to write");
        for _ in 0..12 {
            assert_eq!(fan_out.take("team-a", 5), Ok(()));
        }
        let wait = fan_out.take("team-a", 5).unwrap_err();
        assert!(
            wait > Duration::from_secs(4) && wait <= Duration::from_secs(5),
            "five deliveries at one a second: {wait:?}"
        );
        // All or none: a refused event took nothing, and one delivery fits a second later.
        assert!(fan_out.take("team-a", 1).unwrap_err() <= Duration::from_secs(1));
        // Another namespace has its own minute.
        assert_eq!(fan_out.take("team-b", 60), Ok(()));
    }
}
