//! The HostnameClaim controller: notices when a claim's holder (a Project or Domain) is
//! gone, marks the claim released, and deletes it once `--hostname-reservation` has passed
//! (see [`crate::hostnames`]). Until then the claim keeps the hostname for its namespace.
//!
//! It watches Projects and Domains too, so a deletion is noticed at once rather than at the
//! next periodic look.

use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, PostParams, Preconditions};
use kube::core::DeserializeGuard;
use kube::runtime::controller::Action;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Resource, ResourceExt};
use tracing::{info, warn};

use super::driver::Reconciler;
use super::error::Result;
use super::{CACHE_GRACE, Context, ControllerRun, KindController, just_made};
use crate::api::domain::Domain;
use crate::api::hostname_claim::HolderKind;
use crate::api::project::Project;
use crate::hostnames::{self, Authority, HostnameClaim};

pub const NAME: &str = "hostnameclaim";

pub const CONTROLLER: KindController = KindController { name: NAME, run };

/// What a claim's reconcile reads besides the shared [`Context`]: the possible holders,
/// so that a holder that is plainly alive costs no request.
pub struct ClaimContext {
    ctx: Arc<Context>,
    /// Per-object backoff of failed reconciles ([`crate::controllers::retry`]).
    projects: Store<DeserializeGuard<Project>>,
    domains: Store<DeserializeGuard<Domain>>,
}

impl ClaimContext {
    /// Whether the cache holds `claim`'s holder, with its uid. Only this answer is taken
    /// from the cache: "gone" releases a hostname, so it is asked of the API.
    fn holder_cached(&self, claim: &HostnameClaim) -> bool {
        let holder = &claim.spec.holder;
        let (name, namespace) = (&holder.name, &claim.spec.namespace);
        let uid = match holder.kind {
            HolderKind::Project => self
                .projects
                .get(&ObjectRef::new(name).within(namespace))
                .and_then(|p| p.meta().uid.clone()),
            HolderKind::Domain => self
                .domains
                .get(&ObjectRef::new(name).within(namespace))
                .and_then(|d| d.meta().uid.clone()),
        };
        uid.as_deref() == Some(holder.uid.as_str())
    }
}

fn run(run: ControllerRun) -> BoxFuture<'static, ()> {
    async move {
        let _client = run.ctx.client.clone();
        let base = run.ctx.config.routing.base_domain.clone();
        let wildcards = run.ctx.config.domains.allow_wildcard_domains;
        let (projects, project_events) = run.cache_all::<Project>();
        let (domains, domain_events) = run.cache_all::<Domain>();
        let controller = run
            .shared_controller::<HostnameClaim>()
            // A Project's claim is on the hostname its status shows.
            .watches_stream(project_events, |guard| {
                let hostname = guard.0.as_ref().ok()?.status.as_ref()?.hostname.clone()?;
                Some(claim_ref(&hostname))
            })
            // A Domain outside the base domain claims exactly its hostname.
            .watches_stream(domain_events, move |guard| {
                let domain = guard.0.as_ref().ok()?;
                let hostname = crate::dns::normalize(&domain.spec.hostname, wildcards).ok()?;
                (hostnames::authority(&hostname, &base) == Authority::Exact)
                    .then(|| claim_ref(&hostname))
            });
        let ctx = Arc::new(ClaimContext {
            ctx: run.ctx.clone(),
            projects,
            domains,
        });
        run.run(controller, ctx).await;
    }
    .boxed()
}

fn claim_ref(hostname: &str) -> ObjectRef<DeserializeGuard<HostnameClaim>> {
    ObjectRef::new(&hostnames::claim_name(hostname))
}

impl Reconciler for ClaimContext {
    type Kind = HostnameClaim;

    fn context(&self) -> &Context {
        &self.ctx
    }

    fn reconcile<'a>(&'a self, claim: &'a HostnameClaim) -> BoxFuture<'a, Result<Action>> {
        sweep(claim, self).boxed()
    }

    // Only the operator writes claims; one it cannot read holds nothing it can act on.
    fn malformed<'a>(
        &'a self,
        guard: &'a DeserializeGuard<HostnameClaim>,
        _: &'a str,
    ) -> BoxFuture<'a, ()> {
        warn!(claim = %guard.name_any(), "cannot decode HostnameClaim; left as it is");
        async {}.boxed()
    }
}

async fn sweep(claim: &HostnameClaim, claims: &ClaimContext) -> Result<Action> {
    let ctx = &claims.ctx;
    let api = Api::<HostnameClaim>::all(ctx.client.clone());
    let cached = claims.holder_cached(claim);
    // A claim is made right after its holder was seen; this controller's cache of holders
    // may be a moment behind. A young claim waits for it (the holder's event, or this
    // requeue, wakes it) instead of asking the API: at 100 Projects created at once, that
    // was two reads per claim.
    if !cached && claim.spec.released_at.is_none() && just_made(&claim.metadata, Timestamp::now()) {
        return Ok(Action::requeue(CACHE_GRACE));
    }
    // The look when no watch event came: a safety net, like every controller's resync.
    let recheck = ctx.config.resync_period;
    let reservation = ctx.config.hostnames.hostname_reservation;
    let Some(released_at) = claim.spec.released_at.as_ref().map(|t| t.0) else {
        if cached || !hostnames::holder_gone(&ctx.client, claim).await? {
            return Ok(Action::requeue(recheck));
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
    // Released: nothing to decide before the reservation ends (a holder that comes back
    // clears the release itself), so no read until then.
    let expires = released_at + reservation;
    let now = Timestamp::now();
    if now < expires {
        let left = Duration::try_from(expires - now).unwrap_or(Duration::from_secs(1));
        return Ok(Action::requeue(left.max(Duration::from_secs(1))));
    }
    if cached || !hostnames::holder_gone(&ctx.client, claim).await? {
        // Taken up again by its namespace: whoever took it clears the release.
        return Ok(Action::requeue(recheck));
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
