//! cert-manager's Certificate, as far as a Domain writes and reads it: the spec fields the
//! Domain controller applies, and the status fields it mirrors (`Ready`, `notAfter`). A
//! typed subset, so that a misspelled field fails to compile; what cert-manager adds
//! (other spec defaults, more status) is ignored on reading and never written back, since
//! server-side apply sends only these fields under the operator's field manager.
//!
//! cert-manager publishes no Rust types, and its CRD is cert-manager's to install: this
//! type has no schema and CloudDeck never installs it.

use std::collections::BTreeMap;

use kube::CustomResource;
use serde::{Deserialize, Serialize};

/// The spec of a cert-manager Certificate (`cert-manager.io/v1`), the fields CloudDeck sets.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "cert-manager.io",
    version = "v1",
    kind = "Certificate",
    namespaced,
    status = "CertificateStatus",
    schema = "disabled"
)]
#[serde(default, rename_all = "camelCase")]
pub struct CertificateSpec {
    /// The Secret cert-manager writes the key pair into.
    pub secret_name: String,
    pub dns_names: Vec<String>,
    pub issuer_ref: IssuerRef,
    /// Labels cert-manager puts on that Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_template: Option<SecretTemplate>,
}

/// The issuer a Certificate names.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct IssuerRef {
    pub group: String,
    pub kind: String,
    pub name: String,
}

/// What cert-manager puts on the Secret it writes.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct SecretTemplate {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// The status cert-manager reports, the fields a Domain mirrors.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CertificateStatus {
    #[serde(default)]
    pub conditions: Vec<CertificateCondition>,
    /// When the certificate in the Secret expires (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_after: Option<String>,
}

/// One of cert-manager's conditions on a Certificate (its `reason` and `message` are
/// optional, unlike a `metav1.Condition`'s).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct CertificateCondition {
    #[serde(rename = "type")]
    pub type_: String,
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl Certificate {
    /// The `Ready` condition, if cert-manager has set one.
    pub fn ready(&self) -> Option<&CertificateCondition> {
        self.status
            .as_ref()?
            .conditions
            .iter()
            .find(|c| c.type_ == "Ready")
    }
}
