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

    /// Annotations every build pod carries, `KEY=VALUE`; repeat the flag (or separate with
    /// commas in the environment variable) for several. E.g. `sidecar.istio.io/inject=false`
    /// so that a service mesh leaves build pods alone, or
    /// `cluster-autoscaler.kubernetes.io/safe-to-evict=false` so a build is not evicted.
    #[arg(
        long = "build-pod-annotations",
        env = "CLOUDDECK_BUILD_POD_ANNOTATIONS",
        value_name = "KEY=VALUE",
        value_delimiter = ',',
        value_parser = parse_annotation
    )]
    pub pod_annotations: Vec<(String, String)>,
}

/// `KEY=VALUE` with a key as Kubernetes writes annotation keys: an optional DNS prefix and
/// `/`, then a name of at most 63 characters of `[A-Za-z0-9_.-]`, alphanumeric at both ends.
fn parse_annotation(input: &str) -> Result<(String, String), String> {
    let (key, value) = input
        .split_once('=')
        .ok_or_else(|| format!("{input:?} is not KEY=VALUE"))?;
    let (prefix, name) = match key.rsplit_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    let name_ok = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    let prefix_ok = prefix.is_none_or(|p| {
        !p.is_empty()
            && p.len() <= 253
            && p.split('.').all(|label| {
                !label.is_empty()
                    && label
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            })
    });
    if name_ok && prefix_ok {
        Ok((key.to_owned(), value.to_owned()))
    } else {
        Err(format!(
            "{key:?} is not an annotation key (e.g. example.com/name)"
        ))
    }
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
            pod_annotations: Vec::new(),
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

    #[test]
    fn build_pod_annotations_are_key_value_pairs() {
        let parsed = Flags::try_parse_from([
            "clouddeck",
            "--build-pod-annotations",
            "sidecar.istio.io/inject=false",
            "--build-pod-annotations",
            "note=a=b",
        ])
        .unwrap()
        .build;
        assert_eq!(
            parsed.pod_annotations,
            [
                ("sidecar.istio.io/inject".to_owned(), "false".to_owned()),
                ("note".to_owned(), "a=b".to_owned())
            ]
        );
        for bad in ["novalue", "=x", "Bad_Prefix.io/x=1", "x/-y=1", "a//b=1"] {
            assert!(
                Flags::try_parse_from(["clouddeck", "--build-pod-annotations", bad]).is_err(),
                "{bad}"
            );
        }
    }
}
