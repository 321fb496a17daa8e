//! Who owns a hostname, tried the way a hostile tenant would: a user with write access to
//! CloudDeck's kinds in one namespace (impersonated with `kubectl --as`) goes after the
//! hostnames another namespace is served under. docs/domains.md, "How CloudDeck decides who
//! owns a hostname", is the rule these tests hold the operator to.

use std::time::Duration;

use clouddeck::api::conditions::{self, READY, VERIFIED};
use clouddeck::api::domain::Domain;
use clouddeck::hostnames::{HostnameClaim, KEY_NAME_MESSAGE};
use gateway_api::apis::standard::httproutes::HttpRoute;
use gateway_api::apis::standard::listenersets::ListenerSet;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams};
use kube::{Api, Client};
use serde_json::{Value, json};

use crate::support::{self, Operator, TestNamespace, eventually};

const TIMEOUT: Duration = Duration::from_secs(90);

/// A base domain of these tests' own, so no other test's claims are in the way.
const BASE: &str = "tenants.e2e.test";

fn start_operator(lease_namespace: &str) -> Operator {
    Operator::builder(lease_namespace, "hostnames")
        .args(["--base-domain", BASE])
        .args(["--hostname-reservation", "5s"])
        .start()
}

/// A user who may create, change and delete CloudDeck's kinds in `namespace` and nothing
/// else: the tenant. Returns the user name for `--as`.
pub(crate) fn tenant(namespace: &str) -> String {
    let user = format!("e2e-tenant@{namespace}");
    support::kubectl_ok(&[
        "create",
        "role",
        "tenant",
        "-n",
        namespace,
        "--verb=get,list,watch,create,update,patch,delete",
        "--resource=projects.clouddeck.io,deployments.clouddeck.io,domains.clouddeck.io",
    ]);
    support::kubectl_ok(&[
        "create",
        "rolebinding",
        "tenant",
        "-n",
        namespace,
        "--role=tenant",
        &format!("--user={user}"),
    ]);
    user
}

pub(crate) fn created_as(user: &str, namespace: &str, object: &Value) {
    let out = support::kubectl_create(namespace, object, Some(user));
    assert!(
        out.status.success(),
        "{user} cannot create {}: {}",
        object["metadata"]["name"],
        String::from_utf8_lossy(&out.stderr)
    );
}

pub(crate) fn domain(name: &str, hostname: &str, project: &str, extra: Value) -> Value {
    let mut spec = json!({ "hostname": hostname, "projectRef": { "name": project } });
    if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
        spec.extend(extra.clone());
    }
    json!({ "apiVersion": "clouddeck.io/v1alpha1", "kind": "Domain",
            "metadata": { "name": name }, "spec": spec })
}

async fn wait_verified(api: &Api<Domain>, name: &str, status: &str, reason: &str) -> Domain {
    eventually(
        &format!("Domain {name} Verified={status} ({reason})"),
        TIMEOUT,
        || async {
            let d = api.get(name).await.ok()?;
            let c = conditions::find(&d.status.as_ref()?.conditions, VERIFIED)?;
            (c.status == status && c.reason == reason).then_some(d.clone())
        },
    )
    .await
}

/// Every hostname something in `namespace` asks a gateway or an issuer to serve: its
/// HTTPRoutes' hostnames, its ListenerSets' listener hostnames, its Certificates' dnsNames.
async fn served_in(client: &Client, namespace: &str) -> Vec<String> {
    let mut hostnames = Vec::new();
    for route in Api::<HttpRoute>::namespaced(client.clone(), namespace)
        .list(&ListParams::default())
        .await
        .unwrap()
    {
        hostnames.extend(route.spec.hostnames.unwrap_or_default());
    }
    for set in Api::<ListenerSet>::namespaced(client.clone(), namespace)
        .list(&ListParams::default())
        .await
        .unwrap()
    {
        hostnames.extend(set.spec.listeners.into_iter().filter_map(|l| l.hostname));
    }
    let certificates = ApiResource::from_gvk(&GroupVersionKind::gvk(
        "cert-manager.io",
        "v1",
        "Certificate",
    ));
    for certificate in
        Api::<DynamicObject>::namespaced_with(client.clone(), namespace, &certificates)
            .list(&ListParams::default())
            .await
            .unwrap()
    {
        if let Some(names) = certificate.data["spec"]["dnsNames"].as_array() {
            hostnames.extend(names.iter().filter_map(|n| n.as_str().map(str::to_owned)));
        }
    }
    hostnames
}

/// User story: "Team A serves `storefront` and `shop-admin`. Someone in team B, with write
/// access to CloudDeck in team B only, asks for team A's production hostname, for a name
/// under it, for a name generated from it, for the base domain itself, and for
/// `shop-admin` through team B's own `shop` Project. Every one is refused with a reason
/// that does not name team A, nothing in team B routes, listens for or requests a
/// certificate for those names, and team B's own names under its Project still work."
#[tokio::test]
async fn a_tenant_cannot_take_hostnames_generated_for_another_namespace() {
    let client = support::client().await;
    let team_a = TestNamespace::new(&client, "e2e-host-a").await;
    let team_b = TestNamespace::new(&client, "e2e-host-b").await;
    let _serial = support::one_operator_test_at_a_time().await;
    let _operator = start_operator(&team_a.name);

    // `<name>.<base>`, unless a namesake of another test still holds the name.
    let storefront = support::project_hostname(&client, &team_a.name, "storefront").await;
    let key = storefront.split('.').next().unwrap().to_owned();
    let shop_admin = support::project_hostname(&client, &team_a.name, "shop-admin").await;
    let shop = support::project_hostname(&client, &team_b.name, "shop").await;

    let attacker = tenant(&team_b.name);
    let attacks = [
        ("production", storefront.clone(), "storefront"),
        ("prefix", shop_admin.clone(), "shop"),
        ("deeper", format!("login.{shop_admin}"), "shop"),
        ("branch", format!("{key}--git-main.{BASE}"), "shop"),
        ("preview", format!("{key}--0a1b2c3d.{BASE}"), "shop"),
        ("base", BASE.to_owned(), "shop"),
    ];
    for (name, hostname, project) in &attacks {
        created_as(
            &attacker,
            &team_b.name,
            &domain(name, hostname, project, json!({})),
        );
    }
    let own = format!("www.{shop}");
    created_as(
        &attacker,
        &team_b.name,
        &domain("own", &own, "shop", json!({})),
    );

    let domains = Api::<Domain>::namespaced(client.clone(), &team_b.name);
    for (name, _, _) in &attacks {
        let refused = wait_verified(&domains, name, "False", "ReservedHostname").await;
        let conditions = &refused.status.as_ref().unwrap().conditions;
        assert!(
            conditions::is_true(conditions, conditions::STALLED),
            "{name}"
        );
        let message = &conditions::find(conditions, VERIFIED).unwrap().message;
        assert!(
            !message.contains(&team_a.name),
            "{name} leaks the owner's namespace: {message}"
        );
    }
    // The tenant's own name under its own Project is accepted: what is refused above is
    // refused for whose it is, not for its shape.
    wait_verified(&domains, "own", "True", "InternalHostname").await;
    eventually("team B's listener for its own name", TIMEOUT, || async {
        served_in(&client, &team_b.name)
            .await
            .contains(&own)
            .then_some(())
    })
    .await;
    let served = served_in(&client, &team_b.name).await;
    for (name, hostname, _) in &attacks {
        assert!(
            !served.contains(hostname),
            "team B serves {hostname} ({name}): {served:?}"
        );
    }

    // The record of who owns what is out of the tenant's reach.
    let can_i = support::kubectl(&[
        "auth",
        "can-i",
        "create",
        "hostnameclaims.clouddeck.io",
        &format!("--as={attacker}"),
    ]);
    assert_eq!(String::from_utf8_lossy(&can_i.stdout).trim(), "no");
    let claim = Api::<HostnameClaim>::all(client.clone())
        .get(&storefront)
        .await
        .unwrap();
    assert_eq!(claim.spec.namespace, team_a.name);

    // A Project named like a generated hostname is refused by the apiserver itself.
    let out = support::kubectl_create(
        &team_b.name,
        &json!({ "apiVersion": "clouddeck.io/v1alpha1", "kind": "Project",
                 "metadata": { "name": "storefront--git-main" },
                 "spec": { "image": "registry.local/e2e/app:1" } }),
        Some(&attacker),
    );
    assert!(
        !out.status.success(),
        "a Project named storefront--git-main was admitted"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(KEY_NAME_MESSAGE), "{stderr}");
}

/// User story: "Someone in team B cannot send visitors to team A's hostname through a
/// redirect of their own either: a redirect only goes to a Domain their namespace owns."
#[tokio::test]
async fn a_redirect_only_goes_to_a_hostname_the_namespace_owns() {
    let client = support::client().await;
    let team_a = TestNamespace::new(&client, "e2e-redir-a").await;
    let team_b = TestNamespace::new(&client, "e2e-redir-b").await;
    let _serial = support::one_operator_test_at_a_time().await;
    let _operator = start_operator(&team_a.name);

    let brand = support::project_hostname(&client, &team_a.name, "brand").await;
    let theirs = format!("www.{brand}");
    let owner = Api::<Domain>::namespaced(client.clone(), &team_a.name);
    support::create(&owner, domain("www", &theirs, "brand", json!({}))).await;
    wait_verified(&owner, "www", "True", "InternalHostname").await;

    let copycat = support::project_hostname(&client, &team_b.name, "copycat").await;
    let attacker = tenant(&team_b.name);
    // Their own (refused) Domain for team A's hostname, and a redirect to it.
    created_as(
        &attacker,
        &team_b.name,
        &domain("fake", &theirs, "copycat", json!({})),
    );
    let promo = format!("promo.{copycat}");
    created_as(
        &attacker,
        &team_b.name,
        &domain(
            "promo",
            &promo,
            "copycat",
            json!({ "redirectTo": { "domain": theirs } }),
        ),
    );
    let domains = Api::<Domain>::namespaced(client.clone(), &team_b.name);
    wait_verified(&domains, "fake", "False", "ReservedHostname").await;
    wait_verified(&domains, "promo", "True", "InternalHostname").await;
    let refused = eventually("promo to refuse its redirect", TIMEOUT, || async {
        let d = domains.get("promo").await.ok()?;
        let c = conditions::find(&d.status.as_ref()?.conditions, READY)?;
        (c.reason == "RedirectTargetNotFound").then_some(c.message.clone())
    })
    .await;
    assert!(refused.contains("not verified"), "{refused}");
    let routes = Api::<HttpRoute>::namespaced(client.clone(), &team_b.name);
    assert!(routes.get_opt("promo-domain").await.unwrap().is_none());

    // Pointed at a hostname of their own, the same redirect is routed.
    let own = format!("www.{copycat}");
    created_as(
        &attacker,
        &team_b.name,
        &domain("www", &own, "copycat", json!({})),
    );
    wait_verified(&domains, "www", "True", "InternalHostname").await;
    domains
        .patch(
            "promo",
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "redirectTo": { "domain": own } } })),
        )
        .await
        .unwrap();
    let route = eventually("promo's redirect route", TIMEOUT, || async {
        routes.get_opt("promo-domain").await.ok()?
    })
    .await;
    assert_eq!(route.spec.hostnames.unwrap(), [promo]);
    let served = served_in(&client, &team_b.name).await;
    assert!(!served.contains(&theirs), "{served:?}");
}
