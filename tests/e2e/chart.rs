//! The Helm chart (`charts/clouddeck`) and the kustomize bases (`config/`) as a platform
//! team installs them: the chart lints and renders, ships the generated CRDs, installs
//! two operator replicas that go Ready under the restricted Pod Security Standard, and —
//! the point of least-privilege RBAC — its ServiceAccount's rights are enough for the
//! operator to lead and reconcile, while users get CloudDeck's kinds through the built-in
//! `view`, `edit` and `admin` roles.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use clouddeck::api::{Deployment, DeploymentPhase, WebhookDelivery};
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::{ListParams, PostParams};
use serde_json::{Value, json};

use crate::support::{self, TestNamespace, eventually};

const IMAGE: &str = "registry.example/acme/hello@sha256:1111111111111111111111111111111111111111111111111111111111111111";
const TIMEOUT: Duration = Duration::from_secs(120);

/// The header of every file of `config/` generated from the chart.
const GENERATED: &str = "\
# Generated from charts/clouddeck (helm template clouddeck charts/clouddeck --namespace
# clouddeck-system, without Helm's own labels). Do not edit: change the chart, then run
# CLOUDDECK_UPDATE_CONFIG=1 cargo test --test e2e chart:: to regenerate.
";

fn chart_dir() -> PathBuf {
    support::repo_root().join("charts/clouddeck")
}

fn helm(args: &[&str]) -> Output {
    Command::new(support::cluster_dir().join("bin/helm"))
        .args(args)
        .output()
        .expect("run helm (built by hack/cluster)")
}

fn helm_ok(args: &[&str]) -> String {
    let out = helm(args);
    assert!(
        out.status.success(),
        "helm {} failed: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `helm template` of the chart with `--set` values.
fn render(release: &str, namespace: &str, sets: &[&str]) -> String {
    let chart = chart_dir();
    let mut args = vec![
        "template",
        release,
        chart.to_str().unwrap(),
        "--namespace",
        namespace,
    ];
    for set in sets {
        args.extend(["--set", set]);
    }
    helm_ok(&args)
}

/// The objects of a multi-document YAML stream.
fn objects(yaml: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(yaml)
        .filter_map(|doc| {
            let value: Value = serde::Deserialize::deserialize(doc).expect("valid YAML");
            (!value.is_null()).then_some(value)
        })
        .collect()
}

fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} rendered"))
}

/// The `config/` files the chart generates, with their contents: each template under
/// `templates/rbac/` or `templates/manager/` becomes `config/rbac/…` or `config/manager/…`.
fn config_from_chart() -> BTreeMap<String, String> {
    let rendered = render("clouddeck", "clouddeck-system", &[]);
    let mut files: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for doc in rendered.split("---\n") {
        let Some(rest) = doc.strip_prefix("# Source: clouddeck/templates/") else {
            continue;
        };
        let (template, body) = rest.split_once('\n').unwrap();
        if !(template.starts_with("rbac/") || template.starts_with("manager/")) {
            continue;
        }
        let body: String = body
            .lines()
            .filter(|l| {
                let l = l.trim();
                !l.starts_with("helm.sh/chart:") && l != "app.kubernetes.io/managed-by: Helm"
            })
            .map(|l| format!("{l}\n"))
            .collect();
        files
            .entry(format!("config/{template}"))
            .or_default()
            .push(body);
    }
    files
        .into_iter()
        .map(|(path, docs)| (path, format!("{GENERATED}{}", docs.join("---\n"))))
        .collect()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// The environment variables `clouddeck run --help` documents.
fn run_env_vars() -> BTreeSet<String> {
    let out = Command::new(env!("CARGO_BIN_EXE_clouddeck"))
        .args(["run", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    help.split("[env: ")
        .skip(1)
        .map(|rest| rest.split(['=', ']']).next().unwrap().to_owned())
        .collect()
}

/// User story: "I review the chart before I install it: it lints, renders with and without
/// monitoring, its CRDs are exactly the operator's, its operator role names every CRD it
/// checks for, every `clouddeck run` setting is a value, and `config/` for kustomize users
/// says the same as the chart."
#[test]
fn the_chart_lints_renders_and_matches_crds_and_config() {
    let chart = chart_dir();
    let chart = chart.to_str().unwrap();
    helm_ok(&["lint", "--strict", chart]);
    helm_ok(&[
        "lint",
        "--strict",
        chart,
        "--set",
        "serviceMonitor.enabled=true,prometheusRule.enabled=true",
    ]);
    // The schema refuses what would render a broken Deployment.
    for bad in [
        "replicas=two",
        "log.format=xml",
        "image.pullPolicy=Sometimes",
    ] {
        let out = helm(&["template", "x", chart, "--set", bad]);
        assert!(
            !out.status.success(),
            "{bad} accepted by values.schema.json"
        );
    }

    // The CRDs are the generated ones, byte for byte (helm does not package a symlink;
    // kustomize loads nothing outside its folder).
    let crds = read(&support::repo_root().join("crds/clouddeck.io.yaml"));
    for copy in [
        "charts/clouddeck/crds/clouddeck.io.yaml",
        "config/crd/clouddeck.io.yaml",
    ] {
        assert!(
            read(&support::repo_root().join(copy)) == crds,
            "{copy} differs from crds/clouddeck.io.yaml: cp crds/clouddeck.io.yaml {copy}"
        );
    }

    let rendered = objects(&render(
        "clouddeck",
        "clouddeck-system",
        &[
            "serviceMonitor.enabled=true,prometheusRule.enabled=true",
            "domains.dnsServer=10.0.0.10:53,build.defaultRegistry=registry.example/apps",
            "webhooks.allowCidrs={10.0.0.0/8,hooks.tools.svc}",
            "build.podAnnotations.sidecar\\.istio\\.io/inject=no,build.podAnnotations.team=web",
        ],
    ));

    // The start-up check reads every CRD by name: the role must name each.
    let role = find(&rendered, "ClusterRole", "clouddeck-operator");
    let crd_names: Vec<String> = objects(&crds)
        .iter()
        .map(|crd| crd["metadata"]["name"].as_str().unwrap().to_owned())
        .collect();
    let crd_rule = role["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["resources"] == json!(["customresourcedefinitions"]))
        .expect("a rule for the CRD check");
    assert_eq!(crd_rule["verbs"], json!(["get"]));
    for name in &crd_names {
        assert!(
            crd_rule["resourceNames"]
                .as_array()
                .unwrap()
                .contains(&json!(name)),
            "the operator role cannot get the CRD {name}"
        );
    }
    // No wildcard anywhere, and no Secret is listed or watched.
    for rule in role["rules"].as_array().unwrap() {
        for field in ["apiGroups", "resources", "verbs"] {
            assert!(
                !rule[field].as_array().unwrap().contains(&json!("*")),
                "{rule}"
            );
        }
        if rule["resources"]
            .as_array()
            .unwrap()
            .contains(&json!("secrets"))
        {
            assert_eq!(rule["verbs"], json!(["get"]));
        }
    }
    // Domain listeners on the Gateway itself: patch on that one Gateway, grants, and the
    // Domain finalizer.
    let rule_for = |role: &Value, resource: &str| -> Option<Value> {
        role["rules"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| {
                r["resources"] == json!([resource]) && r["verbs"] != json!(["get", "list", "watch"])
            })
            .cloned()
    };
    // The Gateway and the finalizer in either mode: a switch back from gateway mode
    // still moves listeners off the Gateway. The grants only in gateway mode.
    let gateways = rule_for(role, "gateways").expect("a rule for the Gateway");
    assert_eq!(gateways["resourceNames"], json!(["clouddeck"]));
    assert_eq!(gateways["verbs"], json!(["get", "list", "watch", "patch"]));
    assert_eq!(rule_for(role, "referencegrants"), None);
    let finalizers = rule_for(role, "domains").expect("a rule for the finalizer");
    assert_eq!(finalizers["verbs"], json!(["patch"]));
    let gateway_mode = objects(&render(
        "clouddeck",
        "clouddeck-system",
        &["domains.listeners=gateway,domains.httpsListenerPort=8443"],
    ));
    let gateway_role = find(&gateway_mode, "ClusterRole", "clouddeck-operator");
    let gateways = rule_for(gateway_role, "gateways").expect("a rule for the Gateway");
    assert_eq!(gateways["resourceNames"], json!(["clouddeck"]));
    assert_eq!(gateways["verbs"], json!(["get", "list", "watch", "patch"]));
    let grants = rule_for(gateway_role, "referencegrants").expect("a rule for grants");
    assert_eq!(grants["verbs"], json!(["create", "patch"]));
    let finalizers = rule_for(gateway_role, "domains").expect("a rule for the finalizer");
    assert_eq!(finalizers["verbs"], json!(["patch"]));
    let env = &find(&gateway_mode, "Deployment", "clouddeck")["spec"]["template"]["spec"]["containers"]
        [0]["env"];
    for (name, value) in [
        ("CLOUDDECK_DOMAIN_LISTENERS", "gateway"),
        ("CLOUDDECK_HTTPS_LISTENER_PORT", "8443"),
    ] {
        assert!(
            env.as_array()
                .unwrap()
                .contains(&json!({ "name": name, "value": value })),
            "{name}={value} in {env}"
        );
    }
    let lease_role = find(&rendered, "Role", "clouddeck-leader-election");
    assert_eq!(lease_role["metadata"]["namespace"], "clouddeck-system");
    // The deny responder: the operator's image running `clouddeck responder`, restricted
    // like the operator, no API token; the operator is told where it is, and may grant
    // namespaces access to it only in its own namespace.
    let responder = find(&rendered, "Deployment", "clouddeck-responder");
    let responder_pod = &responder["spec"]["template"]["spec"];
    assert_eq!(responder_pod["automountServiceAccountToken"], false);
    let container = &responder_pod["containers"][0];
    assert_eq!(container["args"][0], "responder");
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
    find(&rendered, "Service", "clouddeck-responder");
    let grant_role = find(&rendered, "Role", "clouddeck-deny-responder");
    assert_eq!(grant_role["metadata"]["namespace"], "clouddeck-system");
    assert_eq!(
        grant_role["rules"][0]["resources"],
        json!(["referencegrants"])
    );

    // The Deployment: two replicas, restricted security context, probes, and every
    // setting of `clouddeck run` from the values (identity and kubeconfig excepted).
    let deployment = find(&rendered, "Deployment", "clouddeck");
    assert_eq!(deployment["spec"]["replicas"], 2);
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    assert_eq!(container["args"], json!(["run", "--log-format=json"]));
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(container["ports"][0]["containerPort"], 8080);
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(
        container["securityContext"]["allowPrivilegeEscalation"],
        false
    );
    assert_eq!(
        container["securityContext"]["capabilities"]["drop"],
        json!(["ALL"])
    );
    let env = container["env"].as_array().unwrap();
    let pod_name = env.iter().find(|e| e["name"] == "POD_NAME").unwrap();
    assert_eq!(
        pod_name["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.name"
    );
    let rendered_env: BTreeSet<String> = env
        .iter()
        .map(|e| e["name"].as_str().unwrap().to_owned())
        .filter(|n| n.starts_with("CLOUDDECK_"))
        .chain(["CLOUDDECK_LOG_FORMAT".to_owned()]) // an argument, --log-format
        .collect();
    let mut settings = run_env_vars();
    assert!(settings.len() > 20, "{settings:?}");
    settings.remove("CLOUDDECK_KUBECONFIG"); // in-cluster
    settings.remove("CLOUDDECK_LEASE_IDENTITY"); // $POD_NAME
    assert_eq!(
        rendered_env, settings,
        "chart env vs `clouddeck run --help`"
    );
    let allow = env
        .iter()
        .find(|e| e["name"] == "CLOUDDECK_WEBHOOK_ALLOW_CIDRS")
        .unwrap();
    assert_eq!(allow["value"], "10.0.0.0/8,hooks.tools.svc");
    let annotations = env
        .iter()
        .find(|e| e["name"] == "CLOUDDECK_BUILD_POD_ANNOTATIONS")
        .unwrap();
    assert_eq!(annotations["value"], "sidecar.istio.io/inject=no,team=web");

    // Monitoring: alerts on the metrics the operator really exports.
    find(&rendered, "ServiceMonitor", "clouddeck");
    let rules =
        serde_json::to_string(&find(&rendered, "PrometheusRule", "clouddeck")["spec"]).unwrap();
    let sources = read(&support::repo_root().join("src/telemetry.rs"))
        + &read(&support::repo_root().join("src/delivery/metrics.rs"));
    for (metric, registered) in [
        ("clouddeck_leader", "\"leader\""),
        (
            "clouddeck_reconcile_failures_total",
            "\"reconcile_failures\"",
        ),
        ("clouddeck_webhook_attempts_total", "\"webhook_attempts\""),
        (
            "clouddeck_webhook_deliveries_total",
            "\"webhook_deliveries\"",
        ),
        (
            "clouddeck_webhook_oldest_pending_age_seconds",
            "\"webhook_oldest_pending_age\"",
        ),
    ] {
        assert!(rules.contains(metric), "no alert uses {metric}");
        assert!(sources.contains(registered), "{metric} is not exported");
    }
    for alert in [
        "CloudDeckLeaderAbsent",
        "CloudDeckReconcileFailing",
        "CloudDeckWebhookAttemptsFailing",
        "CloudDeckWebhookDeliveriesFailed",
    ] {
        assert!(rules.contains(alert), "no alert {alert}");
    }

    // config/ for kustomize: generated from the chart and kept in sync.
    let update = std::env::var_os("CLOUDDECK_UPDATE_CONFIG").is_some();
    for (path, want) in config_from_chart() {
        let file = support::repo_root().join(&path);
        if update {
            std::fs::write(&file, &want).unwrap();
        }
        assert!(
            std::fs::read_to_string(&file).ok().as_deref() == Some(want.as_str()),
            "{path} is not what the chart renders: run CLOUDDECK_UPDATE_CONFIG=1 cargo test --test e2e chart::"
        );
    }
    let kustomized = objects(&support::kubectl_ok(&[
        "kustomize",
        support::repo_root()
            .join("config/default")
            .to_str()
            .unwrap(),
    ]));
    assert!(
        kustomized.iter().all(|o| {
            o["kind"] == "Namespace"
                || o["kind"] == "CustomResourceDefinition"
                || o["kind"].as_str().unwrap().starts_with("Cluster")
                || o["metadata"]["namespace"] == "clouddeck-system"
        }),
        "config/default puts everything in clouddeck-system"
    );
    assert_eq!(
        kustomized
            .iter()
            .filter(|o| o["kind"] == "CustomResourceDefinition")
            .count(),
        crd_names.len()
    );
    for (kind, name) in [
        ("Deployment", "clouddeck"),
        ("ClusterRole", "clouddeck-operator"),
        ("ClusterRole", "clouddeck-edit"),
        ("Role", "clouddeck-leader-election"),
        ("Namespace", "clouddeck-system"),
    ] {
        find(&kustomized, kind, name);
    }
}

/// A `helm install` of the chart into a test namespace, uninstalled when dropped (the
/// ClusterRoles are not in the namespace). The release is named after the namespace, so
/// cluster-wide names never collide between tests.
pub(crate) struct Release {
    name: String,
    namespace: String,
}

impl Release {
    pub(crate) fn install(namespace: &str, extra: &[&str]) -> Release {
        let kubeconfig = support::kubeconfig_path();
        let chart = chart_dir();
        let mut args = vec![
            "install",
            namespace,
            chart.to_str().unwrap(),
            "--namespace",
            namespace,
            "--kubeconfig",
            kubeconfig.to_str().unwrap(),
            "--skip-crds", // support::Operator applies crds/ itself; CRDs outlive a release
        ];
        args.extend(extra);
        helm_ok(&args);
        Release {
            name: namespace.to_owned(),
            namespace: namespace.to_owned(),
        }
    }

    /// The chart's full name: the ServiceAccount, Deployment and role name prefix.
    pub(crate) fn fullname(&self) -> String {
        format!("{}-clouddeck", self.name)
    }

    pub(crate) fn service_account(&self) -> String {
        format!(
            "system:serviceaccount:{}:{}",
            self.namespace,
            self.fullname()
        )
    }
}

impl Drop for Release {
    fn drop(&mut self) {
        let kubeconfig = support::kubeconfig_path();
        let _ = helm(&[
            "uninstall",
            &self.name,
            "--namespace",
            &self.namespace,
            "--kubeconfig",
            kubeconfig.to_str().unwrap(),
        ]);
    }
}

pub(crate) fn label_restricted(namespace: &str) {
    support::kubectl_ok(&[
        "label",
        "namespace",
        namespace,
        "pod-security.kubernetes.io/enforce=restricted",
    ]);
}

/// User story: "I `helm install` CloudDeck into a namespace that enforces the restricted
/// Pod Security Standard; two operator pods come up Ready, and `helm uninstall` leaves no
/// cluster-wide role behind."
#[tokio::test]
async fn helm_install_runs_two_ready_replicas_under_restricted_pod_security() {
    let _shared = support::SHARED_API.read().await;
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "e2e-chart").await;
    label_restricted(&ns.name);
    // The delivery policy is cluster-wide: only the RBAC test's release installs one.
    let release = Release::install(
        &ns.name,
        &[
            "--wait",
            "--timeout",
            "120s",
            "--set",
            "rbac.deliveryPolicy=false",
        ],
    );

    let ready = support::kubectl_ok(&[
        "get",
        "deployment.apps",
        &release.fullname(),
        "-n",
        &ns.name,
        "-o",
        "jsonpath={.spec.replicas} {.status.readyReplicas}",
    ]);
    assert_eq!(ready, "2 2");
    let pods = support::kubectl_ok(&[
        "get",
        "pods",
        "-n",
        &ns.name,
        "-l",
        &format!(
            "app.kubernetes.io/instance={},app.kubernetes.io/component",
            release.name
        ),
        "-o",
        "jsonpath={range .items[*]}{.metadata.labels.app\\.kubernetes\\.io/component} {.spec.nodeName} {.status.conditions[?(@.type==\"Ready\")].status}{\"\\n\"}{end}",
    ]);
    let mut pods: Vec<&str> = pods.lines().collect();
    pods.sort();
    // Two operator replicas and two of the deny responder, all Ready.
    assert_eq!(
        pods,
        [
            "deny-responder kwok-node-0 True",
            "deny-responder kwok-node-0 True",
            "operator kwok-node-0 True",
            "operator kwok-node-0 True"
        ],
        "{pods:?}"
    );
    // The Pod Security admission had its say: the namespace enforces `restricted`.
    let events = support::kubectl_ok(&["get", "events", "-n", &ns.name]);
    assert!(!events.contains("violates PodSecurity"), "{events}");

    // API Priority and Fairness puts the operator's requests in its own priority level,
    // and its Lease renewals in leader-election: the apiserver says which FlowSchema
    // classified a request in a response header.
    let operator = release.service_account();
    let classified_by = |args: &[&str]| {
        let mut all = vec!["-v=8", "--as", operator.as_str()];
        all.extend_from_slice(args);
        let out = support::kubectl(&all);
        String::from_utf8_lossy(&out.stderr).to_string()
    };
    let uid_of = |name: &str| {
        support::kubectl_ok(&["get", "flowschema", name, "-o", "jsonpath={.metadata.uid}"])
    };
    let operator_schema = uid_of(&format!("{}-operator", release.fullname()));
    let lease_schema = uid_of(&format!("{}-operator-leases", release.fullname()));
    let listed = classified_by(&["get", "projects.clouddeck.io", "-A"]);
    assert!(
        listed.contains(&format!(
            "X-Kubernetes-Pf-Flowschema-Uid: {operator_schema}"
        )),
        "{listed}"
    );
    let lease = classified_by(&["get", "lease", "clouddeck-leader", "-n", &ns.name]);
    assert!(
        lease.contains(&format!("X-Kubernetes-Pf-Flowschema-Uid: {lease_schema}")),
        "{lease}"
    );
    let level = support::kubectl_ok(&[
        "get",
        "prioritylevelconfiguration",
        &format!("{}-operator", release.fullname()),
        "-o",
        "jsonpath={.spec.limited.nominalConcurrencyShares}",
    ]);
    assert_eq!(level, "10");

    let operator_role = format!("clusterrole/{}-operator", release.fullname());
    support::kubectl_ok(&["get", &operator_role]);
    drop(release);
    let out = support::kubectl(&["get", &operator_role]);
    assert!(!out.status.success(), "{operator_role} left behind");
}

/// A kubeconfig for `service_account` of the local control plane: the admin kubeconfig's
/// server and CA, and a token from the TokenRequest API.
pub(crate) fn service_account_kubeconfig(
    namespace: &str,
    service_account: &str,
    dir: &Path,
) -> PathBuf {
    let token = support::kubectl_ok(&[
        "create",
        "token",
        service_account,
        "-n",
        namespace,
        "--duration",
        "1h",
    ]);
    let field = |path: &str| {
        support::kubectl_ok(&[
            "config",
            "view",
            "--raw",
            "--minify",
            "-o",
            &format!("jsonpath={{.clusters[0].cluster.{path}}}"),
        ])
    };
    let kubeconfig = format!(
        "apiVersion: v1
kind: Config
clusters:
- name: local
  cluster:
    server: {server}
    certificate-authority-data: {ca}
users:
- name: {service_account}
  user:
    token: {token}
contexts:
- name: operator
  context: {{cluster: local, user: {service_account}, namespace: {namespace}}}
current-context: operator
",
        server = field("server"),
        ca = field("certificate-authority-data"),
        token = token.trim(),
    );
    let path = dir.join("operator.kubeconfig");
    std::fs::write(&path, kubeconfig).unwrap();
    path
}

/// The plain `CLOUDDECK_*` variables of the chart's Deployment, as the pod would get them.
pub(crate) fn chart_env(release: &Release) -> Vec<(String, String)> {
    let manifest = support::kubectl_ok(&[
        "get",
        "deployment.apps",
        &release.fullname(),
        "-n",
        &release.namespace,
        "-o",
        "json",
    ]);
    let deployment: Value = serde_json::from_str(&manifest).unwrap();
    deployment["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| {
            Some((
                e["name"].as_str()?.to_owned(),
                e["value"].as_str()?.to_owned(),
            ))
        })
        .filter(|(name, _)| name.starts_with("CLOUDDECK_"))
        .collect()
}

fn create(namespace: &str, object: Value) {
    let out = support::kubectl_create(namespace, &object, None);
    assert!(
        out.status.success(),
        "cannot create {}: {}",
        object["metadata"]["name"],
        String::from_utf8_lossy(&out.stderr)
    );
}

fn can_i(service_account: &str, namespace: &str, verb: &str, resource: &str) -> bool {
    let out = support::kubectl(&[
        "auth",
        "can-i",
        verb,
        resource,
        "-n",
        namespace,
        &format!("--as={service_account}"),
    ]);
    String::from_utf8_lossy(&out.stdout).trim() == "yes"
}

/// User story: "I install CloudDeck with the chart's RBAC and nothing else. The operator,
/// running as the chart's ServiceAccount, leads, rolls out an image Deployment to
/// production, compiles a CronJob, routes a Domain with its certificate, writes webhook
/// deliveries and their attempts, and reports Events — and its log has no `forbidden` in it. The same account
/// cannot read every Secret, create Pods, or touch Leases elsewhere."
#[tokio::test]
async fn the_operator_works_with_exactly_the_charts_rbac() {
    let _serial = support::one_operator_test_at_a_time().await;
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "e2e-chart-rbac").await;
    let team = TestNamespace::new(&client, "e2e-chart-team").await;
    let release = Release::install(&ns.name, &[]);
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = service_account_kubeconfig(&ns.name, &release.fullname(), dir.path());

    // Least privilege, seen from outside.
    let sa = release.service_account();
    assert!(can_i(&sa, &team.name, "patch", "jobs.batch"));
    assert!(can_i(&sa, &team.name, "get", "secrets"));
    // Pods are created only as dry runs (is a build pod admitted?): no power beyond the
    // Jobs it must create anyway, whose pod templates run anything.
    assert!(can_i(&sa, &team.name, "create", "pods"));
    for (verb, resource, namespace) in [
        ("list", "secrets", team.name.as_str()),
        ("watch", "secrets", team.name.as_str()),
        ("delete", "pods", team.name.as_str()),
        ("create", "projects.clouddeck.io", team.name.as_str()),
        ("update", "projects.clouddeck.io", team.name.as_str()),
        ("patch", "leases.coordination.k8s.io", team.name.as_str()),
        (
            "patch",
            "leases.coordination.k8s.io/other-lease",
            ns.name.as_str(),
        ),
        (
            "create",
            "rolebindings.rbac.authorization.k8s.io",
            team.name.as_str(),
        ),
        ("delete", "namespaces", team.name.as_str()),
    ] {
        assert!(
            !can_i(&sa, namespace, verb, resource),
            "the operator may {verb} {resource} in {namespace}"
        );
    }

    // The operator as the pod runs it: the chart's environment, the chart's identity.
    let mut builder = support::Operator::builder(&ns.name, "clouddeck-leader");
    for (name, value) in chart_env(&release) {
        builder = builder.env(&name, &value);
    }
    let base_domain = format!("{}.e2e.test", team.name);
    let operator = builder
        // Let deliveries be attempted (and fail: nothing listens) rather than refused.
        .env("CLOUDDECK_WEBHOOK_ALLOW_CIDRS", "127.0.0.1/32")
        .args([
            "--kubeconfig",
            kubeconfig.to_str().unwrap(),
            "--base-domain",
            &base_domain,
        ])
        .start_leading()
        .await;

    // Webhooks first, so that the Deployment's events are delivered too.
    let dead_end = format!("http://127.0.0.1:{}/x", support::free_port());
    let secret: Secret = serde_json::from_value(json!({
        "metadata": { "name": "signing" },
        "stringData": { "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw" }
    }))
    .unwrap();
    Api::<Secret>::namespaced(client.clone(), &team.name)
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    for (name, spec) in [
        (
            "slack",
            json!({ "url": dead_end, "events": ["deployment.*"], "format": "slack",
                    "timeoutSeconds": 2, "retry": { "schedule": ["1s"] } }),
        ),
        (
            "signed",
            json!({ "url": dead_end, "events": ["deployment.*"],
                    "secretRefs": [{ "name": "signing", "key": "secret" }],
                    "timeoutSeconds": 2, "retry": { "schedule": ["1s"] } }),
        ),
    ] {
        create(
            &team.name,
            json!({ "apiVersion": "clouddeck.io/v1alpha1", "kind": "Webhook",
                    "metadata": { "name": name }, "spec": spec }),
        );
    }
    create(
        &team.name,
        json!({ "apiVersion": "clouddeck.io/v1alpha1", "kind": "Project",
                "metadata": { "name": "charted" },
                "spec": { "image": IMAGE } }),
    );
    create(
        &team.name,
        json!({ "apiVersion": "clouddeck.io/v1alpha1", "kind": "Deployment",
                "metadata": { "name": "charted-1" },
                "spec": { "projectRef": { "name": "charted" }, "target": "production",
                          "source": { "image": IMAGE } } }),
    );
    create(
        &team.name,
        json!({ "apiVersion": "clouddeck.io/v1alpha1", "kind": "Domain",
                "metadata": { "name": "www" },
                "spec": { "hostname": format!("www.charted.{base_domain}"),
                          "projectRef": { "name": "charted" } } }),
    );

    // Rolled out and promoted: workload, Service and routes applied, status written.
    let deployments = Api::<Deployment>::namespaced(client.clone(), &team.name);
    eventually("charted-1 Ready", TIMEOUT, || async {
        let d = deployments.get("charted-1").await.ok()?;
        (d.status?.phase? == DeploymentPhase::Ready).then_some(())
    })
    .await;
    let production = eventually("the Project's production", TIMEOUT, || async {
        let out = support::kubectl(&[
            "get",
            "projects.clouddeck.io",
            "charted",
            "-n",
            &team.name,
            "-o",
            "jsonpath={.status.productionDeployment}",
        ]);
        let name = String::from_utf8_lossy(&out.stdout).into_owned();
        (!name.is_empty()).then_some(name)
    })
    .await;
    assert_eq!(production, "charted-1");

    // A CronJob: its batch CronJob applied, its production Deployment read, status written.
    create(
        &team.name,
        json!({ "apiVersion": "clouddeck.io/v1alpha1", "kind": "CronJob",
                "metadata": { "name": "charted-cron" },
                "spec": { "projectRef": { "name": "charted" }, "schedule": "0 0 1 1 *",
                          "http": { "path": "/cron" } } }),
    );
    eventually(
        "the CronJob's batch CronJob and status",
        TIMEOUT,
        || async {
            let out = support::kubectl(&[
                "get",
                "cronjobs.clouddeck.io",
                "charted-cron",
                "-n",
                &team.name,
                "-o",
                "jsonpath={.status.deployment}",
            ]);
            let applied =
                support::kubectl(&["get", "cronjobs.batch", "charted-cron", "-n", &team.name])
                    .status
                    .success();
            (applied && String::from_utf8_lossy(&out.stdout) == "charted-1").then_some(())
        },
    )
    .await;

    // The Domain: verified (internal hostname), routed, its certificate and listener applied.
    use clouddeck::controllers::domain::render;
    for (resource, name) in [
        (
            "httproutes.gateway.networking.k8s.io",
            render::route_name("www"),
        ),
        (
            "certificates.cert-manager.io",
            render::certificate_name("www"),
        ),
        (
            "listenersets.gateway.networking.k8s.io",
            render::listener_set_name("www"),
        ),
    ] {
        eventually(&format!("{resource} {name}"), TIMEOUT, || async {
            support::kubectl(&["get", resource, &name, "-n", &team.name])
                .status
                .success()
                .then_some(())
        })
        .await;
    }

    // An EdgeHandler with a deny rule: into the routes, the namespace granted access to the
    // release's responder (in the release namespace), status written.
    create(
        &team.name,
        json!({ "apiVersion": "clouddeck.io/v1alpha1", "kind": "EdgeHandler",
                "metadata": { "name": "charted-edge" },
                "spec": { "projectRef": { "name": "charted" },
                          "rules": [{ "match": { "path": { "type": "PathPrefix", "value": "/admin" } },
                                      "deny": {} }] } }),
    );
    eventually("the EdgeHandler Ready and its grant", TIMEOUT, || async {
        let ready = support::kubectl(&[
            "get",
            "edgehandlers.clouddeck.io",
            "charted-edge",
            "-n",
            &team.name,
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
        ]);
        let grants = support::kubectl_ok(&[
            "get",
            "referencegrants.gateway.networking.k8s.io",
            "-n",
            &ns.name,
            "-l",
            &format!("clouddeck.io/from-namespace={}", team.name),
            "-o",
            "name",
        ]);
        (String::from_utf8_lossy(&ready.stdout) == "True" && !grants.is_empty()).then_some(())
    })
    .await;

    // Webhooks: each got its ping, written before any attempt, and attempts were recorded
    // (replace of the delivery's status) — to an endpoint where nothing listens.
    let deliveries = Api::<WebhookDelivery>::namespaced(client.clone(), &team.name);
    eventually("pings attempted for both Webhooks", TIMEOUT, || async {
        let list = deliveries.list(&ListParams::default()).await.ok()?.items;
        let attempted: BTreeSet<String> = list
            .iter()
            .filter(|d| d.spec.event_type == "webhook.ping")
            .filter(|d| d.status.as_ref().and_then(|s| s.attempt_count) >= Some(1))
            .map(|d| d.spec.webhook_ref.name.clone())
            .collect();
        (attempted.len() == 2).then_some(())
    })
    .await;
    eventually("deployment.* deliveries", TIMEOUT, || async {
        let list = deliveries.list(&ListParams::default()).await.ok()?.items;
        list.iter()
            .any(|d| d.spec.event_type.starts_with("deployment."))
            .then_some(())
    })
    .await;

    // Events (events.k8s.io) reported by the operator.
    let events = support::kubectl_ok(&[
        "get",
        "events.events.k8s.io",
        "-n",
        &team.name,
        "-o",
        "jsonpath={range .items[*]}{.reportingController} {.reason}{\"\\n\"}{end}",
    ]);
    assert!(
        events.lines().any(|l| l.starts_with("clouddeck")),
        "no Event from the operator:\n{events}"
    );

    let logs = operator.logs();
    let refused: Vec<&str> = logs
        .lines()
        // A write into another test's namespace that is being deleted is also answered
        // 403 ("... because it is being terminated"); that is not an RBAC refusal.
        .filter(|l| {
            l.to_lowercase().contains("forbidden") && !l.contains("because it is being terminated")
        })
        .take(5)
        .collect();
    assert!(
        refused.is_empty(),
        "the operator was refused something:\n{}",
        refused.join("\n")
    );
    assert!(
        logs.contains("became leader"),
        "the operator log is not what this test expects:\n{logs}"
    );
    operator.stop().await;
}

/// User story: "I bind my teams to the built-in roles: `edit` may create Projects and
/// redeliver webhooks but not forge what the operator observed (status), `view` may only
/// look, `admin` may also clean up in bulk — and only in the namespace of the binding."
#[tokio::test]
async fn users_get_clouddeck_kinds_through_the_builtin_view_edit_admin_roles() {
    let _shared = support::SHARED_API.read().await;
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "e2e-chart-users").await;
    let other = TestNamespace::new(&client, "e2e-chart-other").await;
    let _release = Release::install(&ns.name, &["--set", "rbac.deliveryPolicy=false"]);
    let user = |name: &str| format!("system:serviceaccount:{}:{name}", ns.name);
    for (name, role) in [("dev", "edit"), ("auditor", "view"), ("lead", "admin")] {
        support::kubectl_ok(&["create", "serviceaccount", name, "-n", &ns.name]);
        support::kubectl_ok(&[
            "create",
            "rolebinding",
            name,
            "-n",
            &ns.name,
            &format!("--clusterrole={role}"),
            &format!("--serviceaccount={}:{name}", ns.name),
        ]);
    }
    // The controller-manager aggregates the chart's roles into the built-in ones.
    eventually("aggregation into edit", Duration::from_secs(30), || async {
        can_i(&user("dev"), &ns.name, "create", "projects.clouddeck.io").then_some(())
    })
    .await;
    eventually(
        "aggregation into admin",
        Duration::from_secs(30),
        || async {
            can_i(
                &user("lead"),
                &ns.name,
                "deletecollection",
                "projects.clouddeck.io",
            )
            .then_some(())
        },
    )
    .await;

    let expect = [
        ("dev", "create", "projects.clouddeck.io", true),
        ("dev", "patch", "webhookdeliveries.clouddeck.io", true),
        ("dev", "create", "webhookdeliveries.clouddeck.io", false),
        ("dev", "create", "webhooks.clouddeck.io", true),
        ("lead", "create", "webhookdeliveries.clouddeck.io", false),
        ("dev", "delete", "deployments.clouddeck.io", true),
        (
            "dev",
            "patch",
            "webhookdeliveries.clouddeck.io/status",
            false,
        ),
        ("dev", "update", "deployments.clouddeck.io/status", false),
        ("dev", "deletecollection", "projects.clouddeck.io", false),
        ("auditor", "list", "projects.clouddeck.io", true),
        ("auditor", "watch", "webhookdeliveries.clouddeck.io", true),
        ("auditor", "get", "splittests.clouddeck.io", true),
        ("auditor", "create", "projects.clouddeck.io", false),
        ("auditor", "patch", "webhooks.clouddeck.io", false),
        (
            "lead",
            "deletecollection",
            "webhookdeliveries.clouddeck.io",
            true,
        ),
        ("lead", "create", "cronjobs.clouddeck.io", true),
        ("lead", "patch", "projects.clouddeck.io/status", false),
    ];
    for (who, verb, resource, allowed) in expect {
        let (resource, subresource) = match resource.split_once('/') {
            Some((r, s)) => (r, Some(s)),
            None => (resource, None),
        };
        let mut args = vec![
            "auth".to_owned(),
            "can-i".into(),
            verb.into(),
            resource.into(),
            "-n".into(),
            ns.name.clone(),
            format!("--as={}", user(who)),
        ];
        if let Some(sub) = subresource {
            args.push(format!("--subresource={sub}"));
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let answer = String::from_utf8_lossy(&support::kubectl(&args).stdout)
            .trim()
            .to_owned();
        assert_eq!(
            answer == "yes",
            allowed,
            "{who} ({verb} {resource}{}): {answer}",
            subresource.map(|s| format!("/{s}")).unwrap_or_default()
        );
    }
    // A binding is per namespace.
    assert!(!can_i(
        &user("dev"),
        &other.name,
        "create",
        "projects.clouddeck.io"
    ));

    // And for real: `edit` creates a Project.
    let project = json!({ "apiVersion": "clouddeck.io/v1alpha1", "kind": "Project",
                          "metadata": { "name": "mine" }, "spec": { "image": IMAGE } });
    let out = support::kubectl_create(&ns.name, &project, Some(&user("dev")));
    assert!(
        out.status.success(),
        "edit cannot create a Project: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
