//! The pods CloudDeck runs its users' code in: the application's workload and the runs of
//! a CronJob. One builder, so that every such pod gets the same hardening and the same
//! runtime environment. (Build Jobs are not among them: rootless BuildKit needs user
//! namespaces, which the restricted profile forbids; see `crate::build::job`.)

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Capabilities, Container, EnvVar, PodSecurityContext, PodSpec, ResourceRequirements,
    SeccompProfile, SecurityContext,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use crate::api::project::RuntimeSpec;

/// Who a container runs as.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum RunAs {
    /// The image's own user, whatever it is: the application, whose image is the user's.
    ImageUser,
    /// The image's user, which the kubelet checks is not root.
    NonRoot,
    /// This user id (not root).
    Uid(i64),
}

fn runtime_default() -> SeccompProfile {
    SeccompProfile {
        type_: "RuntimeDefault".into(),
        ..SeccompProfile::default()
    }
}

/// A container security context under the restricted Pod Security Standard: no privilege
/// escalation, every capability dropped, the runtime's default seccomp profile.
pub fn restricted(run_as: RunAs) -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            ..Capabilities::default()
        }),
        run_as_non_root: (run_as != RunAs::ImageUser).then_some(true),
        run_as_user: match run_as {
            RunAs::Uid(uid) => Some(uid),
            _ => None,
        },
        seccomp_profile: Some(runtime_default()),
        ..SecurityContext::default()
    }
}

/// The application's environment: `PORT` first, then the Project's variables (a `PORT` of
/// theirs is ignored: the platform sets it).
pub fn runtime_env(runtime: &RuntimeSpec) -> Vec<EnvVar> {
    let port = EnvVar {
        name: "PORT".into(),
        value: Some(runtime.port.to_string()),
        ..EnvVar::default()
    };
    std::iter::once(port)
        .chain(runtime.env.iter().filter(|e| e.name != "PORT").cloned())
        .collect()
}

/// A container `name` running `image` with the Project's runtime environment (variables,
/// `envFrom`, resources), hardened as [`restricted`].
pub fn runtime_container(
    name: &str,
    image: &str,
    runtime: &RuntimeSpec,
    run_as: RunAs,
) -> Container {
    Container {
        name: name.into(),
        image: Some(image.into()),
        env: Some(runtime_env(runtime)),
        env_from: (!runtime.env_from.is_empty()).then(|| runtime.env_from.clone()),
        resources: runtime.resources.clone(),
        security_context: Some(restricted(run_as)),
        ..Container::default()
    }
}

/// A pod of `container` alone: no ServiceAccount token, no Service links in its
/// environment, the runtime's default seccomp profile, and the kubelet's non-root check
/// when `non_root`.
pub fn pod_spec(container: Container, non_root: bool) -> PodSpec {
    PodSpec {
        automount_service_account_token: Some(false),
        enable_service_links: Some(false),
        security_context: Some(PodSecurityContext {
            run_as_non_root: non_root.then_some(true),
            seccomp_profile: Some(runtime_default()),
            ..PodSecurityContext::default()
        }),
        containers: vec![container],
        ..PodSpec::default()
    }
}

/// Resource requests, and a memory limit (no CPU limit: it only throttles).
pub fn resources(requests: &[(&str, &str)], memory_limit: &str) -> ResourceRequirements {
    let quantities = |pairs: &[(&str, &str)]| {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), Quantity(v.to_string())))
            .collect::<BTreeMap<_, _>>()
    };
    ResourceRequirements {
        requests: Some(quantities(requests)),
        limits: Some(quantities(&[("memory", memory_limit)])),
        ..ResourceRequirements::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_container_is_hardened_and_runs_as_asked() {
        let app = restricted(RunAs::ImageUser);
        assert_eq!(app.allow_privilege_escalation, Some(false));
        assert_eq!(
            app.capabilities.unwrap().drop,
            Some(vec!["ALL".to_string()])
        );
        assert_eq!(app.seccomp_profile.unwrap().type_, "RuntimeDefault");
        assert_eq!(app.run_as_non_root, None);
        assert_eq!(restricted(RunAs::NonRoot).run_as_non_root, Some(true));
        let curl = restricted(RunAs::Uid(101));
        assert_eq!(
            (curl.run_as_non_root, curl.run_as_user),
            (Some(true), Some(101))
        );
    }

    #[test]
    fn the_platform_sets_port() {
        let runtime: RuntimeSpec = serde_json::from_value(serde_json::json!({
            "port": 8080,
            "env": [{ "name": "PORT", "value": "1" }, { "name": "MODE", "value": "prod" }],
        }))
        .unwrap();
        let env = runtime_env(&runtime);
        let pairs: Vec<_> = env
            .iter()
            .map(|e| (e.name.as_str(), e.value.as_deref()))
            .collect();
        assert_eq!(pairs, [("PORT", Some("8080")), ("MODE", Some("prod"))]);
        let container = runtime_container("app", "web:1", &runtime, RunAs::ImageUser);
        assert_eq!(container.env_from, None, "no empty envFrom is sent");
        let pod = pod_spec(container, false);
        assert_eq!(pod.automount_service_account_token, Some(false));
        assert_eq!(pod.security_context.unwrap().run_as_non_root, None);
    }
}
