//! Ownership of a hostname, proven by a DNS TXT record: which record a Domain asks for,
//! how a lookup's answer is judged, and the lookup itself (hickory-resolver against the
//! nameserver the operator is configured with).
//!
//! The record is `_clouddeck.<hostname>` (for `*.example.com`: `_clouddeck.example.com`)
//! with the value `clouddeck-verification=<token>`. The token is a SHA-256 of the Domain's
//! UID (random, assigned by the API server), so:
//! - each Domain object has its own token; a Domain created in another namespace for the
//!   same hostname gets a different one, so a record left behind by a previous owner
//!   proves nothing for a newcomer;
//! - nobody can compute it before the Domain exists, and it reveals nothing about the
//!   namespace or the name of the Domain (the value is public in DNS);
//! - it needs no key: every replica computes the same token, across restarts.
//!
//! Deleting and re-creating a Domain changes its token; the record must then be updated.

use std::net::SocketAddr;
use std::time::Duration;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::net::NetError;
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::RData;

/// First label of every verification record.
pub const RECORD_LABEL: &str = "_clouddeck";
/// Prefix of every verification value, so the record says what it is for.
pub const VALUE_PREFIX: &str = "clouddeck-verification=";

/// The TXT record a Domain asks its owner to create.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerificationRecord {
    pub name: String,
    pub value: String,
}

impl VerificationRecord {
    /// The record for a Domain with this canonical `hostname` and `uid`.
    pub fn for_domain(hostname: &str, uid: &str) -> Self {
        let zone = hostname.strip_prefix("*.").unwrap_or(hostname);
        let digest = ring::digest::digest(
            &ring::digest::SHA256,
            format!("clouddeck.io/domain-verification\0{uid}").as_bytes(),
        );
        let token: String = digest.as_ref()[..20]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        VerificationRecord {
            name: format!("{RECORD_LABEL}.{zone}"),
            value: format!("{VALUE_PREFIX}{token}"),
        }
    }
}

/// What the nameserver said about the verification record's name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TxtAnswer {
    /// TXT records exist; each is its character-strings joined.
    Records(Vec<String>),
    /// The name exists (or the zone answered NOERROR) but holds no TXT record.
    NoRecords,
    /// NXDOMAIN: the name does not exist.
    NameNotFound,
    /// No answer: timeout, connection refused, network unreachable.
    Unreachable(String),
    /// The server answered with an error (SERVFAIL, REFUSED...).
    ServerError(String),
}

/// The verdict on a Domain's TXT record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verification {
    /// A TXT record at the name holds the expected value.
    Verified,
    /// The name exists but has no TXT record.
    RecordMissing,
    /// TXT records exist at the name, none with the expected value. `found` is one of
    /// them (public DNS data), shortened, to help spot typos.
    WrongValue { found: String, count: usize },
    /// NXDOMAIN.
    NameNotFound,
    /// The nameserver could not be reached.
    ResolverUnreachable(String),
    /// The nameserver answered with an error.
    LookupFailed(String),
}

/// Judges an answer against the expected value. Values are compared after trimming
/// whitespace and surrounding quotes, which DNS control panels often add.
pub fn judge(answer: &TxtAnswer, expected: &str) -> Verification {
    match answer {
        TxtAnswer::Records(values) if values.is_empty() => Verification::RecordMissing,
        TxtAnswer::Records(values) => {
            let clean = |v: &str| v.trim().trim_matches('"').trim().to_owned();
            if values.iter().any(|v| clean(v) == expected) {
                Verification::Verified
            } else {
                let found = values
                    .iter()
                    .map(|v| clean(v))
                    .find(|v| v.starts_with(VALUE_PREFIX))
                    .unwrap_or_else(|| clean(&values[0]));
                Verification::WrongValue {
                    found: shorten(&found, 80),
                    count: values.len(),
                }
            }
        }
        TxtAnswer::NoRecords => Verification::RecordMissing,
        TxtAnswer::NameNotFound => Verification::NameNotFound,
        TxtAnswer::Unreachable(why) => Verification::ResolverUnreachable(why.clone()),
        TxtAnswer::ServerError(why) => Verification::LookupFailed(why.clone()),
    }
}

fn shorten(text: &str, max_chars: usize) -> String {
    if text.chars().count() <= max_chars {
        return text.to_owned();
    }
    let mut short: String = text.chars().take(max_chars).collect();
    short.push('…');
    short
}

/// Looks up TXT records, uncached, so that a record the user just created is seen at the
/// next re-check rather than after a negative-cache TTL.
#[derive(Clone)]
pub struct TxtResolver {
    resolver: TokioResolver,
    /// For messages: which server was asked.
    server: String,
}

impl std::fmt::Debug for TxtResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TxtResolver")
            .field("server", &self.server)
            .finish()
    }
}

impl TxtResolver {
    /// A resolver asking `server` (UDP, then TCP for truncated answers), or the nameservers
    /// of /etc/resolv.conf when `None`.
    pub fn new(server: Option<SocketAddr>) -> Result<Self, NetError> {
        let provider = TokioRuntimeProvider::default();
        let (mut builder, name) = match server {
            Some(addr) => {
                let mut ns = NameServerConfig::udp_and_tcp(addr.ip());
                for connection in &mut ns.connections {
                    connection.port = addr.port();
                }
                let config = ResolverConfig::from_name_servers(vec![ns]);
                (
                    TokioResolver::builder_with_config(config, provider),
                    addr.to_string(),
                )
            }
            None => (
                TokioResolver::builder(provider)?,
                "the system resolver".to_owned(),
            ),
        };
        let options: &mut ResolverOpts = builder.options_mut();
        options.cache_size = 0;
        options.timeout = Duration::from_secs(3);
        options.attempts = 2;
        options.ndots = 0;
        Ok(TxtResolver {
            resolver: builder.build()?,
            server: name,
        })
    }

    /// The server this resolver asks, for messages.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// The TXT records at `name` (a fully qualified name, without the trailing dot).
    pub async fn lookup(&self, name: &str) -> TxtAnswer {
        match self.resolver.txt_lookup(format!("{name}.")).await {
            Ok(lookup) => TxtAnswer::Records(
                lookup
                    .answers()
                    .iter()
                    .filter_map(|record| match &record.data {
                        RData::TXT(txt) => Some(
                            txt.txt_data
                                .iter()
                                .map(|part| String::from_utf8_lossy(part))
                                .collect::<String>(),
                        ),
                        _ => None,
                    })
                    .collect(),
            ),
            Err(err) if err.is_nx_domain() => TxtAnswer::NameNotFound,
            Err(err) if err.is_no_records_found() => TxtAnswer::NoRecords,
            Err(err @ (NetError::Timeout | NetError::Io(_) | NetError::NoConnections)) => {
                TxtAnswer::Unreachable(format!("{} did not answer: {err}", self.server))
            }
            Err(err) => TxtAnswer::ServerError(format!("{} answered: {err}", self.server)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UID: &str = "8f14e45f-ceea-467f-a2d9-5b8e3c1e0f11";

    #[test]
    fn record_name_and_value() {
        let record = VerificationRecord::for_domain("shop.example.com", UID);
        assert_eq!(record.name, "_clouddeck.shop.example.com");
        assert!(record.value.starts_with(VALUE_PREFIX));
        assert_eq!(record.value.len(), VALUE_PREFIX.len() + 40);
        assert!(!record.value.contains(UID), "the UID is not shown as is");
        // Stable across calls (and so across replicas and restarts).
        assert_eq!(
            record,
            VerificationRecord::for_domain("shop.example.com", UID)
        );
    }

    #[test]
    fn each_domain_object_has_its_own_token() {
        let a = VerificationRecord::for_domain("shop.example.com", UID);
        let b = VerificationRecord::for_domain(
            "shop.example.com",
            "0a2b7c55-1d3e-4f60-9a8b-7c6d5e4f3a21",
        );
        assert_eq!(a.name, b.name);
        assert_ne!(a.value, b.value);
    }

    #[test]
    fn wildcard_record_lives_at_the_zone() {
        let record = VerificationRecord::for_domain("*.example.com", UID);
        assert_eq!(record.name, "_clouddeck.example.com");
    }

    #[test]
    fn answers_are_judged() {
        let expected = "clouddeck-verification=abc";
        let found =
            |values: &[&str]| TxtAnswer::Records(values.iter().map(|v| v.to_string()).collect());
        assert_eq!(judge(&found(&[expected]), expected), Verification::Verified);
        assert_eq!(
            judge(
                &found(&["v=spf1 -all", "\"clouddeck-verification=abc\" "]),
                expected
            ),
            Verification::Verified
        );
        assert_eq!(
            judge(
                &found(&["v=spf1 -all", "clouddeck-verification=abd"]),
                expected
            ),
            Verification::WrongValue {
                found: "clouddeck-verification=abd".into(),
                count: 2
            }
        );
        assert_eq!(judge(&found(&[]), expected), Verification::RecordMissing);
        assert_eq!(
            judge(&TxtAnswer::NoRecords, expected),
            Verification::RecordMissing
        );
        assert_eq!(
            judge(&TxtAnswer::NameNotFound, expected),
            Verification::NameNotFound
        );
        assert!(matches!(
            judge(&TxtAnswer::Unreachable("timeout".into()), expected),
            Verification::ResolverUnreachable(_)
        ));
        assert!(matches!(
            judge(&TxtAnswer::ServerError("SERVFAIL".into()), expected),
            Verification::LookupFailed(_)
        ));
    }

    #[test]
    fn long_wrong_values_are_shortened() {
        let long = "x".repeat(300);
        let Verification::WrongValue { found, .. } = judge(
            &TxtAnswer::Records(vec![long]),
            "clouddeck-verification=abc",
        ) else {
            panic!("expected a wrong value");
        };
        assert_eq!(found.chars().count(), 81);
    }

    #[tokio::test]
    async fn an_unreachable_nameserver_is_reported_as_such() {
        // Nothing listens on port 9 of loopback: the lookup times out or is refused.
        let resolver = TxtResolver::new(Some("127.0.0.1:9".parse().unwrap())).unwrap();
        let answer = resolver.lookup("_clouddeck.example.com").await;
        assert!(matches!(answer, TxtAnswer::Unreachable(_)), "{answer:?}");
    }
}
