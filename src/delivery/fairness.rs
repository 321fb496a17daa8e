//! Fair shares of the delivery controller's attempts. Attempts run a few at a time for the
//! whole cluster; without shares, one tenant's receiver that accepts connections and never
//! answers would hold every slot for up to its timeout, and every other namespace's
//! deliveries would wait behind it. So each Webhook may have at most [`PER_WEBHOOK`]
//! attempts in flight and each namespace [`PER_NAMESPACE`].
//!
//! A delivery over its share waits in line, first come first served: when a share is given
//! back, the first waiter is woken at once (through the channel [`Shares::new`] returns) and
//! keeps its turn for [`WAKE_GRACE`]; a newcomer cannot take a share from under it. A
//! waiter blocked by its Webhook waits in the Webhook's line only, so a receiver that never
//! answers does not hold a place in its namespace's line ahead of the namespace's other
//! Webhooks.

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

/// Attempts in flight to one Webhook.
pub const PER_WEBHOOK: usize = 4;
/// Attempts in flight for one namespace, all its Webhooks together.
pub const PER_NAMESPACE: usize = 8;
/// How long a woken waiter keeps its turn; one that does not come back by then (deleted,
/// or no longer due) loses it to the next in line.
pub const WAKE_GRACE: Duration = Duration::from_secs(2);

/// Counts attempts in flight per Webhook and per namespace, and who waits for them. `W`
/// names a waiter (the delivery). Cheap to clone.
#[derive(Debug)]
pub struct Shares<W> {
    state: Arc<Mutex<State<W>>>,
    wake: mpsc::UnboundedSender<W>,
}

impl<W> Clone for Shares<W> {
    fn clone(&self) -> Self {
        Shares {
            state: self.state.clone(),
            wake: self.wake.clone(),
        }
    }
}

#[derive(Debug)]
struct State<W> {
    in_flight: HashMap<String, usize>,
    lines: HashMap<String, Line<W>>,
}

/// Waiters for one key's shares, in order of arrival.
#[derive(Debug)]
struct Line<W> {
    order: VecDeque<W>,
    members: HashSet<W>,
    /// Waiters told that their turn has come, and when.
    woken: HashMap<W, Instant>,
}

impl<W: Clone + Eq + Hash> Line<W> {
    fn new() -> Self {
        Line {
            order: VecDeque::new(),
            members: HashSet::new(),
            woken: HashMap::new(),
        }
    }

    /// Waiters ahead of `waiter`: all of them if it is not in line.
    fn ahead_of(&self, waiter: &W) -> usize {
        if !self.members.contains(waiter) {
            return self.order.len();
        }
        self.order.iter().take_while(|w| *w != waiter).count()
    }

    fn join(&mut self, waiter: &W) {
        if self.members.insert(waiter.clone()) {
            self.order.push_back(waiter.clone());
        }
    }

    fn leave(&mut self, waiter: &W) {
        if self.members.remove(waiter) {
            self.order.retain(|w| w != waiter);
            self.woken.remove(waiter);
        }
    }

    /// Drops the woken waiters whose turn ran out.
    fn expire(&mut self, now: Instant) {
        let expired: Vec<W> = self
            .woken
            .iter()
            .filter(|(_, at)| now.saturating_duration_since(**at) >= WAKE_GRACE)
            .map(|(w, _)| w.clone())
            .collect();
        for waiter in &expired {
            self.leave(waiter);
        }
    }

    /// Drops the woken waiters whose turn ran out, then wakes those whose turn has come:
    /// the first `free`. Returns the newly woken.
    fn settle(&mut self, free: usize, now: Instant) -> Vec<W> {
        self.expire(now);
        let mut newly = Vec::new();
        for waiter in self.order.iter().take(free) {
            if !self.woken.contains_key(waiter) {
                self.woken.insert(waiter.clone(), now);
                newly.push(waiter.clone());
            }
        }
        newly
    }
}

impl<W: Clone + Eq + Hash> State<W> {
    fn free(&self, key: &str, limit: usize) -> usize {
        limit.saturating_sub(self.in_flight.get(key).copied().unwrap_or(0))
    }

    /// Settles `key`'s line (see [`Line::settle`]) and forgets it once empty.
    fn settle(&mut self, key: &str, limit: usize, now: Instant) -> Vec<W> {
        let free = self.free(key, limit);
        let Some(line) = self.lines.get_mut(key) else {
            return Vec::new();
        };
        let woken = line.settle(free, now);
        if line.order.is_empty() {
            self.lines.remove(key);
        }
        woken
    }
}

/// One attempt's place in its shares; given back when dropped, which wakes the next waiter.
#[derive(Debug)]
pub struct Share<W: Clone + Eq + Hash> {
    shares: Shares<W>,
    keys: [String; 2],
}

fn keys_of(namespace: &str, webhook: &str) -> [String; 2] {
    [
        format!("ns/{namespace}"),
        format!("wh/{namespace}/{webhook}"),
    ]
}

const LIMITS: [usize; 2] = [PER_NAMESPACE, PER_WEBHOOK];

impl<W: Clone + Eq + Hash> Shares<W> {
    /// Shares, and the channel on which waiters are told that their turn has come.
    pub fn new() -> (Self, mpsc::UnboundedReceiver<W>) {
        let (wake, woken) = mpsc::unbounded_channel();
        let state = State {
            in_flight: HashMap::new(),
            lines: HashMap::new(),
        };
        let shares = Shares {
            state: Arc::new(Mutex::new(state)),
            wake,
        };
        (shares, woken)
    }

    /// A share for `waiter`'s attempt to `webhook` in `namespace`, if both have room and no
    /// one waits ahead of it; otherwise `waiter` waits in line and is woken when its turn
    /// comes.
    pub fn try_take(&self, namespace: &str, webhook: &str, waiter: W) -> Option<Share<W>> {
        self.take_at(namespace, webhook, waiter, Instant::now())
    }

    fn take_at(&self, namespace: &str, webhook: &str, waiter: W, now: Instant) -> Option<Share<W>> {
        let keys = keys_of(namespace, webhook);
        let mut woken = Vec::new();
        let mut state = self.lock();
        for key in &keys {
            if let Some(line) = state.lines.get_mut(key) {
                line.expire(now);
            }
        }
        let blocked = [0, 1].map(|i| {
            let ahead = state
                .lines
                .get(&keys[i])
                .map_or(0, |line| line.ahead_of(&waiter));
            ahead >= state.free(&keys[i], LIMITS[i])
        });
        let taken = !blocked.iter().any(|b| *b);
        if taken {
            for key in &keys {
                if let Some(line) = state.lines.get_mut(key) {
                    line.leave(&waiter);
                }
                *state.in_flight.entry(key.clone()).or_insert(0) += 1;
            }
        } else {
            // Blocked by its Webhook: waits there only, holding no place in the
            // namespace's line that the namespace's other Webhooks could use.
            let (wait, not) = if blocked[1] { (1, 0) } else { (0, 1) };
            let line = state
                .lines
                .entry(keys[wait].clone())
                .or_insert_with(Line::new);
            line.join(&waiter);
            if blocked[1]
                && let Some(line) = state.lines.get_mut(&keys[not])
            {
                line.leave(&waiter);
            }
        }
        for (key, limit) in keys.iter().zip(LIMITS) {
            woken.extend(state.settle(key, limit, now));
        }
        drop(state);
        self.wake_all(woken);
        taken.then(|| Share {
            shares: self.clone(),
            keys,
        })
    }

    /// Deliveries waiting for a share.
    #[cfg(test)]
    fn waiting(&self) -> usize {
        let state = self.lock();
        let mut all: HashSet<&W> = HashSet::new();
        for line in state.lines.values() {
            all.extend(line.order.iter());
        }
        all.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State<W>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn wake_all(&self, woken: Vec<W>) {
        for waiter in woken {
            // Closed only when the controller is gone, and then no one needs waking.
            let _ = self.wake.send(waiter);
        }
    }
}

impl<W: Clone + Eq + Hash> Drop for Share<W> {
    fn drop(&mut self) {
        let now = Instant::now();
        let mut woken = Vec::new();
        let mut state = self.shares.lock();
        for (key, limit) in self.keys.iter().zip(LIMITS) {
            if let Some(count) = state.in_flight.get_mut(key) {
                *count -= 1;
                if *count == 0 {
                    state.in_flight.remove(key);
                }
            }
            woken.extend(state.settle(key, limit, now));
        }
        drop(state);
        self.shares.wake_all(woken);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(woken: &mut mpsc::UnboundedReceiver<&'static str>) -> Vec<&'static str> {
        std::iter::from_fn(|| woken.try_recv().ok()).collect()
    }

    #[test]
    fn a_webhook_gets_its_share_and_others_keep_theirs() {
        let (shares, _woken) = Shares::new();
        let hanging: Vec<_> = (0..PER_WEBHOOK)
            .map(|i| shares.try_take("team-a", "slow", format!("d{i}")).unwrap())
            .collect();
        assert!(
            shares.try_take("team-a", "slow", "d9".into()).is_none(),
            "over its share"
        );
        // Another Webhook of the namespace, and another namespace, still get through.
        let other = shares.try_take("team-a", "fast", "f".into()).unwrap();
        assert!(shares.try_take("team-b", "slow", "b".into()).is_some());
        drop(other);
        drop(hanging);
        assert!(
            shares.try_take("team-a", "slow", "d9".into()).is_some(),
            "given back"
        );
        let state = shares.lock();
        assert!(state.in_flight.is_empty());
        assert!(state.lines.is_empty(), "no one left waiting");
    }

    #[test]
    fn a_namespace_cannot_take_more_than_its_share_with_many_webhooks() {
        let (shares, _woken) = Shares::new();
        let held: Vec<_> = (0..PER_NAMESPACE)
            .map(|i| {
                let hook = format!("hook-{i}");
                shares.try_take("team-a", &hook, hook.clone()).unwrap()
            })
            .collect();
        assert!(shares.try_take("team-a", "one-more", "x".into()).is_none());
        assert!(shares.try_take("team-b", "hook-0", "y".into()).is_some());
        drop(held);
    }

    #[test]
    fn a_freed_share_wakes_the_first_waiter_and_a_newcomer_cannot_take_it() {
        let (shares, mut woken) = Shares::new();
        let mut held: Vec<_> = ["a", "b", "c", "d"]
            .map(|w| shares.try_take("ns", "hook", w).unwrap())
            .into();
        assert!(shares.try_take("ns", "hook", "first").is_none());
        assert!(shares.try_take("ns", "hook", "second").is_none());
        assert_eq!(shares.waiting(), 2);
        assert!(drain(&mut woken).is_empty(), "nothing freed yet");

        held.pop();
        assert_eq!(drain(&mut woken), vec!["first"], "woken at once, in order");
        assert!(
            shares.try_take("ns", "hook", "newcomer").is_none(),
            "the freed share is first's"
        );
        assert!(shares.try_take("ns", "hook", "second").is_none());
        let first = shares.try_take("ns", "hook", "first");
        assert!(first.is_some());
        drop(first);
        assert_eq!(drain(&mut woken), vec!["second"]);
    }

    #[test]
    fn a_woken_waiter_that_does_not_come_back_loses_its_turn() {
        let (shares, mut woken) = Shares::new();
        let start = Instant::now();
        let mut held: Vec<_> = ["a", "b", "c", "d"]
            .map(|w| shares.take_at("ns", "hook", w, start).unwrap())
            .into();
        assert!(shares.take_at("ns", "hook", "gone", start).is_none());
        assert!(shares.take_at("ns", "hook", "next", start).is_none());
        held.pop();
        assert_eq!(drain(&mut woken), vec!["gone"]);

        let later = Instant::now() + WAKE_GRACE;
        let next = shares.take_at("ns", "hook", "next", later);
        assert!(next.is_some(), "gone's turn ran out");
        assert_eq!(drain(&mut woken), Vec::<&str>::new());
        assert_eq!(shares.waiting(), 0);
    }

    #[test]
    fn a_waiter_blocked_by_its_webhook_holds_no_place_in_its_namespaces_line() {
        let (shares, _woken) = Shares::new();
        // The namespace full: four to a hanging receiver, four elsewhere.
        let slow: Vec<_> = (0..PER_WEBHOOK)
            .map(|i| shares.try_take("ns", "slow", format!("s{i}")).unwrap())
            .collect();
        let mut fast: Vec<_> = (0..PER_NAMESPACE - PER_WEBHOOK)
            .map(|i| {
                shares
                    .try_take("ns", &format!("fast-{i}"), format!("f{i}"))
                    .unwrap()
            })
            .collect();
        // Over both shares, the next one for the hanging receiver waits for it only.
        assert!(shares.try_take("ns", "slow", "s9".into()).is_none());
        assert!(shares.try_take("ns", "other", "o".into()).is_none());
        fast.pop();
        assert!(
            shares.try_take("ns", "other", "o".into()).is_some(),
            "the namespace's freed share is not held for the hanging receiver"
        );
        drop(slow);
    }
}
