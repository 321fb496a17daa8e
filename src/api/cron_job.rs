//! CronJob (`cronjobs.clouddeck.io`): a schedule that calls the production deployment
//! over HTTP or runs a command in its image.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{HttpHeader, PATH_PATTERN, ProjectReference, conditions_schema};

/// A scheduled job of a Project: on a cron schedule (in a time zone), either call a path
/// of the production deployment over HTTP or run a command in the production image.
/// Compiled to a batch/v1 CronJob that follows each promotion.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "clouddeck.io",
    version = "v1alpha1",
    kind = "CronJob",
    namespaced,
    status = "CronJobStatus",
    shortname = "cdcron",
    category = "clouddeck",
    derive = "PartialEq",
    doc = "A scheduled job of a Project: calls a path of its production deployment or runs a command in its production image. Use the full name cronjobs.clouddeck.io (or the short name cdcron) to tell it from batch/v1 CronJobs.",
    printcolumn = r#"{ "name": "Project", "type": "string", "jsonPath": ".spec.projectRef.name" }"#,
    printcolumn = r#"{ "name": "Schedule", "type": "string", "jsonPath": ".spec.schedule" }"#,
    printcolumn = r#"{ "name": "Suspend", "type": "boolean", "jsonPath": ".spec.suspend" }"#,
    printcolumn = r#"{ "name": "Ready", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Ready\")].status" }"#,
    printcolumn = r#"{ "name": "Last Schedule", "type": "date", "jsonPath": ".status.lastScheduleTime" }"#,
    printcolumn = r#"{ "name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp" }"#,
    printcolumn = r#"{ "name": "Message", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Ready\")].message", "priority": 1 }"#
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    { "rule": "has(self.http) != has(self.command)", "message": "exactly one of spec.http or spec.command must be set" }
]))]
pub struct CronJobSpec {
    /// The Project whose production deployment the job runs against.
    pub project_ref: ProjectReference,

    /// Standard cron syntax, five fields (minute hour day-of-month month day-of-week) or a
    /// macro: `0 * * * *` or `@hourly` is every hour, `*/15 9-17 * * 1-5` every quarter
    /// hour in office hours. Checked by the controller (reported as `Stalled`).
    #[schemars(length(min = 1, max = 128))]
    pub schedule: String,

    /// IANA time zone the schedule is read in, e.g. `Europe/Berlin`. Defaults to UTC.
    /// Checked by the controller (reported as `Stalled`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 64),
        regex(pattern = r"^[A-Za-z0-9_+\-]+(/[A-Za-z0-9_+\-]+)*$")
    )]
    pub time_zone: Option<String>,

    /// Stop scheduling new runs; runs in progress finish.
    #[serde(default)]
    pub suspend: bool,

    /// What happens when a run is due while the previous one still runs: `Forbid` skips
    /// the new run, `Replace` stops the old one, `Allow` runs both.
    #[serde(default)]
    pub concurrency_policy: ConcurrencyPolicy,

    /// How long one run may take, in seconds, before it is stopped and counted as failed.
    #[serde(default = "default_timeout_seconds")]
    #[schemars(range(min = 1, max = 86400))]
    pub timeout_seconds: i32,

    /// Call a path of the production deployment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpCall>,

    /// Run this command in the production image, with the Project's runtime environment,
    /// e.g. `["npm", "run", "cleanup"]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64))]
    pub command: Option<Vec<String>>,
}

/// An HTTP request to the production deployment; a non-2xx answer fails the run.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HttpCall {
    /// Path and query to call, e.g. `/api/cron/revalidate?scope=all`.
    #[schemars(length(min = 1, max = 2048), regex(pattern = PATH_PATTERN))]
    pub path: String,

    /// HTTP method.
    #[serde(default)]
    pub method: HttpMethod,

    /// Extra request headers, e.g. an authorization token from your own scheme.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub headers: Vec<HttpHeader>,
}

/// HTTP methods a cron call may use.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum HttpMethod {
    #[default]
    Get,
    Post,
    Put,
    Patch,
    Delete,
}

/// Overlapping runs.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum ConcurrencyPolicy {
    Allow,
    #[default]
    Forbid,
    Replace,
}

/// What the CronJob's controller observed.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CronJobStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `Reconciling` and `Stalled`, with a CamelCase reason.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Vec<Condition>,
    /// When a run was last started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_schedule_time: Option<Time>,
    /// When a run last succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_successful_time: Option<Time>,
    /// When a run last failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failure_time: Option<Time>,
    /// The Deployment whose image or URL the job currently uses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment: Option<String>,
}

fn default_timeout_seconds() -> i32 {
    300
}
