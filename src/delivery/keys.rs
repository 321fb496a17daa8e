//! Reading a Webhook's signing keys from its Secrets. Problems are described by Secret
//! name, key and field path, never by value.

use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::{Client, ResourceExt};

use super::signing::SigningKey;
use crate::api::validation::InvalidField;
use crate::api::webhook::{Webhook, WebhookFormat};

/// Why the keys cannot be used: missing Secret, missing key, unparseable value.
pub type KeyProblem = InvalidField;

/// The signing keys of `webhook`, in `spec.secretRefs` order: none for Slack deliveries.
/// `Ok(Err(..))` is a problem the user must fix; `Err(..)` an API error worth retrying.
pub async fn load(
    client: &Client,
    webhook: &Webhook,
) -> kube::Result<Result<Vec<SigningKey>, KeyProblem>> {
    if webhook.spec.format != WebhookFormat::StandardWebhooks {
        return Ok(Ok(Vec::new()));
    }
    let namespace = webhook.namespace().unwrap_or_default();
    let secrets = Api::<Secret>::namespaced(client.clone(), &namespace);
    if webhook.spec.secret_refs.is_empty() {
        return Ok(Err(InvalidField::new(
            "spec.secretRefs",
            "a standardWebhooks Webhook needs a signing Secret",
        )));
    }
    let mut keys = Vec::with_capacity(webhook.spec.secret_refs.len());
    for (i, reference) in webhook.spec.secret_refs.iter().enumerate() {
        let field = format!("spec.secretRefs[{i}]");
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
        let Some(value) = value else {
            return Ok(Err(InvalidField::new(
                field,
                format!("Secret {:?} has no key {:?}", reference.name, reference.key),
            )));
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
