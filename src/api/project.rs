//! Project: what to build and run — a git repository or a prebuilt image — and how.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{EnvFromSource, EnvVar, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{
    BRANCH_PATTERN, DURATION_PATTERN, PATH_PATTERN, SecretReference, conditions_schema,
};

/// A git URL CloudDeck can clone: `https://host/org/repo(.git)`, `ssh://git@host/org/repo`
/// or the scp-like `git@host:org/repo.git`.
pub const GIT_URL_PATTERN: &str =
    r"^(https?://[^\s/@]+(@[^\s/]+)?/[^\s]+|ssh://[^\s]+|[A-Za-z0-9._-]+@[A-Za-z0-9.-]+:[^\s]+)$";

/// An OCI image reference: `registry/repository[:tag][@digest]`.
pub const IMAGE_PATTERN: &str =
    r"^[a-z0-9]([a-z0-9._:/-]*[a-z0-9])?(:[A-Za-z0-9_.-]+)?(@sha256:[a-f0-9]{64})?$";

/// A Project: an application CloudDeck builds and runs, from a git repository or from a
/// prebuilt container image. Its Deployments, Domains, edge rules, cron jobs and split
/// tests refer to it by name.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "clouddeck.io",
    version = "v1alpha1",
    kind = "Project",
    namespaced,
    status = "ProjectStatus",
    shortname = "proj",
    category = "clouddeck",
    derive = "PartialEq",
    doc = "A Project: an application CloudDeck builds (from git) or runs (from an image), with its runtime settings and how many old deployments it keeps for instant rollback.",
    printcolumn = r#"{ "name": "Ready", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Ready\")].status" }"#,
    printcolumn = r#"{ "name": "Production", "type": "string", "jsonPath": ".status.productionDeployment" }"#,
    printcolumn = r#"{ "name": "URL", "type": "string", "jsonPath": ".status.productionUrl" }"#,
    printcolumn = r#"{ "name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp" }"#,
    printcolumn = r#"{ "name": "Message", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Ready\")].message", "priority": 1 }"#
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    { "rule": "has(self.git) != has(self.image)", "message": "exactly one of spec.git or spec.image must be set" },
    { "rule": "!has(self.image) || !has(self.build)", "message": "spec.build applies to git sources only; an image is not built" },
    { "rule": "self.keepWarm <= self.retain", "message": "spec.keepWarm cannot exceed spec.retain", "fieldPath": ".keepWarm" }
]))]
pub struct ProjectSpec {
    /// The git repository to build from. Exactly one of `git` and `image` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git: Option<GitSource>,

    /// A prebuilt container image to run instead of building from git, e.g.
    /// `ghcr.io/acme/storefront:1.4.2`. Exactly one of `git` and `image` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512), regex(pattern = IMAGE_PATTERN))]
    pub image: Option<String>,

    /// How images are built from `git`. Defaults apply when omitted (a Dockerfile build).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build: Option<BuildSpec>,

    /// How the application runs: port, command, replicas, resources, health check and
    /// environment.
    #[serde(default)]
    pub runtime: RuntimeSpec,

    /// The registry built images are pushed to (and pulled from). Required for git
    /// projects unless the operator is configured with a default registry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry: Option<RegistrySpec>,

    /// The branch whose pushes deploy to production; other branches get preview
    /// deployments.
    #[serde(default = "default_branch")]
    #[schemars(length(min = 1, max = 255), regex(pattern = BRANCH_PATTERN))]
    pub production_branch: String,

    /// How many superseded production deployments are kept for instant rollback; older
    /// ones are deleted.
    #[serde(default = "default_retain")]
    #[schemars(range(min = 0, max = 50))]
    pub retain: i32,

    /// How many of the retained deployments (the most recent first) keep running at full
    /// scale so that rolling back to them takes seconds. The others are scaled to zero and
    /// start again on rollback. At most `retain`.
    #[serde(default)]
    #[schemars(range(min = 0, max = 50))]
    pub keep_warm: i32,

    /// How many preview deployments of each branch are kept (the most recent first;
    /// previews of an image, without a branch, count as one branch). Older ones are deleted
    /// with everything they run, so previews cost a bounded amount; the one a branch alias
    /// serves is always kept.
    #[serde(default = "default_preview_retain")]
    #[schemars(range(min = 1, max = 50))]
    pub preview_retain: i32,

    /// Pins production to this Deployment (by name) instead of the latest ready
    /// production deployment: set it to roll back, remove it to resume normal promotion.
    /// The Deployment must belong to this Project and be Ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = super::common::HOSTNAME_PATTERN))]
    pub rollback_to: Option<String>,
}

/// Where the source code lives.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GitSource {
    /// Clone URL: `https://github.com/acme/storefront.git`, `ssh://git@host/org/repo` or
    /// `git@github.com:acme/storefront.git`.
    #[schemars(length(min = 1, max = 2048), regex(pattern = GIT_URL_PATTERN))]
    pub url: String,

    /// Branch built when a Deployment does not name one.
    #[serde(default = "default_branch")]
    #[schemars(length(min = 1, max = 255), regex(pattern = BRANCH_PATTERN))]
    pub branch: String,

    /// Sub-directory of the repository to build (monorepos), e.g. `apps/web`. Defaults to
    /// the repository root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024), regex(pattern = r"^[^/\s][^\s]*$"))]
    pub path: Option<String>,

    /// Secret holding clone credentials: `username` and `password` (a token) for HTTPS,
    /// or `ssh-privatekey` (and optionally `known_hosts`) for SSH.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret_ref: Option<SecretReference>,
}

/// How to turn source into an image.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BuildSpec {
    /// `dockerfile` builds the repository's Dockerfile with BuildKit; `buildpacks` uses
    /// Cloud Native Buildpacks and needs no Dockerfile.
    #[serde(default)]
    pub strategy: BuildStrategy,

    /// Path of the Dockerfile, relative to `git.path`. Used by the `dockerfile` strategy.
    #[serde(default = "default_dockerfile")]
    #[schemars(length(min = 1, max = 1024))]
    pub dockerfile: String,

    /// Build arguments (`--build-arg`), e.g. `NODE_ENV: production`. Not secret: use
    /// `envFrom` for secrets.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 64))]
    pub args: BTreeMap<String, String>,

    /// Secrets whose keys are exposed to the build as environment variables (BuildKit
    /// secrets, never baked into image layers), e.g. an `NPM_TOKEN`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub env_from: Vec<SecretReference>,

    /// Reuse layers between builds through a cache image next to the pushed image.
    #[serde(default = "default_true")]
    pub cache: bool,

    /// How long a build may run before it is failed, e.g. `15m` or `1h`.
    #[serde(default = "default_build_timeout")]
    #[schemars(length(max = 32), regex(pattern = DURATION_PATTERN))]
    pub timeout: String,

    /// CPU and memory for the build container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
}

/// Build strategy.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum BuildStrategy {
    #[default]
    Dockerfile,
    Buildpacks,
}

/// How the application runs.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RuntimeSpec {
    /// The port the application listens on. Defaults to 3000, the Node.js/Next.js
    /// convention; set 8080 (or whatever your server uses) otherwise. Also exposed to the
    /// application as `PORT`.
    #[serde(default = "default_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,

    /// Overrides the image's entrypoint, e.g. `["node", "server.js"]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub command: Vec<String>,

    /// Arguments to the command (the image's CMD when `command` is not set).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub args: Vec<String>,

    /// Pods per production deployment. Preview deployments run one.
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 0, max = 100))]
    pub replicas: i32,

    /// CPU and memory of each application container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,

    /// HTTP path probed for readiness and liveness; a 2xx or 3xx answer is healthy.
    #[serde(default = "default_health_check_path")]
    #[schemars(length(min = 1, max = 1024), regex(pattern = PATH_PATTERN))]
    pub health_check_path: String,

    /// Environment variables, as in a Pod (`value` or `valueFrom` a Secret or ConfigMap key).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256))]
    pub env: Vec<EnvVar>,

    /// Secrets and ConfigMaps whose keys all become environment variables.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub env_from: Vec<EnvFromSource>,

    /// Seconds a rollout may go without progress (a pod becoming available) before the
    /// Deployment fails with `RolloutStalled`; 300 when not set. The workload's
    /// `progressDeadlineSeconds`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 10, max = 3600))]
    pub progress_deadline_seconds: Option<i32>,
}

impl Default for RuntimeSpec {
    fn default() -> Self {
        RuntimeSpec {
            port: default_port(),
            command: Vec::new(),
            args: Vec::new(),
            replicas: default_replicas(),
            resources: None,
            health_check_path: default_health_check_path(),
            env: Vec::new(),
            env_from: Vec::new(),
            progress_deadline_seconds: None,
        }
    }
}

/// Where images are pushed.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RegistrySpec {
    /// Image repository built images are pushed to, tagged per deployment, e.g.
    /// `registry.example.com/acme/storefront`.
    #[schemars(
        length(min = 1, max = 512),
        regex(pattern = r"^[a-z0-9]([a-z0-9._:/-]*[a-z0-9])?$")
    )]
    pub repository: String,

    /// A `kubernetes.io/dockerconfigjson` Secret with push (and pull) credentials for
    /// the repository.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub push_secret_ref: Option<SecretReference>,
}

/// What the Project's controller observed.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProjectStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// `Ready`, `Reconciling` and `Stalled`, with a CamelCase reason.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Vec<Condition>,

    /// Name of the Deployment production traffic goes to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub production_deployment: Option<String>,

    /// URL of production, e.g. `https://storefront.apps.example.com`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub production_url: Option<String>,

    /// The hostname production is served at, set before the first Deployment is Ready:
    /// `<project>.<base domain>`, or `<project>-<id>.<base domain>` when an older Project
    /// of the same name in another namespace holds `<project>.<base domain>`. Branch
    /// aliases start with the same first label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,

    /// The most recent Deployment of each branch.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["branch"]))]
    pub latest_deployments: Vec<BranchDeployment>,
}

/// The latest Deployment of one branch.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BranchDeployment {
    /// The git branch.
    pub branch: String,
    /// Name of its latest Deployment.
    pub deployment: String,
    /// The commit that Deployment builds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    /// The Deployment's URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

pub(crate) fn default_branch() -> String {
    "main".into()
}
fn default_preview_retain() -> i32 {
    3
}

fn default_retain() -> i32 {
    5
}
fn default_dockerfile() -> String {
    "Dockerfile".into()
}
fn default_true() -> bool {
    true
}
fn default_build_timeout() -> String {
    "15m".into()
}
/// Default application port: 3000, the Node.js/Next.js convention.
pub const DEFAULT_PORT: i32 = 3000;
fn default_port() -> i32 {
    DEFAULT_PORT
}
fn default_replicas() -> i32 {
    1
}
fn default_health_check_path() -> String {
    "/".into()
}
