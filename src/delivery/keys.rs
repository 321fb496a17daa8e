//! Reading what a Webhook keeps in Secrets: its signing keys, and its endpoint URL when that
//! is a credential (`spec.urlSecretRef`). Problems are described by Secret name, key and
//! field path, never by value.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::{Client, ResourceExt};

use super::signing::SigningKey;
use crate::api::common::SecretKeyReference;
use crate::api::validation::InvalidField;
use crate::api::webhook::{Webhook, WebhookFormat};

/// Why the keys cannot be used: missing Secret, missing key, unparseable value.
pub type KeyProblem = InvalidField;

/// Where a Webhook's deliveries go, and which field said so (for messages).
#[derive(Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub url: String,
    pub field: &'static str,
}

impl std::fmt::Debug for Endpoint {
    /// The origin only: the path of a URL from a Secret is a credential.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Endpoint({}, {})", self.field, origin(&self.url))
    }
}

/// `https://hooks.example.com`: the URL without path or query, which may hold a token
/// (Slack's do), for messages and status.
pub fn origin(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(u) => u.origin().ascii_serialization(),
        Err(_) => "(invalid URL)".into(),
    }
}

/// The endpoint of `webhook`: `spec.url`, or the value behind `spec.urlSecretRef`. `Ok(Err(..))` is a problem the user must fix;
/// `Err(..)` an API error worth retrying.
pub async fn endpoint(
    client: &Client,
    webhook: &Webhook,
) -> kube::Result<Result<Endpoint, KeyProblem>> {
    if let Some(url) = &webhook.spec.url {
        return Ok(Ok(Endpoint {
            url: url.clone(),
            field: "spec.url",
        }));
    }
    let Some(reference) = &webhook.spec.url_secret_ref else {
        return Ok(Err(InvalidField::new(
            "spec.url",
            "give spec.url or spec.urlSecretRef",
        )));
    };
    let field = "spec.urlSecretRef";
    let secrets = secrets_of(client, webhook);
    Ok(secret_value(&secrets, reference, field)
        .await?
        .and_then(|value| {
            let url = String::from_utf8(value)
                .ok()
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty() && !v.contains(char::is_whitespace))
                .ok_or_else(|| {
                    InvalidField::new(
                        field,
                        format!(
                            "key {:?} of Secret {:?} is not a URL",
                            reference.key, reference.name
                        ),
                    )
                })?;
            Ok(Endpoint { url, field })
        }))
}

/// The signing keys of `webhook`, in `spec.secretRefs` order: none for Slack deliveries.
/// `Ok(Err(..))` is a problem the user must fix; `Err(..)` an API error worth retrying.
pub async fn load(
    client: &Client,
    webhook: &Webhook,
) -> kube::Result<Result<Vec<SigningKey>, KeyProblem>> {
    if webhook.spec.format != WebhookFormat::StandardWebhooks {
        return Ok(Ok(Vec::new()));
    }
    let secrets = secrets_of(client, webhook);
    if webhook.spec.secret_refs.is_empty() {
        return Ok(Err(InvalidField::new(
            "spec.secretRefs",
            "a standardWebhooks Webhook needs a signing Secret",
        )));
    }
    let mut keys = Vec::with_capacity(webhook.spec.secret_refs.len());
    for (i, reference) in webhook.spec.secret_refs.iter().enumerate() {
        let field = format!("spec.secretRefs[{i}]");
        let value = match secret_value(&secrets, reference, &field).await? {
            Ok(value) => value,
            Err(problem) => return Ok(Err(problem)),
        };
        match SigningKey::parse(&value) {
            Ok(key) => keys.push(key),
            Err(problem) => {
                return Ok(Err(InvalidField::new(
                    field,
                    format!(
                        "key {:?} of Secret {:?}: {problem}",
                        reference.key, reference.name
                    ),
                )));
            }
        }
    }
    Ok(Ok(keys))
}

/// How long credentials read from a Webhook's Secrets are used before they are read again:
/// a rotated URL or key is used within this, and a burst of deliveries to one Webhook
/// costs one read of its Secrets per this, not one per attempt and per Webhook reconcile.
/// Measured (`webhooks::benchmark_fan_out`): at one second, 50 busy Webhooks read their
/// Secrets 50 times a second, the whole of the default client-side rate limit.
pub const FRESH_FOR: Duration = Duration::from_secs(10);

/// What an attempt needs from a Webhook's Secrets.
#[derive(Clone, Debug)]
pub struct Credentials {
    pub endpoint: Endpoint,
    pub keys: Vec<SigningKey>,
}

/// Credentials read in the last [`FRESH_FOR`], per generation of each Webhook (a changed
/// spec, say with another Secret named, is read afresh; a status write, which comes with
/// every delivery's outcome, is not a change). Only what could be used is
/// kept: a problem is found again by the next attempt.
#[derive(Debug, Default)]
pub struct RecentCredentials {
    read: Mutex<HashMap<String, (Instant, Credentials)>>,
}

impl RecentCredentials {
    pub fn get(&self, webhook: &Webhook) -> Option<Credentials> {
        self.get_at(webhook, Instant::now())
    }

    pub fn keep(&self, webhook: &Webhook, credentials: Credentials) {
        self.keep_at(webhook, credentials, Instant::now());
    }

    fn get_at(&self, webhook: &Webhook, now: Instant) -> Option<Credentials> {
        let read = self.read.lock().unwrap_or_else(|e| e.into_inner());
        read.get(&Self::key(webhook))
            .filter(|(at, _)| now.saturating_duration_since(*at) < FRESH_FOR)
            .map(|(_, credentials)| credentials.clone())
    }

    fn keep_at(&self, webhook: &Webhook, credentials: Credentials, now: Instant) {
        let mut read = self.read.lock().unwrap_or_else(|e| e.into_inner());
        read.retain(|_, (at, _)| now.saturating_duration_since(*at) < FRESH_FOR);
        read.insert(Self::key(webhook), (now, credentials));
    }

    fn key(webhook: &Webhook) -> String {
        format!(
            "{}/{}/{}",
            webhook.namespace().unwrap_or_default(),
            webhook.name_any(),
            webhook.metadata.generation.unwrap_or_default()
        )
    }
}

/// What [`look_up`] found of a Webhook's credentials.
#[derive(Debug)]
pub enum LookedUp<E> {
    /// Usable; `recent` when they came from [`RecentCredentials`] (so read again once due).
    Usable {
        credentials: Credentials,
        recent: bool,
    },
    /// The endpoint cannot be read: a problem the user must fix.
    NoEndpoint(KeyProblem),
    /// The endpoint was read, and refused by the caller's check (`why`).
    Refused {
        endpoint: Endpoint,
        why: E,
        recent: bool,
    },
    /// The endpoint is fine; the signing keys cannot be read.
    NoKeys {
        endpoint: Endpoint,
        problem: KeyProblem,
    },
}

/// A Webhook's endpoint and keys: the ones read in the last [`FRESH_FOR`], or read from
/// its Secrets now (the keys only for an endpoint `usable` accepts) and kept when usable.
/// The Webhook and delivery controllers share `recent`, so a burst of deliveries costs one
/// read per Webhook and [`FRESH_FOR`]. `Err(..)` is an API error worth retrying.
pub async fn look_up<E>(
    client: &Client,
    recent: &RecentCredentials,
    webhook: &Webhook,
    usable: impl Fn(&Endpoint) -> Result<(), E>,
) -> kube::Result<LookedUp<E>> {
    if let Some(credentials) = recent.get(webhook) {
        return Ok(match usable(&credentials.endpoint) {
            Ok(()) => LookedUp::Usable {
                credentials,
                recent: true,
            },
            Err(why) => LookedUp::Refused {
                endpoint: credentials.endpoint,
                why,
                recent: true,
            },
        });
    }
    let endpoint = match endpoint(client, webhook).await? {
        Ok(endpoint) => endpoint,
        Err(problem) => return Ok(LookedUp::NoEndpoint(problem)),
    };
    if let Err(why) = usable(&endpoint) {
        return Ok(LookedUp::Refused {
            endpoint,
            why,
            recent: false,
        });
    }
    Ok(match load(client, webhook).await? {
        Ok(keys) => {
            let credentials = Credentials { endpoint, keys };
            recent.keep(webhook, credentials.clone());
            LookedUp::Usable {
                credentials,
                recent: false,
            }
        }
        Err(problem) => LookedUp::NoKeys { endpoint, problem },
    })
}

fn secrets_of(client: &Client, webhook: &Webhook) -> Api<Secret> {
    Api::namespaced(client.clone(), &webhook.namespace().unwrap_or_default())
}

/// The bytes under `reference`, or which of Secret and key is missing (named by `field`).
async fn secret_value(
    secrets: &Api<Secret>,
    reference: &SecretKeyReference,
    field: &str,
) -> kube::Result<Result<Vec<u8>, KeyProblem>> {
    let Some(secret) = secrets.get_opt(&reference.name).await? else {
        return Ok(Err(InvalidField::new(
            field,
            format!("Secret {:?} not found", reference.name),
        )));
    };
    let value = secret
        .data
        .as_ref()
        .and_then(|d| d.get(&reference.key))
        .map(|b| b.0.clone())
        .or_else(|| {
            secret
                .string_data
                .as_ref()
                .and_then(|d| d.get(&reference.key))
                .map(|s| s.clone().into_bytes())
        });
    Ok(value.ok_or_else(|| {
        InvalidField::new(
            field,
            format!("Secret {:?} has no key {:?}", reference.name, reference.key),
        )
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_endpoint_shows_only_its_origin() {
        let endpoint = Endpoint {
            url: "https://hooks.slack.com/services/T000/B000/XXXXSECRET".into(),
            field: "spec.urlSecretRef",
        };
        let shown = format!("{endpoint:?}");
        assert_eq!(
            shown,
            "Endpoint(spec.urlSecretRef, https://hooks.slack.com)"
        );
        assert_eq!(origin("not a url"), "(invalid URL)");
        assert_eq!(
            origin("http://receiver.team-a.svc:8080/hook?token=abc"),
            "http://receiver.team-a.svc:8080"
        );
    }

    fn webhook(generation: i64) -> Webhook {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "clouddeck.io/v1alpha1", "kind": "Webhook",
            "metadata": { "name": "hook", "namespace": "team-a", "generation": generation },
            "spec": { "url": "https://example.com/hook", "events": ["webhook.ping"] }
        }))
        .unwrap()
    }

    #[test]
    fn credentials_are_read_again_after_a_while_or_when_the_webhook_changes() {
        let recent = RecentCredentials::default();
        let start = Instant::now();
        let credentials = Credentials {
            endpoint: Endpoint {
                url: "https://example.com/hook".into(),
                field: "spec.url",
            },
            keys: Vec::new(),
        };
        assert!(recent.get_at(&webhook(1), start).is_none());
        recent.keep_at(&webhook(1), credentials, start);
        let soon = start + FRESH_FOR / 2;
        assert!(recent.get_at(&webhook(1), soon).is_some());
        assert!(recent.get_at(&webhook(2), soon).is_none(), "changed");
        assert!(recent.get_at(&webhook(1), start + FRESH_FOR).is_none());
    }
}
