//! The HostnameClaim controller: notices when a claim's holder (a Project or Domain) is
//! gone, marks the claim released, and deletes it once `--hostname-reservation` has passed
//! (see [`crate::hostnames`]). Until then the claim keeps the hostname for its namespace.
//!
//! It watches Projects and Domains too, so a deletion is noticed at once rather than at the
//! next periodic look.

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, PostParams, Preconditions};
use kube::core::DeserializeGuard;
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Api, ResourceExt};
use tracing::{Instrument, info, info_span, warn};

use super::deployment::{Error, Failures, Result, backoff, reset_backoff};
use super::{Context, ControllerRun, KindController};
use crate::api::domain::Domain;
use crate::api::project::Project;
use crate::hostnames::{self, Authority, HostnameClaim};

pub const NAME: &str = "hostnameclaim";

pub const CONTROLLER: KindController = KindController { name: NAME, run };

/// How often a held claim's holder is looked at when no watch event says it went.
const RECHECK: Duration = Duration::from_secs(600);

static CLAIM_FAILURES: Failures = LazyLock::new(Default::default);

fn run(run: ControllerRun) -> BoxFuture<'static, ()> {
    async move {
        let client = run.ctx.client.clone();
        let base = run.ctx.config.routing.base_domain.clone();
        let wildcards = run.ctx.config.domains.allow_wildcard_domains;
        let controller = run
            .controller(
                Api::<DeserializeGuard<HostnameClaim>>::all(client.clone()),
                watcher::Config::default(),
            )
            // A Project's claim is on the hostname its status shows.
            .watches_stream(
                run.related::<DeserializeGuard<Project>>(watcher::Config::default()),
                |guard| {
                    let hostname = guard.0.as_ref().ok()?.status.as_ref()?.hostname.clone()?;
                    Some(claim_ref(&hostname))
                },
            )
            // A Domain outside the base domain claims exactly its hostname.
            .watches_stream(
                run.related::<DeserializeGuard<Domain>>(watcher::Config::default()),
                move |guard| {
                    let domain = guard.0.as_ref().ok()?;
                    let hostname = crate::dns::normalize(&domain.spec.hostname, wildcards).ok()?;
                    (hostnames::authority(&hostname, &base) == Authority::Exact)
                        .then(|| claim_ref(&hostname))
                },
            );
        run.drive(controller.run(run.tracked(reconcile), error_policy, run.ctx.clone()))
            .await;
    }
    .boxed()
}

fn claim_ref(hostname: &str) -> ObjectRef<DeserializeGuard<HostnameClaim>> {
    ObjectRef::new(&hostnames::claim_name(hostname))
}

async fn reconcile(
    guard: Arc<DeserializeGuard<HostnameClaim>>,
    ctx: Arc<Context>,
) -> Result<Action> {
    let Ok(claim) = &guard.0 else {
        // Only the operator writes claims; one it cannot read holds nothing it can act on.
        warn!(claim = %guard.name_any(), "cannot decode HostnameClaim; left as it is");
        return Ok(Action::await_change());
    };
    let span = info_span!("reconcile", controller = NAME, name = %claim.name_any());
    let timer = ctx.metrics.reconcile.start(NAME);
    let result = sweep(claim, &ctx).instrument(span).await;
    timer.finish(&result);
    if result.is_ok() {
        reset_backoff(&CLAIM_FAILURES, &claim.name_any());
    }
    result
}

async fn sweep(claim: &HostnameClaim, ctx: &Context) -> Result<Action> {
    let api = Api::<HostnameClaim>::all(ctx.client.clone());
    let gone = hostnames::holder_gone(&ctx.client, claim).await?;
    let reservation = ctx.config.hostnames.hostname_reservation;
    let Some(released_at) = claim.spec.released_at.as_ref().map(|t| t.0) else {
        if !gone {
            return Ok(Action::requeue(RECHECK));
        }
        let mut released = claim.clone();
        released.spec.released_at = Some(Time(Timestamp::now()));
        // Optimistic locking: a holder taking the claim up at this moment wins.
        match api
            .replace(&claim.name_any(), &PostParams::default(), &released)
            .await
        {
            Ok(_) => info!(
                hostname = %claim.spec.hostname,
                namespace = %claim.spec.namespace,
                ?reservation,
                "holder gone: hostname reserved for its namespace"
            ),
            Err(kube::Error::Api(status)) if status.code == 409 => {}
            Err(err) => return Err(err.into()),
        }
        return Ok(Action::requeue(reservation.max(Duration::from_secs(1))));
    };
    if !gone {
        // Taken up again by its namespace: whoever took it clears the release.
        return Ok(Action::requeue(RECHECK));
    }
    let expires = released_at + reservation;
    let now = Timestamp::now();
    if now < expires {
        let left = Duration::try_from(expires - now).unwrap_or(Duration::from_secs(1));
        return Ok(Action::requeue(left.max(Duration::from_secs(1))));
    }
    let delete = DeleteParams {
        preconditions: Some(Preconditions {
            resource_version: claim.resource_version(),
            uid: claim.uid(),
        }),
        ..DeleteParams::default()
    };
    match api.delete(&claim.name_any(), &delete).await {
        Ok(_) => info!(
            hostname = %claim.spec.hostname,
            namespace = %claim.spec.namespace,
            "reservation over: hostname free"
        ),
        // Taken up or already gone: the next event says which.
        Err(kube::Error::Api(status)) if status.code == 409 || status.code == 404 => {}
        Err(err) => return Err(err.into()),
    }
    Ok(Action::await_change())
}

fn error_policy(
    obj: Arc<DeserializeGuard<HostnameClaim>>,
    error: &Error,
    _ctx: Arc<Context>,
) -> Action {
    let delay = backoff(&CLAIM_FAILURES, &obj.name_any());
    warn!(claim = %obj.name_any(), reason = error.reason(), error = %error, ?delay, "reconcile failed; retrying");
    Action::requeue(delay)
}
