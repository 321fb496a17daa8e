//! A Domain's conditions, from what the reconcile observed: the `Verified` condition for
//! each verification outcome, `CertificateReady` mirrored from cert-manager or read from
//! the user's own TLS Secret, `Ready` summing up, and when to look again. Pure:
//! unit-tested with plain values.

use std::time::Duration;

use super::certificate::Certificate;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::Timestamp;
use x509_parser::pem::Pem;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

use crate::api::conditions::{CERTIFICATE_READY, Conditions, LISTENER_READY, Status, VERIFIED};
use crate::dns::{Verification, VerificationRecord};

/// One condition's value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConditionValue {
    pub status: Status,
    pub reason: &'static str,
    pub message: String,
}

impl ConditionValue {
    pub(super) fn new(status: Status, reason: &'static str, message: impl Into<String>) -> Self {
        ConditionValue {
            status,
            reason,
            message: message.into(),
        }
    }

    pub fn is_true(&self) -> bool {
        self.status == Status::True
    }
}

/// How the hostname's ownership stands after this reconcile.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ownership {
    /// Under the operator's base domain: the operator owns the zone, no record needed.
    Internal,
    /// Verified now or earlier (the record was found once; it may be removed since).
    Verified,
    /// Not (yet) verified: what the lookup found.
    Unverified(Verification),
    /// Under the operator's base domain, and not this namespace's: its key is held by no
    /// live Project of this namespace (`key`), or it is the operator's own (`None`).
    Reserved {
        base_domain: String,
        key: Option<String>,
    },
    /// Another Domain owns the hostname.
    Taken {
        namespace: String,
        name: String,
        same_namespace: bool,
    },
}

/// `Verified` while the owner's record is missing and the grace period runs: still
/// serving, and saying until when.
pub fn record_lost_condition(
    record: &VerificationRecord,
    lost: Timestamp,
    until: Timestamp,
) -> ConditionValue {
    ConditionValue::new(
        Status::True,
        "RecordLost",
        format!(
            "the TXT record {} with this Domain's value has been missing since {lost}: the \
             hostname stops being served at {until} unless it is published again",
            record.name
        ),
    )
}

/// The `Verified` condition. `show_namespace` names the namespace that owns a taken
/// hostname; off by default, so as not to tell one tenant about another.
pub fn verified_condition(
    ownership: &Ownership,
    hostname: &str,
    record: &VerificationRecord,
    show_namespace: bool,
) -> ConditionValue {
    let create = format!(
        "create a TXT record {} with the value {:?}",
        record.name, record.value
    );
    match ownership {
        Ownership::Internal => ConditionValue::new(
            Status::True,
            "InternalHostname",
            format!("{hostname} is under the operator's base domain: no TXT record needed"),
        ),
        Ownership::Reserved { base_domain, key } => ConditionValue::new(
            Status::False,
            "ReservedHostname",
            match key {
                Some(key) => format!(
                    "spec.hostname: a name under {base_domain} belongs to the namespace whose \
                     Project holds its first label, and no Project of this namespace holds \
                     {key:?}; use a name under one of your Projects' hostnames or a hostname \
                     of your own"
                ),
                None => format!(
                    "spec.hostname: {hostname} is the operator's own: no Project's hostnames \
                     are named like it; use a name under one of your Projects' hostnames or a \
                     hostname of your own"
                ),
            },
        ),
        Ownership::Verified => ConditionValue::new(
            Status::True,
            "RecordFound",
            format!("the TXT record {} holds this Domain's token", record.name),
        ),
        Ownership::Taken {
            namespace,
            name,
            same_namespace,
        } => {
            let message = if *same_namespace {
                format!("{hostname} is already served by Domain {name} in this namespace")
            } else if show_namespace {
                format!("{hostname} is already owned by namespace {namespace}")
            } else {
                format!("{hostname} is already owned by another namespace")
            };
            ConditionValue::new(Status::False, "HostnameClaimed", message)
        }
        Ownership::Unverified(verification) => match verification {
            Verification::Verified => ConditionValue::new(
                Status::True,
                "RecordFound",
                format!("the TXT record {} holds this Domain's token", record.name),
            ),
            Verification::RecordMissing => ConditionValue::new(
                Status::False,
                "RecordMissing",
                format!("no TXT record at {}: {create}", record.name),
            ),
            Verification::WrongValue { found, count } => ConditionValue::new(
                Status::False,
                "RecordMismatch",
                format!(
                    "{count} TXT record(s) at {} but none holds this Domain's token (found {found:?}): {create}",
                    record.name
                ),
            ),
            Verification::NameNotFound => ConditionValue::new(
                Status::False,
                "NameNotFound",
                format!("{} does not exist (NXDOMAIN): {create}", record.name),
            ),
            Verification::ResolverUnreachable(why) => ConditionValue::new(
                Status::Unknown,
                "ResolverUnreachable",
                format!("cannot check {} yet, will retry: {why}", record.name),
            ),
            Verification::LookupFailed(why) => ConditionValue::new(
                Status::Unknown,
                "LookupFailed",
                format!("cannot check {} yet, will retry: {why}", record.name),
            ),
        },
    }
}

/// Where the certificate for a verified Domain stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CertificateState {
    /// cert-manager reports the Certificate Ready.
    Issued { not_after: Option<Timestamp> },
    /// cert-manager has not issued it (yet), with its message.
    Pending { message: String },
    /// A user-managed Secret serves the hostname, with its leaf certificate's expiry.
    SecretProvided { name: String, not_after: Timestamp },
    /// The named Secret does not exist.
    SecretMissing { name: String },
    /// The named Secret exists, but no certificate's expiry can be read from it.
    SecretInvalid {
        name: String,
        problem: InvalidCertificate,
    },
}

impl CertificateState {
    /// When the certificate that serves the hostname expires, if known: the one place
    /// the status and the expiry warning read it from, whoever manages the certificate.
    pub fn not_after(&self) -> Option<Timestamp> {
        match self {
            CertificateState::Issued { not_after } => *not_after,
            CertificateState::SecretProvided { not_after, .. } => Some(*not_after),
            _ => None,
        }
    }
}

/// Why a user's TLS Secret yields no certificate expiry. Carries nothing of the Secret's
/// content, and neither do the messages made from it: a `tls.crt` that is not what it
/// should be may be a private key pasted into the wrong field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InvalidCertificate {
    /// The Secret has no `tls.crt` key.
    NoTlsCrt,
    /// `tls.crt` has no well-formed PEM block.
    NotPem,
    /// `tls.crt` is PEM, but none of its blocks is a `CERTIFICATE`.
    NoCertificateBlock,
    /// The first `CERTIFICATE` block does not parse as an X.509 certificate.
    NotX509,
}

/// Reads the user's TLS Secret `name` (`spec.tls.secretName`): missing, invalid, or the
/// expiry of the certificate it serves.
pub fn secret_certificate_state(name: &str, secret: Option<&Secret>) -> CertificateState {
    let Some(secret) = secret else {
        return CertificateState::SecretMissing {
            name: name.to_owned(),
        };
    };
    let tls_crt = secret.data.as_ref().and_then(|data| data.get("tls.crt"));
    match tls_crt
        .ok_or(InvalidCertificate::NoTlsCrt)
        .and_then(|crt| leaf_not_after(&crt.0))
    {
        Ok(not_after) => CertificateState::SecretProvided {
            name: name.to_owned(),
            not_after,
        },
        Err(problem) => CertificateState::SecretInvalid {
            name: name.to_owned(),
            problem,
        },
    }
}

/// The notAfter of the first certificate of a PEM chain: the leaf, which a chain puts
/// first (as TLS sends it, RFC 8446 4.4.2). Blocks of other kinds before it are skipped; a
/// malformed block before it makes the whole value invalid. The parse errors are dropped,
/// not wrapped: their text can quote the input.
pub fn leaf_not_after(pem: &[u8]) -> Result<Timestamp, InvalidCertificate> {
    let mut seen_pem = false;
    for block in Pem::iter_from_buffer(pem) {
        let block = block.map_err(|_| InvalidCertificate::NotPem)?;
        seen_pem = true;
        if block.label != "CERTIFICATE" {
            continue;
        }
        let certificate = block
            .parse_x509()
            .map_err(|_| InvalidCertificate::NotX509)?;
        return Timestamp::from_second(certificate.validity().not_after.timestamp())
            .map_err(|_| InvalidCertificate::NotX509);
    }
    Err(if seen_pem {
        InvalidCertificate::NoCertificateBlock
    } else {
        InvalidCertificate::NotPem
    })
}

/// Reads a cert-manager Certificate's `Ready` condition and `notAfter`.
pub fn certificate_state(certificate: Option<&Certificate>) -> CertificateState {
    let waiting = || CertificateState::Pending {
        message: "waiting for cert-manager to issue the certificate".into(),
    };
    let Some(certificate) = certificate else {
        return waiting();
    };
    match certificate.ready() {
        Some(ready) if ready.status == "True" => CertificateState::Issued {
            not_after: certificate
                .status
                .as_ref()
                .and_then(|s| s.not_after.as_deref())
                .and_then(|t| t.parse().ok()),
        },
        Some(ready) => CertificateState::Pending {
            message: format!(
                "cert-manager: {}",
                ready
                    .message
                    .as_deref()
                    .unwrap_or("the certificate is not ready")
            ),
        },
        None => waiting(),
    }
}

/// What the gateway has said of a Domain's HTTPS listener, read off the object the
/// listener was applied to.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ListenerReport {
    /// Where the listener is, for messages: `ListenerSet shop-listener` or
    /// `listener domain-<uid> of Gateway clouddeck-system/clouddeck`.
    pub place: String,
    /// Whether it is in a ListenerSet (a gateway may not implement them at all).
    pub in_listener_set: bool,
    /// The ListenerSet's own conditions (`Accepted`, `Programmed`).
    pub set: Vec<Condition>,
    /// The conditions of the listener's entry in `status.listeners`; `None` when the
    /// gateway has not listed it.
    pub listener: Option<Vec<Condition>>,
}

/// The `ListenerReady` condition: the gateway's own verdict on the listener (accepted,
/// references resolved, not conflicted, programmed), named with its reason and message.
/// While it has said nothing, `Unknown` for `timeout` from the start of the `wait`, then
/// `False` until it reports: a gateway that never reports on a ListenerSet most likely does
/// not implement ListenerSet.
pub fn listener_condition(
    report: &ListenerReport,
    (wait, timeout): (ListenerWait, Duration),
    now: Timestamp,
) -> ConditionValue {
    let place = &report.place;
    let find = |conditions: &[Condition], type_: &str| {
        conditions.iter().find(|c| c.type_ == type_).cloned()
    };
    let said = |c: &Condition| {
        if c.message.is_empty() {
            c.reason.clone()
        } else {
            format!("{}: {}", c.reason, c.message)
        }
    };
    if let Some(c) = find(&report.set, "Accepted").filter(|c| c.status == "False") {
        return ConditionValue::new(
            Status::False,
            "ListenerSetNotAccepted",
            format!("the gateway did not accept {place}: {}", said(&c)),
        );
    }
    if let Some(conditions) = &report.listener {
        let refused = [
            (
                "Conflicted",
                "True",
                "ListenerConflicted",
                "conflicts with another listener",
            ),
            (
                "Accepted",
                "False",
                "ListenerNotAccepted",
                "was not accepted",
            ),
            (
                "ResolvedRefs",
                "False",
                "ListenerRefsNotResolved",
                "cannot use its certificate",
            ),
            (
                "Programmed",
                "False",
                "ListenerNotProgrammed",
                "is not programmed",
            ),
        ];
        for (type_, status, reason, what) in refused {
            if let Some(c) = find(conditions, type_).filter(|c| c.status == status) {
                return ConditionValue::new(
                    Status::False,
                    reason,
                    format!("{place} {what} by the gateway: {}", said(&c)),
                );
            }
        }
        if find(conditions, "Programmed").is_some_and(|c| c.status == "True") {
            return ConditionValue::new(
                Status::True,
                "ListenerProgrammed",
                format!("the gateway serves {place}"),
            );
        }
    }
    let waited = match wait {
        ListenerWait::Starting => Duration::ZERO,
        ListenerWait::Since(since) => {
            Duration::try_from(now.duration_since(since)).unwrap_or_default()
        }
        ListenerWait::Over => timeout,
    };
    if waited < timeout {
        return ConditionValue::new(
            Status::Unknown,
            "ListenerPending",
            format!("waiting for the gateway to report on {place}"),
        );
    }
    let grace = timeout.as_secs();
    let message = if report.in_listener_set {
        format!(
            "no gateway has reported on {place} in {grace}s: the gateway most likely does not implement ListenerSet; run the operator with --domain-listeners gateway (docs/domains.md)"
        )
    } else {
        format!("the gateway has not reported on {place} in {grace}s")
    };
    ConditionValue::new(Status::False, "ListenerNotReported", message)
}

/// How long the gateway has kept silent about a Domain's listener, by the `ListenerReady`
/// condition the Domain has now.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ListenerWait {
    /// Nothing waited yet: the wait starts now.
    Starting,
    /// Pending since then.
    Since(Timestamp),
    /// Given up on at this generation: it stays `ListenerNotReported` until the gateway
    /// reports or the spec changes, instead of starting over at every look.
    Over,
}

/// The wait of a Domain at `generation` whose conditions are `conditions`.
pub fn listener_wait(conditions: &[Condition], generation: Option<i64>) -> ListenerWait {
    match conditions.iter().find(|c| c.type_ == LISTENER_READY) {
        Some(c) if c.reason == "ListenerPending" => ListenerWait::Since(c.last_transition_time.0),
        Some(c) if c.reason == "ListenerNotReported" && c.observed_generation == generation => {
            ListenerWait::Over
        }
        _ => ListenerWait::Starting,
    }
}

/// The `CertificateReady` condition.
pub fn certificate_condition(state: &CertificateState) -> ConditionValue {
    match state {
        CertificateState::Issued { not_after } => ConditionValue::new(
            Status::True,
            "CertificateIssued",
            match not_after {
                Some(t) => format!("the certificate is valid until {t}"),
                None => "the certificate is issued".into(),
            },
        ),
        CertificateState::Pending { message } => {
            ConditionValue::new(Status::False, "CertificatePending", message.clone())
        }
        CertificateState::SecretProvided { name, not_after } => ConditionValue::new(
            Status::True,
            "SecretProvided",
            format!("serving the certificate of Secret {name}, valid until {not_after}"),
        ),
        CertificateState::SecretMissing { name } => ConditionValue::new(
            Status::False,
            "SecretNotFound",
            format!("spec.tls.secretName: Secret {name} does not exist in this namespace"),
        ),
        CertificateState::SecretInvalid { name, problem } => {
            let why = match problem {
                InvalidCertificate::NoTlsCrt => format!("Secret {name} has no tls.crt"),
                InvalidCertificate::NotPem => {
                    format!(
                        "tls.crt of Secret {name} is not a PEM X.509 certificate (no well-formed PEM block)"
                    )
                }
                InvalidCertificate::NoCertificateBlock => format!(
                    "tls.crt of Secret {name} is not a PEM X.509 certificate (no CERTIFICATE block)"
                ),
                InvalidCertificate::NotX509 => format!(
                    "tls.crt of Secret {name} is not a PEM X.509 certificate (its first CERTIFICATE block does not parse)"
                ),
            };
            ConditionValue::new(
                Status::False,
                "InvalidCertificate",
                format!("spec.tls.secretName: {why}"),
            )
        }
    }
}

/// Days left when a certificate expires within `warning_days` of `now` (0 when already
/// expired), else `None`.
pub fn expiring_in_days(not_after: Timestamp, now: Timestamp, warning_days: u32) -> Option<i64> {
    let left = not_after.as_second() - now.as_second();
    let days = left.div_euclid(86_400).max(0);
    (left < i64::from(warning_days) * 86_400).then_some(days)
}

/// What the route of a verified Domain does, or why it has none.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Serving {
    /// The route sends traffic to this deployment's Service.
    Deployment(String),
    /// The route redirects to this hostname.
    Redirect(String),
    /// Nothing to serve yet (no production deployment, no Ready deployment of the branch).
    NothingYet(String),
    /// `spec.redirectTo` names no Domain of the same Project in this namespace.
    RedirectTargetMissing(String),
}

/// Sets every condition of a Domain whose hostname is valid.
pub fn set_conditions(
    conditions: &mut Conditions<'_>,
    verified: &ConditionValue,
    serving: Option<&Serving>,
    (certificate, listener): (Option<&ConditionValue>, Option<&ConditionValue>),
) {
    conditions.set(
        VERIFIED,
        verified.status,
        verified.reason,
        &verified.message,
    );
    // Beside Ready, not in it: plain HTTP is served whatever the HTTPS listener's fate.
    match listener {
        Some(l) => conditions.set(LISTENER_READY, l.status, l.reason, &l.message),
        None => conditions.remove(LISTENER_READY),
    }
    if !verified.is_true() {
        conditions.remove(CERTIFICATE_READY);
        if matches!(verified.reason, "HostnameClaimed" | "ReservedHostname") {
            conditions.stalled(verified.reason, &verified.message);
        } else {
            conditions.reconciling(verified.reason, &verified.message);
        }
        return;
    }
    if let Some(cert) = certificate {
        conditions.set(CERTIFICATE_READY, cert.status, cert.reason, &cert.message);
    }
    match serving {
        Some(Serving::NothingYet(message)) => {
            return conditions.reconciling("AwaitingDeployment", message);
        }
        Some(Serving::RedirectTargetMissing(message)) => {
            return conditions.stalled("RedirectTargetNotFound", message);
        }
        _ => {}
    }
    if let Some(cert) = certificate.filter(|c| !c.is_true()) {
        // Only the user can fix their Secret: nothing to wait for until they do.
        if matches!(cert.reason, "SecretNotFound" | "InvalidCertificate") {
            return conditions.stalled(cert.reason, &cert.message);
        }
        return conditions.reconciling(cert.reason, &cert.message);
    }
    match serving {
        Some(Serving::Redirect(to)) => {
            conditions.ready("Redirecting", &format!("redirecting to {to}"))
        }
        Some(Serving::Deployment(service)) => {
            conditions.ready("Serving", &format!("serving deployment {service}"))
        }
        _ => conditions.ready("Verified", &verified.message),
    }
}

/// When to look up an unverified Domain's record again: often at first (the user is
/// probably creating it right now), then less and less, so a forgotten Domain costs
/// little. `waiting` is how long the Domain has existed unverified.
pub fn recheck_after(waiting: Duration) -> Duration {
    match waiting.as_secs() {
        0..600 => Duration::from_secs(10),
        600..3_600 => Duration::from_secs(60),
        3_600..86_400 => Duration::from_secs(300),
        _ => Duration::from_secs(1_800),
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::ByteString;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use serde_json::json;

    use super::*;
    use crate::api::conditions::{self, READY, RECONCILING, STALLED};

    fn record() -> VerificationRecord {
        VerificationRecord::for_domain("shop.example.com", "uid-1")
    }

    fn verified(ownership: Ownership) -> ConditionValue {
        verified_condition(&ownership, "shop.example.com", &record(), false)
    }

    #[test]
    fn each_verification_outcome_has_its_reason_and_tells_what_to_do() {
        let cases = [
            (Verification::RecordMissing, Status::False, "RecordMissing"),
            (
                Verification::WrongValue {
                    found: "clouddeck-verification=0000".into(),
                    count: 1,
                },
                Status::False,
                "RecordMismatch",
            ),
            (Verification::NameNotFound, Status::False, "NameNotFound"),
            (
                Verification::ResolverUnreachable("timeout".into()),
                Status::Unknown,
                "ResolverUnreachable",
            ),
            (
                Verification::LookupFailed("SERVFAIL".into()),
                Status::Unknown,
                "LookupFailed",
            ),
            (Verification::Verified, Status::True, "RecordFound"),
        ];
        for (outcome, status, reason) in cases {
            let c = verified(Ownership::Unverified(outcome.clone()));
            assert_eq!((c.status, c.reason), (status, reason), "{outcome:?}");
            assert!(conditions::is_camel_case_reason(c.reason));
            if status == Status::False {
                assert!(c.message.contains(&record().name), "{}", c.message);
                assert!(c.message.contains(&record().value), "{}", c.message);
            }
        }
        let wrong = verified(Ownership::Unverified(Verification::WrongValue {
            found: "clouddeck-verification=0000".into(),
            count: 1,
        }));
        assert!(wrong.message.contains("clouddeck-verification=0000"));
        assert_eq!(verified(Ownership::Internal).reason, "InternalHostname");
        let reserved = verified(Ownership::Reserved {
            base_domain: "apps.example.com".into(),
            key: Some("storefront".into()),
        });
        assert_eq!(
            (reserved.status, reserved.reason),
            (Status::False, "ReservedHostname")
        );
        assert!(
            reserved.message.contains("\"storefront\""),
            "{}",
            reserved.message
        );
    }

    #[test]
    fn a_taken_hostname_does_not_name_the_other_namespace_unless_configured() {
        let taken = Ownership::Taken {
            namespace: "team-secret".into(),
            name: "shop".into(),
            same_namespace: false,
        };
        let hidden = verified_condition(&taken, "shop.example.com", &record(), false);
        assert_eq!(hidden.reason, "HostnameClaimed");
        assert!(
            !hidden.message.contains("team-secret"),
            "{}",
            hidden.message
        );
        assert!(!hidden.message.contains("shop\""), "{}", hidden.message);
        let shown = verified_condition(&taken, "shop.example.com", &record(), true);
        assert!(shown.message.contains("team-secret"), "{}", shown.message);
    }

    fn cert(status: serde_json::Value) -> Certificate {
        serde_json::from_value(json!({
            "apiVersion": "cert-manager.io/v1",
            "kind": "Certificate",
            "metadata": { "name": "shop-tls" },
            "spec": { "secretName": "shop-tls", "dnsNames": [], "issuerRef": { "group": "", "kind": "", "name": "" } },
            "status": status,
        }))
        .unwrap()
    }

    #[test]
    fn certificate_ready_mirrors_cert_manager() {
        assert!(matches!(
            certificate_state(None),
            CertificateState::Pending { .. }
        ));
        let issued = cert(json!({
            "conditions": [{ "type": "Ready", "status": "True", "reason": "Ready", "message": "ok" }],
            "notAfter": "2027-01-01T00:00:00Z"
        }));
        assert_eq!(
            certificate_state(Some(&issued)),
            CertificateState::Issued {
                not_after: Some("2027-01-01T00:00:00Z".parse().unwrap())
            }
        );
        let failing = cert(json!({
            "conditions": [{ "type": "Ready", "status": "False", "reason": "Failed", "message": "ACME order failed" }]
        }));
        let state = certificate_state(Some(&failing));
        let condition = certificate_condition(&state);
        assert_eq!(condition.status, Status::False);
        assert!(condition.message.contains("ACME order failed"));
    }

    /// A self-signed certificate for shop.example.com expiring at `not_after`, and its key.
    fn pem_certificate(not_after: time::OffsetDateTime) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["shop.example.com".into()]).unwrap();
        params.not_before = rcgen::date_time_ymd(2026, 1, 1);
        params.not_after = not_after;
        (params.self_signed(&key).unwrap().pem(), key.serialize_pem())
    }

    fn tls_secret(data: &[(&str, &str)]) -> Secret {
        Secret {
            data: Some(
                data.iter()
                    .map(|(k, v)| ((*k).to_owned(), ByteString(v.as_bytes().to_vec())))
                    .collect(),
            ),
            ..Secret::default()
        }
    }

    #[test]
    fn the_leaf_certificate_of_a_users_secret_gives_its_expiry() {
        let (leaf, key) = pem_certificate(rcgen::date_time_ymd(2031, 5, 17));
        let (intermediate, _) = pem_certificate(rcgen::date_time_ymd(2036, 1, 1));
        let expected: Timestamp = "2031-05-17T00:00:00Z".parse().unwrap();
        // The leaf first, as in every chain; the intermediate's later expiry is not it.
        let chain = format!("{leaf}{intermediate}");
        assert_eq!(leaf_not_after(chain.as_bytes()), Ok(expected));
        let state = secret_certificate_state(
            "shop-tls",
            Some(&tls_secret(&[("tls.crt", &chain), ("tls.key", &key)])),
        );
        assert_eq!(
            state,
            CertificateState::SecretProvided {
                name: "shop-tls".into(),
                not_after: expected
            }
        );
        assert_eq!(state.not_after(), Some(expected));
        let condition = certificate_condition(&state);
        assert_eq!(
            (condition.status, condition.reason),
            (Status::True, "SecretProvided")
        );
        assert!(
            condition.message.contains("2031-05-17T00:00:00Z"),
            "{}",
            condition.message
        );
        // Blocks of other kinds before the certificate are skipped.
        let key_first = format!("{key}{leaf}");
        assert_eq!(leaf_not_after(key_first.as_bytes()), Ok(expected));
    }

    #[test]
    fn an_unreadable_users_certificate_is_named_without_its_content() {
        let (_, key) = pem_certificate(rcgen::date_time_ymd(2031, 5, 17));
        let garbage = "this-is-not-a-certificate-0xDEADBEEF";
        let bad_der = "-----BEGIN CERTIFICATE-----\nc2VjcmV0LWJ5dGVz\n-----END CERTIFICATE-----\n";
        let bad_base64 = "-----BEGIN CERTIFICATE-----\n!!!secret!!!\n-----END CERTIFICATE-----\n";
        let cases = [
            (
                vec![("tls.key", key.as_str())],
                InvalidCertificate::NoTlsCrt,
                "has no tls.crt",
            ),
            (
                vec![("tls.crt", garbage)],
                InvalidCertificate::NotPem,
                "no well-formed PEM block",
            ),
            (
                vec![("tls.crt", "")],
                InvalidCertificate::NotPem,
                "no well-formed PEM block",
            ),
            (
                vec![("tls.crt", bad_base64)],
                InvalidCertificate::NotPem,
                "no well-formed PEM block",
            ),
            // A private key pasted into tls.crt.
            (
                vec![("tls.crt", key.as_str())],
                InvalidCertificate::NoCertificateBlock,
                "no CERTIFICATE block",
            ),
            (
                vec![("tls.crt", bad_der)],
                InvalidCertificate::NotX509,
                "does not parse",
            ),
        ];
        for (data, problem, says) in cases {
            let state = secret_certificate_state("shop-tls", Some(&tls_secret(&data)));
            assert_eq!(
                state,
                CertificateState::SecretInvalid {
                    name: "shop-tls".into(),
                    problem
                },
                "{data:?}"
            );
            assert_eq!(state.not_after(), None);
            let condition = certificate_condition(&state);
            assert_eq!(
                (condition.status, condition.reason),
                (Status::False, "InvalidCertificate")
            );
            assert!(conditions::is_camel_case_reason(condition.reason));
            assert!(
                condition.message.starts_with("spec.tls.secretName: ")
                    && condition.message.contains("Secret shop-tls")
                    && condition.message.contains(says),
                "{}",
                condition.message
            );
            for secret in [
                "0xDEADBEEF",
                "c2VjcmV0",
                "secret!",
                "PRIVATE KEY",
                &key[40..60],
            ] {
                assert!(
                    !condition.message.contains(secret),
                    "leaks {secret:?}: {}",
                    condition.message
                );
            }
        }
        assert_eq!(
            secret_certificate_state("shop-tls", None),
            CertificateState::SecretMissing {
                name: "shop-tls".into()
            }
        );
    }

    #[test]
    fn an_invalid_users_certificate_stalls_the_domain() {
        let mut list = Vec::new();
        let invalid = certificate_condition(&CertificateState::SecretInvalid {
            name: "shop-tls".into(),
            problem: InvalidCertificate::NotPem,
        });
        set_conditions(
            &mut Conditions::at(&mut list, Some(1), time()),
            &verified(Ownership::Verified),
            Some(&Serving::Deployment("web-2".into())),
            (Some(&invalid), None),
        );
        assert!(conditions::is_true(&list, STALLED));
        assert!(!conditions::is_true(&list, CERTIFICATE_READY));
        assert_eq!(
            conditions::find(&list, READY).unwrap().reason,
            "InvalidCertificate"
        );
    }

    #[test]
    fn expiry_warning_window() {
        let now: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let in_days = |d: i64| Timestamp::from_second(now.as_second() + d * 86_400).unwrap();
        assert_eq!(expiring_in_days(in_days(30), now, 14), None);
        assert_eq!(expiring_in_days(in_days(10), now, 14), Some(10));
        assert_eq!(expiring_in_days(in_days(-1), now, 14), Some(0));
    }

    fn time() -> Time {
        Time(Timestamp::from_second(1_000).unwrap())
    }

    #[test]
    fn ready_needs_verification_route_and_certificate() {
        let mut list = Vec::new();
        let unverified = verified(Ownership::Unverified(Verification::RecordMissing));
        set_conditions(
            &mut Conditions::at(&mut list, Some(1), time()),
            &unverified,
            None,
            (None, None),
        );
        assert!(conditions::is_true(&list, RECONCILING));
        assert_eq!(
            conditions::find(&list, READY).unwrap().reason,
            "RecordMissing"
        );

        let ok = verified(Ownership::Verified);
        let pending = certificate_condition(&CertificateState::Pending {
            message: "issuing".into(),
        });
        let serving = Serving::Deployment("web-2".into());
        set_conditions(
            &mut Conditions::at(&mut list, Some(1), time()),
            &ok,
            Some(&serving),
            (Some(&pending), None),
        );
        assert!(conditions::is_true(&list, VERIFIED));
        assert_eq!(
            conditions::find(&list, READY).unwrap().reason,
            "CertificatePending"
        );

        let issued = certificate_condition(&CertificateState::Issued { not_after: None });
        set_conditions(
            &mut Conditions::at(&mut list, Some(1), time()),
            &ok,
            Some(&serving),
            (Some(&issued), None),
        );
        assert!(conditions::is_true(&list, READY));
        assert!(conditions::is_true(&list, CERTIFICATE_READY));
    }

    #[test]
    fn a_taken_hostname_stalls() {
        let mut list = Vec::new();
        let taken = verified(Ownership::Taken {
            namespace: "b".into(),
            name: "x".into(),
            same_namespace: false,
        });
        set_conditions(
            &mut Conditions::at(&mut list, Some(1), time()),
            &taken,
            None,
            (None, None),
        );
        assert!(conditions::is_true(&list, STALLED));
        assert_eq!(
            conditions::find(&list, VERIFIED).unwrap().reason,
            "HostnameClaimed"
        );
    }

    const GRACE: Duration = Duration::from_secs(60);

    fn gateway_condition(type_: &str, status: &str, reason: &str, message: &str) -> Condition {
        Condition {
            type_: type_.into(),
            status: status.into(),
            reason: reason.into(),
            message: message.into(),
            last_transition_time: time(),
            observed_generation: Some(1),
        }
    }

    fn report(
        in_listener_set: bool,
        set: Vec<Condition>,
        listener: Option<Vec<Condition>>,
    ) -> ListenerReport {
        ListenerReport {
            place: "ListenerSet shop-listener".into(),
            in_listener_set,
            set,
            listener,
        }
    }

    #[test]
    fn the_listener_condition_is_the_gateways_verdict_in_its_own_words() {
        let now = Timestamp::from_second(10_000).unwrap();
        let programmed = gateway_condition("Programmed", "True", "Programmed", "");
        let served = listener_condition(
            &report(true, vec![], Some(vec![programmed.clone()])),
            (ListenerWait::Starting, GRACE),
            now,
        );
        assert_eq!(
            (served.status, served.reason),
            (Status::True, "ListenerProgrammed")
        );

        // Refusals win over Programmed, each with the gateway's reason and message.
        for (refusal, reason) in [
            (
                gateway_condition(
                    "Conflicted",
                    "True",
                    "HostnameConflict",
                    "shop.example.com on 8443",
                ),
                "ListenerConflicted",
            ),
            (
                gateway_condition("Accepted", "False", "UnsupportedProtocol", ""),
                "ListenerNotAccepted",
            ),
            (
                gateway_condition(
                    "ResolvedRefs",
                    "False",
                    "InvalidCertificateRef",
                    "secret shop-tls not found",
                ),
                "ListenerRefsNotResolved",
            ),
            (
                gateway_condition("Programmed", "False", "Invalid", ""),
                "ListenerNotProgrammed",
            ),
        ] {
            let mut said = vec![refusal.clone()];
            if refusal.type_ != "Programmed" {
                said.push(programmed.clone());
            }
            let verdict = listener_condition(
                &report(false, vec![], Some(said)),
                (ListenerWait::Starting, GRACE),
                now,
            );
            assert_eq!((verdict.status, verdict.reason), (Status::False, reason));
            assert!(
                verdict.message.contains(&refusal.reason),
                "{}",
                verdict.message
            );
            assert!(
                verdict.message.contains(&refusal.message),
                "{}",
                verdict.message
            );
        }
        let refused_set = listener_condition(
            &report(
                true,
                vec![gateway_condition(
                    "Accepted",
                    "False",
                    "NotAllowed",
                    "parent refuses ListenerSets",
                )],
                None,
            ),
            (ListenerWait::Starting, GRACE),
            now,
        );
        assert_eq!(refused_set.reason, "ListenerSetNotAccepted");
        assert!(
            refused_set
                .message
                .contains("NotAllowed: parent refuses ListenerSets")
        );
    }

    #[test]
    fn a_listener_the_gateway_never_reports_on_is_pending_then_named() {
        let since = Timestamp::from_second(10_000).unwrap();
        let at = |secs: i64| Timestamp::from_second(10_000 + secs).unwrap();
        let silent = report(true, vec![], None);
        let first = listener_condition(&silent, (ListenerWait::Starting, GRACE), at(0));
        assert_eq!(
            (first.status, first.reason),
            (Status::Unknown, "ListenerPending")
        );
        let later = listener_condition(&silent, (ListenerWait::Since(since), GRACE), at(59));
        assert_eq!(later.status, Status::Unknown);
        let given_up = listener_condition(&silent, (ListenerWait::Since(since), GRACE), at(60));
        assert_eq!(
            (given_up.status, given_up.reason),
            (Status::False, "ListenerNotReported")
        );
        assert!(
            given_up.message.contains("does not implement ListenerSet"),
            "{}",
            given_up.message
        );
        assert!(given_up.message.contains("--domain-listeners gateway"));
        // A listener on the Gateway itself: no ListenerSet to blame.
        let on_gateway = ListenerReport {
            place: "listener domain-uid-1 of Gateway net/edge".into(),
            ..report(false, vec![], Some(vec![]))
        };
        let on_gateway =
            listener_condition(&on_gateway, (ListenerWait::Since(since), GRACE), at(60));
        assert_eq!(on_gateway.reason, "ListenerNotReported");
        assert!(
            !on_gateway.message.contains("ListenerSet"),
            "{}",
            on_gateway.message
        );

        let mut list = Vec::new();
        let ok = verified(Ownership::Verified);
        set_conditions(
            &mut Conditions::at(&mut list, Some(1), time()),
            &ok,
            Some(&Serving::Deployment("web-2".into())),
            (None, Some(&first)),
        );
        assert_eq!(listener_wait(&list, Some(1)), ListenerWait::Since(time().0));

        // Given up on, it stays given up: the next look does not start the wait over.
        set_conditions(
            &mut Conditions::at(&mut list, Some(1), time()),
            &ok,
            Some(&Serving::Deployment("web-2".into())),
            (None, Some(&given_up)),
        );
        let wait = listener_wait(&list, Some(1));
        assert_eq!(wait, ListenerWait::Over);
        let again = listener_condition(&silent, (wait, GRACE), at(61));
        assert_eq!(again.reason, "ListenerNotReported");
        // Until the gateway reports, or a new spec is waited for afresh.
        let programmed = gateway_condition("Programmed", "True", "Programmed", "");
        let reported = report(true, vec![], Some(vec![programmed]));
        assert_eq!(
            listener_condition(&reported, (wait, GRACE), at(61)).reason,
            "ListenerProgrammed"
        );
        assert_eq!(listener_wait(&list, Some(2)), ListenerWait::Starting);
        // Plain HTTP is served: Ready does not wait on the HTTPS listener.
        assert!(conditions::is_true(&list, READY));
    }

    #[test]
    fn rechecks_slow_down() {
        assert_eq!(
            recheck_after(Duration::from_secs(5)),
            Duration::from_secs(10)
        );
        assert_eq!(
            recheck_after(Duration::from_secs(1_200)),
            Duration::from_secs(60)
        );
        assert_eq!(
            recheck_after(Duration::from_secs(7_200)),
            Duration::from_secs(300)
        );
        assert_eq!(
            recheck_after(Duration::from_secs(200_000)),
            Duration::from_secs(1_800)
        );
    }
}
