//! When the next attempt of a delivery is due.
//!
//! The first attempt is immediate; after each failure the Webhook's retry schedule gives
//! the delay before the next one (Svix's by default: 5s, 5m, 30m, 2h, 5h, 10h, 10h, so eight
//! attempts over about 28 hours). Each delay gets up to 20% random jitter, added, never
//! subtracted, so that deliveries that failed together (an endpoint outage) do not all
//! come back in the same second, and no retry comes earlier than the schedule says.
//!
//! A receiver that answers 429 or 503 with `Retry-After` is asked to wait at least that
//! long (capped at [`MAX_RETRY_AFTER`], so a receiver cannot park a delivery forever); the
//! attempt still counts against the schedule.

use std::time::Duration;

use jiff::Timestamp;

use crate::api::validation::{self, InvalidField};
use crate::api::webhook::RetryPolicy;

/// Share of a delay added at most as jitter.
pub const JITTER: f64 = 0.2;

/// The longest `Retry-After` honoured.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);

/// A Webhook's parsed retry schedule: the delays before attempts 2, 3, ...
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetrySchedule {
    delays: Vec<Duration>,
}

impl RetrySchedule {
    pub fn new(delays: Vec<Duration>) -> Self {
        RetrySchedule { delays }
    }

    /// Parses `spec.retry.schedule`; an invalid entry names its field.
    pub fn from_policy(policy: &RetryPolicy) -> Result<Self, InvalidField> {
        let delays = policy
            .schedule
            .iter()
            .enumerate()
            .map(|(i, delay)| validation::duration(&format!("spec.retry.schedule[{i}]"), delay))
            .collect::<Result<_, _>>()?;
        Ok(RetrySchedule { delays })
    }

    /// All attempts a delivery gets: the first, plus one per delay.
    pub fn max_attempts(&self) -> usize {
        self.delays.len() + 1
    }

    /// The delay before the next attempt once `attempts_made` attempts have failed, or
    /// `None` when the schedule is exhausted.
    pub fn delay_after(&self, attempts_made: usize) -> Option<Duration> {
        attempts_made
            .checked_sub(1)
            .and_then(|i| self.delays.get(i))
            .copied()
    }
}

/// `delay` plus `unit * 20%` of it, where `unit` is a random number in `[0, 1)`.
pub fn with_jitter(delay: Duration, unit: f64) -> Duration {
    let unit = unit.clamp(0.0, 1.0);
    delay + delay.mul_f64(JITTER * unit)
}

/// A random number in `[0, 1)`, from the operating system's generator.
pub fn random_unit() -> f64 {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 8];
    if ring::rand::SystemRandom::new().fill(&mut bytes).is_err() {
        return 0.5;
    }
    (u64::from_le_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64
}

/// Parses a `Retry-After` value, delta-seconds (`120`) or an HTTP date
/// (`Wed, 21 Oct 2026 07:28:00 GMT`), into a wait from `now`. Unparseable values are
/// ignored; a date in the past means no wait.
pub fn parse_retry_after(value: &str, now: Timestamp) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds).min(MAX_RETRY_AFTER));
    }
    let at = jiff::fmt::rfc2822::DateTimeParser::new()
        .parse_timestamp(value)
        .ok()?;
    let wait = at.duration_since(now);
    Some(
        Duration::try_from(wait)
            .unwrap_or(Duration::ZERO)
            .min(MAX_RETRY_AFTER),
    )
}

/// Whether a response status asks the sender to honour `Retry-After`.
pub fn honours_retry_after(status: u16) -> bool {
    status == 429 || status == 503
}

/// The wait before the next attempt: the jittered schedule delay, or the receiver's
/// `Retry-After` when that is longer.
pub fn next_wait(scheduled: Duration, jitter_unit: f64, retry_after: Option<Duration>) -> Duration {
    let jittered = with_jitter(scheduled, jitter_unit);
    retry_after.map_or(jittered, |asked| jittered.max(asked.min(MAX_RETRY_AFTER)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::webhook::default_retry_schedule;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn the_default_schedule_is_svix_like() {
        let schedule = RetrySchedule::from_policy(&RetryPolicy::default()).unwrap();
        assert_eq!(schedule.max_attempts(), 8);
        let expected = [5, 300, 1800, 7200, 18000, 36000, 36000];
        for (i, delay) in expected.iter().enumerate() {
            assert_eq!(
                schedule.delay_after(i + 1),
                Some(secs(*delay)),
                "after attempt {}",
                i + 1
            );
        }
        assert_eq!(schedule.delay_after(8), None, "eight attempts, then Failed");
        assert_eq!(
            schedule.delay_after(0),
            None,
            "nothing is retried before a first attempt"
        );
        let total: u64 = expected.iter().sum();
        assert!(
            (27 * 3600..29 * 3600).contains(&total),
            "about 28 hours: {total}s"
        );
        assert_eq!(default_retry_schedule().len(), 7);
    }

    #[test]
    fn custom_and_empty_schedules() {
        let policy = RetryPolicy {
            schedule: vec!["1s".into(), "250ms".into(), "1h30m".into()],
        };
        let schedule = RetrySchedule::from_policy(&policy).unwrap();
        assert_eq!(schedule.max_attempts(), 4);
        assert_eq!(schedule.delay_after(2), Some(Duration::from_millis(250)));
        assert_eq!(schedule.delay_after(3), Some(secs(5400)));
        let none = RetrySchedule::from_policy(&RetryPolicy { schedule: vec![] }).unwrap();
        assert_eq!(none.max_attempts(), 1);
        assert_eq!(none.delay_after(1), None);
    }

    #[test]
    fn an_invalid_delay_names_its_field() {
        let policy = RetryPolicy {
            schedule: vec!["5s".into(), "soon".into()],
        };
        let err = RetrySchedule::from_policy(&policy).unwrap_err();
        assert_eq!(err.field, "spec.retry.schedule[1]");
    }

    #[test]
    fn jitter_adds_up_to_twenty_percent_never_less() {
        assert_eq!(with_jitter(secs(100), 0.0), secs(100));
        assert_eq!(with_jitter(secs(100), 0.5), secs(110));
        assert!(with_jitter(secs(100), 0.999_999) <= secs(120));
        assert_eq!(
            with_jitter(secs(100), 7.0),
            secs(120),
            "out-of-range randomness is clamped"
        );
        for _ in 0..1000 {
            let unit = random_unit();
            assert!((0.0..1.0).contains(&unit), "{unit}");
        }
    }

    #[test]
    fn retry_after_in_seconds_and_as_http_date() {
        let now: Timestamp = "2026-10-21T07:27:00Z".parse().unwrap();
        assert_eq!(parse_retry_after("120", now), Some(secs(120)));
        assert_eq!(parse_retry_after(" 0 ", now), Some(secs(0)));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2026 07:28:00 GMT", now),
            Some(secs(60))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2026 07:00:00 GMT", now),
            Some(secs(0))
        );
        assert_eq!(parse_retry_after("99999999", now), Some(MAX_RETRY_AFTER));
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-5", now), None);
    }

    #[test]
    fn retry_after_only_lengthens_the_wait() {
        assert_eq!(next_wait(secs(5), 0.0, Some(secs(60))), secs(60));
        assert_eq!(next_wait(secs(300), 0.0, Some(secs(60))), secs(300));
        assert_eq!(next_wait(secs(5), 0.0, None), secs(5));
        assert_eq!(
            next_wait(secs(5), 0.0, Some(secs(10 * 24 * 3600))),
            MAX_RETRY_AFTER
        );
        assert!(honours_retry_after(429) && honours_retry_after(503));
        assert!(!honours_retry_after(500) && !honours_retry_after(502));
    }
}
