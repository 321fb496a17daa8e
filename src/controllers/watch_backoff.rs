//! How every controller's watches retry: a short, bounded, jittered backoff.
//!
//! kube-runtime applies one backoff to a controller's *merged* trigger stream (its own
//! watch and every `owns`/`watches`), and pauses all of them while it waits. Its default
//! (client-go's: 0.8 s doubling to 30 s, jitter up to twice that, reset only after two
//! quiet minutes) compounded after an apiserver restart: each watch's `410 Gone` for its
//! old resourceVersion added another step, and controllers sat paused for minutes while
//! `/readyz` said ok (issue #13). Here a step is at most [`MAX`], and a quiet
//! [`RESET_AFTER`] starts again from [`MIN`]: an outage costs a controller a few requests a
//! second at most, and it resumes within seconds of the apiserver's return.

use std::time::{Duration, Instant};

use kube::runtime::utils::Backoff;

/// The first wait after an error.
pub const MIN: Duration = Duration::from_millis(250);
/// The longest wait: the most a recovered apiserver waits for a controller to look again.
pub const MAX: Duration = Duration::from_secs(5);
/// A stretch without errors this long forgets earlier ones.
pub const RESET_AFTER: Duration = Duration::from_secs(30);

/// [`MIN`] doubling per consecutive error up to [`MAX`], each wait jittered to between half
/// and all of its step, so that many watches retrying together spread out.
#[derive(Debug, Default)]
pub struct WatchBackoff {
    errors: u32,
    last: Option<Instant>,
}

/// The wait after the `errors`-th consecutive error (1-based), for `unit` in `[0, 1)`.
pub fn step(errors: u32, unit: f64) -> Duration {
    let doubled = MIN.saturating_mul(1 << errors.saturating_sub(1).min(16));
    let step = doubled.min(MAX);
    step / 2 + (step / 2).mul_f64(unit.clamp(0.0, 1.0))
}

impl Iterator for WatchBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let now = Instant::now();
        if self.last.is_some_and(|last| now - last > RESET_AFTER) {
            self.errors = 0;
        }
        self.last = Some(now);
        self.errors = self.errors.saturating_add(1);
        Some(step(self.errors, crate::delivery::schedule::random_unit()))
    }
}

impl Backoff for WatchBackoff {
    fn reset(&mut self) {
        self.errors = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_double_from_min_to_max_and_stay_there() {
        let full: Vec<_> = (1..=8).map(|n| step(n, 1.0)).collect();
        assert_eq!(full[0], MIN);
        assert_eq!(full[1], MIN * 2);
        assert_eq!(full[2], MIN * 4);
        assert!(full.windows(2).all(|w| w[0] <= w[1]), "{full:?}");
        assert_eq!(step(8, 1.0), MAX);
        assert_eq!(
            step(u32::MAX, 1.0),
            MAX,
            "no overflow however long it fails"
        );
    }

    #[test]
    fn jitter_keeps_a_wait_between_half_and_all_of_its_step() {
        assert_eq!(step(20, 0.0), MAX / 2);
        let almost = step(20, 0.999_999);
        assert!(almost < MAX && almost > MAX.mul_f64(0.99), "{almost:?}");
        assert_eq!(step(1, 0.5), MIN.mul_f64(0.75));
    }

    #[test]
    fn a_reset_starts_again_from_the_shortest_wait() {
        let mut backoff = WatchBackoff::default();
        for _ in 0..10 {
            backoff.next();
        }
        assert!(backoff.next().unwrap() >= MAX / 2);
        backoff.reset();
        assert!(backoff.next().unwrap() <= MIN);
    }
}
