//! The one conditions helper every controller uses, so that every kind reports status the
//! way `kubectl wait --for=condition=Ready`, Flux's kstatus and Argo CD expect:
//!
//! - each condition carries the `observedGeneration` it was computed from;
//! - `lastTransitionTime` only moves when the condition's status value changes;
//! - reasons are CamelCase constants (bounded, fit for metrics and Event reasons);
//! - `Ready`, `Reconciling` and `Stalled` stay consistent: `Stalled=True` or
//!   `Reconciling=True` imply `Ready=False`, and `Ready=True` clears both. kstatus reads
//!   `Reconciling` and `Stalled` as "abnormal-true" conditions, so they are removed rather
//!   than set to `False` when they no longer apply.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

/// The object is serving what its spec asks for.
pub const READY: &str = "Ready";
/// The controller is working towards the spec (building, rolling out, verifying...).
pub const RECONCILING: &str = "Reconciling";
/// The controller cannot make progress without a change to the spec or the cluster.
pub const STALLED: &str = "Stalled";
/// Domain: the DNS TXT ownership record was found.
pub const VERIFIED: &str = "Verified";
/// Domain: the TLS certificate is issued and valid.
pub const CERTIFICATE_READY: &str = "CertificateReady";
/// Domain: the gateway has programmed the Domain's HTTPS listener.
pub const LISTENER_READY: &str = "ListenerReady";
/// Webhook: recent deliveries to the endpoint are failing.
pub const DEGRADED: &str = "Degraded";

/// A condition's status value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    True,
    False,
    Unknown,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::True => "True",
            Status::False => "False",
            Status::Unknown => "Unknown",
        }
    }
}

impl From<bool> for Status {
    fn from(value: bool) -> Self {
        if value { Status::True } else { Status::False }
    }
}

/// Whether `reason` is a CamelCase identifier Kubernetes accepts as a condition reason
/// (`^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$`, starting with a capital letter).
pub fn is_camel_case_reason(reason: &str) -> bool {
    let mut chars = reason.chars();
    let Some(first) = chars.next() else {
        return false;
    };
    first.is_ascii_uppercase()
        && reason.chars().all(|c| c.is_ascii_alphanumeric())
        && reason.len() <= 1024
}

/// The conditions of one object at one generation, with the clock to stamp changes.
///
/// ```
/// # use clouddeck::api::conditions::{Conditions, READY};
/// let mut list = Vec::new();
/// Conditions::new(&mut list, Some(3)).ready("Serving", "serving deployment web-7f3c");
/// assert_eq!(list[0].type_, READY);
/// assert_eq!(list[0].observed_generation, Some(3));
/// ```
pub struct Conditions<'a> {
    list: &'a mut Vec<Condition>,
    generation: Option<i64>,
    now: Time,
}

impl<'a> Conditions<'a> {
    /// Edits `list` for an object whose `metadata.generation` is `generation`, at the
    /// current time.
    pub fn new(list: &'a mut Vec<Condition>, generation: Option<i64>) -> Self {
        Self::at(list, generation, Time(Timestamp::now()))
    }

    /// Like [`Conditions::new`] with a given clock, for tests.
    pub fn at(list: &'a mut Vec<Condition>, generation: Option<i64>, now: Time) -> Self {
        Conditions {
            list,
            generation,
            now,
        }
    }

    /// Sets one condition. `lastTransitionTime` is kept unless the status value changes;
    /// reason, message and observedGeneration are always updated.
    ///
    /// Panics in debug builds when `reason` is not CamelCase: reasons are constants.
    pub fn set(&mut self, type_: &str, status: Status, reason: &'static str, message: &str) {
        debug_assert!(
            is_camel_case_reason(reason),
            "condition reason {reason:?} must be CamelCase"
        );
        let message = crate::truncate(message, 32 * 1024);
        match self.list.iter_mut().find(|c| c.type_ == type_) {
            Some(existing) => {
                if existing.status != status.as_str() {
                    existing.status = status.as_str().to_string();
                    existing.last_transition_time = self.now.clone();
                }
                existing.reason = reason.to_string();
                existing.message = message;
                existing.observed_generation = self.generation;
            }
            None => self.list.push(Condition {
                type_: type_.to_string(),
                status: status.as_str().to_string(),
                reason: reason.to_string(),
                message,
                observed_generation: self.generation,
                last_transition_time: self.now.clone(),
            }),
        }
    }

    /// Removes a condition, if present.
    pub fn remove(&mut self, type_: &str) {
        self.list.retain(|c| c.type_ != type_);
    }

    /// The object is done: `Ready=True`, and neither reconciling nor stalled.
    pub fn ready(&mut self, reason: &'static str, message: &str) {
        self.set(READY, Status::True, reason, message);
        self.remove(RECONCILING);
        self.remove(STALLED);
    }

    /// Work is in progress: `Reconciling=True`, `Ready=False` with the same reason, and
    /// no longer stalled.
    pub fn reconciling(&mut self, reason: &'static str, message: &str) {
        self.set(RECONCILING, Status::True, reason, message);
        self.set(READY, Status::False, reason, message);
        self.remove(STALLED);
    }

    /// The controller cannot progress until something changes: an invalid field, a
    /// missing reference, or a terminal failure (a failed build, an exhausted delivery, a
    /// Project with nothing to serve). `Stalled=True`, `Ready=False` with the same reason,
    /// and not reconciling, so kstatus (Flux, cli-utils) reads it as Failed; with `Ready=False`
    /// alone it would read as Current, i.e. healthy. `message` should name the field,
    /// e.g. `spec.schedule: ...`.
    pub fn stalled(&mut self, reason: &'static str, message: &str) {
        self.set(STALLED, Status::True, reason, message);
        self.set(READY, Status::False, reason, message);
        self.remove(RECONCILING);
    }

    /// The object is done without serving, as meant (a canceled or superseded
    /// Deployment, a disabled Webhook): `Ready=False`, neither reconciling nor stalled.
    /// kstatus reads it as Current; the Argo CD health check as Suspended.
    pub fn ended(&mut self, reason: &'static str, message: &str) {
        self.set(READY, Status::False, reason, message);
        self.remove(RECONCILING);
        self.remove(STALLED);
    }
}

/// The status of every CloudDeck kind: `observedGeneration` and `conditions`, so that one
/// helper serves every controller.
pub trait ObjectStatus {
    fn conditions(&self) -> &[Condition];
    fn conditions_mut(&mut self) -> &mut Vec<Condition>;
    fn observed_generation_mut(&mut self) -> &mut Option<i64>;
}

macro_rules! object_status {
    ($($status:ty),* $(,)?) => {$(
        impl ObjectStatus for $status {
            fn conditions(&self) -> &[Condition] {
                &self.conditions
            }
            fn conditions_mut(&mut self) -> &mut Vec<Condition> {
                &mut self.conditions
            }
            fn observed_generation_mut(&mut self) -> &mut Option<i64> {
                &mut self.observed_generation
            }
        }
    )*};
}

object_status!(
    super::ProjectStatus,
    super::DeploymentStatus,
    super::DomainStatus,
    super::EdgeHandlerStatus,
    super::CronJobStatus,
    super::WebhookStatus,
    super::WebhookDeliveryStatus,
    super::SplitTestStatus,
);

impl<'a> Conditions<'a> {
    /// Edits the conditions of `status` for `generation`, and records that generation as
    /// the status's `observedGeneration`.
    pub fn of(status: &'a mut impl ObjectStatus, generation: Option<i64>) -> Self {
        *status.observed_generation_mut() = generation;
        Self::new(status.conditions_mut(), generation)
    }
}

/// The condition of type `type_`, if present.
pub fn find<'c>(conditions: &'c [Condition], type_: &str) -> Option<&'c Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// Whether the conditions already say `Stalled` with this message (a controller tells a
/// user about an invalid spec once, not on every reconcile).
pub fn is_stalled_with(conditions: &[Condition], message: &str) -> bool {
    find(conditions, STALLED).is_some_and(|c| c.status == "True" && c.message == message)
}

/// Whether the condition of type `type_` is present with status `True`.
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    find(conditions, type_).is_some_and(|c| c.status == "True")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn time(seconds: i64) -> Time {
        Time(Timestamp::from_second(seconds).unwrap())
    }

    #[test]
    fn new_condition_gets_generation_and_transition_time() {
        let mut list = Vec::new();
        Conditions::at(&mut list, Some(2), time(100)).reconciling("Building", "build running");
        let ready = find(&list, READY).unwrap();
        assert_eq!(ready.status, "False");
        assert_eq!(ready.reason, "Building");
        assert_eq!(ready.observed_generation, Some(2));
        assert_eq!(ready.last_transition_time, time(100));
        assert!(is_true(&list, RECONCILING));
    }

    #[test]
    fn transition_time_kept_while_status_unchanged() {
        let mut list = Vec::new();
        Conditions::at(&mut list, Some(1), time(100)).reconciling("Building", "step 1");
        Conditions::at(&mut list, Some(2), time(200)).reconciling("Deploying", "step 2");
        let ready = find(&list, READY).unwrap();
        assert_eq!(ready.last_transition_time, time(100));
        assert_eq!(ready.reason, "Deploying");
        assert_eq!(ready.message, "step 2");
        assert_eq!(ready.observed_generation, Some(2));
    }

    #[test]
    fn transition_time_moves_when_status_changes() {
        let mut list = Vec::new();
        Conditions::at(&mut list, Some(1), time(100)).reconciling("Building", "");
        Conditions::at(&mut list, Some(1), time(300)).ready("Serving", "ok");
        let ready = find(&list, READY).unwrap();
        assert_eq!(ready.status, "True");
        assert_eq!(ready.last_transition_time, time(300));
        assert!(find(&list, RECONCILING).is_none());
        assert!(find(&list, STALLED).is_none());
    }

    #[test]
    fn stalled_implies_not_ready_and_not_reconciling() {
        let mut list = Vec::new();
        Conditions::at(&mut list, Some(1), time(100)).ready("Serving", "");
        Conditions::at(&mut list, Some(2), time(200))
            .stalled("InvalidSchedule", "spec.schedule: expected 5 fields");
        assert!(is_true(&list, STALLED));
        assert!(!is_true(&list, READY));
        assert_eq!(find(&list, READY).unwrap().reason, "InvalidSchedule");
        assert!(find(&list, RECONCILING).is_none());
    }

    #[test]
    fn reconciling_clears_stalled() {
        let mut list = Vec::new();
        Conditions::at(&mut list, Some(1), time(100)).stalled("InvalidSchedule", "");
        Conditions::at(&mut list, Some(2), time(200)).reconciling("Progressing", "");
        assert!(find(&list, STALLED).is_none());
        assert!(is_true(&list, RECONCILING));
    }

    #[test]
    fn other_conditions_are_left_alone() {
        let mut list = Vec::new();
        let mut conditions = Conditions::at(&mut list, Some(1), time(100));
        conditions.set(VERIFIED, Status::True, "RecordFound", "TXT record found");
        conditions.ready("Serving", "");
        assert!(is_true(&list, VERIFIED));
        assert!(is_true(&list, READY));
    }

    #[test]
    fn status_helper_records_observed_generation() {
        let mut status = super::super::CronJobStatus::default();
        Conditions::of(&mut status, Some(4)).stalled("InvalidSchedule", "spec.schedule: bad");
        assert_eq!(status.observed_generation, Some(4));
        assert!(is_true(status.conditions(), STALLED));
    }

    #[test]
    fn reasons_must_be_camel_case() {
        assert!(is_camel_case_reason("BuildFailed"));
        assert!(!is_camel_case_reason("build_failed"));
        assert!(!is_camel_case_reason("Build Failed"));
        assert!(!is_camel_case_reason(""));
    }

    #[test]
    #[should_panic(expected = "must be CamelCase")]
    #[cfg(debug_assertions)]
    fn non_camel_case_reason_panics_in_debug() {
        let mut list = Vec::new();
        Conditions::at(&mut list, None, time(1)).ready("not camel", "");
    }

    #[test]
    fn long_messages_are_truncated_on_a_char_boundary() {
        let long = "é".repeat(20_000);
        let mut list = Vec::new();
        Conditions::at(&mut list, None, time(1)).stalled("BuildFailed", &long);
        assert!(list[0].message.len() <= 32 * 1024);
    }
}
