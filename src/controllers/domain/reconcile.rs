//! One Domain reconcile: read (the claims on the hostname, the Project's routes, the
//! user's TLS Secret), verify (TXT lookup unless the hostname is owned or taken), apply
//! (HTTPRoute, Certificate), then write the status and the Events that changed.

use std::sync::Arc;
use std::time::Duration;

use gateway_api::apis::standard::httproutes::HttpRoute;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::PatchParams;
use kube::core::DeserializeGuard;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::reflector::ObjectRef;
use kube::{Api, Resource, ResourceExt};
use tracing::info;

use super::certificate::Certificate;
use super::claims::{self, Claim, Standing};
use super::listener;
use super::render::{self, RouteTarget};
use super::status::{self, CertificateState, ConditionValue, Ownership, Serving};
use super::{DomainContext, object_ref};
use crate::api::conditions::{self, CERTIFICATE_READY, Conditions, Status, VERIFIED};
use crate::api::domain::{CertificateStatus, Domain, DomainStatus, DomainVerification};
use crate::api::hostname_claim::HolderKind;
use crate::api::project::Project;
use crate::config::DomainListeners;
use crate::controllers::applied;
use crate::controllers::driver::reconciler;
use crate::controllers::edge_handler::plan_of;
use crate::controllers::error::{ReconcileError, Result};
use crate::controllers::{FIELD_MANAGER, cached, delete_if_present, write_status};
use crate::delivery::PlatformEvent;
use crate::dns::{self, VerificationRecord};
use crate::hostnames::{self, Authority, Claimant, HostnameClaim, scheme};
use crate::labels::PROJECT_LABEL;
use crate::routing;

/// How soon a Domain whose listener the gateway has not reported on yet is looked at again.
const LISTENER_RECHECK: Duration = Duration::from_secs(5);

// How often a settled Domain is looked at again (certificate expiry, missed events).

reconciler!(DomainContext, Domain, reconcile_and_prune);

/// Reconciles `domain`, then forgets what was applied to children that are gone.
async fn reconcile_and_prune(domain: &Domain, ctx: &DomainContext) -> Result<Action> {
    let result = reconcile_domain(domain, ctx).await;
    ctx.prune_applied();
    result
}

async fn reconcile_domain(domain: &Domain, ctx: &DomainContext) -> Result<Action> {
    if domain.metadata.deletion_timestamp.is_some() {
        // Route, ListenerSet, grant and Certificate go with it (owner references), a
        // listener on the Gateway is removed here; its HostnameClaim outlives it by the
        // reservation (controllers::hostname_claim).
        listener::finalize(ctx, domain).await?;
        return Ok(Action::await_change());
    }
    let settings = &ctx.settings;
    let previous = domain.status.clone().unwrap_or_default();
    let mut next = DomainStatus {
        observed_generation: domain.metadata.generation,
        conditions: previous.conditions.clone(),
        ..DomainStatus::default()
    };

    // Validate: the hostname must be one we can verify and route.
    let hostname = match dns::normalize(&domain.spec.hostname, settings.allow_wildcard_domains) {
        Ok(hostname) => hostname,
        Err(invalid) => {
            let message = format!("spec.hostname: {invalid}");
            return stall_on_hostname(ctx, domain, &previous, next, &message).await;
        }
    };
    let uid = domain.metadata.uid.clone().unwrap_or_default();
    let record = VerificationRecord::for_domain(&hostname, &uid);
    let previously_verified_at = previously_verified_at(ctx, domain);
    let found = ownership(ctx, domain, (&hostname, &record), &previously_verified_at).await?;
    let verified = verified_condition(ctx, domain, (&hostname, &record), &found, &previous).await;
    next.verification = Some(DomainVerification {
        record_name: record.name.clone(),
        record_value: record.value.clone(),
        verified_at: found.verified_at.clone(),
        checked_at: found.checked_at.clone(),
        record_lost_at: found.record_lost_at.clone(),
    });

    let (serving, (certificate, listener)) = if verified.is_true() {
        let served = serve(ctx, domain, &hostname, &previous).await?;
        next.certificate = Some(served.certificate_status);
        (
            Some(served.serving),
            (Some(served.certificate), Some(served.listener)),
        )
    } else {
        if previously_verified_at.is_some() {
            // Lost the hostname (a race another claim won): serve nothing for it.
            withdraw(ctx, domain).await?;
        }
        (None, (None, None))
    };

    status::set_conditions(
        &mut Conditions::new(&mut next.conditions, domain.metadata.generation),
        &verified,
        serving.as_ref(),
        (certificate.as_ref(), listener.as_ref()),
    );
    announce(
        ctx,
        domain,
        &hostname,
        &previous,
        &verified,
        certificate.as_ref(),
    )
    .await?;
    write_status(&ctx.ctx, domain, &next).await?;
    Ok(next_look(
        &found.ownership,
        (certificate.as_ref(), listener.as_ref()),
        domain.metadata.creation_timestamp.as_ref(),
        (settings.verification_recheck, ctx.ctx.config.resync_period),
    ))
}

/// A hostname no Domain can have: Stalled naming the field, one Warning Event per change.
async fn stall_on_hostname(
    ctx: &DomainContext,
    domain: &Domain,
    previous: &DomainStatus,
    mut next: DomainStatus,
    message: &str,
) -> Result<Action> {
    let mut conditions = Conditions::new(&mut next.conditions, domain.metadata.generation);
    conditions.remove(VERIFIED);
    conditions.remove(CERTIFICATE_READY);
    conditions.stalled("InvalidHostname", message);
    if conditions::find(&previous.conditions, conditions::READY)
        .is_none_or(|c| c.reason != "InvalidHostname")
    {
        publish(ctx, domain, EventType::Warning, "InvalidHostname", message).await;
    }
    write_status(&ctx.ctx, domain, &next).await?;
    Ok(Action::await_change())
}

/// When the Domain was verified, if it was. The claims store may be ahead of the copy this
/// reconcile was handed (it can already hold the status that recorded the verification):
/// take the time from either, or a rewrite of the status would drop it.
fn previously_verified_at(ctx: &DomainContext, domain: &Domain) -> Option<Time> {
    let verified_at_of = |d: &Domain| {
        d.status
            .as_ref()
            .and_then(|s| s.verification.as_ref())
            .and_then(|v| v.verified_at.clone())
    };
    verified_at_of(domain).or_else(|| {
        ctx.domains
            .get(&object_ref(domain))
            .and_then(|guard| guard.0.as_ref().ok().cloned())
            .filter(|stored| stored.metadata.uid == domain.metadata.uid)
            .and_then(|stored| verified_at_of(&stored))
    })
}

/// Who owns a Domain's hostname, and what its verification records.
struct Found {
    ownership: Ownership,
    verified_at: Option<Time>,
    checked_at: Option<Time>,
    record_lost_at: Option<Time>,
}

impl Found {
    fn not_verified(ownership: Ownership) -> Self {
        Found {
            ownership,
            verified_at: None,
            checked_at: None,
            record_lost_at: None,
        }
    }

    fn verified(ownership: Ownership, at: Option<Time>) -> Self {
        Found {
            verified_at: at,
            ..Found::not_verified(ownership)
        }
    }
}

/// Who owns the hostname (the one rule of `crate::hostnames`), then, where a proof is
/// needed and nobody owns it, what DNS says.
async fn ownership(
    ctx: &DomainContext,
    domain: &Domain,
    (hostname, record): (&str, &VerificationRecord),
    previously_verified_at: &Option<Time>,
) -> Result<Found> {
    let base_domain = &ctx.ctx.config.routing.base_domain;
    Ok(match hostnames::authority(hostname, base_domain) {
        Authority::Operator => Found::not_verified(Ownership::Reserved {
            base_domain: base_domain.clone(),
            key: None,
        }),
        Authority::Key(key) => key_ownership(ctx, domain, key, previously_verified_at).await?,
        Authority::Exact => {
            exact_ownership(ctx, domain, (hostname, record), previously_verified_at).await?
        }
    })
}

/// A hostname under the operator's base domain: the namespace whose live Project holds the
/// key owns every name under it; a Project that does not exist, or exists elsewhere, is
/// never a reason to accept.
async fn key_ownership(
    ctx: &DomainContext,
    domain: &Domain,
    key: String,
    previously_verified_at: &Option<Time>,
) -> Result<Found> {
    let base_domain = &ctx.ctx.config.routing.base_domain;
    let namespace = domain.namespace().unwrap_or_default();
    let allow_wildcards = ctx.settings.allow_wildcard_domains;
    let key_hostname = scheme::production_hostname(&key, base_domain);
    let owned = hostnames::key_holder(&ctx.ctx.client, &key_hostname)
        .await?
        .is_some_and(|claim| claim.spec.namespace == namespace);
    if !owned {
        return Ok(Found::not_verified(Ownership::Reserved {
            base_domain: base_domain.clone(),
            key: Some(key),
        }));
    }
    // Two Domains of this namespace for one name: the first verified serves it.
    let twins: Vec<Claim> = valid(&ctx.domains.state())
        .filter(|d| d.namespace().as_deref() == Some(namespace.as_str()))
        .filter_map(|d| Claim::of(d, allow_wildcards))
        .collect();
    let mine = Claim::of(domain, allow_wildcards).expect("hostname is valid");
    Ok(match claims::standing(&mine, &twins) {
        Standing::Owner => Found::verified(Ownership::Internal, previously_verified_at.clone()),
        Standing::Unclaimed => Found::verified(Ownership::Internal, Some(Time(Timestamp::now()))),
        Standing::Taken {
            namespace, name, ..
        } => Found::not_verified(Ownership::Taken {
            namespace,
            name,
            same_namespace: true,
        }),
    })
}

/// A hostname outside the base domain: held by this Domain's claim, or free and proven by
/// the TXT record (or by this Domain's own earlier proof, made before claims existed).
async fn exact_ownership(
    ctx: &DomainContext,
    domain: &Domain,
    (hostname, record): (&str, &VerificationRecord),
    previously_verified_at: &Option<Time>,
) -> Result<Found> {
    let client = &ctx.ctx.client;
    let namespace = domain.namespace().unwrap_or_default();
    let me = Claimant::of(domain, HolderKind::Domain);
    // A verification keeps the time it was first made.
    let verified_since = || {
        previously_verified_at
            .clone()
            .or_else(|| Some(Time(Timestamp::now())))
    };
    Ok(match hostnames::peek(client, hostname, &me).await? {
        hostnames::Standing::Held => {
            // The owner's record is looked up again now and then: a lost record is
            // reported at once, and the hostname given up after the grace period.
            let last = domain
                .status
                .as_ref()
                .and_then(|s| s.verification.clone())
                .unwrap_or_default();
            let checked = recheck(ctx, record, &last).await;
            let (ownership, verified_at) = if checked.expired {
                let claims = Api::<HostnameClaim>::all(client.clone());
                delete_if_present(&claims, &hostnames::claim_name(hostname)).await?;
                (Ownership::Unverified(checked.answer), None)
            } else {
                (Ownership::Verified, verified_since())
            };
            Found {
                ownership,
                verified_at,
                checked_at: checked.checked_at,
                record_lost_at: checked.lost_at,
            }
        }
        hostnames::Standing::Free | hostnames::Standing::Reserved => {
            let proof = if previously_verified_at.is_some() {
                dns::Verification::Verified
            } else {
                let answer = ctx.resolver.lookup(&record.name).await;
                dns::judge(&answer, &record.value)
            };
            match proof {
                dns::Verification::Verified => {
                    match hostnames::take(client, hostname, &me).await? {
                        hostnames::Standing::Held => {
                            Found::verified(Ownership::Verified, verified_since())
                        }
                        other => Found::not_verified(taken(other, &namespace)),
                    }
                }
                other => Found::not_verified(Ownership::Unverified(other)),
            }
        }
        other => Found::not_verified(taken(other, &namespace)),
    })
}

/// The `Verified` condition; while the owner's record is missing, `RecordLost` with the end
/// of the grace period, and a Warning Event when it goes missing.
async fn verified_condition(
    ctx: &DomainContext,
    domain: &Domain,
    (hostname, record): (&str, &VerificationRecord),
    found: &Found,
    previous: &DomainStatus,
) -> ConditionValue {
    let verified = status::verified_condition(
        &found.ownership,
        hostname,
        record,
        ctx.settings.show_claiming_namespace,
    );
    let Some(lost) = found.record_lost_at.as_ref().filter(|_| verified.is_true()) else {
        return verified;
    };
    let until = lost.0 + ctx.settings.verification_grace;
    let verified = status::record_lost_condition(record, lost.0, until);
    let lost_before = previous
        .verification
        .as_ref()
        .is_some_and(|v| v.record_lost_at.is_some());
    if !lost_before {
        publish(
            ctx,
            domain,
            EventType::Warning,
            "VerificationRecordLost",
            &verified.message,
        )
        .await;
    }
    verified
}

/// What a verified Domain serves, and how its HTTPS is doing.
struct Served {
    serving: Serving,
    certificate: ConditionValue,
    certificate_status: CertificateStatus,
    listener: ConditionValue,
}

/// Serves a verified Domain: its route, its certificate (the user's Secret or a
/// cert-manager Certificate) and its HTTPS listener.
async fn serve(
    ctx: &DomainContext,
    domain: &Domain,
    hostname: &str,
    previous: &DomainStatus,
) -> Result<Served> {
    let settings = &ctx.settings;
    let owner = domain
        .controller_owner_ref(&())
        .expect("a Domain has a name and uid");
    let serving = apply_route(ctx, domain, hostname, &owner).await?;
    let (state, secret_name) = certificate_state(ctx, domain, hostname, &owner).await?;
    warn_if_expiring(ctx, domain, hostname, &state).await?;
    let report = listener::apply(ctx, domain, (hostname, &secret_name), &owner).await?;
    let wait = status::listener_wait(&previous.conditions, domain.metadata.generation);
    let listener = status::listener_condition(
        &report,
        (wait, settings.listener_report_timeout),
        Timestamp::now(),
    );
    Ok(Served {
        serving,
        certificate: status::certificate_condition(&state),
        certificate_status: CertificateStatus {
            secret_name: Some(secret_name),
            not_after: state.not_after().map(Time),
        },
        listener,
    })
}

/// Applies the Domain's route: production, a branch, or a redirect. Without a target, what
/// serves now is kept: a redirect whose target Domain went away still redirects;
/// production being replaced keeps serving.
async fn apply_route(
    ctx: &DomainContext,
    domain: &Domain,
    hostname: &str,
    owner: &OwnerReference,
) -> Result<Serving> {
    let client = &ctx.ctx.client;
    let namespace = domain.namespace().unwrap_or_default();
    let routes = Api::<HttpRoute>::namespaced(client.clone(), &namespace);
    let (serving, target) = serving(domain, &routes, client).await?;
    let Some(target) = &target else {
        return Ok(serving);
    };
    let routing = &ctx.ctx.config.routing;
    let edge = plan_of(
        &ctx.edge_handlers,
        &namespace,
        &domain.spec.project_ref.name,
        routing,
    );
    // A Domain that serves production is split with it.
    let split = match (&domain.spec.branch, target) {
        (None, render::RouteTarget::Service(_)) => ctx.split_of(domain, &edge),
        _ => None,
    };
    let mut route = render::route(
        domain,
        hostname,
        target,
        routing,
        &edge,
        split.as_ref(),
        owner,
    );
    if ctx.settings.domain_listeners == DomainListeners::ListenerSet {
        render::attach_to_listener_set(&mut route, domain);
    }
    let apply = PatchParams::apply(FIELD_MANAGER).force();
    applied::apply(&routes, &ctx.routes, &ctx.applied, &apply, &route).await?;
    Ok(serving)
}

/// The certificate's state and the Secret it is in: the user's Secret (read whole, parsed
/// for the expiry only, and dropped), or the Secret of a cert-manager Certificate applied
/// here.
async fn certificate_state(
    ctx: &DomainContext,
    domain: &Domain,
    hostname: &str,
    owner: &OwnerReference,
) -> Result<(CertificateState, String)> {
    let client = &ctx.ctx.client;
    let namespace = domain.namespace().unwrap_or_default();
    let certificates = certificates_in(client, &namespace);
    let certificate_name = render::certificate_name(&domain.name_any());
    match domain.spec.tls.as_ref().and_then(|t| t.secret_name.clone()) {
        Some(secret) => {
            // One the Domain had before the user's Secret: the cache's word is enough,
            // since the Certificate's appearance in it wakes the Domain.
            if cached(&ctx.certificates, &namespace, &certificate_name) {
                delete_if_present(&certificates, &certificate_name).await?;
            }
            let found = Api::<Secret>::namespaced(client.clone(), &namespace)
                .get_opt(&secret)
                .await?;
            Ok((
                status::secret_certificate_state(&secret, found.as_ref()),
                secret,
            ))
        }
        None => {
            let issuer = render::issuer(domain, &ctx.settings.default_cluster_issuer);
            let desired = render::certificate(domain, hostname, &issuer, owner);
            let apply = PatchParams::apply(FIELD_MANAGER).force();
            let current = applied::apply_or_cached(
                &certificates,
                &ctx.certificates,
                &ctx.applied,
                &apply,
                &desired,
            )
            .await?;
            Ok((
                status::certificate_state(current.as_ref()),
                certificate_name,
            ))
        }
    }
}

/// cert-manager's Certificates in `namespace`.
fn certificates_in(client: &kube::Client, namespace: &str) -> Api<Certificate> {
    Api::namespaced(client.clone(), namespace)
}

/// Whoever manages the certificate (cert-manager or the user), one warning when it is about
/// to expire: webhook events and a Warning Event.
async fn warn_if_expiring(
    ctx: &DomainContext,
    domain: &Domain,
    hostname: &str,
    state: &CertificateState,
) -> Result<()> {
    let Some(not_after) = state.not_after() else {
        return Ok(());
    };
    let Some(days) = status::expiring_in_days(
        not_after,
        Timestamp::now(),
        ctx.settings.certificate_expiry_warning_days,
    ) else {
        return Ok(());
    };
    let message =
        format!("the certificate for {hostname} expires in {days} day(s), at {not_after}");
    let occurrence = not_after.to_string();
    publish_webhook_events(
        ctx,
        domain,
        ["certificate.expiring", "alert.certificate_expiring"]
            .map(|t| {
                render::platform_event(domain, hostname, t, &occurrence, &message)
                    .with("notAfter", occurrence.clone())
            })
            .into(),
    )
    .await?;
    publish(
        ctx,
        domain,
        EventType::Warning,
        "CertificateExpiring",
        &message,
    )
    .await;
    Ok(())
}

/// Serves nothing for the Domain's hostname: route, listener and Certificate go.
async fn withdraw(ctx: &DomainContext, domain: &Domain) -> Result<()> {
    let client = &ctx.ctx.client;
    let namespace = domain.namespace().unwrap_or_default();
    let name = domain.name_any();
    let routes = Api::<HttpRoute>::namespaced(client.clone(), &namespace);
    let certificates = certificates_in(client, &namespace);
    delete_if_present(&routes, &render::route_name(&name)).await?;
    listener::remove(ctx, domain).await?;
    delete_if_present(&certificates, &render::certificate_name(&name)).await?;
    Ok(())
}

/// When to look at a Domain again, given who owns its hostname and how its HTTPS is doing.
fn next_look(
    ownership: &Ownership,
    (certificate, listener): (Option<&ConditionValue>, Option<&ConditionValue>),
    created: Option<&Time>,
    (verification_recheck, resync_period): (Duration, Duration),
) -> Action {
    match ownership {
        Ownership::Unverified(_) => {
            let created = created.map_or(0, |t| t.0.as_second());
            let waiting = (Timestamp::now().as_second() - created).max(0) as u64;
            Action::requeue(status::recheck_after(Duration::from_secs(waiting)))
        }
        // The owner's deletion wakes this Domain up (see `related_domains`); the periodic
        // look is a safety net.
        Ownership::Taken { .. } => Action::requeue(Duration::from_secs(60)),
        Ownership::Reserved { .. } => Action::await_change(),
        // The gateway reports on a listener by writing status, which only a ListenerSet's
        // watch brings here: look again until it has, or the grace period is over.
        _ if listener.is_some_and(|l| l.status == Status::Unknown) => {
            Action::requeue(LISTENER_RECHECK)
        }
        _ if !certificate.is_some_and(ConditionValue::is_true) => {
            Action::requeue(Duration::from_secs(300).min(verification_recheck))
        }
        _ => Action::requeue(resync_period.min(verification_recheck)),
    }
}

/// What looking up a verified Domain's record again found.
struct Recheck {
    checked_at: Option<Time>,
    /// Since when the record is missing (carried over, set now, or cleared).
    lost_at: Option<Time>,
    /// The record has been missing for longer than the grace period.
    expired: bool,
    answer: dns::Verification,
}

/// Looks the record up again when `--verification-recheck` has passed since the last look;
/// otherwise carries the last look over. Only a definite answer (no such name, no record,
/// another value) counts as lost; a resolver that does not answer changes nothing.
async fn recheck(
    ctx: &DomainContext,
    record: &VerificationRecord,
    last: &DomainVerification,
) -> Recheck {
    let settings = &ctx.settings;
    let now = Timestamp::now();
    let carried = Recheck {
        checked_at: last.checked_at.clone(),
        lost_at: last.record_lost_at.clone(),
        expired: false,
        answer: dns::Verification::Verified,
    };
    let due = last
        .checked_at
        .as_ref()
        .is_none_or(|t| now >= t.0 + settings.verification_recheck);
    if !due {
        return carried;
    }
    let answer = dns::judge(&ctx.resolver.lookup(&record.name).await, &record.value);
    let last_lost = last.record_lost_at.as_ref().map(|t| t.0);
    let Some(lost_at) = lost_since(&answer, last_lost, now) else {
        return carried;
    };
    Recheck {
        checked_at: Some(Time(now)),
        lost_at: lost_at.map(Time),
        expired: lost_at.is_some_and(|lost| now >= lost + settings.verification_grace),
        answer,
    }
}

/// Since when the record is missing after a look that found `answer`: `None` when the look
/// proves nothing (the nameserver did not answer), else the time (kept from `last_lost`,
/// or `now`) or `Some(None)` when the record is there.
fn lost_since(
    answer: &dns::Verification,
    last_lost: Option<Timestamp>,
    now: Timestamp,
) -> Option<Option<Timestamp>> {
    match answer {
        dns::Verification::Verified => Some(None),
        dns::Verification::ResolverUnreachable(_) | dns::Verification::LookupFailed(_) => None,
        _ => Some(Some(last_lost.unwrap_or(now))),
    }
}

/// A refusal: the hostname is owned by another Domain of this namespace or by another
/// namespace.
fn taken(standing: hostnames::Standing, my_namespace: &str) -> Ownership {
    match standing {
        hostnames::Standing::HeldHere { name, .. } => Ownership::Taken {
            namespace: my_namespace.to_owned(),
            name,
            same_namespace: true,
        },
        hostnames::Standing::Elsewhere { namespace } => Ownership::Taken {
            namespace,
            name: String::new(),
            same_namespace: false,
        },
        // Held, Free or Reserved again after a lost race: the next look settles it.
        _ => Ownership::Taken {
            namespace: String::new(),
            name: String::new(),
            same_namespace: false,
        },
    }
}

/// What the route of a verified Domain points at, read from the Project's own routes so
/// that a promotion or rollback is followed without the Domain knowing how it happened.
///
/// A redirect's target is looked up in the API, not the watch cache: the deletion of the
/// target is what wakes this Domain, and the cache may not have seen it yet.
async fn serving(
    domain: &Domain,
    routes: &Api<HttpRoute>,
    client: &kube::Client,
) -> Result<(Serving, Option<RouteTarget>)> {
    let project = &domain.spec.project_ref.name;
    if let Some(redirect) = &domain.spec.redirect_to {
        let namespace = domain.namespace().unwrap_or_default();
        let same_namespace =
            Api::<DeserializeGuard<Domain>>::namespaced(client.clone(), &namespace)
                .list(&kube::api::ListParams::default())
                .await?;
        // Only a hostname this namespace owns: a verified Domain of the same Project. A
        // refused Domain for someone else's hostname is no target.
        let target = same_namespace
            .items
            .iter()
            .filter_map(|g| g.0.as_ref().ok())
            .find(|d| {
                d.spec.hostname == redirect.domain
                    && d.spec.project_ref.name == *project
                    && d.metadata.deletion_timestamp.is_none()
            });
        let missing = match target {
            None => Some(format!(
                "spec.redirectTo.domain: no Domain of Project {project} in this namespace has hostname {}",
                redirect.domain
            )),
            Some(target)
                if !target
                    .status
                    .as_ref()
                    .is_some_and(|s| conditions::is_true(&s.conditions, conditions::VERIFIED)) =>
            {
                Some(format!(
                    "spec.redirectTo.domain: Domain {} for {} is not verified: a redirect only goes to a hostname this namespace owns",
                    target.name_any(),
                    redirect.domain
                ))
            }
            Some(_) => None,
        };
        if let Some(message) = missing {
            return Ok((Serving::RedirectTargetMissing(message), None));
        }
        return Ok((
            Serving::Redirect(redirect.domain.clone()),
            Some(RouteTarget::Redirect {
                hostname: redirect.domain.clone(),
                status_code: redirect.status_code,
            }),
        ));
    }
    let (route_name, what) = match &domain.spec.branch {
        Some(branch) => (
            routing::branch_route_name(project, branch),
            format!("no Ready deployment of branch {branch} of Project {project} yet"),
        ),
        None => (
            routing::production_route_name(project),
            format!("Project {project} has no production deployment yet"),
        ),
    };
    let service = routes
        .get_opt(&route_name)
        .await?
        .and_then(|route| routing::backend_service(&route).map(str::to_owned));
    Ok(match service {
        Some(service) => (
            Serving::Deployment(service.clone()),
            Some(RouteTarget::Service(service)),
        ),
        None => (Serving::NothingYet(what), None),
    })
}

/// Events and webhook events for what changed: verification won or lost, certificate
/// issued. Runs before the status that records the change is written, so a crash in
/// between announces again (the webhook deliveries' names make that a no-op).
async fn announce(
    ctx: &DomainContext,
    domain: &Domain,
    hostname: &str,
    previous: &DomainStatus,
    verified: &ConditionValue,
    certificate: Option<&ConditionValue>,
) -> Result<()> {
    let before = conditions::find(&previous.conditions, VERIFIED);
    let changed =
        before.is_none_or(|c| c.status != verified.status.as_str() || c.reason != verified.reason);
    let certificate_issued = certificate
        .filter(|c| c.is_true())
        .filter(|_| !conditions::is_true(&previous.conditions, CERTIFICATE_READY));
    let mut webhook_events = Vec::new();
    if changed {
        let event_types: &[&str] = if verified.is_true() {
            &["domain.verified"]
        } else {
            &[
                "domain.verification_failed",
                "alert.domain_verification_failed",
            ]
        };
        for event_type in event_types {
            webhook_events.push(
                render::platform_event(
                    domain,
                    hostname,
                    event_type,
                    verified.reason,
                    &verified.message,
                )
                .with("reason", verified.reason)
                .with("message", verified.message.clone()),
            );
        }
    }
    if let Some(cert) = certificate_issued {
        // Issued for the first time, or again after it was not ready since that moment.
        let occurrence = conditions::find(&previous.conditions, CERTIFICATE_READY).map_or_else(
            || "first".to_owned(),
            |c| c.last_transition_time.0.to_string(),
        );
        webhook_events.push(render::platform_event(
            domain,
            hostname,
            "certificate.ready",
            &occurrence,
            &cert.message,
        ));
    }
    publish_webhook_events(ctx, domain, webhook_events).await?;

    if changed {
        if verified.is_true() {
            info!(reason = verified.reason, "domain verified");
            publish(
                ctx,
                domain,
                EventType::Normal,
                "Verified",
                &verified.message,
            )
            .await;
        } else {
            publish(
                ctx,
                domain,
                EventType::Warning,
                "VerificationFailed",
                &verified.message,
            )
            .await;
        }
    }
    if let Some(cert) = certificate_issued {
        publish(
            ctx,
            domain,
            EventType::Normal,
            "CertificateReady",
            &cert.message,
        )
        .await;
    }
    Ok(())
}

/// Writes the WebhookDeliveries of `events` for the Webhooks that subscribe to them,
/// with the Project's labels for their project selectors.
async fn publish_webhook_events(
    ctx: &DomainContext,
    domain: &Domain,
    events: Vec<PlatformEvent>,
) -> Result<()> {
    if events.is_empty() {
        return Ok(());
    }
    let namespace = domain.namespace().unwrap_or_default();
    let project = &domain.spec.project_ref.name;
    let labels = Api::<Project>::namespaced(ctx.ctx.client.clone(), &namespace)
        .get_opt(project)
        .await?
        .and_then(|p| p.metadata.labels)
        .unwrap_or_default();
    let publisher = ctx.ctx.publisher();
    for event in events {
        publisher
            .publish(&event.with_project(project, labels.clone()))
            .await
            .map_err(ReconcileError::publish)?;
    }
    Ok(())
}

async fn publish(ctx: &DomainContext, domain: &Domain, type_: EventType, reason: &str, note: &str) {
    crate::controllers::events::publish(
        &ctx.ctx.recorder,
        domain,
        type_,
        reason,
        "Reconcile",
        note,
    )
    .await;
}

/// The Domains of the store that match the schema (a malformed one is reported by its
/// own reconcile and claims nothing).
fn valid(all: &[Arc<DeserializeGuard<Domain>>]) -> impl Iterator<Item = &Domain> {
    all.iter().filter_map(|guard| guard.0.as_ref().ok())
}

/// Domains to look at again when `changed` changes: the other claims on its hostname
/// (an owner deleted frees it) and the Domains redirecting to it.
pub fn related_domains(
    all: &[Arc<DeserializeGuard<Domain>>],
    changed: &Domain,
) -> Vec<ObjectRef<DeserializeGuard<Domain>>> {
    let hostname = dns::normalize(&changed.spec.hostname, true).ok();
    valid(all)
        .filter(|d| !(d.namespace() == changed.namespace() && d.name_any() == changed.name_any()))
        .filter(|d| {
            let same_host =
                hostname.is_some() && dns::normalize(&d.spec.hostname, true).ok() == hostname;
            let redirects_here = d.namespace() == changed.namespace()
                && d.spec
                    .redirect_to
                    .as_ref()
                    .is_some_and(|r| r.domain == changed.spec.hostname);
            same_host || redirects_here
        })
        .map(object_ref)
        .collect()
}

/// Domains whose standing `claim` decides: those for its very hostname, and under the
/// base domain those whose key is the claim's.
pub fn domains_under(
    all: &[Arc<DeserializeGuard<Domain>>],
    claim: &HostnameClaim,
    base: &str,
) -> Vec<ObjectRef<DeserializeGuard<Domain>>> {
    let claimed = hostnames::authority(&claim.spec.hostname, base);
    valid(all)
        .filter(|d| {
            let Ok(hostname) = dns::normalize(&d.spec.hostname, true) else {
                return false;
            };
            hostname == claim.spec.hostname
                || matches!(&claimed, Authority::Key(_))
                    && hostnames::authority(&hostname, base) == claimed
        })
        .map(object_ref)
        .collect()
}

/// Domains serving the Project whose production or branch route `route` is.
pub fn domains_following(
    all: &[Arc<DeserializeGuard<Domain>>],
    route: &HttpRoute,
) -> Vec<ObjectRef<DeserializeGuard<Domain>>> {
    let labels = route.labels();
    if labels.contains_key(render::DOMAIN_LABEL) {
        return Vec::new(); // a Domain's own route: `owns` handles it
    }
    let Some(project) = labels.get(PROJECT_LABEL) else {
        return Vec::new();
    };
    valid(all)
        .filter(|d| d.namespace() == route.namespace() && d.spec.project_ref.name == *project)
        .filter(|d| d.spec.redirect_to.is_none())
        .map(object_ref)
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_domain_is_looked_at_again_as_soon_as_what_it_waits_for_can_have_changed() {
        let (recheck, resync) = (Duration::from_secs(3_600), Duration::from_secs(600));
        let verdict = |status| ConditionValue::new(status, "Some", String::new());
        let (issued, pending) = (verdict(Status::True), verdict(Status::Unknown));
        let look = |ownership, certificate, listener| {
            next_look(&ownership, (certificate, listener), None, (recheck, resync))
        };
        // Waiting for the gateway's report on the listener: soon.
        assert_eq!(
            look(Ownership::Verified, Some(&issued), Some(&pending)),
            Action::requeue(LISTENER_RECHECK)
        );
        // Waiting for the certificate: every 5 minutes at the most.
        assert_eq!(
            look(Ownership::Internal, Some(&pending), Some(&issued)),
            Action::requeue(Duration::from_secs(300))
        );
        // Settled: at the resync.
        assert_eq!(
            look(Ownership::Verified, Some(&issued), Some(&issued)),
            Action::requeue(resync)
        );
        // Another namespace's key: only a change of the Domain can help.
        let reserved = Ownership::Reserved {
            base_domain: "apps.example.com".into(),
            key: Some("shop".into()),
        };
        assert_eq!(look(reserved, None, None), Action::await_change());
    }

    fn domain(
        namespace: &str,
        name: &str,
        hostname: &str,
        redirect: Option<&str>,
    ) -> Arc<DeserializeGuard<Domain>> {
        let mut spec = json!({ "hostname": hostname, "projectRef": { "name": "storefront" } });
        if let Some(to) = redirect {
            spec["redirectTo"] = json!({ "domain": to, "statusCode": 308 });
        }
        Arc::new(DeserializeGuard(Ok(serde_json::from_value(json!({
            "apiVersion": "clouddeck.io/v1alpha1", "kind": "Domain",
            "metadata": { "name": name, "namespace": namespace },
            "spec": spec,
        }))
        .unwrap())))
    }

    fn names(refs: Vec<ObjectRef<DeserializeGuard<Domain>>>) -> Vec<String> {
        let mut names: Vec<_> = refs
            .into_iter()
            .map(|r| format!("{}/{}", r.namespace.unwrap_or_default(), r.name))
            .collect();
        names.sort();
        names
    }

    #[test]
    fn a_lost_record_counts_from_the_first_look_that_missed_it() {
        let (t0, t1) = (
            Timestamp::from_second(1_000).unwrap(),
            Timestamp::from_second(2_000).unwrap(),
        );
        assert_eq!(
            lost_since(&dns::Verification::NameNotFound, None, t1),
            Some(Some(t1))
        );
        assert_eq!(
            lost_since(&dns::Verification::RecordMissing, Some(t0), t1),
            Some(Some(t0)),
            "the first miss is kept"
        );
        assert_eq!(
            lost_since(&dns::Verification::Verified, Some(t0), t1),
            Some(None),
            "back"
        );
        assert_eq!(
            lost_since(
                &dns::Verification::ResolverUnreachable("timeout".into()),
                Some(t0),
                t1
            ),
            None,
            "a nameserver that does not answer proves nothing"
        );
    }

    #[test]
    fn a_change_wakes_the_other_claims_and_the_redirects_to_it() {
        let owner = domain("a", "shop", "shop.example.com", None);
        let all = vec![
            owner.clone(),
            domain("b", "shop", "shop.example.com", None),
            domain("a", "www", "www.example.com", Some("shop.example.com")),
            domain("b", "www", "www.example.com", Some("shop.example.com")),
            domain("a", "blog", "blog.example.com", None),
        ];
        let changed = owner.0.as_ref().unwrap();
        assert_eq!(names(related_domains(&all, changed)), ["a/www", "b/shop"]);
    }

    #[test]
    fn a_production_route_wakes_the_domains_of_its_project() {
        let all = vec![
            domain("a", "shop", "shop.example.com", None),
            domain("a", "www", "www.example.com", Some("shop.example.com")),
            domain("b", "shop", "shop.example.net", None),
        ];
        let route: HttpRoute = serde_json::from_value(json!({
            "metadata": { "name": "storefront-production", "namespace": "a",
                          "labels": { "clouddeck.io/project": "storefront" } },
            "spec": {}
        }))
        .unwrap();
        assert_eq!(names(domains_following(&all, &route)), ["a/shop"]);

        let mut own = route.clone();
        own.metadata
            .labels
            .as_mut()
            .unwrap()
            .insert(render::DOMAIN_LABEL.into(), "shop".into());
        assert!(domains_following(&all, &own).is_empty());
    }
}
