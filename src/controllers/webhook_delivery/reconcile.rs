//! One reconcile of a WebhookDelivery: if an attempt is due, claim it in the status, send
//! it, record the outcome, and come back when the next attempt is due.

use std::time::Duration;

use crate::controllers::driver::reconciler;
use crate::controllers::events::Recorder;
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use tracing::{debug, info, warn};

use super::DeliveryContext;
use super::status::{self, AttemptResult, Due, Settled};
use crate::api::conditions::Conditions;
use crate::api::webhook::Webhook;
use crate::api::webhook_delivery::{REDELIVER_ANNOTATION, WebhookDelivery, WebhookDeliveryStatus};
use crate::controllers::error::{ReconcileError, Result};
use crate::delivery::keys::{self, LookedUp};
use crate::delivery::metrics::DeliveryOutcome;
use crate::delivery::publisher::{ENDPOINT_GONE, endpoint_gone};
use crate::delivery::schedule::{RetrySchedule, random_unit};
use crate::delivery::sender::{AttemptOutcome, Outgoing};
use crate::delivery::signing::SigningKey;

/// How soon to look again at a delivery that cannot be attempted yet.
const WAIT_FOR_FIX: Duration = Duration::from_secs(30);

/// When a delivery over its share of attempts in flight is looked at again if it has not
/// been woken by then: it waits in line (see [`crate::delivery::fairness`]) and is woken as
/// soon as its turn comes, so this only catches a turn that ran out unused.
const OVER_SHARE: Duration = Duration::from_secs(5);

/// On a cached delivery (and only there: the projection sets it, over any value the object
/// had): whether its seal was valid when its payload was dropped from the cache.
const PROJECTED_SEAL: &str = "clouddeck.io/cached-seal-valid";

/// What the delivery controller caches of `delivery`. One not yet attempted is cached
/// whole, so that its first attempt reads nothing more from the API (any verdict the object
/// brings with it is dropped: its seal is checked on the payload it sends). Once attempted,
/// everything but the payload, with the seal checked first and the verdict kept in
/// [`PROJECTED_SEAL`]: the cache then holds no more than the pending backlog's payloads.
pub fn project(delivery: &mut WebhookDelivery, origin: &crate::delivery::OriginKey) {
    let attempted = delivery
        .status
        .as_ref()
        .is_some_and(|s| s.attempt_count.unwrap_or(0) > 0 || !s.attempts.is_empty());
    if attempted {
        project_log(delivery, origin);
    } else {
        delivery.annotations_mut().remove(PROJECTED_SEAL);
    }
}

/// The delivery log's copy of `delivery` (what the Webhook controller caches for health and
/// retention): everything but the payload, with the seal checked first and the verdict
/// kept in [`PROJECTED_SEAL`].
pub fn project_log(delivery: &mut WebhookDelivery, origin: &crate::delivery::OriginKey) {
    let sealed = origin.verify(delivery);
    delivery.spec.payload = String::new();
    delivery
        .annotations_mut()
        .insert(PROJECTED_SEAL.into(), sealed.to_string());
}

/// The verdict [`project_log`] left on a cached delivery; `None` for a whole object.
pub fn projected_seal(delivery: &WebhookDelivery) -> Option<bool> {
    delivery
        .annotations()
        .get(PROJECTED_SEAL)
        .map(|verdict| verdict == "true")
}

/// How long past the Webhook's timeout an unrecorded claim is still respected.
const CLAIM_GRACE: Duration = Duration::from_secs(30);

reconciler!(DeliveryContext, WebhookDelivery, reconcile_inner);

async fn reconcile_inner(delivery: &WebhookDelivery, ctx: &DeliveryContext) -> Result<Action> {
    let namespace = delivery.namespace().unwrap_or_default();
    let api = Api::<WebhookDelivery>::namespaced(ctx.ctx.client.clone(), &namespace);
    let mut current = delivery.clone();
    let mut status = current.status.clone().unwrap_or_default();
    match attempt(ctx, &api, &mut current, &mut status).await {
        Ok(next) | Err(Halt::Next(next)) => Ok(next),
        Err(Halt::Never(reason, message)) => {
            finish_without_attempt(ctx, &api, &current, status, reason, &message).await
        }
        Err(Halt::UntilFixed(reason, message)) => {
            wait_for_fix(&api, &current, status, reason, &message).await
        }
        Err(Halt::Failed(err)) => Err(err),
    }
}

/// Why a delivery's reconcile ends before, or instead of, an attempt.
enum Halt {
    /// Never to be attempted: finished with this reason and message.
    Never(&'static str, String),
    /// Not attempted until the Webhook or its Secrets are fixed: reason and message.
    UntilFixed(&'static str, String),
    /// Nothing to send now: look again as this says.
    Next(Action),
    /// The reconcile failed.
    Failed(ReconcileError),
}

impl From<ReconcileError> for Halt {
    fn from(err: ReconcileError) -> Self {
        Halt::Failed(err)
    }
}

impl From<kube::Error> for Halt {
    fn from(err: kube::Error) -> Self {
        Halt::Failed(err.into())
    }
}

/// Claims, sends and records one attempt if one is due and may be made; `current` and
/// `status` are left as the delivery stands when it halts.
async fn attempt(
    ctx: &DeliveryContext,
    api: &Api<WebhookDelivery>,
    current: &mut WebhookDelivery,
    status: &mut WebhookDeliveryStatus,
) -> Result<Action, Halt> {
    let generation = current.metadata.generation;
    let now = Timestamp::now();
    let webhook = webhook_of(ctx, current).await?;
    recover_lost_claim(api, current, status, webhook.as_ref(), now).await?;
    let redelivery = redelivery_request(current, status);
    match status::due(status, redelivery.as_deref(), now) {
        Due::Finished => return Ok(Action::await_change()),
        Due::At(at) => return Ok(Action::requeue(until(at, now))),
        Due::Now => {}
    }
    let (webhook, schedule) = sendable(ctx, current, webhook)?;
    // Within this Webhook's and namespace's share of the attempts in flight, or in line for
    // one (before any API call): one receiver that never answers must not hold every slot.
    let namespace = current.namespace().unwrap_or_default();
    let waiter = ObjectRef::new(&current.name_any()).within(&namespace);
    let Some(share) = ctx.shares.try_take(&namespace, &webhook.name_any(), waiter) else {
        return Ok(Action::requeue(OVER_SHARE.mul_f64(1.0 + random_unit())));
    };
    read_whole(ctx, api, current).await?;
    let (url, keys) = credentials(ctx, current, &webhook).await?;

    // Claim the attempt before sending: the log shows it even if this process dies now.
    let body = current.spec.payload.as_bytes().to_vec();
    // Whole seconds, as the apiserver stores times: the claim is found again by its time.
    let claimed_at = Timestamp::from_second(Timestamp::now().as_second()).unwrap_or(now);
    status::claim(status, generation, redelivery.as_deref(), claimed_at);
    let Some(claimed) = write_status(api, current, status.clone()).await? else {
        debug!(delivery = %current.name_any(), "claim lost to a newer version; retrying");
        return Ok(Action::requeue(Duration::from_secs(1)));
    };
    let outcome = ctx
        .sender
        .send(&Outgoing {
            url: &url,
            webhook_id: &current.spec.webhook_id,
            body: &body,
            keys: &keys,
            timeout: Duration::from_secs(webhook.spec.timeout_seconds.clamp(1, 60) as u64),
        })
        .await;
    // The receiver has answered (or timed out): the next delivery waiting for this Webhook
    // may go while this outcome is written.
    drop(share);
    ctx.metrics.attempt(&outcome);
    let result = AttemptResult::from(&outcome);
    let count = status.attempt_count.unwrap_or(1);
    info!(
        delivery = %current.name_any(),
        event = %current.spec.event_type,
        webhook = %webhook.name_any(),
        attempt = count,
        status = ?outcome.status,
        latency_ms = outcome.latency.as_millis() as u64,
        error = outcome.error.as_deref().unwrap_or(""),
        "delivery attempt"
    );
    let settled = record(api, claimed, claimed_at, &result, &schedule, generation).await?;
    Ok(settle(ctx, current, &webhook, settled, (&outcome, count)).await?)
}

/// The delivery's Webhook: from the cache, or (not cached, or malformed: then reading it
/// fails and the delivery waits, while the Webhook controller reports the Webhook as
/// InvalidObject) from the API.
async fn webhook_of(ctx: &DeliveryContext, delivery: &WebhookDelivery) -> Result<Option<Webhook>> {
    let namespace = delivery.namespace().unwrap_or_default();
    let name = &delivery.spec.webhook_ref.name;
    let cached = ctx
        .webhooks
        .get(&ObjectRef::new(name).within(&namespace))
        .and_then(|guard| guard.0.as_ref().ok().cloned());
    match cached {
        Some(webhook) => Ok(Some(webhook)),
        None => Ok(
            Api::<Webhook>::namespaced(ctx.ctx.client.clone(), &namespace)
                .get_opt(name)
                .await?,
        ),
    }
}

/// An attempt was claimed and its outcome never recorded. The claim is a lease: the
/// claimant (a previous leader still shutting down) may still be sending for up to the
/// Webhook's timeout. After that, it is recorded as lost and the delivery goes on.
async fn recover_lost_claim(
    api: &Api<WebhookDelivery>,
    current: &mut WebhookDelivery,
    status: &mut WebhookDeliveryStatus,
    webhook: Option<&Webhook>,
    now: Timestamp,
) -> Result<(), Halt> {
    if !status::in_flight(status) {
        return Ok(());
    }
    let timeout = webhook.map_or(60, |w| w.spec.timeout_seconds.clamp(1, 60)) as u64;
    let claimed = status.attempts.last().map_or(now, |a| a.time.0);
    let expires = claimed
        .checked_add(Duration::from_secs(timeout) + CLAIM_GRACE)
        .unwrap_or(now);
    if expires > now {
        return Err(Halt::Next(Action::requeue(until(expires, now))));
    }
    let schedule = webhook
        .and_then(|w| RetrySchedule::from_policy(&w.spec.retry).ok())
        .unwrap_or_else(default_schedule);
    let generation = current.metadata.generation;
    status::settle(
        status,
        &AttemptResult::abandoned(),
        &schedule,
        random_unit(),
        generation,
        now,
    );
    let Some(written) = write_status(api, current, status.clone()).await? else {
        return Err(Halt::Next(Action::requeue(Duration::from_secs(1))));
    };
    warn!(delivery = %current.name_any(), "an attempt was interrupted before its outcome was recorded");
    *current = written;
    Ok(())
}

/// The Webhook to send to and its retry schedule, if the delivery may be sent at all: only
/// what this operator wrote is sent (a delivery someone else created carries no valid
/// seal, see delivery::origin, whatever it claims), and the Webhook may have been deleted,
/// disabled or stopped since the event.
fn sendable(
    ctx: &DeliveryContext,
    current: &WebhookDelivery,
    webhook: Option<Webhook>,
) -> Result<(Webhook, RetrySchedule), Halt> {
    let sealed = projected_seal(current).unwrap_or_else(|| ctx.ctx.origin.verify(current));
    if !sealed {
        return Err(unsealed());
    }
    let name = &current.spec.webhook_ref.name;
    let Some(webhook) = webhook else {
        let message = format!("Webhook {name:?} does not exist");
        return Err(Halt::Never(status::WEBHOOK_NOT_FOUND, message));
    };
    if webhook.spec.disabled {
        let message =
            format!("Webhook {name:?} is disabled: events raised meanwhile are not delivered");
        return Err(Halt::Never(status::WEBHOOK_DISABLED, message));
    }
    if endpoint_gone(&webhook) {
        let message = format!("Webhook {name:?} is stopped: its endpoint answered 410 Gone");
        return Err(Halt::Never(status::WEBHOOK_STOPPED, message));
    }
    match RetrySchedule::from_policy(&webhook.spec.retry) {
        Ok(schedule) => Ok((webhook, schedule)),
        Err(invalid) => {
            let message = format!("Webhook {name:?} is invalid: {invalid}");
            Err(Halt::UntilFixed(status::WEBHOOK_INVALID, message))
        }
    }
}

fn unsealed() -> Halt {
    let message = "not written by CloudDeck (no valid clouddeck.io/origin seal): never sent";
    Halt::Never(status::ORIGIN_UNVERIFIED, message.into())
}

/// The cache holds no payload: reads the delivery whole, once per attempt, and checks its
/// seal on what will be sent.
async fn read_whole(
    ctx: &DeliveryContext,
    api: &Api<WebhookDelivery>,
    current: &mut WebhookDelivery,
) -> Result<(), Halt> {
    if projected_seal(current).is_none() {
        return Ok(());
    }
    let Some(full) = api.get_opt(&current.name_any()).await? else {
        return Err(Halt::Next(Action::await_change()));
    };
    if full.metadata.resource_version != current.metadata.resource_version {
        // Changed since the cache saw it; the watch brings the new version.
        return Err(Halt::Next(Action::requeue(Duration::from_millis(200))));
    }
    *current = full;
    if !ctx.ctx.origin.verify(current) {
        return Err(unsealed());
    }
    Ok(())
}

/// Where to send and what to sign with: read from the Webhook's Secrets at most once per
/// [`keys::FRESH_FOR`] and Webhook (a rotated URL or key is used within it; read within the share,
/// so a backlog waiting for a share costs no read). A destination refused by this
/// operator's egress policy is a configuration problem of the Webhook, whose Stalled
/// condition names the field: no attempt is spent; the delivery says why it waits (written
/// once), and goes out once the URL or the allowlist changes. Only credentials without a
/// problem are kept, so a problem is found again by the next attempt.
async fn credentials(
    ctx: &DeliveryContext,
    current: &WebhookDelivery,
    webhook: &Webhook,
) -> Result<(String, Vec<SigningKey>), Halt> {
    let name = webhook.name_any();
    let refused = |url: &str| {
        let refused = ctx.sender.check_destination(url).err()?;
        debug!(delivery = %current.name_any(), %refused, "destination refused; waiting for a fix");
        let message = format!(
            "not sent: the destination of Webhook {name:?} is refused by the operator's egress policy (see the Webhook's status)"
        );
        Some(Halt::UntilFixed(status::DESTINATION_REFUSED, message))
    };
    let usable = |endpoint: &keys::Endpoint| refused(&endpoint.url).map_or(Ok(()), Err);
    match keys::look_up(&ctx.ctx.client, &ctx.ctx.credentials, webhook, usable).await? {
        LookedUp::Usable { credentials, .. } => Ok((credentials.endpoint.url, credentials.keys)),
        LookedUp::Refused { why, .. } => Err(why),
        LookedUp::NoEndpoint(problem) => {
            let message = format!("not sent: Webhook {name:?} {problem}");
            Err(Halt::UntilFixed(
                status::ENDPOINT_SECRET_UNAVAILABLE,
                message,
            ))
        }
        LookedUp::NoKeys { problem, .. } => {
            let message = format!("cannot sign: Webhook {name:?} {problem}");
            Err(Halt::UntilFixed(
                status::SIGNING_SECRET_UNAVAILABLE,
                message,
            ))
        }
    }
}

/// What follows an attempt's recorded outcome: the next attempt's time, or the end of the
/// delivery with its metric, Event and (on 410 Gone) the Webhook stopped.
async fn settle(
    ctx: &DeliveryContext,
    current: &WebhookDelivery,
    webhook: &Webhook,
    settled: Settled,
    (outcome, count): (&AttemptOutcome, i32),
) -> Result<Action> {
    match settled {
        Settled::Delivered => {
            ctx.metrics.finished(DeliveryOutcome::delivered);
            Ok(Action::await_change())
        }
        Settled::Retrying(at) => Ok(Action::requeue(until(at, Timestamp::now()))),
        Settled::Failed => {
            ctx.metrics.finished(DeliveryOutcome::failed);
            let note = format!(
                "gave up after {count} attempts: {}",
                outcome
                    .error
                    .clone()
                    .unwrap_or_else(|| format!("HTTP {}", outcome.status.unwrap_or(0)))
            );
            publish_event(ctx, current, EventType::Warning, "DeliveryFailed", &note).await;
            Ok(Action::await_change())
        }
        Settled::Gone => {
            ctx.metrics.finished(DeliveryOutcome::gone);
            let webhooks = Api::<Webhook>::namespaced(
                ctx.ctx.client.clone(),
                &current.namespace().unwrap_or_default(),
            );
            stop_webhook(ctx, &webhooks, webhook).await?;
            publish_event(
                ctx,
                current,
                EventType::Warning,
                ENDPOINT_GONE,
                "the endpoint answered 410 Gone; its Webhook is stopped",
            )
            .await;
            Ok(Action::await_change())
        }
    }
}

/// The value of the redeliver annotation when it asks for something not yet done.
fn redelivery_request(
    delivery: &WebhookDelivery,
    status: &WebhookDeliveryStatus,
) -> Option<String> {
    let value = delivery.annotations().get(REDELIVER_ANNOTATION)?;
    (status.redelivery_handled.as_ref() != Some(value)).then(|| value.clone())
}

fn until(at: Timestamp, now: Timestamp) -> Duration {
    Duration::try_from(at.duration_since(now))
        .unwrap_or(Duration::ZERO)
        .max(Duration::from_millis(100))
}

fn default_schedule() -> RetrySchedule {
    RetrySchedule::from_policy(&Default::default()).expect("the default schedule parses")
}

/// Replaces the status, guarded by the resourceVersion `current` was read at. `None` when
/// someone else wrote first: the caller must look again rather than overwrite.
async fn write_status(
    api: &Api<WebhookDelivery>,
    current: &WebhookDelivery,
    status: WebhookDeliveryStatus,
) -> Result<Option<WebhookDelivery>> {
    let mut next = current.clone();
    next.status = Some(status);
    match api
        .replace_status(&current.name_any(), &PostParams::default(), &next)
        .await
    {
        Ok(written) => Ok(Some(written)),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(None),
        Err(err) => Err(err.into()),
    }
}

/// Records the outcome on the claimed attempt. The object may have changed since the claim
/// (an annotation, a label): then re-read it and record on the fresh copy, as long as its
/// newest attempt is still the one claimed.
async fn record(
    api: &Api<WebhookDelivery>,
    claimed: WebhookDelivery,
    claimed_at: Timestamp,
    result: &AttemptResult,
    schedule: &RetrySchedule,
    generation: Option<i64>,
) -> Result<Settled> {
    let mut current = claimed;
    for _ in 0..5 {
        let mut status = current.status.clone().unwrap_or_default();
        let ours = status::in_flight(&status)
            && status
                .attempts
                .last()
                .is_some_and(|a| a.time == Time(claimed_at));
        if !ours {
            warn!(delivery = %current.name_any(), "the claimed attempt was recorded by someone else");
            return Ok(Settled::Failed);
        }
        let settled = status::settle(
            &mut status,
            result,
            schedule,
            random_unit(),
            generation,
            Timestamp::now(),
        );
        if write_status(api, &current, status).await?.is_some() {
            return Ok(settled);
        }
        current = api.get(&current.name_any()).await?;
    }
    Err(ReconcileError::from(kube::Error::Api(Box::new(
        kube::core::Status::failure(
            "status kept changing while recording an attempt",
            "Conflict",
        )
        .with_code(409),
    ))))
}

async fn finish_without_attempt(
    ctx: &DeliveryContext,
    api: &Api<WebhookDelivery>,
    current: &WebhookDelivery,
    mut status: WebhookDeliveryStatus,
    reason: &'static str,
    message: &str,
) -> Result<Action> {
    status::give_up(
        &mut status,
        reason,
        message,
        current.metadata.generation,
        Timestamp::now(),
    );
    if write_status(api, current, status).await?.is_none() {
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    publish_event(ctx, current, EventType::Warning, reason, message).await;
    Ok(Action::await_change())
}

async fn wait_for_fix(
    api: &Api<WebhookDelivery>,
    current: &WebhookDelivery,
    mut status: WebhookDeliveryStatus,
    reason: &'static str,
    message: &str,
) -> Result<Action> {
    let before = status.clone();
    status::wait(
        &mut status,
        reason,
        message,
        current.metadata.generation,
        Timestamp::now(),
    );
    if status != before {
        write_status(api, current, status).await?;
    }
    Ok(Action::requeue(WAIT_FOR_FIX))
}

/// Stops the Webhook after 410 Gone: `Stalled=True, reason EndpointGone` at its current
/// generation, which the publisher and this controller honour until the spec changes.
async fn stop_webhook(ctx: &DeliveryContext, api: &Api<Webhook>, webhook: &Webhook) -> Result<()> {
    let name = webhook.name_any();
    for _ in 0..5 {
        let Some(mut current) = api.get_opt(&name).await? else {
            return Ok(());
        };
        let generation = current.metadata.generation;
        let mut status = current.status.clone().unwrap_or_default();
        Conditions::new(&mut status.conditions, generation).stalled(
            ENDPOINT_GONE,
            "spec.url: the endpoint answered 410 Gone, so deliveries stopped; change the spec (e.g. the url) to resume",
        );
        current.status = Some(status);
        // Replaced under the resourceVersion read, and read again on a conflict: the
        // Webhook controller rewrites these conditions, and neither may drop the other's.
        match api
            .replace_status(&name, &PostParams::default(), &current)
            .await
        {
            Ok(_) => {
                publish_event(
                    ctx,
                    &current,
                    EventType::Warning,
                    ENDPOINT_GONE,
                    "the endpoint answered 410 Gone; deliveries stopped until the spec changes",
                )
                .await;
                return Ok(());
            }
            Err(kube::Error::Api(s)) if s.code == 409 => continue,
            Err(err) => return Err(err.into()),
        }
    }
    Ok(())
}

/// Publishes a Kubernetes Event; failing to is logged, never fatal.
pub(crate) async fn publish_event<K>(
    ctx: &DeliveryContext,
    obj: &K,
    type_: EventType,
    reason: &str,
    note: &str,
) where
    K: Resource<DynamicType = ()>,
{
    publish_event_with(&ctx.recorder, obj, type_, reason, note).await;
}

pub(crate) async fn publish_event_with<K>(
    recorder: &Recorder,
    obj: &K,
    type_: EventType,
    reason: &str,
    note: &str,
) where
    K: Resource<DynamicType = ()>,
{
    crate::controllers::events::publish(recorder, obj, type_, reason, "Deliver", note).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cached_copy_of_an_attempted_delivery_has_no_payload_and_the_seal_s_own_verdict() {
        use crate::delivery::OriginKey;
        let key = OriginKey::from_bytes(&[7; 32]);
        let (mut unsealed, _) = delivery(None, None);
        unsealed.status = Some(WebhookDeliveryStatus {
            attempt_count: Some(1),
            ..Default::default()
        });
        let mut sealed = key.sealed(unsealed.clone());
        project(&mut sealed, &key);
        assert_eq!(sealed.spec.payload, "");
        assert_eq!(projected_seal(&sealed), Some(true));

        // A verdict the object brings with it is replaced by the projection's own.
        let mut forged = unsealed;
        forged
            .annotations_mut()
            .insert(PROJECTED_SEAL.into(), "true".into());
        project(&mut forged, &key);
        assert_eq!(projected_seal(&forged), Some(false));
    }

    #[test]
    fn a_delivery_not_yet_attempted_is_cached_whole_and_its_seal_checked_on_its_payload() {
        use crate::delivery::OriginKey;
        let key = OriginKey::from_bytes(&[7; 32]);
        let (unsealed, _) = delivery(None, None);
        let mut sealed = key.sealed(unsealed.clone());
        project(&mut sealed, &key);
        assert_eq!(sealed.spec.payload, "{}", "sent without reading it again");
        assert_eq!(projected_seal(&sealed), None);
        assert!(key.verify(&sealed));

        // A verdict the object brings with it is dropped: never trusted in place of the seal.
        let mut forged = unsealed;
        forged
            .annotations_mut()
            .insert(PROJECTED_SEAL.into(), "true".into());
        project(&mut forged, &key);
        assert_eq!(projected_seal(&forged), None);
        assert!(!key.verify(&forged));
    }

    fn delivery(
        annotation: Option<&str>,
        handled: Option<&str>,
    ) -> (WebhookDelivery, WebhookDeliveryStatus) {
        let mut d: WebhookDelivery = serde_json::from_value(serde_json::json!({
            "apiVersion": "clouddeck.io/v1alpha1", "kind": "WebhookDelivery",
            "metadata": { "name": "d" },
            "spec": { "webhookRef": { "name": "w" }, "eventType": "webhook.ping",
                      "webhookId": "msg_1", "timestamp": "2027-01-15T08:00:00Z", "payload": "{}" }
        }))
        .unwrap();
        if let Some(value) = annotation {
            d.metadata.annotations =
                Some([(REDELIVER_ANNOTATION.to_string(), value.to_string())].into());
        }
        let status = WebhookDeliveryStatus {
            redelivery_handled: handled.map(str::to_owned),
            ..Default::default()
        };
        (d, status)
    }

    #[test]
    fn a_redelivery_is_requested_by_a_new_annotation_value_only() {
        let (d, s) = delivery(None, None);
        assert_eq!(redelivery_request(&d, &s), None);
        let (d, s) = delivery(Some("1"), None);
        assert_eq!(redelivery_request(&d, &s).as_deref(), Some("1"));
        let (d, s) = delivery(Some("1"), Some("1"));
        assert_eq!(redelivery_request(&d, &s), None, "already handled");
        let (d, s) = delivery(Some("2"), Some("1"));
        assert_eq!(redelivery_request(&d, &s).as_deref(), Some("2"));
    }

    #[test]
    fn requeues_are_never_zero() {
        let now = Timestamp::from_second(1_800_000_000).unwrap();
        assert_eq!(
            until(now.checked_add(Duration::from_secs(5)).unwrap(), now),
            Duration::from_secs(5)
        );
        assert_eq!(until(now, now), Duration::from_millis(100));
        assert_eq!(
            until(Timestamp::UNIX_EPOCH, now),
            Duration::from_millis(100)
        );
    }
}
