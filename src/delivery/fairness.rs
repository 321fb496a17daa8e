//! Fair shares of the delivery controller's attempts. Attempts run a few at a time for the
//! whole cluster; without shares, one tenant's receiver that accepts connections and never
//! answers would hold every slot for up to its timeout, and every other namespace's
//! deliveries would wait behind it. So each Webhook may have at most
//! [`PER_WEBHOOK`] attempts in flight and each namespace [`PER_NAMESPACE`]; a delivery over
//! its share is looked at again a moment later, without spending an attempt.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Attempts in flight to one Webhook.
pub const PER_WEBHOOK: usize = 4;
/// Attempts in flight for one namespace, all its Webhooks together.
pub const PER_NAMESPACE: usize = 8;

/// Counts attempts in flight per Webhook and per namespace. Cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct Shares {
    in_flight: Arc<Mutex<HashMap<String, usize>>>,
}

/// One attempt's place in its shares; given back when dropped.
#[derive(Debug)]
pub struct Share {
    shares: Shares,
    keys: [String; 2],
}

impl Shares {
    /// A share for an attempt to `webhook` in `namespace`, if both still have room.
    pub fn try_take(&self, namespace: &str, webhook: &str) -> Option<Share> {
        let keys = [
            format!("ns/{namespace}"),
            format!("wh/{namespace}/{webhook}"),
        ];
        let limits = [PER_NAMESPACE, PER_WEBHOOK];
        let mut in_flight = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
        let full = keys
            .iter()
            .zip(limits)
            .any(|(key, limit)| in_flight.get(key).copied().unwrap_or(0) >= limit);
        if full {
            return None;
        }
        for key in &keys {
            *in_flight.entry(key.clone()).or_insert(0) += 1;
        }
        Some(Share {
            shares: self.clone(),
            keys,
        })
    }
}

impl Drop for Share {
    fn drop(&mut self) {
        let mut in_flight = self
            .shares
            .in_flight
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        for key in &self.keys {
            if let Some(count) = in_flight.get_mut(key) {
                *count -= 1;
                if *count == 0 {
                    in_flight.remove(key);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_webhook_gets_its_share_and_others_keep_theirs() {
        let shares = Shares::default();
        let hanging: Vec<Share> = (0..PER_WEBHOOK)
            .map(|_| shares.try_take("team-a", "slow").unwrap())
            .collect();
        assert!(
            shares.try_take("team-a", "slow").is_none(),
            "over its share"
        );
        // Another Webhook of the namespace, and another namespace, still get through.
        let other = shares.try_take("team-a", "fast").unwrap();
        assert!(shares.try_take("team-b", "slow").is_some());
        drop(other);
        drop(hanging);
        assert!(shares.try_take("team-a", "slow").is_some(), "given back");
        assert!(shares.in_flight.lock().unwrap().is_empty());
    }

    #[test]
    fn a_namespace_cannot_take_more_than_its_share_with_many_webhooks() {
        let shares = Shares::default();
        let held: Vec<Share> = (0..PER_NAMESPACE)
            .map(|i| shares.try_take("team-a", &format!("hook-{i}")).unwrap())
            .collect();
        assert!(shares.try_take("team-a", "one-more").is_none());
        assert!(shares.try_take("team-b", "hook-0").is_some());
        drop(held);
    }
}
