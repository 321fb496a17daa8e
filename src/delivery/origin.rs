//! Proof that a WebhookDelivery was written by this operator. The outbox sends whatever
//! WebhookDelivery objects exist, signed with the Webhook's secret; without a proof, anyone
//! who may create one (a cluster without the chart's ValidatingAdmissionPolicy, or with a
//! role that grants `create`) could have CloudDeck sign events of their own invention. So
//! the publisher seals each delivery with an HMAC under a key only the operator holds, and
//! the delivery controller sends only what carries a valid seal.
//!
//! The key is 32 random bytes in the Secret `clouddeck-delivery-origin` of the operator's
//! own namespace (where its Lease is), created by the first replica that needs it and read
//! by the others; tenants have no access to that namespace.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::PostParams;
use kube::{Api, Client, ResourceExt};
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};

use crate::api::webhook_delivery::WebhookDelivery;
use crate::labels::{MANAGED_BY, MANAGER};

/// The annotation that carries the seal: `v1,<base64 HMAC-SHA256>`.
pub const ORIGIN_ANNOTATION: &str = "clouddeck.io/origin";

/// The Secret (in the operator's namespace) that holds the key.
pub const KEY_SECRET: &str = "clouddeck-delivery-origin";

const KEY_FIELD: &str = "key";

/// The operator's sealing key. Cheap to clone.
#[derive(Clone)]
pub struct OriginKey(hmac::Key);

impl std::fmt::Debug for OriginKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OriginKey(..)")
    }
}

impl OriginKey {
    pub fn from_bytes(bytes: &[u8]) -> Self {
        OriginKey(hmac::Key::new(hmac::HMAC_SHA256, bytes))
    }

    /// The key of the Secret [`KEY_SECRET`] in `namespace`, creating it (32 random bytes)
    /// when it does not exist yet. Replicas racing to create it all end up with the one
    /// the apiserver stored.
    pub async fn load_or_create(client: &Client, namespace: &str) -> crate::Result<Self> {
        let failed = |source: Option<kube::Error>| crate::Error::OriginKey {
            namespace: namespace.to_owned(),
            name: KEY_SECRET,
            source: source.map(Box::new),
        };
        let secrets = Api::<Secret>::namespaced(client.clone(), namespace);
        for _ in 0..3 {
            if let Some(secret) = secrets
                .get_opt(KEY_SECRET)
                .await
                .map_err(|e| failed(Some(e)))?
                && let Some(key) = secret.data.as_ref().and_then(|d| d.get(KEY_FIELD))
                && key.0.len() >= 32
            {
                return Ok(Self::from_bytes(&key.0));
            }
            let mut bytes = [0u8; 32];
            SystemRandom::new()
                .fill(&mut bytes)
                .expect("the system random source works");
            let secret = Secret {
                metadata: ObjectMeta {
                    name: Some(KEY_SECRET.to_owned()),
                    labels: Some([(MANAGED_BY.to_owned(), MANAGER.to_owned())].into()),
                    ..ObjectMeta::default()
                },
                data: Some([(KEY_FIELD.to_owned(), ByteString(bytes.to_vec()))].into()),
                ..Secret::default()
            };
            match secrets.create(&PostParams::default(), &secret).await {
                Ok(_) => return Ok(Self::from_bytes(&bytes)),
                // Another replica was first: read what it stored.
                Err(kube::Error::Api(status)) if status.code == 409 => continue,
                Err(err) => return Err(failed(Some(err))),
            }
        }
        // It exists but holds no 32-byte key, and was not replaced: a person's doing.
        Err(failed(None))
    }

    /// The seal of `delivery`: over its namespace, name and every spec field that decides
    /// what is sent and to whom.
    pub fn seal(&self, delivery: &WebhookDelivery) -> String {
        let tag = hmac::sign(&self.0, &material(delivery));
        format!("v1,{}", STANDARD.encode(tag.as_ref()))
    }

    /// Whether `delivery` carries a valid seal of this key (compared in constant time).
    pub fn verify(&self, delivery: &WebhookDelivery) -> bool {
        let Some(sealed) = delivery.annotations().get(ORIGIN_ANNOTATION) else {
            return false;
        };
        let Some(tag) = sealed
            .strip_prefix("v1,")
            .and_then(|b| STANDARD.decode(b).ok())
        else {
            return false;
        };
        hmac::verify(&self.0, &material(delivery), &tag).is_ok()
    }

    /// `delivery` with its seal in the [`ORIGIN_ANNOTATION`].
    pub fn sealed(&self, mut delivery: WebhookDelivery) -> WebhookDelivery {
        let seal = self.seal(&delivery);
        delivery
            .annotations_mut()
            .insert(ORIGIN_ANNOTATION.to_owned(), seal);
        delivery
    }
}

/// What the seal covers: the payload is the exact text the sender sends.
fn material(delivery: &WebhookDelivery) -> Vec<u8> {
    let spec = &delivery.spec;
    let mut out = format!(
        "clouddeck-origin/v1\n{}\n{}\n{}\n{}\n{}\n{}\n{}\n",
        delivery.namespace().unwrap_or_default(),
        delivery.name_any(),
        spec.webhook_ref.name,
        spec.event_type,
        spec.webhook_id,
        spec.timestamp.0.as_second(),
        spec.project_ref.as_ref().map_or("", |p| p.name.as_str()),
    )
    .into_bytes();
    out.extend(spec.payload.as_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn delivery(payload: serde_json::Value) -> WebhookDelivery {
        serde_json::from_value(json!({
            "apiVersion": "clouddeck.io/v1alpha1", "kind": "WebhookDelivery",
            "metadata": { "name": "d1", "namespace": "team-a" },
            "spec": {
                "webhookRef": { "name": "ops" }, "eventType": "deployment.ready",
                "webhookId": "msg_1", "timestamp": "2026-12-03T10:00:00Z",
                "payload": payload.to_string()
            }
        }))
        .unwrap()
    }

    #[test]
    fn a_sealed_delivery_verifies_and_any_change_breaks_the_seal() {
        let key = OriginKey::from_bytes(&[7; 32]);
        let sealed = key.sealed(delivery(json!({ "type": "deployment.ready", "n": 1 })));
        assert!(key.verify(&sealed));
        assert!(
            !OriginKey::from_bytes(&[8; 32]).verify(&sealed),
            "another key"
        );
        assert!(!key.verify(&delivery(json!({}))), "no seal");

        let mut forged = sealed.clone();
        forged.spec.payload = json!({ "type": "deployment.ready", "n": 2 }).to_string();
        assert!(!key.verify(&forged), "payload changed");
        let mut moved = sealed.clone();
        moved.metadata.namespace = Some("team-b".into());
        assert!(!key.verify(&moved), "copied to another namespace");
        let mut retargeted = sealed.clone();
        retargeted.spec.webhook_ref.name = "other".into();
        assert!(!key.verify(&retargeted), "another Webhook");
        let mut garbage = sealed;
        garbage
            .annotations_mut()
            .insert(ORIGIN_ANNOTATION.into(), "v1,!!".into());
        assert!(!key.verify(&garbage));
    }
}
