//! One reconcile of a Webhook: check the spec and its Secrets, read the endpoint's health
//! from the delivery log, report `Ready`/`Stalled`/`Degraded`, send the ping, prune the log.

use std::net::IpAddr;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::core::DeserializeGuard;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};
use serde_json::json;
use tracing::{debug, info, warn};

use super::WebhookContext;
use super::status as health_status;
use crate::api::conditions::{self, Conditions, DEGRADED, Status};
use crate::api::validation::{self, InvalidField};
use crate::api::webhook::{Webhook, WebhookSpec, WebhookStatus};
use crate::api::webhook_delivery::WebhookDelivery;
use crate::controllers::driver::reconciler;
use crate::controllers::error::{ReconcileError, Result};
use crate::controllers::webhook_delivery::reconcile::projected_seal;
use crate::delivery::egress::EgressPolicy;
use crate::delivery::fanout;
use crate::delivery::keys::{Endpoint, LookedUp, origin};
use crate::delivery::publisher::endpoint_gone;
use crate::delivery::{PlatformEvent, keys};

/// Annotation that asks for a `webhook.ping` (any new value):
/// `kubectl annotate webhook <name> clouddeck.io/ping="$(date +%s)" --overwrite`.
pub const PING_ANNOTATION: &str = "clouddeck.io/ping";
/// Written by the operator: the ping request last acted upon (`created` for the ping sent
/// when the Webhook was created).
pub const PING_HANDLED_ANNOTATION: &str = "clouddeck.io/ping-handled";
pub const PING_EVENT: &str = "webhook.ping";

// Retention runs with each reconcile: whenever one of the Webhook's deliveries changes
// (the controller owns them), when the next kept delivery passes its TTL, and at least
// every `--resync-period`.

reconciler!(WebhookContext, Webhook, reconcile_inner);

/// Checks the apiserver cannot make: durations, event patterns, and an endpoint URL (from
/// the spec or a Secret) whose host is an address the egress policy refuses. Names the
/// field; never shows more of a URL than its origin.
pub fn validate(
    spec: &WebhookSpec,
    endpoint: &Endpoint,
    policy: &EgressPolicy,
) -> Result<(), (&'static str, InvalidField)> {
    validation::webhook(spec).map_err(|e| (health_status::INVALID_SPEC, e))?;
    let field = endpoint.field;
    let url = reqwest::Url::parse(&endpoint.url).map_err(|_| {
        (
            health_status::INVALID_SPEC,
            InvalidField::new(field, "not an absolute http(s) URL"),
        )
    })?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err((
            health_status::INVALID_SPEC,
            InvalidField::new(field, "must be an http(s) URL with a host"),
        ));
    }
    let host = url.host_str().unwrap_or_default();
    if let Ok(addr) = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
    {
        policy.check(host, addr).map_err(|refused| {
            (
                health_status::DESTINATION_REFUSED,
                InvalidField::new(field, refused.to_string()),
            )
        })?;
    }
    Ok(())
}

async fn reconcile_inner(webhook: &Webhook, ctx: &WebhookContext) -> Result<Action> {
    let client = &ctx.ctx.client;
    let (namespace, name) = (webhook.namespace().unwrap_or_default(), webhook.name_any());
    let webhooks = Api::<Webhook>::namespaced(client.clone(), &namespace);

    // Read: the endpoint and keys (from the Secrets at most once per `keys::FRESH_FOR` and
    // Webhook, with the delivery controller: a burst of deliveries changing costs no read
    // each), the deliveries (cache).
    let usable = |endpoint: &Endpoint| validate(&webhook.spec, endpoint, &ctx.policy);
    let looked_up = keys::look_up(client, &ctx.ctx.credentials, webhook, usable).await?;
    // Credentials from the cache are looked at again once they are due for a read: a
    // Secret deleted or broken meanwhile is then reported, as it would have been now.
    let (check, key_problem, shown, recent) = match looked_up {
        LookedUp::Usable {
            credentials,
            recent,
        } => (Ok(()), None, Some(credentials.endpoint), recent),
        LookedUp::NoEndpoint(problem) => (
            Err((health_status::ENDPOINT_SECRET_UNAVAILABLE, problem)),
            None,
            None,
            false,
        ),
        LookedUp::Refused {
            endpoint,
            why,
            recent,
        } => (Err(why), None, Some(endpoint), recent),
        LookedUp::NoKeys { endpoint, problem } => (Ok(()), Some(problem), Some(endpoint), false),
    };
    let reread = recent.then_some(keys::FRESH_FOR);
    let found = Found {
        check,
        key_problem,
        receiving: receives_events(ctx, &namespace, &name),
        shown: shown.map(|e| origin(&e.url)),
    };
    let (deliveries, health) = deliveries_of(ctx, webhook);

    let old = webhook.status.clone().unwrap_or_default();
    let (status, ready) = next_status(webhook, &old, &found, &health);
    // Ping before the status write: if that write fails, the next reconcile finds the
    // ping delivery already there (deterministic name) instead of sending another.
    if ready {
        ping_if_requested(ctx, &webhooks, webhook).await?;
    }
    // A success shortly after the one shown waits for the next change or its due time:
    // under load every delivery's outcome would otherwise be a write of its Webhook.
    let success_due = success_time_due(&old, &status, Timestamp::now());
    if status != old && success_due.is_none() {
        let mut next = webhook.clone();
        next.status = Some(status);
        // Replaced under the resourceVersion read, not applied: the health it reports was
        // computed from that version, and a newer one (a delivery's 410 Gone) must win.
        match webhooks
            .replace_status(&name, &PostParams::default(), &next)
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 409 => {
                return Ok(Action::requeue(Duration::from_secs(1)));
            }
            Err(err) => return Err(err.into()),
        }
    }
    if health.degraded() && !conditions::is_true(&old.conditions, DEGRADED) {
        alert_failing(ctx, webhook, &health).await;
    }
    let now = Timestamp::now();
    prune(ctx, webhook, &deliveries, now).await?;

    let key_retry = found
        .key_problem
        .is_some()
        .then_some(Duration::from_secs(30));
    let expiry = health_status::next_expiry(&deliveries, &ctx.retention, now);
    let next = [key_retry, expiry, reread, success_due]
        .into_iter()
        .flatten()
        .fold(ctx.ctx.config.resync_period, Duration::min);
    Ok(Action::requeue(next))
}

/// How long a Webhook's `lastSuccessTime` may lag the latest success (issue #13: with a
/// write per delivery outcome, the Webhook's status writes took a third of a busy
/// operator's API budget). Failures are written at once: they drive `Degraded`.
pub const SUCCESS_TIME_GRAIN: Duration = Duration::from_secs(10);

/// When `next` differs from the status shown (`old`) only in a `lastSuccessTime` less
/// than [`SUCCESS_TIME_GRAIN`] after the one shown: how long until it is due (the write
/// waits until then, or until anything else changes).
fn success_time_due(old: &WebhookStatus, next: &WebhookStatus, now: Timestamp) -> Option<Duration> {
    let (Some(shown), Some(latest)) = (&old.last_success_time, &next.last_success_time) else {
        return None;
    };
    let otherwise = WebhookStatus {
        last_success_time: Some(shown.clone()),
        ..next.clone()
    };
    let due = shown.0.checked_add(SUCCESS_TIME_GRAIN).ok()?;
    if otherwise != *old || latest.0 <= shown.0 || latest.0 >= due || now >= due {
        return None;
    }
    Duration::try_from(now.duration_until(due)).ok()
}

/// What a Webhook's reconcile found out about its configuration.
struct Found {
    /// The spec and endpoint checks: the reason and the field when one fails.
    check: Result<(), (&'static str, InvalidField)>,
    /// Why its signing keys cannot be read, if they cannot.
    key_problem: Option<keys::KeyProblem>,
    /// Whether the namespace's cap on Webhooks lets it receive events (why not).
    receiving: Result<(), String>,
    /// The endpoint's origin, as the status shows it.
    shown: Option<String>,
}

/// The Webhook's deliveries and its endpoint's health. From the cache (no API request,
/// however long the log): a delivery the operator cannot decode is reported by the delivery
/// controller and left out here. Only sealed deliveries (written by this operator) say
/// anything about the endpoint's health; retention covers them all.
fn deliveries_of(
    ctx: &WebhookContext,
    webhook: &Webhook,
) -> (Vec<WebhookDelivery>, health_status::EndpointHealth) {
    let (namespace, name) = (webhook.namespace(), webhook.name_any());
    let (mut deliveries, forged): (Vec<WebhookDelivery>, Vec<_>) = ctx
        .deliveries
        .state()
        .iter()
        .filter_map(|guard| guard.0.as_ref().ok())
        .filter(|d| d.namespace() == namespace && d.spec.webhook_ref.name == name)
        .cloned()
        .partition(|d| projected_seal(d) == Some(true));
    let health = health_status::endpoint_health(&deliveries);
    deliveries.extend(forged);
    (deliveries, health)
}

/// The Webhook's next status, and whether it is ready to deliver.
fn next_status(
    webhook: &Webhook,
    old: &WebhookStatus,
    found: &Found,
    health: &health_status::EndpointHealth,
) -> (WebhookStatus, bool) {
    let generation = webhook.metadata.generation;
    let mut status = WebhookStatus {
        observed_generation: generation,
        endpoint: found.shown.clone(),
        consecutive_failures: Some(health.consecutive_failures),
        last_success_time: health.last_success.map(Time),
        last_failure_time: health.last_failure.map(Time),
        ..old.clone()
    };
    let mut ready = false;
    let mut c = Conditions::new(&mut status.conditions, generation);
    if let Err((reason, invalid)) = &found.check {
        c.stalled(reason, &invalid.to_string());
    } else if let Some(problem) = &found.key_problem {
        c.stalled(health_status::SECRET_UNAVAILABLE, &problem.to_string());
    } else if let Err(message) = &found.receiving {
        c.stalled(health_status::TOO_MANY_WEBHOOKS, message);
    } else if endpoint_gone(webhook) {
        // Set by the delivery that got 410 Gone; kept until the spec changes.
    } else if webhook.spec.disabled {
        c.ended(
            health_status::DISABLED,
            "spec.disabled is true: events are not delivered",
        );
    } else {
        ready = true;
        let message = format!(
            "delivering {} to {}",
            webhook.spec.events.join(", "),
            found.shown.as_deref().unwrap_or("its endpoint")
        );
        c.ready(health_status::SUBSCRIBED, &message);
    }
    if health.degraded() {
        let message = format!(
            "the last {} delivery attempts failed; latest: {}",
            health.consecutive_failures,
            health.last_error.as_deref().unwrap_or("unknown")
        );
        c.set(
            DEGRADED,
            Status::True,
            health_status::DELIVERIES_FAILING,
            &message,
        );
    } else {
        c.set(
            DEGRADED,
            Status::False,
            health_status::DELIVERIES_SUCCEEDING,
            "no run of failed delivery attempts",
        );
    }
    (status, ready)
}

/// Retention: deletes the finished deliveries past their TTL or beyond the count kept.
async fn prune(
    ctx: &WebhookContext,
    webhook: &Webhook,
    deliveries: &[WebhookDelivery],
    now: Timestamp,
) -> Result<()> {
    let api = Api::<WebhookDelivery>::namespaced(
        ctx.ctx.client.clone(),
        &webhook.namespace().unwrap_or_default(),
    );
    let stale = health_status::to_prune(deliveries, &ctx.retention, now);
    for stale in &stale {
        match api.delete(stale, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(err) => return Err(err.into()),
        }
    }
    if !stale.is_empty() {
        debug!(webhook = %webhook.name_any(), pruned = stale.len(), "retention deleted finished deliveries");
    }
    Ok(())
}

/// Whether the fan-out cap lets this Webhook receive events (see
/// [`crate::delivery::fanout`]), from the controller's cache of Webhooks; `Err` says why not.
fn receives_events(ctx: &WebhookContext, namespace: &str, name: &str) -> Result<(), String> {
    let all = ctx.webhooks.state();
    let peers: Vec<_> = all
        .iter()
        .filter(|w| w.meta().namespace.as_deref() == Some(namespace))
        .collect();
    let max = ctx.ctx.fan_out.max_webhooks;
    let receiving = fanout::receiving(peers.iter().map(|w| w.meta()), max);
    // Not cached yet (just created): the cache's next event reconciles it again.
    if receiving.contains(&name) || peers.len() <= max {
        return Ok(());
    }
    Err(format!(
        "namespace {namespace} has {} Webhooks and the operator delivers events to the {max} oldest (--webhook-max-per-namespace); this one receives none until older ones are deleted",
        peers.len()
    ))
}

/// Whether `webhook` is stopped by the fan-out cap: it is looked at again when another
/// Webhook of its namespace goes away.
pub fn over_cap(webhook: &DeserializeGuard<Webhook>) -> bool {
    webhook.0.as_ref().is_ok_and(|w| {
        w.stalled_because(health_status::TOO_MANY_WEBHOOKS)
            .is_some()
    })
}

/// The ping GitHub-style: on creation, and whenever the ping annotation gets a new value.
async fn ping_if_requested(
    ctx: &WebhookContext,
    api: &Api<Webhook>,
    webhook: &Webhook,
) -> Result<()> {
    let annotations = webhook.annotations();
    let handled = annotations.get(PING_HANDLED_ANNOTATION);
    let requested = annotations.get(PING_ANNOTATION);
    let request = match (handled, requested) {
        (None, Some(value)) => value.clone(),
        (None, None) => "created".to_string(),
        (Some(done), Some(value)) if done != value => value.clone(),
        _ => return Ok(()),
    };
    let event = ping_event(webhook, &request);
    let (delivery, created) = ctx
        .publisher
        .publish_to(webhook, &event)
        .await
        .map_err(ReconcileError::publish)?;
    if created {
        info!(webhook = %webhook.name_any(), %delivery, "webhook.ping published");
    }
    let patch = json!({ "metadata": { "annotations": { PING_HANDLED_ANNOTATION: request } } });
    api.patch(
        &webhook.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await?;
    Ok(())
}

/// The `webhook.ping` event for one request: its id makes its delivery name, so asking
/// twice with the same value pings once.
pub fn ping_event(webhook: &Webhook, request: &str) -> PlatformEvent {
    let uid = webhook.uid().unwrap_or_default();
    let name = webhook.name_any();
    PlatformEvent::new(
        PING_EVENT,
        format!("{uid}/{PING_EVENT}/{request}"),
        &webhook.namespace().unwrap_or_default(),
        format!(
            "CloudDeck webhook {name} is set up: it delivers {}",
            webhook.spec.events.join(", ")
        ),
    )
    .with("webhook", name)
    .with("events", webhook.spec.events.clone())
}

/// `WebhookFailing` Warning Event on the Webhook, and the `webhook.failing` and
/// `alert.webhook_failing` events to the other Webhooks of the namespace.
async fn alert_failing(
    ctx: &WebhookContext,
    webhook: &Webhook,
    health: &health_status::EndpointHealth,
) {
    let name = webhook.name_any();
    let note = format!(
        "{} delivery attempts in a row failed to {}; latest: {}",
        health.consecutive_failures,
        webhook
            .status
            .as_ref()
            .and_then(|s| s.endpoint.as_deref())
            .unwrap_or("its endpoint"),
        health.last_error.as_deref().unwrap_or("unknown")
    );
    crate::controllers::webhook_delivery::reconcile::publish_event_with(
        &ctx.recorder,
        webhook,
        EventType::Warning,
        "WebhookFailing",
        &note,
    )
    .await;
    let since = health
        .last_failure
        .map(|t| t.as_second())
        .unwrap_or_default();
    for event_type in ["webhook.failing", "alert.webhook_failing"] {
        let event = PlatformEvent::new(
            event_type,
            format!("{}/{event_type}/{since}", webhook.uid().unwrap_or_default()),
            &webhook.namespace().unwrap_or_default(),
            format!("Webhook {name} is failing: {note}"),
        )
        .with("webhook", name.clone())
        .with("reason", "WebhookFailing")
        .with("message", note.clone())
        .with("consecutiveFailures", health.consecutive_failures);
        if let Err(err) = ctx.publisher.publish_except(&event, &name).await {
            warn!(error = %crate::one_line(&err), "cannot publish {event_type}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(url: &str) -> WebhookSpec {
        serde_json::from_value(
            json!({ "url": url, "events": ["deployment.*"], "secretRefs": [{ "name": "s" }] }),
        )
        .unwrap()
    }

    fn at(url: &str) -> Endpoint {
        Endpoint {
            url: url.into(),
            field: "spec.url",
        }
    }

    #[test]
    fn a_success_soon_after_the_one_shown_waits_and_anything_else_is_written_at_once() {
        let t = |second: i64| Time(Timestamp::from_second(1_000 + second).unwrap());
        let shown = WebhookStatus {
            consecutive_failures: Some(0),
            last_success_time: Some(t(0)),
            ..WebhookStatus::default()
        };
        let succeeded_at = |second| WebhookStatus {
            last_success_time: Some(t(second)),
            ..shown.clone()
        };
        let now = |second| t(second).0;
        assert_eq!(
            success_time_due(&shown, &succeeded_at(3), now(4)),
            Some(Duration::from_secs(6)),
            "written when due, 10 s after the success shown"
        );
        assert_eq!(
            success_time_due(&shown, &succeeded_at(10), now(10)),
            None,
            "due"
        );
        assert_eq!(
            success_time_due(&shown, &succeeded_at(3), now(12)),
            None,
            "a reconcile after the due time writes it"
        );
        let failed = WebhookStatus {
            consecutive_failures: Some(1),
            last_failure_time: Some(t(3)),
            ..succeeded_at(2)
        };
        assert_eq!(success_time_due(&shown, &failed, now(4)), None, "a failure");
        let first = WebhookStatus {
            last_success_time: None,
            ..shown.clone()
        };
        assert_eq!(
            success_time_due(&first, &shown, now(1)),
            None,
            "the first success"
        );
        assert_eq!(
            success_time_due(&shown, &shown, now(1)),
            None,
            "nothing to write"
        );
    }

    #[test]
    fn validation_names_the_field() {
        let policy = EgressPolicy::default();
        let check = |url: &str, policy: &EgressPolicy| validate(&spec(url), &at(url), policy);
        assert!(check("https://hooks.example.com/x", &policy).is_ok());
        let (reason, err) = check("http://169.254.169.254/latest", &policy).unwrap_err();
        assert_eq!(reason, health_status::DESTINATION_REFUSED);
        assert_eq!(err.field, "spec.url");
        assert!(err.message.contains("cloud metadata"), "{err}");
        let (_, err) = check("http://[::1]:8080/", &policy).unwrap_err();
        assert!(err.message.contains("loopback"), "{err}");
        let allow = EgressPolicy::from_allowlist(&["127.0.0.0/8"]).unwrap();
        assert!(check("http://127.0.0.1:9/", &allow).is_ok());

        let url = "https://hooks.example.com";
        let mut bad = spec(url);
        bad.retry.schedule = vec!["5s".into(), "later".into()];
        let (reason, err) = validate(&bad, &at(url), &policy).unwrap_err();
        assert_eq!(
            (reason, err.field.as_str()),
            (health_status::INVALID_SPEC, "spec.retry.schedule[1]")
        );
        let mut bad = spec(url);
        bad.events = vec!["deployment.*".into(), "deploy.*".into()];
        assert_eq!(
            validate(&bad, &at(url), &policy).unwrap_err().1.field,
            "spec.events[1]"
        );
    }

    #[test]
    fn a_url_from_a_secret_is_checked_and_named_by_its_field_never_shown() {
        let policy = EgressPolicy::default();
        let from_secret = Endpoint {
            url: "http://169.254.169.254/latest/meta-data?token=hunter2".into(),
            field: "spec.urlSecretRef",
        };
        let (reason, err) =
            validate(&spec("https://unused.example"), &from_secret, &policy).unwrap_err();
        assert_eq!(
            (reason, err.field.as_str()),
            (health_status::DESTINATION_REFUSED, "spec.urlSecretRef")
        );
        assert!(!err.to_string().contains("hunter2"), "{err}");
        let not_a_url = Endpoint {
            url: "hooks.slack.com/services/T0/B0/secret".into(),
            field: "spec.urlSecretRef",
        };
        let (_, err) = validate(&spec("https://unused.example"), &not_a_url, &policy).unwrap_err();
        assert!(!err.to_string().contains("secret"), "{err}");
    }

    #[test]
    fn messages_show_the_origin_never_the_path() {
        assert_eq!(
            origin("https://hooks.slack.com/services/T0/B0/secret-token"),
            "https://hooks.slack.com"
        );
        assert_eq!(
            origin("http://127.0.0.1:8080/hook?key=abc"),
            "http://127.0.0.1:8080"
        );
    }

    #[test]
    fn ping_events_are_per_request() {
        let mut w = Webhook::new("w", spec("https://hooks.example.com"));
        w.metadata.uid = Some("u1".into());
        w.metadata.namespace = Some("shop".into());
        let created = ping_event(&w, "created");
        assert_eq!(created.event_type, "webhook.ping");
        assert_eq!(created.id, "u1/webhook.ping/created");
        assert_eq!(created.data["webhook"], "w");
        assert_ne!(ping_event(&w, "1").id, ping_event(&w, "2").id);
    }
}
