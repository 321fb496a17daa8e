//! Requests through a real Gateway API implementation: the Traefik that `hack/cluster up`
//! runs on loopback (hack/lib/gateway.sh), serving the Gateway `clouddeck` in
//! `clouddeck-system` that the operator's routes attach to, with pods on the real node as
//! backends. A test judges CloudDeck by what a visitor of a hostname gets back: it
//! connects to the gateway's port on 127.0.0.1 and names the hostname in the request, as
//! a browser would after DNS; no DNS is involved.

use std::net::SocketAddr;
use std::time::Duration;

use clouddeck::api::{Deployment, Domain, EdgeHandler, Project, SplitTest};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use tokio::time::Instant;

use crate::support::{self, TestNamespace, eventually};

/// The gateway's plain-HTTP listener (hack/lib/gateway.sh: GATEWAY_HTTP_PORT).
fn gateway_http_port() -> u16 {
    std::env::var("CLOUDDECK_GATEWAY_HTTP_PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(18080)
}

/// The response to `GET http://<hostname><path>` through the gateway (redirects are not
/// followed), or `None` when the gateway could not be reached at all.
pub(crate) async fn request(hostname: &str, path: &str) -> Option<reqwest::Response> {
    request_with(hostname, path, &[]).await
}

/// [`request`] with these request headers.
pub(crate) async fn request_with(
    hostname: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Option<reqwest::Response> {
    let port = gateway_http_port();
    let client = reqwest::Client::builder()
        .resolve(hostname, SocketAddr::from(([127, 0, 0, 1], port)))
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(5))
        .build()
        .expect("an HTTP client");
    let mut get = client.get(format!("http://{hostname}:{port}{path}"));
    for (name, value) in headers {
        get = get.header(*name, *value);
    }
    get.send().await.ok()
}

/// What a visitor of `http://<hostname><path>` gets: the status and the body.
pub(crate) async fn visit(hostname: &str, path: &str) -> Option<(u16, String)> {
    let response = request(hostname, path).await?;
    let status = response.status().as_u16();
    Some((status, response.text().await.ok()?.trim().to_owned()))
}

/// Waits until `http://<hostname><path>` answers 200 with a body `accept` takes (routes
/// and endpoints reach the gateway within a second or two of being written); returns it.
pub(crate) async fn answer_of(
    hostname: &str,
    path: &str,
    what: &str,
    accept: impl Fn(&str) -> bool,
) -> String {
    let mut last = None;
    let found = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            let got = visit(hostname, path).await;
            if let Some((200, body)) = &got
                && accept(body)
            {
                return body.clone();
            }
            last = got;
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    })
    .await;
    found.unwrap_or_else(|_| {
        panic!("timed out after 60s waiting for http://{hostname}{path} to answer {what}; last answer: {last:?}")
    })
}

/// The random part of a test namespace's name (after its last `-`): makes Project names
/// and hostnames no earlier run claimed.
fn suffix(namespace: &str) -> &str {
    namespace.rsplit('-').next().unwrap_or(namespace)
}

/// The hostname the Project `project` has been given for production.
pub(crate) async fn production_hostname(
    client: &kube::Client,
    namespace: &str,
    project: &str,
) -> String {
    Api::<Project>::namespaced(client.clone(), namespace)
        .get(project)
        .await
        .expect("the Project")
        .status
        .and_then(|s| s.hostname)
        .unwrap_or_else(|| panic!("{namespace}/{project} has no production hostname"))
}

fn is_ready(conditions: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition]) -> bool {
    clouddeck::api::conditions::is_true(conditions, clouddeck::api::conditions::READY)
}

fn hostname_of(url: &str) -> String {
    url.trim_start_matches("https://")
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned()
}

async fn deployment_url(client: &kube::Client, namespace: &str, name: &str) -> String {
    let deployments = Api::<Deployment>::namespaced(client.clone(), namespace);
    let url = eventually(
        &format!("{name} to have a URL"),
        Duration::from_secs(30),
        || async { deployments.get(name).await.ok()?.status?.url },
    )
    .await;
    hostname_of(&url)
}

/// User story: "Every URL CloudDeck gives me answers with the deployment it names: the
/// preview URL of a branch's deployment, the branch's alias, and production. When I deploy
/// a new commit of `main`, production answers with it; when I roll back, production
/// answers with the old commit again."
///
/// Everything a visitor meets is real: Traefik's routing of CloudDeck's HTTPRoutes,
/// images built by BuildKit from a git push, pods on the real node.
#[tokio::test]
async fn each_url_answers_with_its_deployment_through_the_gateway() {
    use crate::builds::{Repo, git_deployment, git_project, production_is};
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "e2e-traffic").await;
    crate::node::pin_to_real_node(&client, &ns.name).await;
    let url = crate::builds::repository_url(&ns.name, "web");
    let repo = Repo::new();
    let app = crate::builds::APP_DOCKERFILE;
    let first = repo.push(&url, "main", &[("Dockerfile", app), ("version", "1")]);
    let feature = repo.push(&url, "feature", &[("version", "feature")]);

    let _serial = support::one_operator_test_at_a_time().await;
    let _operator = crate::builds::start_builder_operator(&ns.name, "traffic").await;
    git_project(&client, &ns.name, "web", &url, json!({})).await;
    git_deployment(&client, &ns.name, "web", "web-1", "main", Some(&first)).await;
    production_is(&client, &ns.name, "web", "web-1").await;
    support::create(
        &Api::<Deployment>::namespaced(client.clone(), &ns.name),
        json!({
            "apiVersion": "clouddeck.io/v1alpha1", "kind": "Deployment",
            "metadata": { "name": "web-feature" },
            "spec": { "projectRef": { "name": "web" }, "target": "preview",
                      "source": { "git": { "branch": "feature", "commit": feature } } }
        }),
    )
    .await;

    let projects = Api::<Project>::namespaced(client.clone(), &ns.name);
    let status = projects.get("web").await.unwrap().status.unwrap();
    let production = hostname_of(status.production_url.as_deref().expect("a production URL"));
    let is = |commit: &str| {
        let commit = commit.to_owned();
        move |body: &str| body == commit
    };
    answer_of(&production, "/commit", "the first commit", is(&first)).await;

    let preview = deployment_url(&client, &ns.name, "web-feature").await;
    answer_of(&preview, "/commit", "the feature commit", is(&feature)).await;
    let alias = eventually(
        "feature's branch alias",
        Duration::from_secs(180),
        || async {
            let status = projects.get("web").await.ok()?.status?;
            let latest = status
                .latest_deployments
                .into_iter()
                .find(|b| b.branch == "feature")?;
            (latest.deployment == "web-feature").then_some(())?;
            Some(clouddeck::hostnames::scheme::branch_hostname(
                status.hostname.as_deref()?.split('.').next()?,
                "feature",
                "clouddeck.localhost",
            ))
        },
    )
    .await;
    answer_of(&alias, "/commit", "the feature commit", is(&feature)).await;
    // The first deployment's own preview URL.
    let first_preview = deployment_url(&client, &ns.name, "web-1").await;
    answer_of(&first_preview, "/commit", "the first commit", is(&first)).await;

    // A second commit of main: production answers with it once it is promoted.
    let second = repo.push(&url, "main", &[("version", "2")]);
    git_deployment(&client, &ns.name, "web", "web-2", "main", Some(&second)).await;
    production_is(&client, &ns.name, "web", "web-2").await;
    answer_of(&production, "/commit", "the second commit", is(&second)).await;
    // The old production waits for a rollback scaled to zero (`spec.keepWarm` is 0): its
    // own URL has nothing behind it meanwhile, and the gateway says so.
    eventually(
        "web-1's URL to answer 503 on standby",
        Duration::from_secs(60),
        || async { (visit(&first_preview, "/commit").await?.0 == 503).then_some(()) },
    )
    .await;

    // Rollback: web-1 is scaled up again, then production answers with the first commit.
    projects
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "rollbackTo": "web-1" } })),
        )
        .await
        .expect("roll back");
    answer_of(&production, "/commit", "the first commit again", is(&first)).await;
    answer_of(&first_preview, "/commit", "the first commit", is(&first)).await;
    // A hostname no route names: the gateway's 404, not some tenant's app.
    let unknown = visit("nobody.clouddeck.localhost", "/commit").await;
    assert_eq!(unknown.map(|(status, _)| status), Some(404));
}

/// User story (an attacker with `edit` in one namespace): "I name my Project after
/// another team's and ask for their production hostname as my Domain. CloudDeck refuses
/// it, and visitors of that hostname still get the other team's app, never mine; my
/// Project is served under a hostname of its own."
#[tokio::test]
async fn a_refused_hostname_keeps_reaching_its_owner_through_the_gateway() {
    let client = support::client().await;
    let owner = TestNamespace::new(&client, "e2e-owner").await;
    let thief = TestNamespace::new(&client, "e2e-thief").await;
    for ns in [&owner, &thief] {
        crate::node::pin_to_real_node(&client, &ns.name).await;
    }
    let _serial = support::one_operator_test_at_a_time().await;
    let _operator = support::Operator::builder(&owner.name, "hijack")
        .start_leading()
        .await;
    let project = format!("shop-{}", suffix(&owner.name));
    crate::node::real_project_named(&client, &owner.name, &project, "owner-1").await;
    let owner_host = eventually("the owner's hostname", Duration::from_secs(30), || async {
        Api::<Project>::namespaced(client.clone(), &owner.name)
            .get(&project)
            .await
            .ok()?
            .status?
            .hostname
    })
    .await;
    assert_eq!(owner_host, format!("{project}.clouddeck.localhost"));
    let from_owner = |body: &str| body.starts_with("hello from owner-1-");
    answer_of(&owner_host, "/index.html", "the owner's app", from_owner).await;

    // The attacker, as a user with `edit` in their own namespace only: a Project of the
    // same name, and a Domain for the owner's production hostname.
    let attacker = crate::hostnames::tenant(&thief.name);
    crate::node::real_project_named(&client, &thief.name, &project, "thief-1").await;
    let takeover = crate::hostnames::domain("takeover", &owner_host, &project, json!({}));
    crate::hostnames::created_as(&attacker, &thief.name, &takeover);
    let domains = Api::<Domain>::namespaced(client.clone(), &thief.name);
    let refused = eventually(
        "the Domain to be refused",
        Duration::from_secs(60),
        || async {
            let status = domains.get("takeover").await.ok()?.status?;
            status
                .conditions
                .into_iter()
                .find(|c| c.type_ == "Verified" && c.status == "False")
        },
    )
    .await;
    // A name under the base domain belongs to the namespace whose Project holds its first
    // label: refused without a DNS lookup.
    assert_eq!(refused.reason, "ReservedHostname", "{refused:?}");

    let thief_host = production_hostname(&client, &thief.name, &project).await;
    assert_ne!(thief_host, owner_host);
    let from_thief = |body: &str| body.starts_with("hello from thief-1-");
    answer_of(&thief_host, "/index.html", "the thief's app", from_thief).await;
    // Visitors of the owner's hostname get the owner's app, every time.
    for _ in 0..20 {
        let (status, body) = visit(&owner_host, "/index.html")
            .await
            .expect("the gateway answers");
        assert_eq!(status, 200);
        assert!(from_owner(&body), "the owner's hostname answered {body:?}");
    }
}

/// `clouddeck responder` (the deny rules' backend) as a process on the node's address, and
/// a Service `clouddeck-responder` (port 80) in `namespace` whose one endpoint it is: the
/// gateway reaches it as it reaches a pod. (The chart runs it as a Deployment; the node
/// test of the chart shows that running on the real node.)
struct Responder {
    child: std::process::Child,
}

impl Responder {
    async fn start(client: &kube::Client, namespace: &str) -> Responder {
        const NODE_IP: [u8; 4] = [10, 213, 0, 1];
        let port = std::net::TcpListener::bind(SocketAddr::from((NODE_IP, 0)))
            .and_then(|l| l.local_addr())
            .expect("a free port on the node's address")
            .port();
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_clouddeck"))
            .args(["responder", "--listen-addr", &format!("10.213.0.1:{port}")])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start clouddeck responder");
        support::create(
            &Api::<Service>::namespaced(client.clone(), namespace),
            json!({
                "apiVersion": "v1", "kind": "Service",
                "metadata": { "name": "clouddeck-responder" },
                "spec": { "ports": [{ "port": 80, "targetPort": port, "protocol": "TCP" }] }
            }),
        )
        .await;
        support::create(
            &Api::<EndpointSlice>::namespaced(client.clone(), namespace),
            json!({
                "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                "metadata": { "name": "clouddeck-responder-host",
                              "labels": { "kubernetes.io/service-name": "clouddeck-responder" } },
                "addressType": "IPv4",
                "endpoints": [{ "addresses": ["10.213.0.1"], "conditions": { "ready": true } }],
                "ports": [{ "name": "", "port": port, "protocol": "TCP" }]
            }),
        )
        .await;
        Responder { child }
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// User story: "My EdgeHandler's rules are what visitors get: /admin answers 403, old blog
/// URLs redirect to /articles with the rest of the path, /home shows my index page, and
/// every other answer carries my security header. A denied answer does not carry it: the
/// first matching rule is the only one applied."
#[tokio::test]
async fn edge_rules_are_what_visitors_get_through_the_gateway() {
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "e2e-edge-traffic").await;
    let system = TestNamespace::new(&client, "e2e-edge-traffic-system").await;
    crate::node::pin_to_real_node(&client, &ns.name).await;
    let _responder = Responder::start(&client, &system.name).await;
    let _serial = support::one_operator_test_at_a_time().await;
    let _operator = support::Operator::builder(&ns.name, "edge-traffic")
        .args([
            "--deny-responder",
            &format!("{}/clouddeck-responder:80", system.name),
        ])
        .start_leading()
        .await;
    let project = format!("store-{}", suffix(&ns.name));
    crate::node::real_project_named(&client, &ns.name, &project, "store-1").await;
    let host = production_hostname(&client, &ns.name, &project).await;
    let from_app = |body: &str| body.starts_with("hello from store-1-");
    answer_of(&host, "/index.html", "the app", from_app).await;

    let handlers = Api::<EdgeHandler>::namespaced(client.clone(), &ns.name);
    support::create(
        &handlers,
        json!({
            "apiVersion": "clouddeck.io/v1alpha1", "kind": "EdgeHandler",
            "metadata": { "name": "store-edge" },
            "spec": { "projectRef": { "name": project }, "rules": [
                { "name": "no-admin",
                  "match": { "path": { "type": "PathPrefix", "value": "/admin" } },
                  "deny": { "statusCode": 403 } },
                { "name": "legacy-blog",
                  "match": { "path": { "type": "PathPrefix", "value": "/blog" } },
                  "redirect": { "path": { "replacePrefixMatch": "/articles" }, "statusCode": 301 } },
                { "name": "home",
                  "match": { "path": { "type": "Exact", "value": "/home" } },
                  "rewrite": { "path": { "replaceFullPath": "/index.html" } } },
                { "name": "security-headers",
                  "headers": { "response": { "set": [{ "name": "X-Frame-Options", "value": "DENY" }] } } }
            ] }
        }),
    )
    .await;
    eventually(
        "the EdgeHandler to be Ready",
        Duration::from_secs(60),
        || async {
            let status = handlers.get("store-edge").await.ok()?.status?;
            is_ready(&status.conditions).then_some(())
        },
    )
    .await;

    let denied = eventually("/admin to be denied", Duration::from_secs(60), || async {
        let response = request(&host, "/admin/users").await?;
        (response.status().as_u16() == 403).then_some(response)
    })
    .await;
    assert!(
        denied.headers().get("x-frame-options").is_none(),
        "only the first matching rule applies: {:?}",
        denied.headers()
    );
    let body = denied.text().await.unwrap();
    assert!(body.starts_with("403"), "the responder's answer: {body:?}");

    let redirect = request(&host, "/blog/2024/hello?ref=feed").await.unwrap();
    assert_eq!(redirect.status().as_u16(), 301);
    let location = redirect.headers()["location"].to_str().unwrap().to_owned();
    assert!(
        location.ends_with("/articles/2024/hello?ref=feed") && location.contains(&host),
        "Location: {location}"
    );

    let home = request(&host, "/home").await.unwrap();
    assert_eq!(home.status().as_u16(), 200);
    assert!(from_app(home.text().await.unwrap().trim()));

    let page = request(&host, "/index.html").await.unwrap();
    assert_eq!(page.status().as_u16(), 200);
    assert_eq!(page.headers()["x-frame-options"], "DENY");
    assert!(from_app(page.text().await.unwrap().trim()));
}

/// Which variant answered `headers`: `a` or `b` by the deployment its pod belongs to, and
/// the sticky cookie it set, if any.
async fn variant_for(host: &str, headers: &[(&str, &str)]) -> (String, Option<String>) {
    let response = request_with(host, "/index.html", headers)
        .await
        .expect("the gateway answers");
    assert_eq!(response.status().as_u16(), 200);
    variant_of(response).await
}

/// [`variant_for`] until the gateway serves the host: `None` for any other answer.
async fn try_variant_for(host: &str, headers: &[(&str, &str)]) -> Option<String> {
    let response = request_with(host, "/index.html", headers).await?;
    (response.status().as_u16() == 200).then_some(())?;
    Some(variant_of(response).await.0)
}

async fn variant_of(response: reqwest::Response) -> (String, Option<String>) {
    let cookie = response
        .headers()
        .get("set-cookie")
        .map(|c| c.to_str().unwrap().to_owned());
    let body = response.text().await.unwrap();
    let variant = match body.trim().strip_prefix("hello from store-") {
        Some(rest) if rest.starts_with("a-") => "a",
        Some(rest) if rest.starts_with("b-") => "b",
        _ => panic!("an answer from neither variant: {body:?}"),
    };
    (variant.to_owned(), cookie)
}

/// User story: "I split production 70/30 between two deployments. First-time visitors
/// land on each in about that share and get a cookie that names their variant; with that
/// cookie they stay on it; the override header and the override cookie send anyone to the
/// variant they name, the header winning."
#[tokio::test]
async fn a_split_test_splits_visitors_by_weight_and_keeps_them_through_the_gateway() {
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "e2e-split-traffic").await;
    crate::node::pin_to_real_node(&client, &ns.name).await;
    let _serial = support::one_operator_test_at_a_time().await;
    let _operator = support::Operator::builder(&ns.name, "split-traffic")
        .start_leading()
        .await;
    let project = format!("ab-{}", suffix(&ns.name));
    crate::node::real_project_named(&client, &ns.name, &project, "store-a").await;
    crate::node::image_deployment(
        &client,
        &ns.name,
        &project,
        "store-b",
        "preview",
        crate::node::BUSYBOX,
    )
    .await;
    let deployments = Api::<Deployment>::namespaced(client.clone(), &ns.name);
    eventually("store-b to be Ready", Duration::from_secs(90), || async {
        let status = deployments.get("store-b").await.ok()?.status?;
        is_ready(&status.conditions).then_some(())
    })
    .await;
    let host = production_hostname(&client, &ns.name, &project).await;

    let tests = Api::<SplitTest>::namespaced(client.clone(), &ns.name);
    support::create(
        &tests,
        json!({
            "apiVersion": "clouddeck.io/v1alpha1", "kind": "SplitTest",
            "metadata": { "name": "redesign" },
            "spec": { "projectRef": { "name": project }, "active": true, "variants": [
                { "name": "control", "deployment": "store-a", "weight": 70 },
                { "name": "redesign", "deployment": "store-b", "weight": 30 }
            ] }
        }),
    )
    .await;
    // Running, and the gateway has the split route: a forced variant answers.
    eventually(
        "the split to be served",
        Duration::from_secs(60),
        || async {
            let variant = try_variant_for(&host, &[("X-Clouddeck-Variant", "redesign")]).await?;
            (variant == "b").then_some(())
        },
    )
    .await;

    // First-time visitors: split by weight, each told their variant in a cookie.
    let visits = 400;
    let mut to_b = 0;
    for _ in 0..visits {
        let (variant, cookie) = variant_for(&host, &[]).await;
        let cookie = cookie.expect("a first-time visitor gets the sticky cookie");
        let named = if variant == "a" {
            "control"
        } else {
            "redesign"
        };
        assert!(
            cookie.starts_with(&format!("clouddeck-split={named};")),
            "{variant} answered with Set-Cookie: {cookie}"
        );
        to_b += usize::from(variant == "b");
    }
    // 30 % of 400 is 120, with a standard deviation of about 9.2 if the gateway picks at
    // random: 4 deviations either way.
    assert!(
        (83..=157).contains(&to_b),
        "{to_b} of {visits} first visits went to the 30 % variant"
    );

    // Returning visitors keep their variant.
    for (cookie, want) in [
        ("clouddeck-split=redesign", "b"),
        ("clouddeck-split=control", "a"),
    ] {
        for _ in 0..20 {
            let (variant, set) = variant_for(&host, &[("Cookie", cookie)]).await;
            assert_eq!(variant, want, "a visitor with {cookie}");
            assert!(
                set.is_none(),
                "a returning visitor gets no new cookie: {set:?}"
            );
        }
    }
    // Overrides: the cookie beats the sticky cookie, the header beats both.
    let (variant, _) = variant_for(
        &host,
        &[(
            "Cookie",
            "theme=dark; clouddeck-variant=redesign; clouddeck-split=control",
        )],
    )
    .await;
    assert_eq!(
        variant, "b",
        "the override cookie wins over the sticky cookie"
    );
    let (variant, _) = variant_for(
        &host,
        &[
            ("X-Clouddeck-Variant", "control"),
            ("Cookie", "clouddeck-variant=redesign"),
        ],
    )
    .await;
    assert_eq!(
        variant, "a",
        "the override header wins over the override cookie"
    );

    // Stopped: production is plain again, no cookie, store-a only.
    tests
        .patch(
            "redesign",
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "active": false } })),
        )
        .await
        .expect("stop the test");
    eventually(
        "production to be plain again",
        Duration::from_secs(60),
        || async {
            let (variant, cookie) =
                variant_for(&host, &[("X-Clouddeck-Variant", "redesign")]).await;
            (variant == "a" && cookie.is_none()).then_some(())
        },
    )
    .await;
}

/// The gateway's HTTPS entry point (hack/lib/gateway.sh: GATEWAY_HTTPS_PORT), the port of
/// Domain listeners with `--https-listener-port`.
fn gateway_https_port() -> u16 {
    std::env::var("CLOUDDECK_GATEWAY_HTTPS_PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(18443)
}

/// `GET https://<hostname><path>` through the gateway, trusting only `ca` (PEM);
/// redirects are not followed.
async fn https_get(hostname: &str, path: &str, ca: &str) -> reqwest::Result<reqwest::Response> {
    let port = gateway_https_port();
    let client = reqwest::Client::builder()
        .resolve(hostname, SocketAddr::from(([127, 0, 0, 1], port)))
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca.as_bytes())?)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(5))
        .build()?;
    client
        .get(format!("https://{hostname}:{port}{path}"))
        .send()
        .await
}

/// Waits until `https://<hostname><path>`, trusting only `ca`, answers `status` with a
/// body `accept` takes; returns the response's headers.
async fn https_answer(
    hostname: &str,
    path: &str,
    ca: &str,
    status: u16,
    accept: impl Fn(&str) -> bool,
) -> reqwest::header::HeaderMap {
    let found = tokio::time::timeout(Duration::from_secs(90), async {
        loop {
            if let Ok(response) = https_get(hostname, path, ca).await
                && response.status().as_u16() == status
            {
                let headers = response.headers().clone();
                if accept(response.text().await.unwrap_or_default().trim()) {
                    return headers;
                }
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    })
    .await;
    match found {
        Ok(headers) => headers,
        Err(_) => panic!(
            "https://{hostname}{path} did not answer {status} within 90s; last: {:?}",
            https_get(hostname, path, ca).await.map(|r| r.status())
        ),
    }
}

/// A CA and a certificate for `hostname` it signed: (CA PEM, certificate PEM, key PEM).
fn ca_and_certificate(hostname: &str) -> (String, String, String) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "clouddeck e2e CA");
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec![hostname.to_owned()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    (ca_cert.pem(), leaf.pem(), key.serialize_pem())
}

/// The names of the listeners on the operator's Gateway.
async fn gateway_listeners(client: &kube::Client) -> Vec<String> {
    use gateway_api::apis::standard::gateways::Gateway;
    Api::<Gateway>::namespaced(client.clone(), "clouddeck-system")
        .get("clouddeck")
        .await
        .expect("the local cluster's Gateway")
        .spec
        .listeners
        .into_iter()
        .map(|l| l.name)
        .collect()
}

/// The CA of the local cluster's ClusterIssuer `clouddeck-local-ca` (hack/lib/certmanager.sh).
fn local_issuer_ca() -> String {
    let path = support::cluster_dir().join("cert-manager/ca.crt");
    std::fs::read_to_string(&path)
        .unwrap_or_else(|err| panic!("{}: {err} (hack/cluster up makes it)", path.display()))
}

/// Waits until Domain `name` is Ready; returns it.
async fn ready_domain(domains: &Api<Domain>, name: &str) -> Domain {
    eventually(
        &format!("Domain {name} to be Ready"),
        Duration::from_secs(120),
        || async {
            let d = domains.get(name).await.ok()?;
            is_ready(&d.status.as_ref()?.conditions).then_some(d)
        },
    )
    .await
}

/// User story (a platform whose gateway has no ListenerSet, run with `--domain-listeners
/// gateway`): "My apex Domain, verified by its TXT record, gets a certificate from the
/// platform's issuer and is served over HTTPS: a browser that trusts that CA gets my
/// production app. My `www` Domain, with a certificate of my own, redirects to the apex
/// with 308, path and query kept. When I delete a Domain, its listener leaves the shared
/// Gateway and nothing serves that hostname any more."
///
/// Real parts throughout: cert-manager's controllers issue the certificate from a CA
/// ClusterIssuer, Traefik terminates TLS, the app runs on the real node.
#[tokio::test]
async fn domains_are_served_over_https_by_listeners_on_the_gateway() {
    use k8s_openapi::api::core::v1::Secret;
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "e2e-https").await;
    crate::node::pin_to_real_node(&client, &ns.name).await;
    let dns = crate::domains::Dns::start();
    let _serial = support::one_operator_test_at_a_time().await;
    let _operator = support::Operator::builder(&ns.name, "https")
        .args(["--dns-server", &format!("127.0.0.1:{}", dns.port)])
        .args(["--domain-listeners", "gateway"])
        .args(["--https-listener-port", &gateway_https_port().to_string()])
        .args(["--default-cluster-issuer", "clouddeck-local-ca"])
        .start_leading()
        .await;
    let suffix = suffix(&ns.name);
    let project = format!("shop-{suffix}");
    crate::node::real_project_named(&client, &ns.name, &project, "web-1").await;

    let apex = format!("shop-{suffix}.example.test");
    let www = format!("www.{apex}");
    let (own_ca, certificate, key) = ca_and_certificate(&www);
    support::create(
        &Api::<Secret>::namespaced(client.clone(), &ns.name),
        json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": { "name": "www-cert" },
            "type": "kubernetes.io/tls",
            "stringData": { "tls.crt": certificate, "tls.key": key },
        }),
    )
    .await;
    let domains = Api::<Domain>::namespaced(client.clone(), &ns.name);
    for (name, hostname, extra) in [
        ("apex", &apex, json!({})),
        (
            "www",
            &www,
            json!({ "tls": { "secretName": "www-cert" },
                    "redirectTo": { "domain": apex, "statusCode": 308 } }),
        ),
    ] {
        let mut spec = json!({ "hostname": hostname, "projectRef": { "name": project } });
        spec.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        support::create(
            &domains,
            json!({ "apiVersion": "clouddeck.io/v1alpha1", "kind": "Domain",
                    "metadata": { "name": name }, "spec": spec }),
        )
        .await;
    }
    let mut records = std::collections::BTreeMap::new();
    for name in ["apex", "www"] {
        let (record, value) = crate::domains::record(&domains, name).await;
        records.insert(record, vec![value]);
    }
    dns.set_txt(&records);
    let apex_domain = ready_domain(&domains, "apex").await;
    let www_domain = ready_domain(&domains, "www").await;
    let listener_of = |d: &Domain| format!("domain-{}", d.metadata.uid.as_deref().unwrap());
    // Traefik's own word on each listener, on the Domain.
    for name in ["apex", "www"] {
        let programmed = listener_ready(&domains, name, "ListenerProgrammed").await;
        assert_eq!(programmed.status, "True", "{programmed:?}");
    }
    let listeners = gateway_listeners(&client).await;
    for d in [&apex_domain, &www_domain] {
        assert!(
            listeners.contains(&listener_of(d)),
            "the Gateway has {}'s listener: {listeners:?}",
            d.name_any()
        );
    }

    // The apex: cert-manager's certificate, verified against the issuer's CA alone.
    let issuer_ca = local_issuer_ca();
    https_answer(&apex, "/index.html", &issuer_ca, 200, |b| {
        b.starts_with("hello from web-1-")
    })
    .await;
    // www: the user's own certificate; a 308 to the apex, path and query kept.
    let headers = https_answer(&www, "/deals/today?ref=mail", &own_ca, 308, |_| true).await;
    let location = headers["location"].to_str().unwrap();
    assert!(
        location.starts_with(&format!("https://{apex}"))
            && location.ends_with("/deals/today?ref=mail"),
        "Location: {location}"
    );
    // Plain HTTP serves the apex too (the Gateway's HTTP listener).
    answer_of(&apex, "/index.html", "production", |b| {
        b.starts_with("hello from web-1-")
    })
    .await;

    // Deleted: the finalizer takes the listener off the Gateway, then the Domain goes.
    domains
        .delete("www", &Default::default())
        .await
        .expect("delete the Domain");
    support::gone(&domains, "www").await;
    let listeners = gateway_listeners(&client).await;
    assert!(
        !listeners.contains(&listener_of(&www_domain)),
        "www's listener left the Gateway: {listeners:?}"
    );
    assert!(listeners.contains(&listener_of(&apex_domain)));
    eventually(
        "nothing to serve www over HTTPS",
        Duration::from_secs(60),
        || async { https_get(&www, "/", &own_ca).await.is_err().then_some(()) },
    )
    .await;
    https_answer(&apex, "/index.html", &issuer_ca, 200, |b| {
        b.starts_with("hello from web-1-")
    })
    .await;
}
/// Pebble, Let's Encrypt's test ACME server (built by `hack/cluster up`), on free loopback
/// ports, resolving names through `dns` and validating HTTP-01 challenges on the gateway's
/// HTTP port (where Let's Encrypt would use port 80); killed when dropped.
struct Pebble {
    child: std::process::Child,
    _dir: tempfile::TempDir,
    /// The ACME directory URL.
    directory: String,
    management: u16,
    /// The certificate of Pebble's own HTTPS API (self-signed, for 127.0.0.1).
    api_certificate: String,
}

impl Pebble {
    async fn start(dns_port: u16) -> Pebble {
        let dir = tempfile::tempdir().unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let api = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        std::fs::write(dir.path().join("api.crt"), api.pem()).unwrap();
        std::fs::write(dir.path().join("api.key"), key.serialize_pem()).unwrap();
        let (port, management) = (support::free_port(), support::free_port());
        let config = json!({ "pebble": {
            "listenAddress": format!("127.0.0.1:{port}"),
            "managementListenAddress": format!("127.0.0.1:{management}"),
            "certificate": dir.path().join("api.crt"),
            "privateKey": dir.path().join("api.key"),
            "httpPort": gateway_http_port(),
            "tlsPort": gateway_https_port(),
            "ocspResponderURL": "",
            "externalAccountBindingRequired": false,
        } });
        std::fs::write(dir.path().join("pebble.json"), config.to_string()).unwrap();
        let child = std::process::Command::new(support::cluster_dir().join("bin/pebble"))
            .arg("-config")
            .arg(dir.path().join("pebble.json"))
            .args(["-dnsserver", &format!("127.0.0.1:{dns_port}")])
            // Validate at once, and no nonce refused at random (both Let's Encrypt-like
            // by default, for clients' tests).
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .stdout(std::fs::File::create(dir.path().join("pebble.log")).unwrap())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .expect("start pebble (hack/cluster up builds it into .cluster/bin)");
        eventually("pebble to listen", Duration::from_secs(30), || async {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .ok()
        })
        .await;
        Pebble {
            child,
            directory: format!("https://127.0.0.1:{port}/dir"),
            management,
            api_certificate: api.pem(),
            _dir: dir,
        }
    }

    /// The root Pebble signs certificates under (made anew at each start).
    async fn root(&self) -> String {
        let client = reqwest::Client::builder()
            .tls_built_in_root_certs(false)
            .add_root_certificate(
                reqwest::Certificate::from_pem(self.api_certificate.as_bytes()).unwrap(),
            )
            .build()
            .unwrap();
        let url = format!("https://127.0.0.1:{}/roots/0", self.management);
        let response = client.get(&url).send().await.expect("Pebble's root");
        assert!(
            response.status().is_success(),
            "{url}: {}",
            response.status()
        );
        response.text().await.unwrap()
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// User story (a platform whose Domains get certificates from Let's Encrypt, as the
/// samples' `letsencrypt-prod`): "My Domain, verified by its TXT record, gets its
/// certificate from an ACME server that checks I control the hostname by fetching the
/// HTTP-01 challenge through the platform's Gateway, and is then served over HTTPS."
///
/// Real parts: Pebble (Let's Encrypt's test server) as the ACME server, resolving the
/// hostname through dnsmasq and validating through Traefik; cert-manager's ACME issuer,
/// orders and challenges with its `gatewayHTTPRoute` solver, whose solver pod runs on the
/// real node; the Domain's listener on the Gateway.
#[tokio::test]
async fn a_domain_gets_an_acme_certificate_by_http01_through_the_gateway() {
    use base64::Engine;
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "e2e-acme").await;
    // The challenge's solver pod, like the app, on the real node.
    crate::node::pin_to_real_node(&client, &ns.name).await;
    let dns = crate::domains::Dns::start();
    let pebble = Pebble::start(dns.port).await;
    let _serial = support::one_operator_test_at_a_time().await;
    let _operator = support::Operator::builder(&ns.name, "acme")
        .args(["--dns-server", &format!("127.0.0.1:{}", dns.port)])
        .args(["--domain-listeners", "gateway"])
        .args(["--https-listener-port", &gateway_https_port().to_string()])
        .start_leading()
        .await;
    let suffix = suffix(&ns.name);
    let project = format!("acme-{suffix}");
    crate::node::real_project_named(&client, &ns.name, &project, "web-1").await;
    let hostname = format!("acme-{suffix}.example.test");

    let issuers = Api::<kube::api::DynamicObject>::namespaced_with(
        client.clone(),
        &ns.name,
        &kube::api::ApiResource::from_gvk(&kube::api::GroupVersionKind::gvk(
            "cert-manager.io",
            "v1",
            "Issuer",
        )),
    );
    support::create(
        &issuers,
        json!({
            "apiVersion": "cert-manager.io/v1", "kind": "Issuer",
            "metadata": { "name": "pebble" },
            "spec": { "acme": {
                "server": pebble.directory,
                "caBundle": base64::engine::general_purpose::STANDARD.encode(&pebble.api_certificate),
                "privateKeySecretRef": { "name": "pebble-account" },
                "solvers": [{ "http01": { "gatewayHTTPRoute": { "parentRefs": [{
                    "group": "gateway.networking.k8s.io", "kind": "Gateway",
                    "name": "clouddeck", "namespace": "clouddeck-system",
                }] } } }],
            } },
        }),
    )
    .await;
    let domains = Api::<Domain>::namespaced(client.clone(), &ns.name);
    support::create(
        &domains,
        json!({ "apiVersion": "clouddeck.io/v1alpha1", "kind": "Domain",
                "metadata": { "name": "shop" },
                "spec": { "hostname": hostname, "projectRef": { "name": project },
                          "tls": { "issuerRef": { "name": "pebble", "kind": "Issuer" } } } }),
    )
    .await;
    let (record, value) = crate::domains::record(&domains, "shop").await;
    // The TXT record for CloudDeck, the address for Pebble: the hostname is the gateway.
    dns.set(
        &[(record, vec![value])].into_iter().collect(),
        &[(&hostname, "127.0.0.1")],
    );
    let domain = ready_domain(&domains, "shop").await;
    let certificate = domain.status.and_then(|s| s.certificate).unwrap();
    assert!(certificate.not_after.is_some(), "{certificate:?}");

    // Served with Pebble's certificate: verified against Pebble's root alone.
    let root = pebble.root().await;
    https_answer(&hostname, "/index.html", &root, 200, |b| {
        b.starts_with("hello from web-1-")
    })
    .await;
}

/// Creates Domain `name` for `hostname` in `namespace` (of Project `storefront`), served
/// with a self-signed certificate of its own in Secret `<name>-tls`.
async fn own_tls_domain(client: &kube::Client, namespace: &str, name: &str, hostname: &str) {
    let key = rcgen::KeyPair::generate().unwrap();
    let params = rcgen::CertificateParams::new(vec![hostname.to_owned()]).unwrap();
    let certificate = params.self_signed(&key).unwrap().pem();
    crate::domains::tls_secret(client, namespace, &format!("{name}-tls"), &certificate).await;
    support::create(
        &Api::<Domain>::namespaced(client.clone(), namespace),
        json!({ "apiVersion": "clouddeck.io/v1alpha1", "kind": "Domain",
                "metadata": { "name": name },
                "spec": { "hostname": hostname, "projectRef": { "name": "storefront" },
                          "tls": { "secretName": format!("{name}-tls") } } }),
    )
    .await;
}

/// The `ListenerReady` condition of Domain `name` once it has `reason`.
async fn listener_ready(domains: &Api<Domain>, name: &str, reason: &str) -> Condition {
    eventually(
        &format!("Domain {name}'s ListenerReady to be {reason}"),
        Duration::from_secs(60),
        || async {
            let d = domains.get(name).await.ok()?;
            d.status?
                .conditions
                .into_iter()
                .find(|c| c.type_ == "ListenerReady" && c.reason == reason)
        },
    )
    .await
}

/// User story (a platform team whose gateway does not implement ListenerSet, on the
/// default `--domain-listeners listener-set`): "My Domains' HTTPS listeners are
/// ListenerSets my gateway ignores. The Domain tells me so, names ListenerSet and the
/// setting that fixes it, instead of looking fine while HTTPS is never served."
///
/// The gateway is the local cluster's Traefik, which has no ListenerSet support.
#[tokio::test]
async fn a_listener_set_the_gateway_ignores_is_named_on_the_domain() {
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "e2e-no-sets").await;
    let _serial = support::one_operator_test_at_a_time().await;
    let _operator = support::Operator::builder(&ns.name, "no-sets")
        .args(["--base-domain", "apps.e2e.test"])
        .args(["--listener-report-timeout", "5s"])
        .start_leading()
        .await;
    let project_hostname = support::project_hostname(&client, &ns.name, "storefront").await;
    own_tls_domain(
        &client,
        &ns.name,
        "shop",
        &format!("shop.{project_hostname}"),
    )
    .await;
    let domains = Api::<Domain>::namespaced(client.clone(), &ns.name);
    let pending = listener_ready(&domains, "shop", "ListenerPending").await;
    assert_eq!(pending.status, "Unknown");
    let named = listener_ready(&domains, "shop", "ListenerNotReported").await;
    assert_eq!(named.status, "False");
    for words in [
        "ListenerSet shop-listener",
        "does not implement ListenerSet",
        "--domain-listeners gateway",
    ] {
        assert!(named.message.contains(words), "{}", named.message);
    }
    // And it stays said: looking again does not start the wait over (a condition that
    // flapped back to ListenerPending would hide the answer from anyone who polls).
    tokio::time::sleep(Duration::from_secs(12)).await;
    let later = domains
        .get("shop")
        .await
        .unwrap()
        .status
        .unwrap()
        .conditions;
    let later = later.iter().find(|c| c.type_ == "ListenerReady").unwrap();
    assert_eq!(
        (later.reason.as_str(), &later.last_transition_time),
        ("ListenerNotReported", &named.last_transition_time)
    );
}

/// User story (a hostile tenant on a platform run with `--domain-listeners gateway`): "I
/// strip the finalizer off my Domain and delete it — while the operator is down for an
/// upgrade, or while it runs — hoping its listener stays on the shared Gateway and keeps
/// holding the hostname against whoever owns it next." It does not: the operator takes
/// listeners whose Domain is gone off the Gateway, and only those.
#[tokio::test]
async fn a_domain_deleted_without_its_finalizer_leaves_no_listener_on_the_gateway() {
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "e2e-orphan").await;
    let tenant = crate::hostnames::tenant(&ns.name);
    let _serial = support::one_operator_test_at_a_time().await;
    let operator = || {
        support::Operator::builder(&ns.name, "orphan")
            .args(["--base-domain", "apps.e2e.test"])
            .args(["--domain-listeners", "gateway"])
            .args(["--https-listener-port", &gateway_https_port().to_string()])
            .start_leading()
    };
    let running = operator().await;
    // Under the Project's own hostname: verified without a TXT record.
    let project_hostname = support::project_hostname(&client, &ns.name, "storefront").await;
    let domains = Api::<Domain>::namespaced(client.clone(), &ns.name);
    for name in ["kept", "stripped", "raced"] {
        own_tls_domain(
            &client,
            &ns.name,
            name,
            &format!("{name}.{project_hostname}"),
        )
        .await;
    }
    let mut listener_of = std::collections::BTreeMap::new();
    for name in ["kept", "stripped", "raced"] {
        let d = eventually(
            &format!("Domain {name} with its finalizer"),
            Duration::from_secs(60),
            || async {
                let d = domains.get(name).await.ok()?;
                (!d.finalizers().is_empty()).then_some(d)
            },
        )
        .await;
        listener_of.insert(name, format!("domain-{}", d.uid().unwrap()));
    }
    eventually(
        "the three listeners on the Gateway",
        Duration::from_secs(60),
        || async {
            let on = gateway_listeners(&client).await;
            listener_of.values().all(|l| on.contains(l)).then_some(())
        },
    )
    .await;
    let strip_and_delete = |name: &str| {
        support::kubectl_ok(&[
            "--as",
            &tenant,
            "-n",
            &ns.name,
            "patch",
            "domain",
            name,
            "--type=json",
            "-p",
            r#"[{"op": "remove", "path": "/metadata/finalizers"}]"#,
        ]);
        support::kubectl_ok(&[
            "--as",
            &tenant,
            "-n",
            &ns.name,
            "delete",
            "domain",
            name,
            "--wait=false",
        ]);
    };

    // While no operator runs: the Domain goes at once, its listener stays behind...
    running.stop().await;
    strip_and_delete("stripped");
    support::gone(&domains, "stripped").await;
    assert!(
        gateway_listeners(&client)
            .await
            .contains(&listener_of["stripped"])
    );
    // ...until the operator starts again.
    let _running = operator().await;
    let gone = |name: &'static str| {
        let (client, listener) = (client.clone(), listener_of[name].clone());
        async move {
            eventually(
                &format!("{name}'s listener to leave the Gateway"),
                Duration::from_secs(60),
                || async { (!gateway_listeners(&client).await.contains(&listener)).then_some(()) },
            )
            .await
        }
    };
    gone("stripped").await;
    // While it runs, stripped and deleted back to back.
    strip_and_delete("raced");
    gone("raced").await;
    let on = gateway_listeners(&client).await;
    assert!(
        on.contains(&listener_of["kept"]),
        "the other Domain's listener stays: {on:?}"
    );
}

/// Polls `http://<hostname>/index.html` every 20 ms until a pod of `deployment` answers;
/// returns how long that took from `since`.
async fn time_until_served_by(hostname: &str, deployment: &str, since: Instant) -> Duration {
    let prefix = format!("hello from {deployment}-");
    let deadline = since + Duration::from_secs(120);
    loop {
        if let Some((200, body)) = visit(hostname, "/index.html").await
            && body.starts_with(&prefix)
        {
            return since.elapsed();
        }
        assert!(
            Instant::now() < deadline,
            "{hostname} never answered from {deployment}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn summary(times: &mut [Duration]) -> String {
    times.sort();
    let ms = |d: Duration| d.as_millis();
    format!(
        "min {} ms, median {} ms, max {} ms",
        ms(times[0]),
        ms(times[times.len() / 2]),
        ms(times[times.len() - 1])
    )
}

/// Issue "Real traffic", acceptance 2: from `kubectl patch … rollbackTo` to the first
/// response of the old deployment through the gateway, polled every 20 ms, against the
/// same switch made by hand on an HTTPRoute (the gateway's own reaction time: the floor),
/// in the same run. With `keepWarm: 1` (the old deployment runs) and with `keepWarm: 0`
/// (it is scaled up from zero first).
///
/// `CLOUDDECK_BENCH_ROLLBACKS=5 cargo test --release --test e2e traffic::benchmark -- --ignored --nocapture`
#[tokio::test]
#[ignore = "benchmark: run explicitly with --ignored --nocapture"]
async fn benchmark_rollback_through_the_gateway() {
    use gateway_api::apis::standard::httproutes::HttpRoute;
    let rounds: usize = std::env::var("CLOUDDECK_BENCH_ROLLBACKS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(5);
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "e2e-rollback").await;
    crate::node::pin_to_real_node(&client, &ns.name).await;
    let _serial = support::one_operator_test_at_a_time().await;
    let _operator = support::Operator::builder(&ns.name, "rollback")
        .start_leading()
        .await;
    let suffix = suffix(&ns.name);
    let project = format!("rb-{suffix}");
    crate::node::real_project_named(&client, &ns.name, &project, "old").await;
    let projects = Api::<Project>::namespaced(client.clone(), &ns.name);
    let keep_warm = |n: i32| Patch::Merge(json!({ "spec": { "keepWarm": n } }));
    // `old` keeps running once `new` is promoted, for the floor and the first rollbacks.
    projects
        .patch(&project, &PatchParams::default(), &keep_warm(1))
        .await
        .unwrap();
    crate::node::image_deployment(
        &client,
        &ns.name,
        &project,
        "new",
        "production",
        crate::node::BUSYBOX,
    )
    .await;
    let host = production_hostname(&client, &ns.name, &project).await;
    time_until_served_by(&host, "new", Instant::now()).await;

    // The floor: an HTTPRoute of the test's own, switched between the two Services.
    let routes = Api::<HttpRoute>::namespaced(client.clone(), &ns.name);
    let floor_host = format!("floor-{suffix}.clouddeck.localhost");
    let floor_route = |service: &str| {
        json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": { "name": "floor" },
            "spec": {
                "hostnames": [floor_host],
                "parentRefs": [{ "name": "clouddeck", "namespace": "clouddeck-system" }],
                "rules": [{ "backendRefs": [{ "name": service, "port": 80 }] }]
            }
        })
    };
    let apply = PatchParams::apply("e2e-benchmark").force();
    routes
        .patch("floor", &apply, &Patch::Apply(floor_route("new")))
        .await
        .unwrap();
    time_until_served_by(&floor_host, "new", Instant::now()).await;
    let mut floor = Vec::new();
    for round in 0..rounds * 2 {
        let to = if round % 2 == 0 { "old" } else { "new" };
        let start = Instant::now();
        routes
            .patch("floor", &apply, &Patch::Apply(floor_route(to)))
            .await
            .unwrap();
        floor.push(time_until_served_by(&floor_host, to, start).await);
    }

    let mut results = Vec::new();
    for warm in [1, 0] {
        projects
            .patch(&project, &PatchParams::default(), &keep_warm(warm))
            .await
            .unwrap();
        let mut times = Vec::new();
        for _ in 0..rounds {
            // Settled on `new`, with `old` scaled as keepWarm says.
            tokio::time::sleep(Duration::from_secs(if warm == 0 { 15 } else { 3 })).await;
            let start = Instant::now();
            projects
                .patch(
                    &project,
                    &PatchParams::default(),
                    &Patch::Merge(json!({ "spec": { "rollbackTo": "old" } })),
                )
                .await
                .unwrap();
            times.push(time_until_served_by(&host, "old", start).await);
            projects
                .patch(
                    &project,
                    &PatchParams::default(),
                    &Patch::Merge(json!({ "spec": { "rollbackTo": null } })),
                )
                .await
                .unwrap();
            time_until_served_by(&host, "new", Instant::now()).await;
        }
        results.push((warm, times));
    }
    println!(
        "gateway floor (an HTTPRoute's backend switched by hand), {} switches: {}",
        floor.len(),
        summary(&mut floor)
    );
    for (keep_warm, mut times) in results {
        println!(
            "rollback to the previous production (keepWarm: {keep_warm}), {rounds} rollbacks: {}",
            summary(&mut times)
        );
    }
}
