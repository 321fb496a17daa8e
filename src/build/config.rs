//! The images build Jobs run. Platform teams pin them (or point them at a mirror) here,
//! not in code, so they upgrade builders without a new operator release.
//!
//! Every setting is a `clouddeck run` flag with a `CLOUDDECK_*` environment variable, part
//! of [`crate::config::OperatorConfig`].

use clap::Args;

/// Builder images and versions.
#[derive(Debug, Clone, PartialEq, Eq, Args)]
#[command(next_help_heading = "Builds")]
pub struct BuildConfig {
    /// Image of the build Jobs' clone step (needs `git` and `sh`).
    #[arg(
        long,
        env = "CLOUDDECK_GIT_IMAGE",
        value_name = "IMAGE",
        default_value = "alpine/git:2.47.2"
    )]
    pub git_image: String,

    /// Rootless BuildKit image for Dockerfile builds (runs `buildctl-daemonless.sh`).
    #[arg(
        long,
        env = "CLOUDDECK_BUILDKIT_IMAGE",
        value_name = "IMAGE",
        default_value = "moby/buildkit:v0.25.1-rootless"
    )]
    pub buildkit_image: String,

    /// Cloud Native Buildpacks builder image (holds `/cnb/lifecycle/creator`) for
    /// `strategy: buildpacks`.
    #[arg(
        long,
        env = "CLOUDDECK_BUILDPACKS_BUILDER_IMAGE",
        value_name = "IMAGE",
        default_value = "paketobuildpacks/builder-jammy-base:0.4.532"
    )]
    pub buildpacks_builder_image: String,

    /// CNB platform API version the lifecycle is driven with.
    #[arg(
        long,
        env = "CLOUDDECK_BUILDPACKS_PLATFORM_API",
        value_name = "VERSION",
        default_value = "0.13"
    )]
    pub buildpacks_platform_api: String,

    /// Image repository for Projects without `spec.registry`; a Project then pushes to
    /// `<repository>/<namespace>/<project>`.
    #[arg(long, env = "CLOUDDECK_DEFAULT_REGISTRY", value_name = "REPOSITORY")]
    pub default_registry: Option<String>,
}

impl Default for BuildConfig {
    /// The built-in defaults, ignoring the environment.
    fn default() -> Self {
        BuildConfig {
            git_image: "alpine/git:2.47.2".into(),
            buildkit_image: "moby/buildkit:v0.25.1-rootless".into(),
            buildpacks_builder_image: "paketobuildpacks/builder-jammy-base:0.4.532".into(),
            buildpacks_platform_api: "0.13".into(),
            default_registry: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Flags {
        #[command(flatten)]
        build: BuildConfig,
    }

    #[test]
    fn flag_defaults_match_default() {
        if std::env::vars().any(|(k, _)| k.starts_with("CLOUDDECK_")) {
            return;
        }
        let parsed = Flags::try_parse_from(["clouddeck"]).unwrap().build;
        assert_eq!(parsed, BuildConfig::default());
    }
}
