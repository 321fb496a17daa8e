//! Which of several Domains of one namespace serves a hostname that namespace owns (under
//! the base domain, where no TXT record proves anything). Which *namespace* owns a
//! hostname is decided by [`crate::hostnames`]; this only settles ties inside it:
//!
//! - the owner is the Domain whose verification succeeded first (`status.verification
//!   .verifiedAt`), among those not being deleted;
//! - ties (same second) go to the older Domain (`creationTimestamp`), then to the smaller
//!   `namespace/name`, so every reconcile of every Domain agrees on one owner;
//! - a Domain whose hostname has an owner is refused without a DNS lookup; a Domain that
//!   lost a race keeps no verification of its own and must verify again once the owner is
//!   gone;
//! - while nobody has verified, every claimant may try: the DNS record decides.

use k8s_openapi::jiff::Timestamp;

use crate::api::domain::Domain;

/// One Domain's claim on a hostname, as the cluster-wide list shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claim {
    pub namespace: String,
    pub name: String,
    /// Canonical hostname (see [`crate::dns::normalize`]).
    pub hostname: String,
    pub verified_at: Option<Timestamp>,
    pub created: Option<Timestamp>,
    /// Being deleted: no longer holds the hostname.
    pub deleting: bool,
}

impl Claim {
    /// The claim of a Domain; `None` when its hostname is not valid (it claims nothing).
    pub fn of(domain: &Domain, allow_wildcard: bool) -> Option<Claim> {
        let hostname = crate::dns::normalize(&domain.spec.hostname, allow_wildcard).ok()?;
        Some(Claim {
            namespace: domain.metadata.namespace.clone().unwrap_or_default(),
            name: domain.metadata.name.clone().unwrap_or_default(),
            hostname,
            verified_at: domain
                .status
                .as_ref()
                .and_then(|s| s.verification.as_ref())
                .and_then(|v| v.verified_at.as_ref())
                .map(|t| t.0),
            created: domain.metadata.creation_timestamp.as_ref().map(|t| t.0),
            deleting: domain.metadata.deletion_timestamp.is_some(),
        })
    }

    fn is_same(&self, other: &Claim) -> bool {
        self.namespace == other.namespace && self.name == other.name
    }

    /// Orders verified claims: earlier verification, then older object, then name.
    fn precedence(&self) -> (Option<Timestamp>, Option<Timestamp>, &str, &str) {
        (self.verified_at, self.created, &self.namespace, &self.name)
    }
}

/// Where a Domain stands on its hostname.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Standing {
    /// This Domain is the verified owner.
    Owner,
    /// Nobody owns the hostname yet: verify by DNS, first success wins.
    Unclaimed,
    /// Another Domain owns the hostname.
    Taken {
        namespace: String,
        name: String,
        same_namespace: bool,
    },
}

/// The standing of `me` among `all` claims (which may include `me`).
pub fn standing(me: &Claim, all: &[Claim]) -> Standing {
    let owner = all
        .iter()
        .chain(std::iter::once(me))
        .filter(|c| c.hostname == me.hostname && !c.deleting && c.verified_at.is_some())
        .min_by(|a, b| a.precedence().cmp(&b.precedence()));
    match owner {
        None => Standing::Unclaimed,
        Some(owner) if owner.is_same(me) => Standing::Owner,
        Some(owner) => Standing::Taken {
            namespace: owner.namespace.clone(),
            name: owner.name.clone(),
            same_namespace: owner.namespace == me.namespace,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> Option<Timestamp> {
        Some(Timestamp::from_second(seconds).unwrap())
    }

    fn claim(ns: &str, name: &str, verified: Option<Timestamp>, created: i64) -> Claim {
        Claim {
            namespace: ns.into(),
            name: name.into(),
            hostname: "shop.example.com".into(),
            verified_at: verified,
            created: at(created),
            deleting: false,
        }
    }

    #[test]
    fn nobody_verified_means_anyone_may_try() {
        let a = claim("team-a", "shop", None, 1);
        let b = claim("team-b", "shop", None, 2);
        assert_eq!(standing(&a, &[a.clone(), b.clone()]), Standing::Unclaimed);
        assert_eq!(standing(&b, &[a, b.clone()]), Standing::Unclaimed);
    }

    #[test]
    fn the_first_verified_claim_wins_even_if_created_later() {
        let older = claim("team-a", "shop", None, 1);
        let verified = claim("team-b", "shop", at(50), 10);
        let all = [older.clone(), verified.clone()];
        assert_eq!(standing(&verified, &all), Standing::Owner);
        assert_eq!(
            standing(&older, &all),
            Standing::Taken {
                namespace: "team-b".into(),
                name: "shop".into(),
                same_namespace: false
            }
        );
    }

    #[test]
    fn two_verified_claims_resolve_the_same_way_from_both_sides() {
        let a = claim("team-a", "shop", at(100), 5);
        let b = claim("team-b", "shop", at(100), 3);
        let all = [a.clone(), b.clone()];
        // Same second: the older object wins, whichever side asks.
        assert_eq!(standing(&b, &all), Standing::Owner);
        assert!(matches!(standing(&a, &all), Standing::Taken { .. }));

        let c = claim("team-c", "shop", at(100), 3);
        let all = [b.clone(), c.clone()];
        assert_eq!(standing(&b, &all), Standing::Owner, "then the name decides");
        assert!(matches!(standing(&c, &all), Standing::Taken { .. }));

        let earlier = claim("team-z", "shop", at(99), 9);
        assert_eq!(standing(&earlier, &[a, b, c]), Standing::Owner);
    }

    #[test]
    fn deleting_the_owner_frees_the_hostname() {
        let mut owner = claim("team-a", "shop", at(10), 1);
        let waiting = claim("team-b", "shop", None, 2);
        owner.deleting = true;
        assert_eq!(
            standing(&waiting, &[owner.clone(), waiting.clone()]),
            Standing::Unclaimed
        );
        // And once the object is gone from the list too.
        assert_eq!(
            standing(&waiting, std::slice::from_ref(&waiting)),
            Standing::Unclaimed
        );
    }

    #[test]
    fn a_second_domain_in_the_same_namespace_is_refused_too() {
        let owner = claim("team-a", "shop", at(10), 1);
        let twin = claim("team-a", "shop-2", None, 2);
        assert_eq!(
            standing(&twin, &[owner, twin.clone()]),
            Standing::Taken {
                namespace: "team-a".into(),
                name: "shop".into(),
                same_namespace: true
            }
        );
    }

    #[test]
    fn other_hostnames_do_not_compete() {
        let mut other = claim("team-a", "www", at(1), 1);
        other.hostname = "www.example.com".into();
        let me = claim("team-b", "shop", None, 2);
        assert_eq!(standing(&me, &[other]), Standing::Unclaimed);
    }
}
