//! Deployment: one immutable deploy of a Project at a git revision or an image.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{BRANCH_PATTERN, ProjectReference, add_cel_rule, conditions_schema};
use super::project::IMAGE_PATTERN;

/// One deploy of a Project: a build of a git revision (or a prebuilt image) rolled out as
/// its own workload, reachable at its own preview URL and, when promoted, at production.
/// Its source never changes: deploy again to ship another revision.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "clouddeck.io",
    version = "v1alpha1",
    kind = "Deployment",
    namespaced,
    status = "DeploymentStatus",
    shortname = "cdeploy",
    category = "clouddeck",
    derive = "PartialEq",
    selectable = ".spec.projectRef.name",
    doc = "One immutable deploy of a Project at a git revision or image, with its build, workload and preview URL. Use the full name deployments.clouddeck.io (or the short name cdeploy) to tell it from apps/v1 Deployments.",
    printcolumn = r#"{ "name": "Project", "type": "string", "jsonPath": ".spec.projectRef.name" }"#,
    printcolumn = r#"{ "name": "Target", "type": "string", "jsonPath": ".spec.target" }"#,
    printcolumn = r#"{ "name": "Phase", "type": "string", "jsonPath": ".status.phase" }"#,
    printcolumn = r#"{ "name": "Ready", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Ready\")].status" }"#,
    printcolumn = r#"{ "name": "URL", "type": "string", "jsonPath": ".status.url" }"#,
    printcolumn = r#"{ "name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp" }"#,
    printcolumn = r#"{ "name": "Commit", "type": "string", "jsonPath": ".status.commit", "priority": 1 }"#,
    printcolumn = r#"{ "name": "Message", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Ready\")].message", "priority": 1 }"#
)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentSpec {
    /// The Project this deploys. Cannot be changed.
    #[schemars(extend("x-kubernetes-validations" = [
        { "rule": "self == oldSelf", "message": "spec.projectRef is immutable" }
    ]))]
    pub project_ref: ProjectReference,

    /// `production` deployments are promoted to the Project's production URL when Ready;
    /// `preview` deployments only get their own URL.
    #[serde(default)]
    pub target: Target,

    /// What to deploy: a git revision or an image. Cannot be changed after creation.
    // A transform, not `extend`: `extend` would replace the type's own "exactly one" rule.
    #[schemars(transform = source_is_immutable)]
    pub source: DeploymentSource,
}

/// Production or preview.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Target {
    Production,
    #[default]
    Preview,
}

/// A git revision or an image; exactly one.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    { "rule": "has(self.git) != has(self.image)", "message": "exactly one of spec.source.git or spec.source.image must be set" }
]))]
pub struct DeploymentSource {
    /// A revision of the Project's git repository.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git: Option<GitRevision>,

    /// A prebuilt image, for Projects that run images, e.g. `ghcr.io/acme/api:2.0.1` or
    /// pinned by digest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512), regex(pattern = IMAGE_PATTERN))]
    pub image: Option<String>,
}

/// A branch, and optionally the exact commit on it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GitRevision {
    /// The branch, e.g. `main` or `feature/checkout`.
    #[schemars(length(min = 1, max = 255), regex(pattern = BRANCH_PATTERN))]
    pub branch: String,

    /// The commit SHA to build (7 to 64 hex digits). When omitted, the branch head at
    /// build time is built and recorded in `status.commit`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 7, max = 64), regex(pattern = r"^[0-9a-f]{7,64}$"))]
    pub commit: Option<String>,
}

/// Where a Deployment is in its life: Queued → Building → Deploying → Ready, or
/// Failed / Canceled / Superseded.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum DeploymentPhase {
    Queued,
    Building,
    Deploying,
    Ready,
    Failed,
    Canceled,
    Superseded,
}

/// What the Deployment's controller observed.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// `Ready`, `Reconciling` and `Stalled`, with a CamelCase reason.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Vec<Condition>,

    /// Queued, Building, Deploying, Ready, Failed, Canceled or Superseded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<DeploymentPhase>,

    /// The commit that was built (resolved from the branch when the spec names none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,

    /// The image that runs, pinned by digest: `registry/repo@sha256:...`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_digest: Option<String>,

    /// This deployment's own URL, e.g. `https://storefront-7f3c9a.apps.example.com`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,

    /// The build Pod, whose logs are the build log: `kubectl logs -n <ns> <buildPod>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build_pod: Option<String>,

    /// When each phase started and ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timings: Option<PhaseTimings>,
}

/// Timestamps of a Deployment's phases.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PhaseTimings {
    /// When the Deployment was queued.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queued_at: Option<Time>,
    /// When its build started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build_started_at: Option<Time>,
    /// When its build finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build_finished_at: Option<Time>,
    /// When the rollout started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deploy_started_at: Option<Time>,
    /// When it became Ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_at: Option<Time>,
    /// When it reached Failed, Canceled or Superseded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Time>,
}

fn source_is_immutable(schema: &mut schemars::Schema) {
    add_cel_rule(
        schema,
        "self == oldSelf",
        "spec.source is immutable: create a new Deployment to deploy another revision",
    );
}
