//! Taking and reading [`HostnameClaim`]s: the pure decision ([`standing`]) and the API
//! calls around it ([`take`], [`key_holder`]). Claims are created and replaced with
//! optimistic locking (never server-side apply): the point is that two claimants racing for
//! one hostname cannot both win.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::PostParams;
use kube::{Api, Client, ResourceExt};

use crate::api::domain::Domain;
use crate::api::hostname_claim::{ClaimHolder, HolderKind, HostnameClaim, HostnameClaimSpec};
use crate::api::project::Project;
use crate::labels::{MANAGED_BY, MANAGER};

use super::scheme::claim_name;

/// The object that asks for a hostname.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claimant {
    pub namespace: String,
    pub kind: HolderKind,
    pub name: String,
    pub uid: String,
}

impl Claimant {
    pub fn of<K: kube::Resource>(object: &K, kind: HolderKind) -> Claimant {
        let meta = object.meta();
        Claimant {
            namespace: meta.namespace.clone().unwrap_or_default(),
            kind,
            name: meta.name.clone().unwrap_or_default(),
            uid: meta.uid.clone().unwrap_or_default(),
        }
    }

    fn holder(&self) -> ClaimHolder {
        ClaimHolder {
            kind: self.kind,
            name: self.name.clone(),
            uid: self.uid.clone(),
        }
    }
}

/// Where a claimant stands on a hostname.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Standing {
    /// It holds the claim.
    Held,
    /// Nobody does: the first to create the claim holds it.
    Free,
    /// Its own namespace's claim whose holder is gone (or is an earlier object of the same
    /// kind and name): it may take the claim up.
    Reserved,
    /// Another live object of the same namespace holds it.
    HeldHere { kind: HolderKind, name: String },
    /// Another namespace owns it (held, or reserved after its holder went).
    Elsewhere { namespace: String },
}

/// The standing of `me` on a hostname whose claim is `claim`; `holder_gone` says whether
/// the claim's holder no longer exists (only asked of a same-namespace claim held by
/// another object).
pub fn standing(claim: Option<&HostnameClaim>, me: &Claimant, holder_gone: bool) -> Standing {
    let Some(claim) = claim else {
        return Standing::Free;
    };
    let spec = &claim.spec;
    if spec.namespace != me.namespace {
        return Standing::Elsewhere {
            namespace: spec.namespace.clone(),
        };
    }
    if spec.holder.uid == me.uid {
        return Standing::Held;
    }
    // Names are unique per namespace and kind: an earlier holder of my kind and name is
    // an object that no longer exists.
    let earlier_me = spec.holder.kind == me.kind && spec.holder.name == me.name;
    if earlier_me || spec.released_at.is_some() || holder_gone {
        Standing::Reserved
    } else {
        Standing::HeldHere {
            kind: spec.holder.kind,
            name: spec.holder.name.clone(),
        }
    }
}

/// Whether the holder of `claim` is gone: no object of its kind, name and uid exists in
/// its namespace. A Terminating holder still holds.
pub async fn holder_gone(client: &Client, claim: &HostnameClaim) -> kube::Result<bool> {
    let spec = &claim.spec;
    let uid = match spec.holder.kind {
        HolderKind::Project => Api::<Project>::namespaced(client.clone(), &spec.namespace)
            .get_metadata_opt(&spec.holder.name)
            .await?
            .and_then(|p| p.metadata.uid),
        HolderKind::Domain => Api::<Domain>::namespaced(client.clone(), &spec.namespace)
            .get_metadata_opt(&spec.holder.name)
            .await?
            .and_then(|d| d.metadata.uid),
    };
    Ok(uid.as_deref() != Some(spec.holder.uid.as_str()))
}

/// The claim on `hostname`, read from the API (not a cache: a decision to serve must not
/// rest on a stale copy). A claim under another hostname's name (a hash collision of two
/// wildcards) counts as another namespace's.
async fn read(api: &Api<HostnameClaim>, hostname: &str) -> kube::Result<Option<HostnameClaim>> {
    api.get_opt(&claim_name(hostname)).await
}

/// Where `me` stands on `hostname`, asking the API whether a same-namespace holder is gone.
pub async fn peek(client: &Client, hostname: &str, me: &Claimant) -> kube::Result<Standing> {
    let api = Api::<HostnameClaim>::all(client.clone());
    let claim = read(&api, hostname).await?;
    judge(client, claim.as_ref(), hostname, me).await
}

async fn judge(
    client: &Client,
    claim: Option<&HostnameClaim>,
    hostname: &str,
    me: &Claimant,
) -> kube::Result<Standing> {
    if let Some(claim) = claim
        && claim.spec.hostname != hostname
    {
        return Ok(Standing::Elsewhere {
            namespace: claim.spec.namespace.clone(),
        });
    }
    let first = standing(claim, me, false);
    if let (Some(claim), Standing::HeldHere { .. }) = (claim, &first)
        && holder_gone(client, claim).await?
    {
        return Ok(Standing::Reserved);
    }
    Ok(first)
}

/// Takes `hostname` for `me` if it is free or reserved for its namespace, and returns
/// where `me` then stands: [`Standing::Held`] on success. Races are settled by the
/// apiserver: a create that finds the name taken, or a replace whose resourceVersion moved
/// on, looks again.
pub async fn take(client: &Client, hostname: &str, me: &Claimant) -> kube::Result<Standing> {
    let api = Api::<HostnameClaim>::all(client.clone());
    for _ in 0..5 {
        let claim = read(&api, hostname).await?;
        let standing = judge(client, claim.as_ref(), hostname, me).await?;
        let result = match (claim, &standing) {
            (None, Standing::Free) => api
                .create(&PostParams::default(), &new_claim(hostname, me))
                .await
                .map(|_| ()),
            (Some(mut claim), Standing::Reserved) | (Some(mut claim), Standing::Held)
                if claim.spec.holder != me.holder() || claim.spec.released_at.is_some() =>
            {
                claim.spec.holder = me.holder();
                claim.spec.released_at = None;
                // replace carries the resourceVersion read: optimistic locking.
                api.replace(&claim.name_any(), &PostParams::default(), &claim)
                    .await
                    .map(|_| ())
            }
            (_, Standing::Held) => return Ok(Standing::Held),
            (_, other) => return Ok(other.clone()),
        };
        match result {
            Ok(()) => return Ok(Standing::Held),
            Err(kube::Error::Api(status)) if status.code == 409 => continue,
            Err(err) => return Err(err),
        }
    }
    // Five lost races in a row: report it as held by someone else, and look again later.
    peek(client, hostname, me).await
}

/// Takes `hostname` for `me` when a cache says nobody holds it: the claim is created
/// without reading it first (the create fails if the cache was wrong, and [`take`] then
/// reads). Returns the standing and, when this call created the claim, its
/// `resourceVersion`.
pub async fn take_free(
    client: &Client,
    hostname: &str,
    me: &Claimant,
) -> kube::Result<(Standing, Option<String>)> {
    let api = Api::<HostnameClaim>::all(client.clone());
    match api
        .create(&PostParams::default(), &new_claim(hostname, me))
        .await
    {
        Ok(created) => Ok((Standing::Held, created.metadata.resource_version)),
        Err(kube::Error::Api(status)) if status.code == 409 => {
            Ok((take(client, hostname, me).await?, None))
        }
        Err(err) => Err(err),
    }
}

fn new_claim(hostname: &str, me: &Claimant) -> HostnameClaim {
    HostnameClaim {
        metadata: ObjectMeta {
            name: Some(claim_name(hostname)),
            labels: Some(
                [
                    (MANAGED_BY.to_owned(), MANAGER.to_owned()),
                    ("clouddeck.io/namespace".to_owned(), me.namespace.clone()),
                ]
                .into(),
            ),
            ..Default::default()
        },
        spec: HostnameClaimSpec {
            hostname: hostname.to_owned(),
            namespace: me.namespace.clone(),
            holder: me.holder(),
            released_at: None,
        },
    }
}

/// Whether `me` holds the claim on `hostname`. One read: for a claimant that has just read
/// itself from the API, so its being alive needs no second look.
pub async fn holds(client: &Client, hostname: &str, me: &Claimant) -> kube::Result<bool> {
    let claim = read(&Api::<HostnameClaim>::all(client.clone()), hostname).await?;
    Ok(claim.is_some_and(|c| {
        c.spec.hostname == hostname && standing(Some(&c), me, false) == Standing::Held
    }))
}

/// The claim that decides `<key>.<base>` hostnames, if one exists and its holder is a live
/// Project: the namespace in it owns every name generated from the key.
pub async fn key_holder(
    client: &Client,
    key_hostname: &str,
) -> kube::Result<Option<HostnameClaim>> {
    let api = Api::<HostnameClaim>::all(client.clone());
    let Some(claim) = read(&api, key_hostname).await? else {
        return Ok(None);
    };
    if claim.spec.hostname != key_hostname
        || claim.spec.holder.kind != HolderKind::Project
        || claim.spec.released_at.is_some()
        || holder_gone(client, &claim).await?
    {
        return Ok(None);
    }
    Ok(Some(claim))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use k8s_openapi::jiff::Timestamp;

    fn me(namespace: &str, kind: HolderKind, name: &str, uid: &str) -> Claimant {
        Claimant {
            namespace: namespace.into(),
            kind,
            name: name.into(),
            uid: uid.into(),
        }
    }

    fn claim(holder: &Claimant, released: bool) -> HostnameClaim {
        HostnameClaim::new(
            "web.apps.example.com",
            HostnameClaimSpec {
                hostname: "web.apps.example.com".into(),
                namespace: holder.namespace.clone(),
                holder: holder.holder(),
                released_at: released.then(|| Time(Timestamp::now())),
            },
        )
    }

    #[test]
    fn no_claim_is_free_and_ones_own_is_held() {
        let a = me("team-a", HolderKind::Project, "web", "u1");
        assert_eq!(standing(None, &a, false), Standing::Free);
        assert_eq!(standing(Some(&claim(&a, false)), &a, false), Standing::Held);
    }

    #[test]
    fn another_namespace_never_gets_in_even_while_reserved() {
        let a = me("team-a", HolderKind::Project, "web", "u1");
        let b = me("team-b", HolderKind::Project, "web", "u2");
        for released in [false, true] {
            for gone in [false, true] {
                assert_eq!(
                    standing(Some(&claim(&a, released)), &b, gone),
                    Standing::Elsewhere {
                        namespace: "team-a".into()
                    }
                );
            }
        }
    }

    #[test]
    fn a_recreated_object_takes_its_namespaces_claim_back() {
        let old = me("team-a", HolderKind::Project, "web", "u1");
        let new = me("team-a", HolderKind::Project, "web", "u9");
        assert_eq!(
            standing(Some(&claim(&old, false)), &new, false),
            Standing::Reserved
        );
    }

    #[test]
    fn a_live_holder_in_the_same_namespace_keeps_it() {
        let holder = me("team-a", HolderKind::Domain, "shop", "u1");
        let twin = me("team-a", HolderKind::Domain, "shop-2", "u2");
        assert_eq!(
            standing(Some(&claim(&holder, false)), &twin, false),
            Standing::HeldHere {
                kind: HolderKind::Domain,
                name: "shop".into()
            }
        );
        assert_eq!(
            standing(Some(&claim(&holder, false)), &twin, true),
            Standing::Reserved
        );
        assert_eq!(
            standing(Some(&claim(&holder, true)), &twin, false),
            Standing::Reserved
        );
    }
}
