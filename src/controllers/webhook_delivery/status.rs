//! The delivery log as a state machine, pure: what is due, how an attempt is claimed
//! before it is sent, and how its outcome moves the phase.
//!
//! Durability: an attempt is written to the status *before* the request goes out (an
//! "in-flight" attempt: no status code, no latency, no error) and completed *after*. A
//! process that dies in between leaves the in-flight attempt behind; the next reconcile
//! marks it "no outcome recorded" and treats it as failed, so the log never loses an
//! attempt, and the receiver may see that message twice (at-least-once, same
//! `webhook-id`). Every write is guarded by the object's resourceVersion, so two writers
//! (a stale cache, a replica taking over) can never both claim the same attempt.

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::api::conditions::Conditions;
use crate::api::webhook_delivery::{
    DeliveryAttempt, DeliveryPhase, MAX_RECORDED_ATTEMPTS, WebhookDeliveryStatus,
};
use crate::delivery::schedule::{RetrySchedule, next_wait};
use crate::delivery::sender::AttemptOutcome;

/// Condition reasons of a WebhookDelivery.
pub const DELIVERED: &str = "Delivered";
pub const RETRYING: &str = "Retrying";
pub const PENDING: &str = "Pending";
pub const SENDING: &str = "Sending";
pub const RETRIES_EXHAUSTED: &str = "RetriesExhausted";
pub const ENDPOINT_GONE: &str = crate::delivery::publisher::ENDPOINT_GONE;
pub const WEBHOOK_NOT_FOUND: &str = "WebhookNotFound";
pub const WEBHOOK_DISABLED: &str = "WebhookDisabled";
pub const WEBHOOK_STOPPED: &str = "WebhookStopped";
pub const WEBHOOK_INVALID: &str = "WebhookInvalid";
pub const SIGNING_SECRET_UNAVAILABLE: &str = "SigningSecretUnavailable";
pub const ENDPOINT_SECRET_UNAVAILABLE: &str = "EndpointSecretUnavailable";
/// The Webhook's URL is refused by the egress policy: waiting for a fix.
pub const DESTINATION_REFUSED: &str = "DestinationRefused";
/// Created by someone other than this operator: never sent.
pub const ORIGIN_UNVERIFIED: &str = "OriginUnverified";

/// Recorded for an attempt whose outcome was never written.
pub const ABANDONED: &str = "no outcome recorded: the operator stopped during this attempt";

/// What a reconcile should do with a delivery now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Due {
    /// Make an attempt now.
    Now,
    /// The next attempt is due later.
    At(Timestamp),
    /// Delivered or Failed: nothing to do until a redelivery is requested.
    Finished,
}

/// Whether an attempt is due. `redelivery` is a new value of the redeliver annotation.
pub fn due(status: &WebhookDeliveryStatus, redelivery: Option<&str>, now: Timestamp) -> Due {
    if redelivery.is_some() {
        return Due::Now;
    }
    match status.phase {
        Some(DeliveryPhase::Delivered | DeliveryPhase::Failed) => Due::Finished,
        None | Some(DeliveryPhase::Pending | DeliveryPhase::Retrying) => {
            match &status.next_attempt_time {
                Some(Time(at)) if *at > now => Due::At(*at),
                _ => Due::Now,
            }
        }
    }
}

/// Whether the newest attempt was claimed and never completed.
pub fn in_flight(status: &WebhookDeliveryStatus) -> bool {
    status
        .attempts
        .last()
        .is_some_and(|a| a.status_code.is_none() && a.latency_ms.is_none() && a.error.is_none())
}

/// Claims an attempt: appends it in flight, counts it, and consumes a redelivery request.
/// Written before the request is sent.
pub fn claim(
    status: &mut WebhookDeliveryStatus,
    generation: Option<i64>,
    redelivery: Option<&str>,
    now: Timestamp,
) {
    status.attempts.push(DeliveryAttempt {
        time: Time(now),
        status_code: None,
        latency_ms: None,
        response_body: None,
        error: None,
    });
    if status.attempts.len() > MAX_RECORDED_ATTEMPTS {
        let excess = status.attempts.len() - MAX_RECORDED_ATTEMPTS;
        status.attempts.drain(..excess);
    }
    let count = status.attempt_count.unwrap_or(0) + 1;
    status.attempt_count = Some(count);
    if let Some(value) = redelivery {
        status.redelivery_handled = Some(value.to_string());
    }
    if matches!(
        status.phase,
        None | Some(DeliveryPhase::Delivered | DeliveryPhase::Failed)
    ) {
        status.phase = Some(DeliveryPhase::Pending);
    }
    status.next_attempt_time = None;
    status.observed_generation = generation;
    let message = format!("sending attempt {count}");
    Conditions::at(&mut status.conditions, generation, Time(now)).reconciling(SENDING, &message);
}

/// How an attempt ended, as the state machine sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct AttemptResult {
    pub status: Option<u16>,
    pub latency: Option<Duration>,
    pub response_body: Option<String>,
    pub error: Option<String>,
    pub retry_after: Option<Duration>,
}

impl From<&AttemptOutcome> for AttemptResult {
    fn from(o: &AttemptOutcome) -> Self {
        AttemptResult {
            status: o.status,
            latency: Some(o.latency),
            response_body: o.response_body.clone(),
            error: o.error.clone(),
            retry_after: o.retry_after,
        }
    }
}

impl AttemptResult {
    /// The attempt a dead process left in flight.
    pub fn abandoned() -> Self {
        AttemptResult {
            status: None,
            latency: None,
            response_body: None,
            error: Some(ABANDONED.into()),
            retry_after: None,
        }
    }

    fn succeeded(&self) -> bool {
        self.status.is_some_and(|s| (200..300).contains(&s)) && self.error.is_none()
    }

    fn what(&self) -> String {
        match (self.status, &self.error) {
            (_, Some(error)) => error.clone(),
            (Some(code), None) => format!("HTTP {code}"),
            (None, None) => "no answer".into(),
        }
    }
}

/// The phase a recorded outcome led to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Settled {
    Delivered,
    Retrying(Timestamp),
    Failed,
    /// 410 Gone: failed, and the Webhook must be stopped.
    Gone,
}

/// Completes the in-flight attempt with `result` and moves the phase: Delivered on a 2xx;
/// Failed on 410 Gone or when the schedule is exhausted; else Retrying at the next
/// scheduled time (with jitter, or later when the receiver asked with `Retry-After`).
pub fn settle(
    status: &mut WebhookDeliveryStatus,
    result: &AttemptResult,
    schedule: &RetrySchedule,
    jitter_unit: f64,
    generation: Option<i64>,
    now: Timestamp,
) -> Settled {
    if let Some(attempt) = status.attempts.last_mut() {
        attempt.status_code = result.status.map(i32::from);
        attempt.latency_ms = result
            .latency
            .map(|l| i64::try_from(l.as_millis()).unwrap_or(i64::MAX));
        attempt.response_body = result.response_body.clone();
        attempt.error = result.error.clone();
    }
    status.last_status_code = result.status.map(i32::from);
    status.observed_generation = generation;
    let count = status.attempt_count.unwrap_or(1).max(1);
    let mut conditions = Conditions::at(&mut status.conditions, generation, Time(now));

    if result.succeeded() {
        status.phase = Some(DeliveryPhase::Delivered);
        status.next_attempt_time = None;
        status.delivered_time = Some(Time(now));
        conditions.ready(
            DELIVERED,
            &format!("delivered on attempt {count}: {}", result.what()),
        );
        return Settled::Delivered;
    }
    if result.status == Some(410) {
        status.phase = Some(DeliveryPhase::Failed);
        status.next_attempt_time = None;
        conditions.stalled(
            ENDPOINT_GONE,
            "the endpoint answered 410 Gone: the Webhook is stopped until its spec changes",
        );
        return Settled::Gone;
    }
    match schedule.delay_after(count as usize) {
        Some(delay) => {
            let wait = next_wait(delay, jitter_unit, result.retry_after);
            let at = now.checked_add(wait).unwrap_or(now);
            status.phase = Some(DeliveryPhase::Retrying);
            status.next_attempt_time = Some(Time(at));
            let message = format!(
                "attempt {count} of {} failed: {}; next attempt at {}",
                schedule.max_attempts().max(count as usize),
                result.what(),
                crate::delivery::payload::rfc3339(at)
            );
            conditions.reconciling(RETRYING, &message);
            Settled::Retrying(at)
        }
        None => {
            status.phase = Some(DeliveryPhase::Failed);
            status.next_attempt_time = None;
            let message = format!(
                "attempt {count} failed: {}; no attempts left",
                result.what()
            );
            conditions.stalled(RETRIES_EXHAUSTED, &message);
            Settled::Failed
        }
    }
}

/// Ends a delivery without an attempt (its Webhook is gone, disabled or stopped).
pub fn give_up(
    status: &mut WebhookDeliveryStatus,
    reason: &'static str,
    message: &str,
    generation: Option<i64>,
    now: Timestamp,
) {
    status.phase = Some(DeliveryPhase::Failed);
    status.next_attempt_time = None;
    status.observed_generation = generation;
    Conditions::at(&mut status.conditions, generation, Time(now)).stalled(reason, message);
}

/// Puts off an attempt that cannot be made yet (no usable signing key, invalid Webhook)
/// without spending one of its attempts.
pub fn wait(
    status: &mut WebhookDeliveryStatus,
    reason: &'static str,
    message: &str,
    generation: Option<i64>,
    now: Timestamp,
) {
    if status.phase.is_none() {
        status.phase = Some(DeliveryPhase::Pending);
    }
    status.observed_generation = generation;
    Conditions::at(&mut status.conditions, generation, Time(now)).reconciling(reason, message);
}

/// A new delivery, before its first attempt.
pub fn pending(status: &mut WebhookDeliveryStatus, generation: Option<i64>, now: Timestamp) {
    status.phase = Some(DeliveryPhase::Pending);
    status.observed_generation = generation;
    Conditions::at(&mut status.conditions, generation, Time(now))
        .reconciling(PENDING, "first attempt pending");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::conditions::{READY, RECONCILING, find, is_true};

    fn t(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + seconds).unwrap()
    }

    fn schedule(secs: &[u64]) -> RetrySchedule {
        RetrySchedule::new(secs.iter().map(|s| Duration::from_secs(*s)).collect())
    }

    fn answer(code: u16) -> AttemptResult {
        AttemptResult {
            status: Some(code),
            latency: Some(Duration::from_millis(42)),
            response_body: Some("body".into()),
            error: None,
            retry_after: None,
        }
    }

    #[test]
    fn a_new_delivery_is_due_at_once_and_a_finished_one_never() {
        let mut status = WebhookDeliveryStatus::default();
        assert_eq!(due(&status, None, t(0)), Due::Now);
        status.phase = Some(DeliveryPhase::Retrying);
        status.next_attempt_time = Some(Time(t(10)));
        assert_eq!(due(&status, None, t(0)), Due::At(t(10)));
        assert_eq!(due(&status, None, t(10)), Due::Now);
        status.phase = Some(DeliveryPhase::Delivered);
        assert_eq!(due(&status, None, t(20)), Due::Finished);
        assert_eq!(
            due(&status, Some("1"), t(20)),
            Due::Now,
            "a redelivery request makes it due"
        );
    }

    #[test]
    fn failing_twice_then_succeeding_records_three_attempts() {
        let schedule = schedule(&[1, 1, 1]);
        let mut status = WebhookDeliveryStatus::default();
        for (i, code) in [500u16, 500].into_iter().enumerate() {
            claim(&mut status, Some(1), None, t(i as i64 * 10));
            assert!(in_flight(&status));
            let settled = settle(
                &mut status,
                &answer(code),
                &schedule,
                0.0,
                Some(1),
                t(i as i64 * 10),
            );
            assert_eq!(settled, Settled::Retrying(t(i as i64 * 10 + 1)));
            assert_eq!(status.phase, Some(DeliveryPhase::Retrying));
            assert!(is_true(&status.conditions, RECONCILING));
        }
        let message = &find(&status.conditions, READY).unwrap().message;
        assert!(
            message.starts_with("attempt 2 of 4 failed: HTTP 500; next attempt at "),
            "{message}"
        );
        claim(&mut status, Some(1), None, t(30));
        assert_eq!(
            settle(&mut status, &answer(204), &schedule, 0.0, Some(1), t(30)),
            Settled::Delivered
        );
        assert_eq!(status.phase, Some(DeliveryPhase::Delivered));
        assert_eq!(status.attempt_count, Some(3));
        assert_eq!(status.attempts.len(), 3);
        assert_eq!(status.last_status_code, Some(204));
        assert_eq!(status.delivered_time, Some(Time(t(30))));
        assert_eq!(status.next_attempt_time, None);
        assert!(is_true(&status.conditions, READY));
        assert!(!in_flight(&status));
        let codes: Vec<_> = status.attempts.iter().map(|a| a.status_code).collect();
        assert_eq!(codes, [Some(500), Some(500), Some(204)]);
        assert_eq!(status.attempts[0].latency_ms, Some(42));
    }

    #[test]
    fn an_exhausted_schedule_fails_the_delivery() {
        let schedule = schedule(&[5]);
        let mut status = WebhookDeliveryStatus::default();
        claim(&mut status, None, None, t(0));
        settle(&mut status, &answer(502), &schedule, 0.0, None, t(0));
        claim(&mut status, None, None, t(5));
        let timeout = AttemptResult {
            error: Some("timed out after 15s".into()),
            status: None,
            ..answer(0)
        };
        assert_eq!(
            settle(&mut status, &timeout, &schedule, 0.0, None, t(5)),
            Settled::Failed
        );
        assert_eq!(status.phase, Some(DeliveryPhase::Failed));
        let ready = find(&status.conditions, READY).unwrap();
        assert_eq!(ready.reason, RETRIES_EXHAUSTED);
        assert_eq!(
            ready.message,
            "attempt 2 failed: timed out after 15s; no attempts left"
        );
        assert!(find(&status.conditions, RECONCILING).is_none());
        assert_eq!(status.last_status_code, None);
    }

    #[test]
    fn gone_fails_at_once() {
        let mut status = WebhookDeliveryStatus::default();
        claim(&mut status, None, None, t(0));
        assert_eq!(
            settle(
                &mut status,
                &answer(410),
                &schedule(&[5, 5]),
                0.0,
                None,
                t(0)
            ),
            Settled::Gone
        );
        assert_eq!(status.phase, Some(DeliveryPhase::Failed));
        assert_eq!(
            find(&status.conditions, READY).unwrap().reason,
            ENDPOINT_GONE
        );
    }

    #[test]
    fn retry_after_and_jitter_move_the_next_attempt() {
        let mut status = WebhookDeliveryStatus::default();
        claim(&mut status, None, None, t(0));
        let busy = AttemptResult {
            retry_after: Some(Duration::from_secs(120)),
            ..answer(429)
        };
        assert_eq!(
            settle(&mut status, &busy, &schedule(&[5]), 0.0, None, t(0)),
            Settled::Retrying(t(120))
        );
        let mut status = WebhookDeliveryStatus::default();
        claim(&mut status, None, None, t(0));
        assert_eq!(
            settle(
                &mut status,
                &answer(500),
                &schedule(&[100]),
                0.5,
                None,
                t(0)
            ),
            Settled::Retrying(t(110))
        );
    }

    #[test]
    fn an_abandoned_attempt_is_recorded_and_retried() {
        let mut status = WebhookDeliveryStatus::default();
        claim(&mut status, None, None, t(0));
        // The process died here. After restart:
        assert!(in_flight(&status));
        let settled = settle(
            &mut status,
            &AttemptResult::abandoned(),
            &schedule(&[1]),
            0.0,
            None,
            t(50),
        );
        assert_eq!(settled, Settled::Retrying(t(51)));
        assert_eq!(status.attempts[0].error.as_deref(), Some(ABANDONED));
        assert_eq!(status.attempts[0].latency_ms, None);
        assert!(!in_flight(&status));
        assert_eq!(status.attempt_count, Some(1));
    }

    #[test]
    fn redelivery_reopens_a_finished_delivery_once() {
        let mut status = WebhookDeliveryStatus::default();
        claim(&mut status, None, None, t(0));
        settle(&mut status, &answer(200), &schedule(&[]), 0.0, None, t(0));
        assert_eq!(due(&status, None, t(5)), Due::Finished);
        claim(&mut status, None, Some("r1"), t(10));
        assert_eq!(status.phase, Some(DeliveryPhase::Pending));
        assert_eq!(status.redelivery_handled.as_deref(), Some("r1"));
        settle(&mut status, &answer(200), &schedule(&[]), 0.0, None, t(10));
        assert_eq!(status.attempt_count, Some(2));
        assert_eq!(status.phase, Some(DeliveryPhase::Delivered));
        // A failed redelivery with no schedule left fails again.
        claim(&mut status, None, Some("r2"), t(20));
        assert_eq!(
            settle(&mut status, &answer(500), &schedule(&[1]), 0.0, None, t(20)),
            Settled::Failed
        );
    }

    #[test]
    fn the_recorded_attempts_are_bounded_and_the_count_exact() {
        let mut status = WebhookDeliveryStatus::default();
        let many = schedule(&[1; 40]);
        for i in 0..30 {
            claim(&mut status, None, None, t(i));
            settle(&mut status, &answer(500), &many, 0.0, None, t(i));
        }
        assert_eq!(status.attempts.len(), MAX_RECORDED_ATTEMPTS);
        assert_eq!(status.attempt_count, Some(30));
        assert_eq!(status.attempts.last().unwrap().time, Time(t(29)));
    }

    #[test]
    fn giving_up_and_waiting_spend_no_attempt() {
        let mut status = WebhookDeliveryStatus::default();
        wait(
            &mut status,
            SIGNING_SECRET_UNAVAILABLE,
            "spec.secretRefs[0]: Secret s not found",
            None,
            t(0),
        );
        assert_eq!(status.phase, Some(DeliveryPhase::Pending));
        assert_eq!(status.attempt_count, None);
        give_up(
            &mut status,
            WEBHOOK_NOT_FOUND,
            "Webhook w does not exist",
            None,
            t(1),
        );
        assert_eq!(status.phase, Some(DeliveryPhase::Failed));
        assert_eq!(due(&status, None, t(2)), Due::Finished);
    }
}
