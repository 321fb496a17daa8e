//! The clouddeck.io/v1alpha1 API: one file per kind, the shared conditions helper, and
//! the checks the controllers run where the schema cannot.
//!
//! `crds/clouddeck.io.yaml` is generated from these types (see [`crds_yaml`]); a unit test
//! fails when it drifts. Regenerate it with
//! `CLOUDDECK_REGEN_CRDS=1 cargo test --lib api::tests::committed_crds_match_the_types`
//! (or `cargo run -- crds > crds/clouddeck.io.yaml`).

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

pub mod common;
pub mod conditions;
pub mod cron_job;
pub mod deployment;
pub mod domain;
pub mod edge_handler;
pub mod hostname_claim;
pub mod project;
pub mod split_test;
pub mod validation;
pub mod webhook;
pub mod webhook_delivery;

pub use cron_job::{CronJob, CronJobSpec, CronJobStatus};
pub use deployment::{Deployment, DeploymentPhase, DeploymentSpec, DeploymentStatus};
pub use domain::{Domain, DomainSpec, DomainStatus};
pub use edge_handler::{EdgeHandler, EdgeHandlerSpec, EdgeHandlerStatus};
pub use hostname_claim::{ClaimHolder, HolderKind, HostnameClaim, HostnameClaimSpec};
pub use project::{Project, ProjectSpec, ProjectStatus};
pub use split_test::{SplitTest, SplitTestSpec, SplitTestStatus};
pub use webhook::{EVENT_TYPES, Webhook, WebhookSpec, WebhookStatus};
pub use webhook_delivery::{
    DeliveryPhase, WebhookDelivery, WebhookDeliverySpec, WebhookDeliveryStatus,
};

/// The API group of every CloudDeck kind.
pub const GROUP: &str = "clouddeck.io";
/// The API version of every CloudDeck kind.
pub const VERSION: &str = "v1alpha1";
/// The `kubectl get <category>` that lists every CloudDeck kind.
pub const CATEGORY: &str = "clouddeck";

/// Every CRD CloudDeck serves, in a stable order: the eight kinds users write, then the
/// operator's own cluster-scoped HostnameClaim.
pub fn crds() -> Vec<CustomResourceDefinition> {
    [
        with_hostname_key_name(Project::crd()),
        Deployment::crd(),
        Domain::crd(),
        EdgeHandler::crd(),
        CronJob::crd(),
        Webhook::crd(),
        WebhookDelivery::crd(),
        SplitTest::crd(),
        HostnameClaim::crd(),
    ]
    .into_iter()
    .map(reflow_descriptions)
    .map(checked_child_fields)
    .collect()
}

/// A Project's name is the key of its hostnames (see [`crate::hostnames`]): the apiserver
/// refuses names that cannot be one. Only a rule at the schema's root may read
/// `metadata.name`, so it is added to the generated CRD here.
fn with_hostname_key_name(mut crd: CustomResourceDefinition) -> CustomResourceDefinition {
    let rule = serde_json::json!({
        "rule": crate::hostnames::KEY_NAME_RULE,
        "message": crate::hostnames::KEY_NAME_MESSAGE,
    });
    for version in &mut crd.spec.versions {
        if let Some(schema) = version
            .schema
            .as_mut()
            .and_then(|s| s.open_api_v3_schema.as_mut())
        {
            let rule = serde_json::from_value(rule.clone()).expect("a validation rule");
            schema
                .x_kubernetes_validations
                .get_or_insert_with(Vec::new)
                .push(rule);
        }
    }
    crd
}

/// Doc comments are wrapped at 100 columns in the source; `kubectl explain` wraps text
/// itself, so the line breaks inside a paragraph are turned back into spaces.
fn reflow_descriptions(crd: CustomResourceDefinition) -> CustomResourceDefinition {
    fn walk(value: &mut serde_json::Value) {
        match value {
            serde_json::Value::Object(map) => {
                for (key, child) in map.iter_mut() {
                    match child {
                        serde_json::Value::String(text) if key == "description" => {
                            *text = text
                                .split("\n\n")
                                .map(|paragraph| {
                                    paragraph.split('\n').collect::<Vec<_>>().join(" ")
                                })
                                .collect::<Vec<_>>()
                                .join("\n\n");
                        }
                        _ => walk(child),
                    }
                }
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(walk),
            _ => {}
        }
    }
    let mut value = serde_json::to_value(crd).expect("a CRD serializes");
    walk(&mut value);
    serde_json::from_value(value).expect("a CRD deserializes")
}

/// What the apiserver accepts as a resource quantity (`500m`, `1.5`, `256Mi`, `1e3`): the
/// grammar of `k8s.io/apimachinery`'s `resource.Quantity`, as controller-gen emits it.
pub const QUANTITY_PATTERN: &str = r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$";

/// What the apiserver accepts as an environment variable name: printable ASCII but `=`.
pub const ENV_NAME_PATTERN: &str = "^[ -<>-~]+$";

/// k8s-openapi's schemas of fields that end up in child objects accept values the
/// apiserver refuses there, so a Project with `cpu: lots` or `env: [{name: "A=B"}]` was
/// admitted and then failed every apply of its workload. One pass over the schemas gives
/// them the apiserver's own rules, refused at admission:
///
/// - every quantity (resource requests and limits): the Quantity grammar as a `pattern`,
///   and a short description instead of the type's page-long one;
/// - `EnvVar.name` and `EnvFromSource.prefix`: printable ASCII but `=` (a name also
///   non-empty).
fn checked_child_fields(crd: CustomResourceDefinition) -> CustomResourceDefinition {
    enum Field {
        Quantity,
        EnvName,
        EnvPrefix,
    }
    fn field(schema: &serde_json::Map<String, serde_json::Value>) -> Option<Field> {
        let description = schema.get("description")?.as_str()?;
        let int_or_string = schema.get("x-kubernetes-int-or-string") == Some(&true.into());
        if int_or_string && description.starts_with("Quantity is a fixed-point") {
            Some(Field::Quantity)
        } else if description.starts_with("Name of the environment variable.") {
            Some(Field::EnvName)
        } else if description
            .starts_with("Optional text to prepend to the name of each environment")
        {
            Some(Field::EnvPrefix)
        } else {
            None
        }
    }
    fn walk(value: &mut serde_json::Value) {
        match value {
            serde_json::Value::Object(schema) => {
                match field(schema) {
                    Some(Field::Quantity) => {
                        schema.insert("pattern".into(), QUANTITY_PATTERN.into());
                        schema.insert(
                            "description".into(),
                            "A quantity, e.g. `500m` or `2` (CPU), `256Mi` or `1Gi` (memory)."
                                .into(),
                        );
                    }
                    Some(Field::EnvName) => {
                        schema.insert("pattern".into(), ENV_NAME_PATTERN.into());
                        schema.insert("minLength".into(), 1.into());
                    }
                    Some(Field::EnvPrefix) => {
                        schema.insert("pattern".into(), ENV_NAME_PATTERN.into());
                    }
                    None => {}
                }
                schema.values_mut().for_each(walk);
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(walk),
            _ => {}
        }
    }
    let mut value = serde_json::to_value(crd).expect("a CRD serializes");
    walk(&mut value);
    serde_json::from_value(value).expect("a CRD deserializes")
}

/// All CRDs as one multi-document YAML stream: what `clouddeck crds` prints and
/// `crds/clouddeck.io.yaml` holds.
pub fn crds_yaml() -> String {
    let mut out = String::from(
        "# Generated from the Rust types in src/api by `clouddeck crds`. Do not edit.\n",
    );
    for crd in crds() {
        out.push_str("---\n");
        out.push_str(&serde_yaml::to_string(&crd).expect("a CRD serializes to YAML"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Serialize;
    use serde::de::DeserializeOwned;
    use std::path::PathBuf;

    fn repo_file(path: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(path)
    }

    #[test]
    fn committed_crds_match_the_types() {
        let path = repo_file("crds/clouddeck.io.yaml");
        let generated = crds_yaml();
        if std::env::var_os("CLOUDDECK_REGEN_CRDS").is_some() {
            std::fs::write(&path, &generated).expect("write crds/clouddeck.io.yaml");
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == generated,
            "crds/clouddeck.io.yaml is out of date with src/api. Regenerate it with\n  \
             CLOUDDECK_REGEN_CRDS=1 cargo test --lib api::tests::committed_crds_match_the_types\n\
             (or `cargo run -- crds > crds/clouddeck.io.yaml`) and commit the result."
        );
    }

    #[test]
    fn quantities_are_checked_by_their_grammar_at_admission() {
        let quantity = regex::Regex::new(QUANTITY_PATTERN).unwrap();
        for good in ["500m", "2", "1.5", ".5", "256Mi", "1Gi", "1e3", "+1k", "0"] {
            assert!(quantity.is_match(good), "{good}");
        }
        for bad in ["lots", "2 GB", "1.5.2", "Mi", "", "1mi", "500M B"] {
            assert!(!quantity.is_match(bad), "{bad}");
        }
        let schemas = serde_json::to_string(&crds()).unwrap();
        let pattern = serde_json::to_string(QUANTITY_PATTERN).unwrap();
        // requests and limits of the build container and of the application container
        assert_eq!(schemas.matches(&pattern).count(), 4);
    }

    #[test]
    fn environment_variable_names_are_checked_at_admission() {
        let name = regex::Regex::new(ENV_NAME_PATTERN).unwrap();
        for good in ["PORT", "NEXT_PUBLIC_URL", "my.var", "a-b", "1ST", "x y"] {
            assert!(name.is_match(good), "{good}");
        }
        for bad in ["A=B", "", "é", "tab\there"] {
            assert!(!name.is_match(bad), "{bad}");
        }
        let schemas = serde_json::to_string(&crds()).unwrap();
        let pattern = serde_json::to_string(ENV_NAME_PATTERN).unwrap();
        // runtime.env[].name and runtime.envFrom[].prefix
        assert_eq!(schemas.matches(&pattern).count(), 2);
    }

    #[test]
    fn every_kind_is_namespaced_in_the_clouddeck_category_with_status() {
        let crds = crds();
        assert_eq!(crds.len(), 9);
        let (users, operators): (Vec<_>, Vec<_>) = crds
            .iter()
            .partition(|crd| crd.spec.names.kind != "HostnameClaim");
        // The operator's own record: cluster-scoped (no tenant RoleBinding reaches it),
        // outside the category users list.
        assert_eq!(operators.len(), 1);
        assert_eq!(operators[0].spec.scope, "Cluster");
        assert!(operators[0].spec.names.categories.is_none());
        for crd in users {
            let name = &crd.metadata.name.as_deref().unwrap();
            assert_eq!(crd.spec.group, GROUP);
            assert_eq!(crd.spec.scope, "Namespaced", "{name}");
            let names = &crd.spec.names;
            assert_eq!(
                names.categories.as_deref(),
                Some(&[CATEGORY.to_string()][..])
            );
            assert!(
                names.short_names.as_ref().is_some_and(|s| !s.is_empty()),
                "{name}"
            );
            let version = &crd.spec.versions[0];
            assert_eq!(version.name, VERSION);
            assert!(
                version.subresources.as_ref().unwrap().status.is_some(),
                "{name}"
            );
            let columns = version.additional_printer_columns.as_ref().unwrap();
            let column = |n: &str| columns.iter().find(|c| c.name == n);
            assert!(column("Age").is_some(), "{name} lacks an Age column");
            assert_eq!(
                column("Message").and_then(|c| c.priority),
                Some(1),
                "{name}"
            );
            if crd.spec.names.kind != "WebhookDelivery" {
                assert!(column("Ready").is_some(), "{name} lacks a Ready column");
            }
            let schema = serde_json::to_value(&version.schema).unwrap();
            let status = &schema["openAPIV3Schema"]["properties"]["status"]["properties"];
            assert!(status["observedGeneration"].is_object(), "{name}");
            assert_eq!(
                status["conditions"]["x-kubernetes-list-type"], "map",
                "{name}"
            );
        }
    }

    #[test]
    fn schemas_are_structural_without_refs_or_any_of() {
        let yaml = crds_yaml();
        for forbidden in ["$ref", "anyOf", "oneOf", "allOf", "\"$schema\""] {
            assert!(
                !yaml.contains(forbidden),
                "generated CRDs contain {forbidden}"
            );
        }
    }

    #[test]
    fn webhook_delivery_columns_read_as_a_delivery_log() {
        let crd = WebhookDelivery::crd();
        let columns: Vec<_> = crd.spec.versions[0]
            .additional_printer_columns
            .as_ref()
            .unwrap()
            .iter()
            .filter(|c| c.priority.is_none())
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(
            columns,
            [
                "Event",
                "Webhook",
                "Phase",
                "Attempts",
                "Last Status",
                "Age"
            ]
        );
    }

    fn round_trip<K>(sample: &str)
    where
        K: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug,
    {
        let text = std::fs::read_to_string(repo_file(&format!("config/samples/{sample}")))
            .unwrap_or_else(|e| panic!("read {sample}: {e}"));
        for document in serde_yaml::Deserializer::from_str(&text) {
            let value = serde_yaml::Value::deserialize(document).unwrap();
            let parsed: K = serde_yaml::from_value(value)
                .unwrap_or_else(|e| panic!("{sample} does not parse: {e}"));
            let again: K = serde_json::from_value(serde_json::to_value(&parsed).unwrap())
                .unwrap_or_else(|e| panic!("{sample} does not round-trip: {e}"));
            assert_eq!(parsed, again, "{sample}");
        }
    }
    use serde::Deserialize;

    #[test]
    fn samples_parse_and_round_trip() {
        round_trip::<Project>("project.yaml");
        round_trip::<Deployment>("deployment.yaml");
        round_trip::<Domain>("domain.yaml");
        round_trip::<EdgeHandler>("edge_handler.yaml");
        round_trip::<CronJob>("cron_job.yaml");
        round_trip::<Webhook>("webhook.yaml");
        round_trip::<SplitTest>("split_test.yaml");
        round_trip::<WebhookDelivery>("webhook_delivery.yaml");
    }

    #[test]
    fn samples_pass_the_controller_checks() {
        let load = |sample: &str| {
            std::fs::read_to_string(repo_file(&format!("config/samples/{sample}"))).unwrap()
        };
        for doc in serde_yaml::Deserializer::from_str(&load("project.yaml")) {
            let p: Project = Project::deserialize(doc).unwrap();
            validation::project(&p.spec).unwrap();
        }
        for doc in serde_yaml::Deserializer::from_str(&load("cron_job.yaml")) {
            let c: CronJob = CronJob::deserialize(doc).unwrap();
            validation::cron_job(&c.spec).unwrap();
        }
        for doc in serde_yaml::Deserializer::from_str(&load("edge_handler.yaml")) {
            let e: EdgeHandler = EdgeHandler::deserialize(doc).unwrap();
            validation::edge_handler(&e.spec).unwrap();
        }
        for doc in serde_yaml::Deserializer::from_str(&load("webhook.yaml")) {
            let w: Webhook = Webhook::deserialize(doc).unwrap();
            validation::webhook(&w.spec).unwrap();
        }
    }

    #[test]
    fn defaults_in_rust_match_the_schema() {
        let project: Project = serde_json::from_value(serde_json::json!({
            "apiVersion": "clouddeck.io/v1alpha1", "kind": "Project",
            "metadata": { "name": "web" },
            "spec": { "git": { "url": "https://github.com/acme/web.git" }, "build": {} }
        }))
        .unwrap();
        assert_eq!(project.spec.runtime.port, 3000);
        assert_eq!(project.spec.runtime.replicas, 1);
        assert_eq!(project.spec.retain, 5);
        assert_eq!(project.spec.production_branch, "main");
        assert_eq!(project.spec.git.as_ref().unwrap().branch, "main");
        assert_eq!(project.spec.build.as_ref().unwrap().timeout, "15m");

        let crd = serde_json::to_value(Project::crd()).unwrap();
        let spec = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
        assert_eq!(spec["properties"]["retain"]["default"], 5);
        assert_eq!(
            spec["properties"]["runtime"]["properties"]["port"]["default"],
            3000
        );

        let webhook: Webhook = serde_json::from_value(serde_json::json!({
            "apiVersion": "clouddeck.io/v1alpha1", "kind": "Webhook",
            "metadata": { "name": "w" },
            "spec": { "url": "https://x.example", "events": ["*"] }
        }))
        .unwrap();
        assert_eq!(
            webhook.spec.retry.schedule,
            ["5s", "5m", "30m", "2h", "5h", "10h", "10h"]
        );
        assert_eq!(webhook.spec.timeout_seconds, 15);
    }

    #[test]
    fn delivery_payload_is_text_of_bounded_size() {
        let payload = serde_json::json!({ "type": "deployment.ready", "data": { "n": [1, 2] } });
        let delivery: WebhookDelivery = serde_json::from_value(serde_json::json!({
            "apiVersion": "clouddeck.io/v1alpha1", "kind": "WebhookDelivery",
            "metadata": { "name": "d" },
            "spec": {
                "webhookRef": { "name": "w" }, "eventType": "deployment.ready",
                "webhookId": "msg_1", "timestamp": "2026-11-29T10:00:00Z",
                "payload": payload.to_string()
            }
        }))
        .unwrap();
        assert_eq!(delivery.spec.payload_json(), payload);
        // Text has no depth: no payload can make a list of deliveries undecodable.
        let crd = serde_json::to_value(WebhookDelivery::crd()).unwrap();
        let field = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
            ["properties"]["payload"];
        assert_eq!(field["type"], "string");
        assert_eq!(field["maxLength"], 262144);
    }
}
