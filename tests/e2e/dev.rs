//! What `make dev` sets up, run the way `hack/dev` runs it (its `samples` step, in a
//! namespace of the test's own): the samples built from a local git repository by the
//! build Job, running on the real node and answering HTTP, and the sample Domains verified
//! against a DNS server on loopback rather than the machine's resolver.

use std::process::Command;
use std::time::Duration;

use clouddeck::api::{Deployment, DeploymentPhase, Domain, SplitTest};
use k8s_openapi::api::core::v1::Service;
use kube::Api;
use kube::api::ListParams;

use crate::support::{self, TestNamespace, eventually};

const TIMEOUT: Duration = Duration::from_secs(300);

/// Stops the test's dnsmasq, however the test ends.
struct DnsServer(std::path::PathBuf);

impl Drop for DnsServer {
    fn drop(&mut self) {
        let _ = Command::new(support::repo_root().join("hack/dnsmasq"))
            .arg("stop")
            .arg(&self.0)
            .output();
    }
}

/// User story: "I run `make dev` on a fresh machine: the sample storefront is built from a
/// local git repository and answers HTTP from the real node, its preview too; the sample
/// Domains verify by their TXT records, answered by a DNS server on this machine."
#[tokio::test]
async fn make_dev_builds_the_samples_from_local_git_and_they_answer() {
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "e2e-dev").await;
    let work = tempfile::tempdir().unwrap();
    // The samples' hostnames are cluster-wide claims: a Domain an earlier test left (its
    // namespace still being deleted) would own them.
    let everywhere = Api::<Domain>::all(client.clone());
    eventually("no other Domain claiming example.com", TIMEOUT, || async {
        let all = everywhere.list(&ListParams::default()).await.ok()?;
        all.items
            .iter()
            .all(|d| !["example.com", "www.example.com"].contains(&d.spec.hostname.as_str()))
            .then_some(())
    })
    .await;

    let _serial = support::one_operator_test_at_a_time().await;
    let out = Command::new(support::repo_root().join("hack/dev"))
        .arg("samples")
        .arg(&ns.name)
        .arg(work.path())
        .env("KUBECONFIG", support::kubeconfig_path())
        .output()
        .expect("run hack/dev samples");
    assert!(
        out.status.success(),
        "hack/dev samples failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _dns = DnsServer(work.path().join("dns"));
    let dns_port = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(dns_port.parse::<u16>().is_ok(), "not a port: {dns_port:?}");

    // The operator as `make dev` runs it (a short hostname reservation, so that the
    // samples' hostnames are free again for the next test soon after this one).
    let _operator = support::Operator::builder(&ns.name, "dev")
        .args(["--dns-server", &format!("127.0.0.1:{dns_port}")])
        .args(["--git-image", "registry.clouddeck.local/git:local"])
        .args([
            "--buildkit-image",
            "registry.clouddeck.local/buildkit:local",
        ])
        .args(["--http-call-image", "registry.clouddeck.local/curl:local"])
        .args(["--hostname-reservation", "10s"])
        .start_leading()
        .await;

    let deployments = Api::<Deployment>::namespaced(client.clone(), &ns.name);
    let services = Api::<Service>::namespaced(client.clone(), &ns.name);
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    for (name, page) in [
        (
            "storefront-3f9c2ab",
            "storefront, built by CloudDeck from commit ",
        ),
        (
            "storefront-pr-42",
            "storefront (new checkout), built by CloudDeck from commit ",
        ),
    ] {
        eventually(
            &format!("{name} to be built and Ready"),
            TIMEOUT,
            || async {
                let d = deployments.get(name).await.ok()?;
                (d.status?.phase? == DeploymentPhase::Ready).then_some(())
            },
        )
        .await;
        // What the printed instructions tell a newcomer to curl: the Service, from here.
        let ip = services
            .get(name)
            .await
            .unwrap()
            .spec
            .unwrap()
            .cluster_ip
            .unwrap();
        let body = eventually(&format!("{name}'s Service to answer"), TIMEOUT, || async {
            let response = http.get(format!("http://{ip}/")).send().await.ok()?;
            response.text().await.ok()
        })
        .await;
        let commit = body
            .trim()
            .strip_prefix(page)
            .unwrap_or_else(|| panic!("{name} answered {body:?}"));
        assert!(
            commit.len() == 40 && commit.bytes().all(|b| b.is_ascii_hexdigit()),
            "{name} answered {body:?}"
        );
    }

    // The printed gateway line: production as a visitor gets it, through Traefik.
    let host = crate::traffic::production_hostname(&client, &ns.name, "storefront").await;
    crate::traffic::answer_of(&host, "/", "the storefront", |body| {
        body.starts_with("storefront")
    })
    .await;

    // The sample split test runs on the two sample Deployments, 90/10.
    let tests = Api::<SplitTest>::namespaced(client.clone(), &ns.name);
    let running = eventually("the sample SplitTest running", TIMEOUT, || async {
        let test = tests.get("checkout-redesign").await.ok()?;
        let status = test.status?;
        let ready = status.conditions.iter().find(|c| c.type_ == "Ready")?;
        (ready.reason == "Running").then_some(status)
    })
    .await;
    let shares: Vec<(Option<String>, i32)> = running
        .variants
        .iter()
        .map(|v| (v.deployment.clone(), v.weight))
        .collect();
    assert_eq!(
        shares,
        [
            (Some("storefront-3f9c2ab".into()), 90),
            (Some("storefront-pr-42".into()), 10)
        ]
    );

    let domains = Api::<Domain>::namespaced(client.clone(), &ns.name);
    for name in ["example-com", "www-example-com"] {
        eventually(&format!("Domain {name} verified"), TIMEOUT, || async {
            let d = domains.get(name).await.ok()?;
            let verified = d
                .status?
                .conditions
                .into_iter()
                .find(|c| c.type_ == "Verified")?;
            (verified.status == "True" && verified.reason == "RecordFound").then_some(())
        })
        .await;
    }
}
