//! Leader election through a `coordination.k8s.io/v1` Lease (kube-lease-manager).
//!
//! Every replica runs [`LeaderElection`]; the one holding the Lease runs the controllers,
//! the others are hot standbys. On shutdown the leader releases the Lease so that a standby
//! takes over as soon as its wait for the old claim ends, instead of after a crash timeout.

use std::time::{Duration, SystemTime};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use kube::{Api, Client};
use kube_lease_manager::{LeaseManagerBuilder, LeaseManagerError};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::shutdown::Stop;
use crate::{Error, Result};

/// What this replica knows about its role.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Leadership {
    /// Just started: it has neither won the Lease nor seen another live holder yet.
    Unknown,
    /// Holds the Lease: runs the controllers.
    Leader,
    /// Another replica holds the Lease: waits to take over.
    Standby,
}

impl Leadership {
    pub fn as_str(self) -> &'static str {
        match self {
            Leadership::Unknown => "unknown",
            Leadership::Leader => "leader",
            Leadership::Standby => "standby",
        }
    }
}

/// Which Lease to compete for, and as whom.
#[derive(Clone, Debug)]
pub struct LeaseSettings {
    pub name: String,
    pub namespace: String,
    pub identity: String,
    pub duration: Duration,
    pub renew_before: Duration,
}

/// A running election: follow [`LeaderElection::leadership`]; await
/// [`LeaderElection::finished`] after stopping it to know the Lease was released.
pub struct LeaderElection {
    leadership: watch::Receiver<Leadership>,
    task: JoinHandle<Result<()>>,
}

/// How long shutdown waits for the Lease release to reach the API server.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(5);
/// How often a replica that does not know its role yet looks at the Lease itself.
const PROBE_INTERVAL: Duration = Duration::from_secs(1);

impl LeaderElection {
    /// Creates the Lease if needed and starts competing for it until `stop` fires.
    pub async fn start(client: Client, settings: LeaseSettings, stop: Stop) -> Result<Self> {
        let manager = LeaseManagerBuilder::new(client.clone(), &settings.name)
            .with_namespace(&settings.namespace)
            .with_identity(&settings.identity)
            .with_duration(settings.duration.as_secs())
            .with_grace(settings.renew_before.as_secs())
            .build()
            .await
            .map_err(|source| election_error(&settings, source))?;
        let (tx, leadership) = watch::channel(Leadership::Unknown);
        let lease_api = Api::<Lease>::namespaced(client, &settings.namespace);
        let task = tokio::spawn(elect(manager, lease_api, settings, tx, stop));
        Ok(LeaderElection { leadership, task })
    }

    pub fn leadership(&self) -> watch::Receiver<Leadership> {
        self.leadership.clone()
    }

    /// Completes when the election ended: after `stop` (with the Lease released), or on a
    /// failure of the election itself.
    pub async fn finished(self) -> Result<()> {
        self.task
            .await
            .map_err(|e| Error::TaskFailed("leader election", e))?
    }
}

async fn elect(
    manager: kube_lease_manager::LeaseManager,
    lease_api: Api<Lease>,
    settings: LeaseSettings,
    tx: watch::Sender<Leadership>,
    stop: Stop,
) -> Result<()> {
    let (mut holds_lease, manager_task) = manager.watch().await;
    let mut probe = tokio::time::interval(PROBE_INTERVAL);
    let stopped = stop.stopped();
    tokio::pin!(stopped);

    loop {
        tokio::select! {
            _ = &mut stopped => break,
            changed = holds_lease.changed() => {
                if changed.is_err() {
                    // The manager's task ended on its own: that is a failure; report its error.
                    return match manager_task.await {
                        Ok(Err(source)) => Err(election_error(&settings, source)),
                        Ok(Ok(_)) => Err(election_error(
                            &settings,
                            LeaseManagerError::InconsistentState("lease manager stopped".into()),
                        )),
                        Err(e) => Err(Error::TaskFailed("lease manager", e)),
                    };
                }
                let leading = *holds_lease.borrow_and_update();
                let now = if leading { Leadership::Leader } else { Leadership::Standby };
                if leading {
                    info!(lease = %settings.name, identity = %settings.identity, "became leader");
                } else {
                    warn!(lease = %settings.name, identity = %settings.identity, "lost leadership");
                }
                tx.send_replace(now);
            }
            // The lease manager only reports when *we* win or lose, so a fresh standby would
            // stay `Unknown` for as long as the leader lives. Look at the Lease to find out.
            _ = probe.tick(), if *tx.borrow() == Leadership::Unknown => {
                match lease_api.get_opt(&settings.name).await {
                    Ok(lease) => {
                        let seen = observed_role(lease.and_then(|l| l.spec).as_ref(), &settings.identity, SystemTime::now());
                        if seen == Leadership::Standby && *tx.borrow() == Leadership::Unknown {
                            info!(lease = %settings.name, identity = %settings.identity, "standing by: another replica leads");
                            tx.send_replace(Leadership::Standby);
                        }
                    }
                    Err(err) => debug!(error = %crate::one_line(&err), "cannot read the Lease yet"),
                }
            }
        }
    }

    // Closing the channel makes the manager release the Lease (if it holds it) and return.
    let was_leader = *tx.borrow() == Leadership::Leader;
    drop(holds_lease);
    match tokio::time::timeout(RELEASE_TIMEOUT, manager_task).await {
        Ok(Ok(Ok(_))) => {
            if was_leader {
                info!(lease = %settings.name, identity = %settings.identity, "released the Lease");
            } else {
                info!(lease = %settings.name, identity = %settings.identity, "left the election");
            }
            Ok(())
        }
        Ok(Ok(Err(source))) => Err(election_error(&settings, source)),
        Ok(Err(e)) => Err(Error::TaskFailed("lease manager", e)),
        Err(_) => {
            warn!(lease = %settings.name, "timed out releasing the Lease; a standby takes over when it expires");
            Ok(())
        }
    }
}

fn election_error(settings: &LeaseSettings, source: LeaseManagerError) -> Error {
    Error::LeaderElection {
        namespace: settings.namespace.clone(),
        name: settings.name.clone(),
        source: Box::new(source),
    }
}

/// What a replica that has not won the Lease can conclude from reading it: `Standby` when
/// another identity holds an unexpired claim, else `Unknown` (the Lease is free or stale,
/// so our lease manager is about to take it, or someone else is).
pub fn observed_role(spec: Option<&LeaseSpec>, identity: &str, now: SystemTime) -> Leadership {
    let Some(spec) = spec else {
        return Leadership::Unknown;
    };
    let (Some(holder), Some(renewed), Some(duration)) = (
        spec.holder_identity.as_deref(),
        spec.renew_time.as_ref(),
        spec.lease_duration_seconds,
    ) else {
        return Leadership::Unknown;
    };
    let expires = SystemTime::from(renewed.0) + Duration::from_secs(duration.max(0) as u64);
    if !holder.is_empty() && holder != identity && expires > now {
        Leadership::Standby
    } else {
        Leadership::Unknown
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;

    use super::*;

    fn spec(holder: Option<&str>, renewed: Option<SystemTime>, duration: Option<i32>) -> LeaseSpec {
        LeaseSpec {
            holder_identity: holder.map(str::to_owned),
            renew_time: renewed.map(|t| MicroTime(t.try_into().unwrap())),
            lease_duration_seconds: duration,
            ..LeaseSpec::default()
        }
    }

    #[test]
    fn another_live_holder_means_standby() {
        let now = SystemTime::now();
        let lease = spec(Some("other"), Some(now - Duration::from_secs(2)), Some(5));
        assert_eq!(observed_role(Some(&lease), "me", now), Leadership::Standby);
    }

    #[test]
    fn free_expired_or_own_lease_is_not_a_conclusion() {
        let now = SystemTime::now();
        let expired = spec(Some("other"), Some(now - Duration::from_secs(10)), Some(5));
        let released = spec(None, None, None);
        let ours = spec(Some("me"), Some(now), Some(5));
        for lease in [expired, released, ours] {
            assert_eq!(
                observed_role(Some(&lease), "me", now),
                Leadership::Unknown,
                "{lease:?}"
            );
        }
        assert_eq!(observed_role(None, "me", now), Leadership::Unknown);
    }
}
