//! The build Job: clone the pinned revision, build it with a rootless builder, push it,
//! and report the digest in the termination message.
//!
//! Pod security. The clone step and the Cloud Native Buildpacks lifecycle pass the
//! `restricted` Pod Security Standard. Rootless BuildKit cannot: it needs
//! `seccompProfile: Unconfined` and `appArmorProfile: Unconfined` (it creates user
//! namespaces and mounts inside them), `allowPrivilegeEscalation: true` and the
//! capabilities `SETUID` and `SETGID` (rootlesskit maps the build's user namespace with the
//! `newuidmap`/`newgidmap` helpers, which need them; with every capability dropped they
//! fail with "newuidmap: open of uid_map failed: Permission denied"). It still runs as a
//! non-root user with every other capability dropped and
//! `--oci-worker-no-process-sandbox`, as BuildKit documents for Kubernetes. `baseline`
//! forbids both Unconfined profiles, so a namespace that enforces `restricted` or
//! `baseline` must use the `buildpacks` strategy; the Deployment controller
//! checks the pod at admission (dry run) before it creates the Job.
//!
//! Secrets never appear in args, env or logs: clone credentials, the registry push
//! Secret and build Secrets are mounted as files and read by the scripts below, which only
//! ever name paths.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    AppArmorProfile, Capabilities, Container, EmptyDirVolumeSource, EnvVar, KeyToPath,
    PodSecurityContext, PodSpec, PodTemplateSpec, ProjectedVolumeSource, SeccompProfile,
    SecretProjection, SecretVolumeSource, SecurityContext, Volume, VolumeMount, VolumeProjection,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::config::BuildConfig;
use crate::api::deployment::GitRevision;
use crate::api::project::{BuildSpec, BuildStrategy, GitSource};
use crate::api::validation::{self, InvalidField};
use crate::controllers::pod::{self, RunAs};
use crate::routing::bounded_name;

/// Name of the init container that clones the source.
pub const CLONE_CONTAINER: &str = "clone";
/// Name of the container whose termination message carries the build result.
pub const BUILD_CONTAINER: &str = "build";
/// Where the build container writes its result.
pub const TERMINATION_MESSAGE_PATH: &str = "/dev/termination-log";

/// User and group the clone step and BuildKit run as (BuildKit's rootless image user).
const BUILD_UID: i64 = 1000;
/// The `cnb` user of the Paketo builders (CNB_USER_ID); its group is [`BUILD_UID`]'s.
const CNB_UID: i64 = 1001;

const WORKSPACE: &str = "/workspace";
const GIT_CREDENTIALS: &str = "/var/run/clouddeck/git";
const REGISTRY_AUTH: &str = "/var/run/clouddeck/registry";
const BUILD_SECRETS: &str = "/var/run/clouddeck/build-secrets";

/// The build Job's name for a Deployment: deterministic, so that a restarted operator
/// applies the same Job instead of starting a second build.
pub fn build_job_name(deployment: &str) -> String {
    bounded_name(deployment, "build")
}

/// Everything a build Job is rendered from.
pub struct BuildJobInput<'a> {
    /// Name, namespace, labels and owner reference of the Job (also put on its Pod).
    pub meta: ObjectMeta,
    pub git: &'a GitSource,
    pub revision: &'a GitRevision,
    /// The Project's build settings; `None` means the defaults.
    pub build: Option<&'a BuildSpec>,
    /// Image repository to push to, e.g. `registry.example.com/acme/web`.
    pub repository: &'a str,
    /// Tag of the pushed image: the Deployment's name.
    pub tag: &'a str,
    /// `kubernetes.io/dockerconfigjson` Secret with push credentials.
    pub push_secret: Option<&'a str>,
    pub config: &'a BuildConfig,
}

/// Renders the build Job. Fails only on a build timeout that is not a duration.
pub fn build_job(input: &BuildJobInput<'_>) -> Result<Job, InvalidField> {
    let defaults;
    let build = match input.build {
        Some(build) => build,
        None => {
            defaults = default_build_spec();
            &defaults
        }
    };
    let timeout = validation::duration("spec.build.timeout", &build.timeout)?;
    let deadline = i64::try_from(timeout.as_secs().max(1)).unwrap_or(i64::MAX);
    let context_dir = match input.git.path.as_deref() {
        Some(path) => format!("{WORKSPACE}/src/{}", path.trim_end_matches('/')),
        None => format!("{WORKSPACE}/src"),
    };
    let image = format!("{}:{}", input.repository, input.tag);
    let cache_image = build
        .cache
        .then(|| format!("{}:buildcache", input.repository));

    let mut volumes = vec![empty_dir("workspace"), empty_dir("tmp")];
    let mut clone_mounts = vec![mount("workspace", WORKSPACE), mount("tmp", "/tmp")];
    if let Some(secret) = &input.git.credentials_secret_ref {
        volumes.push(secret_volume("git-credentials", &secret.name, None));
        clone_mounts.push(read_only(mount("git-credentials", GIT_CREDENTIALS)));
    }
    let mut build_mounts = vec![mount("workspace", WORKSPACE), mount("tmp", "/tmp")];
    if let Some(secret) = input.push_secret {
        let item = KeyToPath {
            key: ".dockerconfigjson".into(),
            path: "config.json".into(),
            ..KeyToPath::default()
        };
        volumes.push(secret_volume("registry-auth", secret, Some(item)));
        build_mounts.push(read_only(mount("registry-auth", REGISTRY_AUTH)));
    }
    if !build.env_from.is_empty() {
        let sources = build
            .env_from
            .iter()
            .map(|s| VolumeProjection {
                secret: Some(SecretProjection {
                    name: s.name.clone(),
                    ..SecretProjection::default()
                }),
                ..VolumeProjection::default()
            })
            .collect();
        volumes.push(Volume {
            name: "build-secrets".into(),
            projected: Some(ProjectedVolumeSource {
                sources: Some(sources),
                default_mode: Some(0o440),
            }),
            ..Volume::default()
        });
        build_mounts.push(read_only(mount("build-secrets", BUILD_SECRETS)));
    }

    let mut clone_env = vec![
        env("GIT_URL", &input.git.url),
        env("GIT_BRANCH", &input.revision.branch),
        env("HOME", "/tmp"),
    ];
    if let Some(commit) = &input.revision.commit {
        clone_env.push(env("GIT_COMMIT", commit));
    }
    let clone = Container {
        name: CLONE_CONTAINER.into(),
        image: Some(input.config.git_image.clone()),
        command: Some(shell(CLONE_SCRIPT)),
        env: Some(clone_env),
        volume_mounts: Some(clone_mounts),
        resources: Some(pod::resources(
            &[("cpu", "100m"), ("memory", "128Mi")],
            "512Mi",
        )),
        security_context: Some(build_user(BUILD_UID)),
        ..Container::default()
    };

    let mut build_env = vec![env("HOME", "/tmp")];
    if input.push_secret.is_some() {
        build_env.push(env("DOCKER_CONFIG", REGISTRY_AUTH));
    }
    let builder = match build.strategy {
        BuildStrategy::Dockerfile => {
            let (dockerfile_dir, dockerfile_name) =
                split_dockerfile(&context_dir, &build.dockerfile);
            let mut command = shell(BUILDKIT_SCRIPT);
            command.extend([
                "buildkit".to_owned(),
                "build".to_owned(),
                "--frontend=dockerfile.v0".to_owned(),
                format!("--local=context={context_dir}"),
                format!("--local=dockerfile={dockerfile_dir}"),
                format!("--opt=filename={dockerfile_name}"),
            ]);
            command.extend(
                build
                    .args
                    .iter()
                    .map(|(k, v)| format!("--opt=build-arg:{k}={v}")),
            );
            command.push(format!("--output=type=image,name={image},push=true"));
            if let Some(cache) = &cache_image {
                command.push(format!("--import-cache=type=registry,ref={cache}"));
                command.push(format!("--export-cache=type=registry,ref={cache},mode=max"));
            }
            build_env.push(env("BUILDKITD_FLAGS", "--oci-worker-no-process-sandbox"));
            build_mounts.push(mount("buildkit-state", "/home/user/.local/share/buildkit"));
            volumes.push(empty_dir("buildkit-state"));
            Container {
                image: Some(input.config.buildkit_image.clone()),
                command: Some(command),
                // The documented exception to `restricted`: see the module docs.
                security_context: Some(SecurityContext {
                    run_as_non_root: Some(true),
                    run_as_user: Some(BUILD_UID),
                    run_as_group: Some(BUILD_UID),
                    allow_privilege_escalation: Some(true),
                    capabilities: Some(Capabilities {
                        drop: Some(vec!["ALL".into()]),
                        add: Some(vec!["SETUID".into(), "SETGID".into()]),
                    }),
                    seccomp_profile: Some(SeccompProfile {
                        type_: "Unconfined".into(),
                        ..SeccompProfile::default()
                    }),
                    app_armor_profile: Some(AppArmorProfile {
                        type_: "Unconfined".into(),
                        ..AppArmorProfile::default()
                    }),
                    ..SecurityContext::default()
                }),
                ..build_container(build, build_env, build_mounts)
            }
        }
        BuildStrategy::Buildpacks => {
            let mut command = shell(BUILDPACKS_SCRIPT);
            command.extend([
                "buildpacks".to_owned(),
                format!("-app={context_dir}"),
                "-layers=/layers".to_owned(),
                "-platform=/platform".to_owned(),
                "-report=/tmp/report.toml".to_owned(),
            ]);
            if let Some(cache) = &cache_image {
                command.push(format!("-cache-image={cache}"));
            }
            command.push(image.clone());
            build_env.push(env(
                "CNB_PLATFORM_API",
                &input.config.buildpacks_platform_api,
            ));
            // Build-time settings for buildpacks are files in <platform>/env.
            build_env.extend(build.args.iter().map(|(k, v)| env(k, v)));
            build_mounts.push(mount("layers", "/layers"));
            volumes.push(empty_dir("layers"));
            if !build.env_from.is_empty() {
                build_mounts.retain(|m| m.name != "build-secrets");
                build_mounts.push(read_only(mount("build-secrets", "/platform/env")));
            }
            Container {
                image: Some(input.config.buildpacks_builder_image.clone()),
                command: Some(command),
                security_context: Some(build_user(CNB_UID)),
                ..build_container(build, build_env, build_mounts)
            }
        }
    };

    let meta = &input.meta;
    let annotations: BTreeMap<_, _> = input.config.pod_annotations.iter().cloned().collect();
    Ok(Job {
        metadata: meta.clone(),
        spec: Some(JobSpec {
            // A failed build is reported, never retried behind the user's back.
            backoff_limit: Some(0),
            completions: Some(1),
            parallelism: Some(1),
            active_deadline_seconds: Some(deadline),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(meta.labels.clone().unwrap_or_default()),
                    annotations: Some(annotations),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    restart_policy: Some("Never".into()),
                    // The build gets no API credentials.
                    automount_service_account_token: Some(false),
                    enable_service_links: Some(false),
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        fs_group: Some(BUILD_UID),
                        seccomp_profile: Some(SeccompProfile {
                            type_: "RuntimeDefault".into(),
                            ..SeccompProfile::default()
                        }),
                        ..PodSecurityContext::default()
                    }),
                    init_containers: Some(vec![clone]),
                    containers: vec![builder],
                    volumes: Some(volumes),
                    ..PodSpec::default()
                }),
            },
            ..JobSpec::default()
        }),
        status: None,
    })
}

/// The build container's common part: name, environment, mounts, resources, and the
/// termination message that carries the result.
fn build_container(build: &BuildSpec, env: Vec<EnvVar>, mounts: Vec<VolumeMount>) -> Container {
    Container {
        name: BUILD_CONTAINER.into(),
        env: Some(env),
        volume_mounts: Some(mounts),
        resources: Some(
            build
                .resources
                .clone()
                .unwrap_or_else(|| pod::resources(&[("cpu", "500m"), ("memory", "1Gi")], "4Gi")),
        ),
        termination_message_path: Some(TERMINATION_MESSAGE_PATH.into()),
        termination_message_policy: Some("File".into()),
        ..Container::default()
    }
}

/// Restricted, as `uid` in the build's group.
fn build_user(uid: i64) -> SecurityContext {
    SecurityContext {
        run_as_group: Some(BUILD_UID),
        ..pod::restricted(RunAs::Uid(uid))
    }
}

fn shell(script: &str) -> Vec<String> {
    vec!["/bin/sh".into(), "-c".into(), script.into()]
}

fn env(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        ..EnvVar::default()
    }
}

fn mount(name: &str, path: &str) -> VolumeMount {
    VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        ..VolumeMount::default()
    }
}

fn read_only(mount: VolumeMount) -> VolumeMount {
    VolumeMount {
        read_only: Some(true),
        ..mount
    }
}

fn empty_dir(name: &str) -> Volume {
    Volume {
        name: name.into(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Volume::default()
    }
}

/// Secret `secret` as files readable by the build's group, all its keys or only `item`.
fn secret_volume(name: &str, secret: &str, item: Option<KeyToPath>) -> Volume {
    Volume {
        name: name.into(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(secret.into()),
            default_mode: Some(0o440),
            items: item.map(|item| vec![item]),
            ..SecretVolumeSource::default()
        }),
        ..Volume::default()
    }
}

fn default_build_spec() -> BuildSpec {
    serde_json::from_value(serde_json::json!({})).expect("an empty BuildSpec takes its defaults")
}

/// The directory holding the Dockerfile and its file name, relative to the build context.
fn split_dockerfile(context_dir: &str, dockerfile: &str) -> (String, String) {
    let path = dockerfile.trim_start_matches("./");
    match path.rsplit_once('/') {
        Some((dir, name)) => (format!("{context_dir}/{dir}"), name.to_owned()),
        None => (context_dir.to_owned(), path.to_owned()),
    }
}

/// Clones exactly one revision into /workspace/src and records the commit it resolved.
/// Credentials are read from the mounted Secret by a credential helper, never echoed.
const CLONE_SCRIPT: &str = r#"set -eu
umask 002
creds=/var/run/clouddeck/git
if [ -f "$creds/password" ]; then
  git config --global credential.helper '!f() { test "$1" = get || exit 0; echo "username=$(cat /var/run/clouddeck/git/username 2>/dev/null || echo git)"; echo "password=$(cat /var/run/clouddeck/git/password)"; }; f'
fi
if [ -f "$creds/ssh-privatekey" ]; then
  cp "$creds/ssh-privatekey" /tmp/ssh-key && chmod 600 /tmp/ssh-key
  if [ -f "$creds/known_hosts" ]; then hosts="-o UserKnownHostsFile=$creds/known_hosts"; else hosts="-o StrictHostKeyChecking=accept-new"; fi
  export GIT_SSH_COMMAND="ssh -i /tmp/ssh-key -o IdentitiesOnly=yes $hosts"
fi
git init -q /workspace/src
cd /workspace/src
git remote add origin "$GIT_URL"
commit="${GIT_COMMIT:-}"
if [ ${#commit} -ge 40 ]; then
  git fetch -q --depth 1 origin "$commit"
  git checkout -q FETCH_HEAD
elif [ -n "$commit" ]; then
  git fetch -q origin "refs/heads/$GIT_BRANCH"
  git checkout -q "$commit"
else
  git fetch -q --depth 1 origin "refs/heads/$GIT_BRANCH"
  git checkout -q FETCH_HEAD
fi
resolved=$(git rev-parse HEAD)
case "$resolved" in "$commit"*) ;; *) echo "resolved $resolved, not $commit" >&2; exit 1;; esac
echo "$resolved" > /workspace/commit
echo "cloned $GIT_BRANCH at $resolved""#;

/// Runs rootless BuildKit with the arguments after `$0`, adds every build Secret as a
/// BuildKit secret (by path), passes the commit being built as the build argument
/// `CLOUDDECK_GIT_COMMIT` (a Dockerfile that declares `ARG CLOUDDECK_GIT_COMMIT` sees it),
/// and reports the pushed digest and commit.
const BUILDKIT_SCRIPT: &str = r#"set -eu
for f in /var/run/clouddeck/build-secrets/*; do
  [ -f "$f" ] && set -- "$@" "--secret=id=$(basename "$f"),src=$f"
done
set -- "$@" "--opt=build-arg:CLOUDDECK_GIT_COMMIT=$(cat /workspace/commit)"
buildctl-daemonless.sh "$@" --metadata-file=/tmp/metadata.json
digest=$(grep -o '"containerimage.digest": *"sha256:[a-f0-9]*"' /tmp/metadata.json | grep -o 'sha256:[a-f0-9]*')
printf '{"digest":"%s","commit":"%s"}' "$digest" "$(cat /workspace/commit)" > /dev/termination-log"#;

/// Runs the Cloud Native Buildpacks lifecycle (`creator`) and reports the pushed digest.
const BUILDPACKS_SCRIPT: &str = r#"set -eu
/cnb/lifecycle/creator "$@"
digest=$(grep -o 'sha256:[a-f0-9]\{64\}' /tmp/report.toml | head -n 1)
printf '{"digest":"%s","commit":"%s"}' "$digest" "$(cat /workspace/commit)" > /dev/termination-log"#;

#[cfg(test)]
mod tests {
    use serde_json::json;

    use k8s_openapi::api::core::v1::Container;

    use super::*;
    use crate::api::common::SecretReference;

    fn config() -> BuildConfig {
        BuildConfig::default()
    }

    fn git() -> GitSource {
        GitSource {
            url: "https://github.com/acme/web.git".into(),
            branch: "main".into(),
            path: Some("apps/web".into()),
            credentials_secret_ref: Some(SecretReference {
                name: "git-token".into(),
            }),
        }
    }

    fn revision() -> GitRevision {
        GitRevision {
            branch: "main".into(),
            commit: Some("3f9c2ab7d1e04b5c9a8f6e2d1c0b9a8f7e6d5c4b".into()),
        }
    }

    fn render(build: Option<&BuildSpec>, config: &BuildConfig) -> Job {
        let git = git();
        let revision = revision();
        build_job(&BuildJobInput {
            meta: ObjectMeta {
                name: Some("web-1-build".into()),
                namespace: Some("team".into()),
                ..Default::default()
            },
            git: &git,
            revision: &revision,
            build,
            repository: "registry.example.com/acme/web",
            tag: "web-1",
            push_secret: Some("registry-push"),
            config,
        })
        .unwrap()
    }

    fn build_container(job: &Job) -> Container {
        job.spec
            .as_ref()
            .unwrap()
            .template
            .spec
            .as_ref()
            .unwrap()
            .containers[0]
            .clone()
    }

    fn clone_container(job: &Job) -> Container {
        job.spec
            .as_ref()
            .unwrap()
            .template
            .spec
            .as_ref()
            .unwrap()
            .init_containers
            .as_ref()
            .unwrap()[0]
            .clone()
    }

    #[test]
    fn job_name_is_deterministic_and_a_dns_label() {
        assert_eq!(build_job_name("web-1"), "web-1-build");
        assert_eq!(build_job_name("web-1"), build_job_name("web-1"));
        let long = build_job_name(&"a".repeat(80));
        assert!(long.len() <= 63, "{long}");
        assert_ne!(long, build_job_name(&"a".repeat(81)));
    }

    #[test]
    fn build_pods_carry_the_configured_annotations() {
        let mut config = config();
        let job = render(None, &config);
        let template = job.spec.unwrap().template.metadata.unwrap();
        assert!(template.annotations.unwrap_or_default().is_empty());
        config.pod_annotations = vec![("sidecar.istio.io/inject".into(), "false".into())];
        let job = render(None, &config);
        let template = job.spec.unwrap().template.metadata.unwrap();
        assert_eq!(
            template.annotations.unwrap()["sidecar.istio.io/inject"],
            "false"
        );
    }

    #[test]
    fn dockerfile_build_uses_rootless_buildkit_from_config() {
        let mut config = config();
        config.buildkit_image = "mirror.example/buildkit:v9-rootless".into();
        let job = render(None, &config);
        let spec = job.spec.as_ref().unwrap();
        assert_eq!(spec.backoff_limit, Some(0));
        assert_eq!(spec.active_deadline_seconds, Some(15 * 60));
        let build = build_container(&job);
        assert_eq!(
            build.image.as_deref(),
            Some("mirror.example/buildkit:v9-rootless")
        );
        let command = build.command.unwrap();
        assert!(command[2].contains("buildctl-daemonless.sh"));
        assert!(
            command.contains(&"--local=context=/workspace/src/apps/web".to_owned()),
            "{command:?}"
        );
        assert!(command.contains(&"--opt=filename=Dockerfile".to_owned()));
        assert!(command.contains(
            &"--output=type=image,name=registry.example.com/acme/web:web-1,push=true".to_owned()
        ));
        assert!(command.iter().any(|a| a.starts_with(
            "--import-cache=type=registry,ref=registry.example.com/acme/web:buildcache"
        )));
        assert_eq!(
            build.termination_message_path.as_deref(),
            Some(TERMINATION_MESSAGE_PATH)
        );
        assert_eq!(build.termination_message_policy.as_deref(), Some("File"));
        let env: Vec<_> = build.env.unwrap().into_iter().map(|e| e.name).collect();
        assert!(env.contains(&"DOCKER_CONFIG".to_owned()));
        assert!(env.contains(&"BUILDKITD_FLAGS".to_owned()));
    }

    #[test]
    fn build_pod_gets_no_api_token_and_never_restarts() {
        let job = render(None, &config());
        let pod = job.spec.unwrap().template.spec.unwrap();
        assert_eq!(pod.automount_service_account_token, Some(false));
        assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
        assert_eq!(pod.security_context.unwrap().run_as_non_root, Some(true));
    }

    #[test]
    fn clone_pins_the_commit_and_reads_credentials_from_a_mounted_secret() {
        let job = render(None, &config());
        let clone = clone_container(&job);
        let env: BTreeMap<_, _> = clone
            .env
            .unwrap()
            .into_iter()
            .map(|e| (e.name, e.value.unwrap_or_default()))
            .collect();
        assert_eq!(
            env["GIT_COMMIT"],
            "3f9c2ab7d1e04b5c9a8f6e2d1c0b9a8f7e6d5c4b"
        );
        assert_eq!(env["GIT_URL"], "https://github.com/acme/web.git");
        let mounts = clone.volume_mounts.unwrap();
        assert!(
            mounts
                .iter()
                .any(|m| m.mount_path == GIT_CREDENTIALS && m.read_only == Some(true))
        );
        let volumes = job.spec.unwrap().template.spec.unwrap().volumes.unwrap();
        let creds = volumes
            .iter()
            .find(|v| v.name == "git-credentials")
            .unwrap();
        assert_eq!(
            creds.secret.as_ref().unwrap().secret_name.as_deref(),
            Some("git-token")
        );
        let sc = clone.security_context.unwrap();
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        assert_eq!(sc.capabilities.unwrap().drop, Some(vec!["ALL".to_owned()]));
    }

    #[test]
    fn no_secret_name_or_value_reaches_args_or_env_values() {
        let build = BuildSpec {
            env_from: vec![SecretReference {
                name: "npm-token".into(),
            }],
            ..default_build_spec()
        };
        let job = render(Some(&build), &config());
        let text =
            serde_json::to_string(&job.spec.unwrap().template.spec.unwrap().containers).unwrap();
        // Secrets are volumes, only referenced by mount path in the containers.
        assert!(!text.contains("npm-token"), "{text}");
        assert!(!text.contains("registry-push"), "{text}");
        assert!(!text.contains("git-token"), "{text}");
    }

    #[test]
    fn buildpacks_strategy_runs_the_lifecycle_under_restricted() {
        let build = BuildSpec {
            strategy: BuildStrategy::Buildpacks,
            cache: false,
            timeout: "1h".into(),
            ..default_build_spec()
        };
        let job = render(Some(&build), &config());
        assert_eq!(
            job.spec.as_ref().unwrap().active_deadline_seconds,
            Some(3600)
        );
        let container = build_container(&job);
        assert_eq!(
            container.image.as_deref(),
            Some("paketobuildpacks/builder-jammy-base:0.4.532")
        );
        let command = container.command.unwrap();
        assert!(command[2].contains("/cnb/lifecycle/creator"));
        assert!(command.contains(&"-app=/workspace/src/apps/web".to_owned()));
        assert!(command.last().unwrap().ends_with(":web-1"));
        assert!(!command.iter().any(|a| a.starts_with("-cache-image")));
        let sc = container.security_context.unwrap();
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        assert_eq!(sc.seccomp_profile.unwrap().type_, "RuntimeDefault");
    }

    #[test]
    fn dockerfile_in_a_subdirectory() {
        let build = BuildSpec {
            dockerfile: "docker/prod.Dockerfile".into(),
            ..default_build_spec()
        };
        let command = build_container(&render(Some(&build), &config()))
            .command
            .unwrap();
        assert!(command.contains(&"--local=dockerfile=/workspace/src/apps/web/docker".to_owned()));
        assert!(command.contains(&"--opt=filename=prod.Dockerfile".to_owned()));
    }

    #[test]
    fn build_resources_come_from_the_project_or_defaults() {
        let default = build_container(&render(None, &config())).resources.unwrap();
        assert!(default.limits.unwrap().contains_key("memory"));
        let build = BuildSpec {
            resources: Some(serde_json::from_value(json!({ "limits": { "cpu": "2" } })).unwrap()),
            ..default_build_spec()
        };
        let custom = build_container(&render(Some(&build), &config()))
            .resources
            .unwrap();
        assert_eq!(custom.limits.unwrap()["cpu"].0, "2");
    }
}
