//! Builds: the batch/v1 Job that turns a git revision into a pushed image, and how its
//! result — the image digest — comes back through the build container's termination
//! message, the way Tekton and Shipwright report results.

pub mod config;
pub mod job;
pub mod result;

pub use config::BuildConfig;
pub use job::{BuildJobInput, build_job, build_job_name};
pub use result::{BuildResult, parse_termination_message};
