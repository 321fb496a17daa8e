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
        with_root_rule(
            Project::crd(),
            crate::hostnames::KEY_NAME_RULE,
            crate::hostnames::KEY_NAME_MESSAGE,
        ),
        with_root_rule(
            Deployment::crd(),
            DEPLOYMENT_NAME_RULE,
            DEPLOYMENT_NAME_MESSAGE,
        ),
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

/// A Deployment's name names its Service, which must be a DNS-1035 label.
pub const DEPLOYMENT_NAME_RULE: &str =
    "self.metadata.name.size() <= 63 && self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')";
/// The message of [`DEPLOYMENT_NAME_RULE`].
pub const DEPLOYMENT_NAME_MESSAGE: &str = "a Deployment's name names its Service: at most 63 \
     lowercase letters, digits and '-', starting with a letter";

/// Adds a rule on the whole object: only a rule at the schema's root may read
/// `metadata.name`, so it is added to the generated CRD here. A Project's name is the key
/// of its hostnames (see [`crate::hostnames`]); a Deployment's names its Service.
fn with_root_rule(
    mut crd: CustomResourceDefinition,
    rule: &str,
    message: &str,
) -> CustomResourceDefinition {
    let rule = serde_json::json!({ "rule": rule, "message": message });
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

/// What the apiserver accepts as a Secret or ConfigMap key.
pub const DATA_KEY_PATTERN: &str = r"^[-._a-zA-Z0-9]+$";

/// The pod fields an environment variable may read (`env[].valueFrom.fieldRef.fieldPath`),
/// besides one label or annotation.
const POD_FIELD_PATHS: &str = "['metadata.name', 'metadata.namespace', 'metadata.uid', \
     'spec.nodeName', 'spec.serviceAccountName', 'status.hostIP', 'status.hostIPs', \
     'status.podIP', 'status.podIPs']";

/// k8s-openapi's schemas of fields that end up in child objects accept values the
/// apiserver refuses there, so a Project with `cpu: lots` or `env: [{name: "A=B"}]` was
/// admitted and then failed every apply of its workload. One pass over the schemas gives
/// them the apiserver's own pod rules, refused at admission:
///
/// - every quantity (resource requests and limits, a `resourceFieldRef`'s divisor): the
///   Quantity grammar as a `pattern` (requests and limits also with a short description
///   instead of the type's page-long one);
/// - resource requirements: cpu, memory, ephemeral-storage or domain-qualified
///   (extended) resource names, requests no larger than limits (an extended resource's
///   equal to its limit, and whole), no resource claims (CloudDeck's pods have none);
/// - `EnvVar.name` and `EnvFromSource.prefix`: printable ASCII but `=` (a name also
///   non-empty);
/// - an environment variable's `value` or one `valueFrom` source, never both; a field
///   reference to a pod field the downward API serves; a resource reference to this
///   container's own limits or requests (no `containerName`: one runtime serves the
///   application container and a CronJob's), with a divisor the apiserver allows;
///   `fileKeyRef` refused (the pods mount no env file);
/// - the Secret and ConfigMap names and keys they reference: DNS subdomain names and
///   Secret-key characters; an `envFrom` entry names exactly one of the two.
fn checked_child_fields(crd: CustomResourceDefinition) -> CustomResourceDefinition {
    type Schema = serde_json::Map<String, serde_json::Value>;
    fn rule(schema: &mut Schema, rule: &str, message: &str) {
        let rules = schema
            .entry("x-kubernetes-validations")
            .or_insert_with(|| serde_json::json!([]));
        if let Some(rules) = rules.as_array_mut() {
            rules.push(serde_json::json!({ "rule": rule, "message": message }));
        }
    }
    fn string(schema: &mut Schema, pattern: &str, min: usize, max: usize) {
        schema.insert("pattern".into(), pattern.into());
        schema.insert("minLength".into(), min.into());
        schema.insert("maxLength".into(), max.into());
    }
    fn check(schema: &mut Schema) {
        let description = schema
            .get("description")
            .and_then(|d| d.as_str())
            .unwrap_or_default()
            .to_owned();
        let is = |prefix: &str| description.starts_with(prefix);
        let int_or_string = schema.get("x-kubernetes-int-or-string") == Some(&true.into());
        if int_or_string && is("Quantity is a fixed-point") {
            schema.insert("pattern".into(), QUANTITY_PATTERN.into());
            schema.insert("maxLength".into(), 64.into());
            schema.insert(
                "description".into(),
                "A quantity, e.g. `500m` or `2` (CPU), `256Mi` or `1Gi` (memory).".into(),
            );
        } else if int_or_string && is("Specifies the output format of the exposed resources") {
            schema.insert("pattern".into(), QUANTITY_PATTERN.into());
            schema.insert("maxLength".into(), 64.into());
        } else if is("Name of the environment variable.") {
            string(schema, ENV_NAME_PATTERN, 1, 4096);
        } else if is("Optional text to prepend to the name of each environment") {
            string(schema, ENV_NAME_PATTERN, 0, 4096);
        } else if is("Name of the referent.") {
            string(schema, common::HOSTNAME_PATTERN, 1, 253);
        } else if is("The key to select.") || is("The key of the secret to select from.") {
            string(schema, DATA_KEY_PATTERN, 1, 253);
        } else if is("Path of the field to select") {
            schema.insert("maxLength".into(), 1024.into());
        } else if is("EnvVar represents an environment variable") {
            rule(
                schema,
                "!has(self.valueFrom) || !has(self.value) || self.value == ''",
                "give value or valueFrom, not both",
            );
        } else if is("Source for the environment variable's value") {
            rule(
                schema,
                "[has(self.configMapKeyRef), has(self.fieldRef), has(self.resourceFieldRef), \
                 has(self.secretKeyRef), has(self.fileKeyRef)].filter(x, x).size() == 1",
                "give exactly one of configMapKeyRef, secretKeyRef, fieldRef and resourceFieldRef",
            );
            rule(
                schema,
                "!has(self.fileKeyRef)",
                "fileKeyRef is not supported: CloudDeck's pods mount no env file",
            );
        } else if is("Selects a field of the pod") {
            rule(
                schema,
                &format!(
                    "self.fieldPath in {POD_FIELD_PATHS} || \
                     self.fieldPath.matches('^metadata\\\\.(labels|annotations)\\\\[.+\\\\]$')"
                ),
                &format!(
                    "fieldPath must be one of {POD_FIELD_PATHS}, or metadata.labels['<key>'] \
                     or metadata.annotations['<key>']"
                ),
            );
            rule(
                schema,
                "!has(self.apiVersion) || self.apiVersion == 'v1'",
                "apiVersion must be v1",
            );
        } else if is("Selects a resource of the container") {
            rule(
                schema,
                "self.resource in ['limits.cpu', 'limits.memory', 'limits.ephemeral-storage', \
                 'requests.cpu', 'requests.memory', 'requests.ephemeral-storage']",
                "resource must be limits.cpu, limits.memory, limits.ephemeral-storage, \
                 requests.cpu, requests.memory or requests.ephemeral-storage",
            );
            rule(
                schema,
                "!has(self.containerName) || self.containerName == ''",
                "leave containerName out: the variable reads its own container's resources",
            );
            rule(
                schema,
                "!has(self.divisor) || !self.resource.endsWith('.cpu') || \
                 ['0', '1m', '1'].exists(d, quantity(d).compareTo(quantity(string(self.divisor))) == 0)",
                "a cpu divisor must be 1m or 1",
            );
            rule(
                schema,
                "!has(self.divisor) || self.resource.endsWith('.cpu') || \
                 ['0', '1', '1k', '1M', '1G', '1T', '1P', '1E', '1Ki', '1Mi', '1Gi', '1Ti', \
                 '1Pi', '1Ei'].exists(d, quantity(d).compareTo(quantity(string(self.divisor))) == 0)",
                "a memory or storage divisor must be 1, 1k, 1M, 1G, 1T, 1P, 1E, 1Ki, 1Mi, 1Gi, \
                 1Ti, 1Pi or 1Ei",
            );
        } else if is("EnvFromSource represents the source") {
            rule(
                schema,
                "has(self.configMapRef) != has(self.secretRef)",
                "give exactly one of configMapRef and secretRef",
            );
        }
        if is_resource_requirements(schema) {
            checked_resource_requirements(schema);
        }
    }
    fn is_resource_requirements(schema: &Schema) -> bool {
        schema
            .get("properties")
            .and_then(|p| p.as_object())
            .is_some_and(|p| {
                ["claims", "limits", "requests"]
                    .iter()
                    .all(|k| p.contains_key(*k))
            })
    }
    fn checked_resource_requirements(schema: &mut Schema) {
        if let Some(properties) = schema.get_mut("properties").and_then(|p| p.as_object_mut()) {
            for map in ["limits", "requests"] {
                if let Some(map) = properties.get_mut(map).and_then(|m| m.as_object_mut()) {
                    map.insert("maxProperties".into(), 16.into());
                    map.insert(
                        "x-kubernetes-validations".into(),
                        serde_json::json!([{
                            "rule": "self.all(name, name in ['cpu', 'memory', 'ephemeral-storage'] \
                                     || name.contains('/'))",
                            "message": "resource names are cpu, memory, ephemeral-storage or \
                                        domain-qualified (example.com/gpu)",
                        }]),
                    );
                }
            }
        }
        rule(
            schema,
            "!has(self.claims) || size(self.claims) == 0",
            "claims are not supported: CloudDeck's pods have no resource claims",
        );
        rule(
            schema,
            "!has(self.requests) || !has(self.limits) || self.requests.all(name, \
             !(name in self.limits) || !isQuantity(self.requests[name]) || \
             !isQuantity(self.limits[name]) || \
             quantity(self.requests[name]).compareTo(quantity(self.limits[name])) <= 0)",
            "a request must not exceed its limit",
        );
        rule(
            schema,
            "!has(self.requests) || self.requests.all(name, !name.contains('/') || \
             (has(self.limits) && name in self.limits && isQuantity(self.requests[name]) && \
             isQuantity(self.limits[name]) && quantity(self.requests[name]).isInteger() && \
             quantity(self.requests[name]).compareTo(quantity(self.limits[name])) == 0))",
            "a domain-qualified (extended) resource takes a whole number, and its request must \
             equal its limit",
        );
    }
    fn walk(value: &mut serde_json::Value) {
        match value {
            serde_json::Value::Object(schema) => {
                check(schema);
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
        // requests and limits of the build container and of the application container, and
        // the divisor of an environment variable's resourceFieldRef
        assert_eq!(schemas.matches(&pattern).count(), 5);
    }

    #[test]
    fn every_pod_field_in_a_crd_carries_the_pods_rules() {
        // What each field must have, by the description k8s-openapi gives it.
        fn walk(value: &serde_json::Value, found: &mut Vec<String>) {
            match value {
                serde_json::Value::Object(schema) => {
                    let description = schema.get("description").and_then(|d| d.as_str());
                    let has = |key: &str| schema.contains_key(key);
                    match description {
                        Some(d) if d.starts_with("Name of the referent.") => {
                            assert!(has("pattern") && has("maxLength"), "{d}");
                            found.push("referent".into());
                        }
                        Some(d)
                            if d.starts_with("The key to select.")
                                || d.starts_with("The key of the secret to select from.") =>
                        {
                            assert_eq!(schema["pattern"], DATA_KEY_PATTERN, "{d}");
                            found.push("key".into());
                        }
                        Some(d)
                            if d.starts_with("EnvVar represents")
                                || d.starts_with("Source for the environment")
                                || d.starts_with("Selects a field of the pod")
                                || d.starts_with("Selects a resource of the container")
                                || d.starts_with("EnvFromSource represents") =>
                        {
                            assert!(has("x-kubernetes-validations"), "{d}");
                            found.push(d.split_whitespace().take(3).collect());
                        }
                        _ => {}
                    }
                    schema.values().for_each(|v| walk(v, found));
                }
                serde_json::Value::Array(items) => items.iter().for_each(|v| walk(v, found)),
                _ => {}
            }
        }
        let mut found = Vec::new();
        walk(&serde_json::to_value(crds()).unwrap(), &mut found);
        // env[].valueFrom: Secret and ConfigMap (name and key); envFrom: Secret and ConfigMap.
        assert_eq!(found.iter().filter(|f| *f == "referent").count(), 4);
        assert_eq!(found.iter().filter(|f| *f == "key").count(), 2);
        assert_eq!(found.len(), 6 + 5, "{found:?}");
        let schemas = serde_json::to_string(&crds()).unwrap();
        // requests ≤ limits, on the build container and the application container
        assert_eq!(
            schemas
                .matches("a request must not exceed its limit")
                .count(),
            2
        );
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
