//! The one error policy of every controller: what a failed reconcile does next.
//!
//! - An error that no retry fixes (an invalid field, a missing reference) waits for a
//!   change of the object or of what it points to.
//! - An error that says when to come back (a publish over the namespace's fan-out rate)
//!   comes back then.
//! - Anything else is retried with a per-object exponential backoff, 1 s doubling to
//!   5 minutes, reset by the next success. The counts live in the controller's own
//!   context (not a process-wide static), and an object that has not failed for longer
//!   than the longest wait is forgotten, so deleted objects do not pile up.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};
use tracing::warn;

use super::error::ReconcileError;

/// The first wait after a failure.
const FIRST: Duration = Duration::from_secs(1);
/// The longest wait between two tries.
const LONGEST: Duration = Duration::from_secs(300);
/// How long after its last failure an object's count is kept.
const FORGET_AFTER: Duration = Duration::from_secs(2 * 300);

/// Consecutive failures per object of one controller.
#[derive(Debug, Default)]
pub struct Backoffs {
    failures: Mutex<HashMap<String, (u32, Instant)>>,
}

impl Backoffs {
    /// Counts a failure of `key` at `now` and returns the wait before the next try.
    pub fn failed(&self, key: &str, now: Instant) -> Duration {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        failures.retain(|_, (_, last)| now.saturating_duration_since(*last) < FORGET_AFTER);
        let (count, last) = failures.entry(key.to_owned()).or_insert((0, now));
        *count = count.saturating_add(1);
        *last = now;
        FIRST
            .saturating_mul(1u32 << (*count - 1).min(16))
            .min(LONGEST)
    }

    /// A success: the next failure of `key` waits the shortest time again.
    pub fn succeeded(&self, key: &str) {
        self.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
    }

    /// How many objects have a count, for tests.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.failures.lock().unwrap().len()
    }
}

/// The key of `obj` in a controller's [`Backoffs`]: `namespace/name`.
pub fn key<K: Resource>(obj: &K) -> String {
    format!("{}/{}", obj.namespace().unwrap_or_default(), obj.name_any())
}

/// The error policy every controller hands to `Controller::run`: see the module docs.
/// One log line per failure, with the controller, the object and the error's reason.
pub fn policy<K: Resource>(
    controller: &'static str,
    obj: &K,
    error: &ReconcileError,
    backoffs: &Backoffs,
) -> Action {
    if error.awaits_change() {
        return Action::await_change();
    }
    if let Some(after) = error.retry_after() {
        return Action::requeue(after);
    }
    let object = key(obj);
    let delay = backoffs.failed(&object, Instant::now());
    warn!(controller, %object, reason = error.reason(), error = %crate::one_line(error), retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_from_one_second_to_five_minutes_and_reset_on_success() {
        let backoffs = Backoffs::default();
        let t0 = Instant::now();
        let waits: Vec<u64> = (0..12)
            .map(|i| {
                backoffs
                    .failed("team/web", t0 + Duration::from_secs(i))
                    .as_secs()
            })
            .collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]);
        backoffs.succeeded("team/web");
        assert_eq!(backoffs.failed("team/web", t0), FIRST);
    }

    #[test]
    fn an_object_that_stopped_failing_is_forgotten() {
        let backoffs = Backoffs::default();
        let t0 = Instant::now();
        for i in 0..1000 {
            backoffs.failed(&format!("team/deleted-{i}"), t0);
        }
        backoffs.failed("team/web", t0 + FORGET_AFTER);
        assert_eq!(backoffs.len(), 1, "only the object that failed lately");
    }
}
