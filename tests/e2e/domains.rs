//! Custom domains against a real DNS server: dnsmasq on loopback (started by
//! `hack/dnsmasq`), the operator pointed at it with `--dns-server`. No query leaves
//! 127.0.0.1: dnsmasq answers from its records file and never forwards.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use clouddeck::api::conditions::{self, CERTIFICATE_READY, READY, VERIFIED};
use clouddeck::api::domain::Domain;
use clouddeck::api::webhook_delivery::WebhookDelivery;
use clouddeck::hostnames::HostnameClaim;
use gateway_api::apis::standard::httproutes::HttpRoute;
use gateway_api::apis::standard::listenersets::ListenerSet;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::events::v1::Event;
use kube::api::{
    ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, PostParams,
};
use kube::{Api, Client};
use serde_json::json;

use crate::support::{self, Operator, TestNamespace, eventually};

const TIMEOUT: Duration = Duration::from_secs(90);
const ISSUER: &str = "e2e-issuer";

/// dnsmasq on a free loopback port, serving the TXT records the test sets; stopped when
/// dropped.
pub(crate) struct Dns {
    dir: tempfile::TempDir,
    pub(crate) port: u16,
}

impl Dns {
    pub(crate) fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new(support::repo_root().join("hack/dnsmasq"))
            .arg("start")
            .arg(dir.path())
            .output()
            .expect("run hack/dnsmasq");
        assert!(
            out.status.success(),
            "hack/dnsmasq start failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let port = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
        Dns { dir, port }
    }

    /// Replaces every TXT record dnsmasq serves (one record per value).
    pub(crate) fn set_txt(&self, records: &BTreeMap<String, Vec<String>>) {
        self.set(records, &[]);
    }

    /// Replaces every record dnsmasq serves: TXT records (one per value) and addresses
    /// (`hostname`, IPv4 address).
    pub(crate) fn set(&self, txt: &BTreeMap<String, Vec<String>>, addresses: &[(&str, &str)]) {
        let mut conf = String::new();
        for (name, values) in txt {
            for value in values {
                conf.push_str(&format!("txt-record={name},\"{value}\"\n"));
            }
        }
        for (name, address) in addresses {
            conf.push_str(&format!("address=/{name}/{address}\n"));
        }
        std::fs::write(self.dir.path().join("records.conf"), conf).unwrap();
        hack_dnsmasq("reload", self.dir.path());
    }
}

impl Drop for Dns {
    fn drop(&mut self) {
        hack_dnsmasq("stop", self.dir.path());
    }
}

fn hack_dnsmasq(command: &str, dir: &Path) {
    let out = Command::new(support::repo_root().join("hack/dnsmasq"))
        .arg(command)
        .arg(dir)
        .output()
        .expect("run hack/dnsmasq");
    assert!(
        out.status.success(),
        "hack/dnsmasq {command} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `clouddeck run` asking `dns` for TXT records; killed when dropped.
fn start_operator(lease_namespace: &str, dns: &Dns) -> Operator {
    operator_with(lease_namespace, dns, &[])
}

/// [`start_operator`] with more flags.
fn operator_with(lease_namespace: &str, dns: &Dns, extra: &[&str]) -> Operator {
    Operator::builder(lease_namespace, "domains")
        .args(["--dns-server", &format!("127.0.0.1:{}", dns.port)])
        .args(["--default-cluster-issuer", ISSUER])
        .args(["--base-domain", "apps.e2e.test"])
        .args(["--hostname-reservation", RESERVATION])
        .args(extra)
        .start()
}

/// How long a deleted owner's hostname stays reserved for its namespace in these tests.
const RESERVATION: &str = "10s";

fn domain(name: &str, hostname: &str, extra: serde_json::Value) -> Domain {
    let mut spec = json!({ "hostname": hostname, "projectRef": { "name": "storefront" } });
    if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
        spec.extend(extra.clone());
    }
    serde_json::from_value(json!({
        "apiVersion": "clouddeck.io/v1alpha1", "kind": "Domain",
        "metadata": { "name": name }, "spec": spec
    }))
    .unwrap()
}

/// Stands in for the Project controller's production route: the Domain follows it.
async fn production_route(client: &Client, namespace: &str, service: &str) {
    let route: HttpRoute = serde_json::from_value(json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {
            "name": clouddeck::routing::production_route_name("storefront"),
            "labels": { "app.kubernetes.io/managed-by": "clouddeck", "clouddeck.io/project": "storefront" }
        },
        "spec": {
            "hostnames": ["storefront.apps.e2e.test"],
            "rules": [{ "backendRefs": [{ "name": service, "port": 80 }] }]
        }
    }))
    .unwrap();
    Api::<HttpRoute>::namespaced(client.clone(), namespace)
        .create(&PostParams::default(), &route)
        .await
        .expect("create production route");
}

/// Waits until the Domain's condition `type_` has `status` and `reason`.
async fn wait_condition(
    api: &Api<Domain>,
    name: &str,
    type_: &str,
    status: &str,
    reason: &str,
) -> Domain {
    eventually(
        &format!("Domain {name} {type_}={status} ({reason})"),
        TIMEOUT,
        || async {
            let d = api.get(name).await.ok()?;
            let c = conditions::find(&d.status.as_ref()?.conditions, type_)?;
            (c.status == status && c.reason == reason).then_some(d)
        },
    )
    .await
}

fn condition_message(domain: &Domain, type_: &str) -> String {
    conditions::find(&domain.status.as_ref().unwrap().conditions, type_)
        .map(|c| c.message.clone())
        .unwrap_or_default()
}

/// The TXT record the Domain's status asks for, once shown.
pub(crate) async fn record(api: &Api<Domain>, name: &str) -> (String, String) {
    eventually(
        &format!("Domain {name} to show its TXT record"),
        TIMEOUT,
        || async {
            let v = api.get(name).await.ok()?.status?.verification?;
            Some((v.record_name, v.record_value))
        },
    )
    .await
}

/// A ClusterIssuer `name` signing with the local cluster's CA (the Secret of
/// `clouddeck-local-ca`, hack/lib/certmanager.sh): the real cert-manager issues what
/// names it. Deleted when dropped; drop it before the operator lock is released.
pub(crate) struct LocalIssuer {
    name: String,
}

impl LocalIssuer {
    pub(crate) fn create(name: &str) -> LocalIssuer {
        let issuer = json!({
            "apiVersion": "cert-manager.io/v1", "kind": "ClusterIssuer",
            "metadata": { "name": name },
            "spec": { "ca": { "secretName": "clouddeck-local-ca" } }
        });
        let out = support::run_with_stdin(
            Command::new(support::kubectl_path())
                .arg("--kubeconfig")
                .arg(support::kubeconfig_path())
                .args(["apply", "-f", "-"]),
            issuer.to_string().as_bytes(),
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        LocalIssuer {
            name: name.to_owned(),
        }
    }
}

impl Drop for LocalIssuer {
    fn drop(&mut self) {
        support::kubectl(&["delete", "clusterissuer", &self.name, "--ignore-not-found"]);
    }
}

/// An Issuer `name` in `namespace` signing with the local cluster's CA (a copy of the
/// ClusterIssuer's Secret in the namespace, as a namespaced CA Issuer needs).
pub(crate) fn local_ca_issuer(namespace: &str, name: &str) {
    let mut secret: serde_json::Value = serde_json::from_str(&support::kubectl_ok(&[
        "get",
        "secret",
        "clouddeck-local-ca",
        "-n",
        "cert-manager",
        "-o",
        "json",
    ]))
    .unwrap();
    secret["metadata"] = json!({ "name": format!("{name}-ca") });
    support::kubectl_create_ok(namespace, &secret);
    support::kubectl_create_ok(
        namespace,
        &json!({
            "apiVersion": "cert-manager.io/v1", "kind": "Issuer",
            "metadata": { "name": name },
            "spec": { "ca": { "secretName": format!("{name}-ca") } }
        }),
    );
}

fn certificates(client: &Client, namespace: &str) -> Api<DynamicObject> {
    let ar = ApiResource::from_gvk(&GroupVersionKind::gvk(
        "cert-manager.io",
        "v1",
        "Certificate",
    ));
    Api::namespaced_with(client.clone(), namespace, &ar)
}

/// User story: "I add my shop's hostname. The Domain tells me which TXT record to create;
/// until it exists, and while it holds a wrong value, the Domain says so. Once I fix the
/// record — without touching the Domain — it becomes Verified, a certificate is requested
/// from the default issuer for exactly that hostname, and the hostname serves production.
/// My www Domain redirects to the apex with the status code I chose. When the certificate
/// is about to expire I get a Warning Event."
#[tokio::test]
async fn a_domain_is_verified_by_its_txt_record_then_gets_a_certificate_and_routes() {
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "e2e-domains").await;
    let dns = Dns::start();
    let _serial = support::one_operator_test_at_a_time().await;
    // Warned 100 days ahead: the 90-day certificate cert-manager issues below is expiring.
    let _operator = operator_with(
        &ns.name,
        &dns,
        &["--certificate-expiry-warning-days", "100"],
    );
    let domains = Api::<Domain>::namespaced(client.clone(), &ns.name);
    production_route(&client, &ns.name, "storefront-v1").await;
    // A subscriber to domain and alert events, recording in the delivery log.
    support::recording_webhook(&client, &ns.name, "domain-events", &["domain.*", "alert.*"]).await;

    domains
        .create(
            &PostParams::default(),
            &domain(
                "shop",
                "shop.example.test",
                // The Domain's own issuer rather than the operator default: operators of
                // other e2e tests, running at the same time, have another default.
                json!({ "tls": { "issuerRef": { "name": "team-ca", "kind": "Issuer" } } }),
            ),
        )
        .await
        .unwrap();
    let (name, value) = record(&domains, "shop").await;
    assert_eq!(name, "_clouddeck.shop.example.test");
    assert!(value.starts_with("clouddeck-verification="), "{value}");

    // No record at all: NXDOMAIN, and the message says what to create.
    let d = wait_condition(&domains, "shop", VERIFIED, "False", "NameNotFound").await;
    let message = condition_message(&d, VERIFIED);
    assert!(
        message.contains(&name) && message.contains(&value),
        "{message}"
    );
    assert!(!conditions::is_true(&d.status.unwrap().conditions, READY));

    // A wrong value.
    let mut records = BTreeMap::new();
    records.insert(
        name.clone(),
        vec!["clouddeck-verification=not-mine".to_owned()],
    );
    dns.set_txt(&records);
    let d = wait_condition(&domains, "shop", VERIFIED, "False", "RecordMismatch").await;
    assert!(
        condition_message(&d, VERIFIED).contains("clouddeck-verification=not-mine"),
        "{}",
        condition_message(&d, VERIFIED)
    );

    // The right value, next to an unrelated record: verified without touching the Domain.
    let generation = d.metadata.generation;
    records.insert(name.clone(), vec!["v=spf1 -all".to_owned(), value.clone()]);
    dns.set_txt(&records);
    let d = wait_condition(&domains, "shop", VERIFIED, "True", "RecordFound").await;
    assert_eq!(d.metadata.generation, generation);
    assert!(
        d.status
            .as_ref()
            .unwrap()
            .verification
            .as_ref()
            .unwrap()
            .verified_at
            .is_some()
    );

    // Each outcome was published to the subscriber, every failure with an alert.
    let log = Api::<WebhookDelivery>::namespaced(client.clone(), &ns.name);
    let events = eventually("domain.verified in the delivery log", TIMEOUT, || async {
        let events: Vec<(String, String)> = log
            .list(&ListParams::default().labels("clouddeck.io/webhook=domain-events"))
            .await
            .ok()?
            .items
            .into_iter()
            .map(|d| {
                let reason = d.spec.payload_json()["data"]["reason"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                (d.spec.event_type, reason)
            })
            .collect();
        events
            .iter()
            .any(|(e, _)| e == "domain.verified")
            .then_some(events)
    })
    .await;
    let of = |event_type: &str| -> Vec<&str> {
        let mut reasons: Vec<&str> = events
            .iter()
            .filter(|(e, _)| e == event_type)
            .map(|(_, r)| r.as_str())
            .collect();
        reasons.sort();
        reasons
    };
    assert_eq!(of("domain.verified"), ["RecordFound"], "{events:?}");
    let failures = of("domain.verification_failed");
    assert!(
        failures.contains(&"NameNotFound") && failures.contains(&"RecordMismatch"),
        "{events:?}"
    );
    assert_eq!(
        of("alert.domain_verification_failed"),
        failures,
        "{events:?}"
    );

    // The certificate: exactly the hostname, from the Domain's issuer.
    let certs = certificates(&client, &ns.name);
    let cert = eventually("the Certificate shop-tls", TIMEOUT, || async {
        certs.get_opt("shop-tls").await.ok()?
    })
    .await;
    assert_eq!(cert.data["spec"]["dnsNames"], json!(["shop.example.test"]));
    assert_eq!(cert.data["spec"]["secretName"], "shop-tls");
    assert_eq!(
        cert.data["spec"]["issuerRef"],
        json!({ "group": "cert-manager.io", "kind": "Issuer", "name": "team-ca" })
    );
    assert_eq!(
        cert.metadata.owner_references.as_ref().unwrap()[0].name,
        "shop"
    );
    wait_condition(&domains, "shop", READY, "False", "CertificatePending").await;

    // The route: the hostname, to the Service production serves.
    let routes = Api::<HttpRoute>::namespaced(client.clone(), &ns.name);
    let route = eventually("the HTTPRoute shop-domain", TIMEOUT, || async {
        routes.get_opt("shop-domain").await.ok()?
    })
    .await;
    assert_eq!(
        route.spec.hostnames,
        Some(vec!["shop.example.test".to_owned()])
    );
    assert_eq!(
        clouddeck::routing::backend_service(&route),
        Some("storefront-v1")
    );

    // The Gateway serves the hostname over HTTPS with the Domain's certificate Secret,
    // through a ListenerSet in the Domain's namespace that the route attaches to.
    let listener_sets = Api::<ListenerSet>::namespaced(client.clone(), &ns.name);
    let listeners = eventually("the ListenerSet shop-listener", TIMEOUT, || async {
        listener_sets.get_opt("shop-listener").await.ok()?
    })
    .await;
    let listener = &listeners.spec.listeners[0];
    assert_eq!(listener.hostname.as_deref(), Some("shop.example.test"));
    assert_eq!((listener.port, listener.protocol.as_str()), (443, "HTTPS"));
    let secret_ref = &listener
        .tls
        .as_ref()
        .unwrap()
        .certificate_refs
        .as_ref()
        .unwrap()[0];
    assert_eq!(secret_ref.name, "shop-tls");
    assert!(
        route
            .spec
            .parent_refs
            .as_ref()
            .unwrap()
            .iter()
            .any(|p| p.kind.as_deref() == Some("ListenerSet") && p.name == "shop-listener"),
        "the route attaches to the Domain's listener"
    );
    // A listener deleted by hand is put back (the controller watches its ListenerSets).
    let deleted = listeners.metadata.uid.clone();
    listener_sets
        .delete("shop-listener", &Default::default())
        .await
        .unwrap();
    eventually("the ListenerSet put back", TIMEOUT, || async {
        let again = listener_sets.get_opt("shop-listener").await.ok()??;
        (again.metadata.uid != deleted).then_some(())
    })
    .await;

    // The Domain's issuer appears, and cert-manager (hack/lib/certmanager.sh) issues the
    // certificate: 90 days, within this operator's 100-day expiry warning.
    local_ca_issuer(&ns.name, "team-ca");
    wait_condition(
        &domains,
        "shop",
        CERTIFICATE_READY,
        "True",
        "CertificateIssued",
    )
    .await;
    wait_condition(&domains, "shop", READY, "True", "Serving").await;
    warning_event(&client, &ns.name, "shop", "CertificateExpiring").await;
    let events = Api::<Event>::namespaced(client.clone(), &ns.name);
    assert!(
        events
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .iter()
            .any(|e| e.reason.as_deref() == Some("Verified")),
        "a Normal Verified Event"
    );

    // www → apex, 301, path and query kept (no path rewrite in the filter).
    domains
        .create(
            &PostParams::default(),
            &domain(
                "www",
                "www.example.test",
                json!({ "redirectTo": { "domain": "shop.example.test", "statusCode": 301 } }),
            ),
        )
        .await
        .unwrap();
    let (www_name, www_value) = record(&domains, "www").await;
    records.insert(www_name, vec![www_value]);
    dns.set_txt(&records);
    wait_condition(&domains, "www", VERIFIED, "True", "RecordFound").await;
    let route = eventually("the HTTPRoute www-domain", TIMEOUT, || async {
        routes.get_opt("www-domain").await.ok()?
    })
    .await;
    let route = serde_json::to_value(&route).unwrap();
    assert_eq!(route["spec"]["hostnames"], json!(["www.example.test"]));
    let filter = &route["spec"]["rules"][0]["filters"][0];
    assert_eq!(filter["type"], "RequestRedirect");
    assert_eq!(filter["requestRedirect"]["hostname"], "shop.example.test");
    assert_eq!(filter["requestRedirect"]["statusCode"], 301);
    assert!(filter["requestRedirect"].get("path").is_none(), "{filter}");
    assert!(route["spec"]["rules"][0].get("backendRefs").is_none());

    // Deleting the apex Domain removes its route, listener and Certificate, and nothing
    // else: the www Domain keeps redirecting, and says that its target is gone.
    domains
        .delete("shop", &DeleteParams::default())
        .await
        .unwrap();
    let listener_sets = Api::<ListenerSet>::namespaced(client.clone(), &ns.name);
    eventually(
        "the apex Domain's children to be deleted",
        TIMEOUT,
        || async {
            let route = routes.get_opt("shop-domain").await.ok()?;
            let listeners = listener_sets.get_opt("shop-listener").await.ok()?;
            let cert = certs.get_opt("shop-tls").await.ok()?;
            (route.is_none() && listeners.is_none() && cert.is_none()).then_some(())
        },
    )
    .await;
    let production = clouddeck::routing::production_route_name("storefront");
    assert!(routes.get_opt(&production).await.unwrap().is_some());
    assert!(routes.get_opt("www-domain").await.unwrap().is_some());
    wait_condition(&domains, "www", READY, "False", "RedirectTargetNotFound").await;
}

/// User story: "Another team creates a Domain for the hostname my team verified. They
/// are refused, and the refusal does not tell them who we are. When we delete our Domain
/// the hostname is free: theirs verifies with its own record."
#[tokio::test]
async fn a_hostname_verified_in_one_namespace_cannot_be_taken_from_another() {
    let client = support::client().await;
    let first = TestNamespace::new(&client, "e2e-domain-owner").await;
    let second = TestNamespace::new(&client, "e2e-domain-taker").await;
    let dns = Dns::start();
    let _serial = support::one_operator_test_at_a_time().await;
    let _operator = start_operator(&first.name, &dns);
    let owner = Api::<Domain>::namespaced(client.clone(), &first.name);
    let taker = Api::<Domain>::namespaced(client.clone(), &second.name);
    let hostname = format!("{}.example.test", second.name);

    owner
        .create(
            &PostParams::default(),
            &domain("shop", &hostname, json!({})),
        )
        .await
        .unwrap();
    let (name, owner_value) = record(&owner, "shop").await;
    let mut records = BTreeMap::new();
    records.insert(name.clone(), vec![owner_value.clone()]);
    dns.set_txt(&records);
    wait_condition(&owner, "shop", VERIFIED, "True", "RecordFound").await;

    taker
        .create(
            &PostParams::default(),
            &domain("shop", &hostname, json!({})),
        )
        .await
        .unwrap();
    let (taker_name, taker_value) = record(&taker, "shop").await;
    assert_eq!(taker_name, name);
    assert_ne!(taker_value, owner_value, "each Domain has its own token");
    let refused = wait_condition(&taker, "shop", VERIFIED, "False", "HostnameClaimed").await;
    let message = condition_message(&refused, VERIFIED);
    assert!(
        !message.contains(&first.name),
        "leaks the owner's namespace: {message}"
    );
    assert!(conditions::is_true(
        &refused.status.as_ref().unwrap().conditions,
        conditions::STALLED
    ));

    // Even with its own record published, the taker stays refused while the owner exists.
    records.insert(name.clone(), vec![owner_value, taker_value]);
    dns.set_txt(&records);
    tokio::time::sleep(Duration::from_secs(12)).await;
    wait_condition(&taker, "shop", VERIFIED, "False", "HostnameClaimed").await;
    assert!(
        certificates(&client, &second.name)
            .get_opt("shop-tls")
            .await
            .unwrap()
            .is_none(),
        "a refused Domain gets no certificate"
    );

    owner
        .delete("shop", &DeleteParams::default())
        .await
        .unwrap();
    // The claim outlives the owner for the reservation, held for its namespace only.
    let claims = Api::<HostnameClaim>::all(client.clone());
    let released = eventually("the claim to be released", TIMEOUT, || async {
        let claim = claims.get_opt(&hostname).await.ok()??;
        claim.spec.released_at.is_some().then_some(claim)
    })
    .await;
    assert_eq!(released.spec.namespace, first.name);
    assert!(conditions::is_true(
        &taker.get("shop").await.unwrap().status.unwrap().conditions,
        conditions::STALLED
    ));
    wait_condition(&taker, "shop", VERIFIED, "True", "RecordFound").await;
    let claim = claims.get(&hostname).await.unwrap();
    assert_eq!(claim.spec.namespace, second.name);
}

/// `kubectl apply -n <namespace>` of the files of `config/samples` named.
/// Waits for an events.k8s.io Event with `reason` about `object` and checks it is a Warning.
async fn warning_event(client: &Client, namespace: &str, object: &str, reason: &str) -> Event {
    let events = Api::<Event>::namespaced(client.clone(), namespace);
    let event = eventually(&format!("a {reason} Event"), TIMEOUT, || async {
        events
            .list(&ListParams::default())
            .await
            .ok()?
            .items
            .into_iter()
            .find(|e| {
                e.reason.as_deref() == Some(reason)
                    && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(object)
            })
    })
    .await;
    assert_eq!(event.type_.as_deref(), Some("Warning"), "{event:?}");
    event
}

/// `kubectl get domains -n <namespace>` as the user reads it: each row by NAME, each cell
/// by its column header (cells are cut at the headers' positions: an empty one is blank).
fn domains_table(namespace: &str) -> BTreeMap<String, BTreeMap<String, String>> {
    let out = support::kubectl_ok(&["get", "domains", "-n", namespace]);
    let mut lines = out.lines();
    let header = lines.next().unwrap_or_default();
    let mut columns: Vec<(usize, &str)> = Vec::new();
    for (i, c) in header.char_indices() {
        if c != ' ' && (i == 0 || header.as_bytes()[i - 1] == b' ') {
            let name = header[i..].split(' ').next().unwrap_or_default();
            columns.push((i, name));
        }
    }
    lines
        .map(|line| {
            let row: BTreeMap<String, String> = columns
                .iter()
                .enumerate()
                .map(|(n, (start, name))| {
                    let end = columns.get(n + 1).map_or(line.len(), |c| c.0);
                    let cell = line.get(*start..end.min(line.len())).unwrap_or_default();
                    (name.to_string(), cell.trim().to_owned())
                })
                .collect();
            (row["NAME"].clone(), row)
        })
        .collect()
}

/// The issue's acceptance, with the real samples: "apply `config/samples` domains, add
/// the TXT records the status asks for, and see `kubectl get domains` go Verified and
/// Ready with the certificate requested; the takeover attempt is refused."
///
/// Only the samples the Domains need are applied (`secrets.yaml`, `project.yaml`,
/// `domain.yaml`), not the whole kustomization: the sample Webhooks point at public URLs,
/// and a delivery resolves its host with the system resolver (`tokio::net::lookup_host`,
/// see `src/delivery/sender.rs`) before the egress policy can refuse it — a DNS query
/// leaving the machine, and a real POST if it resolves. The sample Deployments would start
/// builds. No build runs here, so a stand-in production route plays the Project's
/// production; the Certificates are issued by the local cluster's cert-manager once the
/// test creates the samples' ClusterIssuer (a CA issuer under Let's Encrypt's name).
#[tokio::test]
async fn the_sample_domains_verify_by_their_txt_records_and_cannot_be_taken_over() {
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "e2e-sample-domains").await;
    let other = TestNamespace::new(&client, "e2e-sample-taker").await;
    let dns = Dns::start();
    let _serial = support::one_operator_test_at_a_time().await;
    // The samples' hostnames are cluster-wide claims: a Domain left by an earlier run
    // (its namespace still being deleted) would own them.
    let everywhere = Api::<Domain>::all(client.clone());
    eventually(
        "no other Domain claiming example.com or www.example.com",
        TIMEOUT,
        || async {
            let all = everywhere.list(&ListParams::default()).await.ok()?;
            all.items
                .iter()
                .all(|d| {
                    !["example.com", "www.example.com"].contains(&d.spec.hostname.as_str())
                        || d.metadata.namespace.as_deref() == Some(ns.name.as_str())
                })
                .then_some(())
        },
    )
    .await;
    let _operator = start_operator(&ns.name, &dns);
    let domains = Api::<Domain>::namespaced(client.clone(), &ns.name);
    production_route(&client, &ns.name, "storefront-3f9c2ab").await;

    support::apply_samples(&ns.name, &["secrets.yaml", "project.yaml", "domain.yaml"]);

    // The status asks for one TXT record per Domain; until it exists, not verified.
    let mut records = BTreeMap::new();
    for (name, hostname) in [
        ("example-com", "example.com"),
        ("www-example-com", "www.example.com"),
    ] {
        let (record_name, record_value) = eventually(
            &format!("kubectl to show Domain {name}'s TXT record"),
            TIMEOUT,
            || async {
                let out = support::kubectl_ok(&[
                    "get",
                    "domain",
                    name,
                    "-n",
                    &ns.name,
                    "-o",
                    "jsonpath={.status.verification.recordName} {.status.verification.recordValue}",
                ]);
                let (n, v) = out.trim().split_once(' ')?;
                (!n.is_empty() && !v.is_empty()).then(|| (n.to_owned(), v.to_owned()))
            },
        )
        .await;
        assert_eq!(record_name, format!("_clouddeck.{hostname}"));
        assert!(
            record_value.starts_with("clouddeck-verification="),
            "{record_value}"
        );
        wait_condition(&domains, name, VERIFIED, "False", "NameNotFound").await;
        records.insert(record_name, vec![record_value]);
    }
    let table = domains_table(&ns.name);
    assert_eq!(table["example-com"]["VERIFIED"], "False", "{table:?}");
    assert_eq!(table["www-example-com"]["VERIFIED"], "False", "{table:?}");

    // Publish exactly those records: both Domains verify, without being touched.
    dns.set_txt(&records);
    for name in ["example-com", "www-example-com"] {
        wait_condition(&domains, name, VERIFIED, "True", "RecordFound").await;
    }

    // Each gets a Certificate for exactly its hostname from the sample's ClusterIssuer.
    let certs = certificates(&client, &ns.name);
    for (name, hostname) in [
        ("example-com", "example.com"),
        ("www-example-com", "www.example.com"),
    ] {
        let cert_name = format!("{name}-tls");
        let cert = eventually(&format!("the Certificate {cert_name}"), TIMEOUT, || async {
            certs.get_opt(&cert_name).await.ok()?
        })
        .await;
        assert_eq!(cert.data["spec"]["dnsNames"], json!([hostname]));
        assert_eq!(cert.data["spec"]["secretName"], cert_name.as_str());
        assert_eq!(
            cert.data["spec"]["issuerRef"],
            json!({ "group": "cert-manager.io", "kind": "ClusterIssuer", "name": "letsencrypt-prod" })
        );
    }
    wait_condition(
        &domains,
        "example-com",
        READY,
        "False",
        "CertificatePending",
    )
    .await;

    // The samples' issuer appears (here a CA, where a platform would have Let's Encrypt),
    // and cert-manager issues both certificates.
    let _issuer = LocalIssuer::create("letsencrypt-prod");
    wait_condition(&domains, "example-com", READY, "True", "Serving").await;
    wait_condition(&domains, "www-example-com", READY, "True", "Redirecting").await;
    for name in ["example-com", "www-example-com"] {
        wait_condition(
            &domains,
            name,
            CERTIFICATE_READY,
            "True",
            "CertificateIssued",
        )
        .await;
    }

    // What the user sees.
    let table = domains_table(&ns.name);
    for (name, host) in [
        ("example-com", "example.com"),
        ("www-example-com", "www.example.com"),
    ] {
        let row = &table[name];
        assert_eq!(
            (
                row["HOST"].as_str(),
                row["PROJECT"].as_str(),
                row["READY"].as_str(),
                row["VERIFIED"].as_str(),
                row["CERTIFICATE"].as_str()
            ),
            (host, "storefront", "True", "True", "True"),
            "{table:?}"
        );
    }

    // The apex serves production; www redirects to it with the sample's status code.
    let routes = Api::<HttpRoute>::namespaced(client.clone(), &ns.name);
    let apex = routes.get("example-com-domain").await.unwrap();
    assert_eq!(apex.spec.hostnames, Some(vec!["example.com".to_owned()]));
    assert_eq!(
        clouddeck::routing::backend_service(&apex),
        Some("storefront-3f9c2ab")
    );
    let status_code = domains
        .get("www-example-com")
        .await
        .unwrap()
        .spec
        .redirect_to
        .unwrap()
        .status_code;
    assert_eq!(status_code, 308, "the sample's status code");
    let www = serde_json::to_value(routes.get("www-example-com-domain").await.unwrap()).unwrap();
    assert_eq!(www["spec"]["hostnames"], json!(["www.example.com"]));
    let filter = &www["spec"]["rules"][0]["filters"][0];
    assert_eq!(filter["type"], "RequestRedirect");
    assert_eq!(filter["requestRedirect"]["hostname"], "example.com");
    assert_eq!(filter["requestRedirect"]["statusCode"], status_code);

    // The takeover: another namespace applies the same Domains. Refused, without a DNS
    // lookup and without learning whose hostnames they are.
    support::apply_samples(&other.name, &["domain.yaml"]);
    let taker = Api::<Domain>::namespaced(client.clone(), &other.name);
    for name in ["example-com", "www-example-com"] {
        let refused = wait_condition(&taker, name, VERIFIED, "False", "HostnameClaimed").await;
        let message = condition_message(&refused, VERIFIED);
        assert!(
            !message.contains(&ns.name),
            "leaks the owner's namespace: {message}"
        );
        assert!(conditions::is_true(
            &refused.status.as_ref().unwrap().conditions,
            conditions::STALLED
        ));
    }
    let table = domains_table(&other.name);
    assert_eq!(table["example-com"]["VERIFIED"], "False", "{table:?}");
    assert_eq!(table["example-com"]["READY"], "False", "{table:?}");
    assert!(
        certificates(&client, &other.name)
            .get_opt("example-com-tls")
            .await
            .unwrap()
            .is_none(),
        "a refused Domain gets no certificate"
    );
    // The owner is untouched.
    wait_condition(&domains, "example-com", READY, "True", "Serving").await;
}

/// A `kubernetes.io/tls` Secret holding `tls_crt` (and a key that is never read).
pub(crate) async fn tls_secret(client: &Client, namespace: &str, name: &str, tls_crt: &str) {
    let secret: Secret = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": { "name": name },
        "type": "kubernetes.io/tls",
        "stringData": { "tls.crt": tls_crt, "tls.key": "not read by the operator" },
    }))
    .unwrap();
    Api::<Secret>::namespaced(client.clone(), namespace)
        .create(&PostParams::default(), &secret)
        .await
        .expect("create TLS Secret");
}

/// User story: "I serve my hostname with a certificate I manage myself, in my own TLS
/// Secret. When it is about to expire I am warned exactly as for a cert-manager
/// certificate — a Warning Event on the Domain and the certificate.expiring and
/// alert.certificate_expiring webhook events — and the Domain shows its expiry. When
/// what I put in the Secret is not a certificate, the Domain says so and names the
/// field, without echoing what I put there."
#[tokio::test]
async fn a_users_own_tls_secret_is_read_for_its_expiry() {
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "e2e-own-tls").await;
    let _serial = support::one_operator_test_at_a_time().await;
    // Hostnames under the hostname of the namespace's own Project: verified without a TXT
    // record, so no DNS server is needed.
    let operator = Operator::builder(&ns.name, "domains")
        .args(["--base-domain", "apps.e2e.test"])
        .args(["--hostname-reservation", RESERVATION])
        .start();
    let domains = Api::<Domain>::namespaced(client.clone(), &ns.name);
    let project_hostname = support::project_hostname(&client, &ns.name, "storefront").await;
    production_route(&client, &ns.name, "storefront-v1").await;
    support::recording_webhook(
        &client,
        &ns.name,
        "certificate-events",
        &["certificate.*", "alert.*"],
    )
    .await;

    // A certificate that expires in 3 days (the warning starts at 14).
    let not_after = time::OffsetDateTime::now_utc() + time::Duration::days(3);
    let hostname = format!("tls.{project_hostname}");
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec![hostname.clone()]).unwrap();
    params.not_before = time::OffsetDateTime::now_utc() - time::Duration::days(87);
    params.not_after = not_after;
    let certificate = params.self_signed(&key).unwrap().pem();
    tls_secret(&client, &ns.name, "shop-tls", &certificate).await;
    domains
        .create(
            &PostParams::default(),
            &domain(
                "shop",
                &hostname,
                json!({ "tls": { "secretName": "shop-tls" } }),
            ),
        )
        .await
        .unwrap();

    let d = wait_condition(
        &domains,
        "shop",
        CERTIFICATE_READY,
        "True",
        "SecretProvided",
    )
    .await;
    assert!(conditions::is_true(
        &d.status.as_ref().unwrap().conditions,
        VERIFIED
    ));
    let expected = k8s_openapi::jiff::Timestamp::from_second(not_after.unix_timestamp()).unwrap();
    let shown = d.status.as_ref().unwrap().certificate.as_ref().unwrap();
    assert_eq!(shown.secret_name.as_deref(), Some("shop-tls"));
    assert_eq!(shown.not_after.as_ref().map(|t| t.0), Some(expected));
    wait_condition(&domains, "shop", READY, "True", "Serving").await;

    let expiring = warning_event(&client, &ns.name, "shop", "CertificateExpiring").await;
    let events = Api::<Event>::namespaced(client.clone(), &ns.name);
    let note = expiring.note.unwrap_or_default();
    assert!(
        note.contains(&hostname) && note.contains(&expected.to_string()),
        "{note}"
    );

    // The same webhook events as for a cert-manager certificate, naming the expiry.
    let log = Api::<WebhookDelivery>::namespaced(client.clone(), &ns.name);
    let expiry_events = eventually(
        "certificate.expiring and alert.certificate_expiring in the delivery log",
        TIMEOUT,
        || async {
            let deliveries = log
                .list(&ListParams::default().labels("clouddeck.io/webhook=certificate-events"))
                .await
                .ok()?
                .items;
            let mut found: Vec<(String, String)> = deliveries
                .into_iter()
                .filter(|d| d.spec.event_type.contains("expiring"))
                .map(|d| {
                    let not_after = d.spec.payload_json()["data"]["notAfter"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned();
                    (d.spec.event_type, not_after)
                })
                .collect();
            found.sort();
            (found.len() >= 2).then_some(found)
        },
    )
    .await;
    let expected_text = expected.to_string();
    assert_eq!(
        expiry_events,
        [
            (
                "alert.certificate_expiring".to_owned(),
                expected_text.clone()
            ),
            ("certificate.expiring".to_owned(), expected_text),
        ]
    );

    // Something that is not a certificate in tls.crt.
    let garbage = "garbage-7f3a9c-not-a-certificate";
    tls_secret(&client, &ns.name, "broken-tls", garbage).await;
    domains
        .create(
            &PostParams::default(),
            &domain(
                "broken",
                &format!("broken.{project_hostname}"),
                json!({ "tls": { "secretName": "broken-tls" } }),
            ),
        )
        .await
        .unwrap();
    let d = wait_condition(
        &domains,
        "broken",
        CERTIFICATE_READY,
        "False",
        "InvalidCertificate",
    )
    .await;
    let message = condition_message(&d, CERTIFICATE_READY);
    assert!(
        message.starts_with("spec.tls.secretName:") && message.contains("broken-tls"),
        "{message}"
    );
    let status = serde_json::to_string(&d.status).unwrap();
    assert!(
        !status.contains(garbage),
        "the status echoes tls.crt: {status}"
    );
    // Only the user can fix it: stalled, like a Secret that does not exist.
    wait_condition(&domains, "broken", READY, "False", "InvalidCertificate").await;
    assert!(conditions::is_true(
        &domains
            .get("broken")
            .await
            .unwrap()
            .status
            .unwrap()
            .conditions,
        conditions::STALLED
    ));
    assert_eq!(
        d.status
            .as_ref()
            .unwrap()
            .certificate
            .as_ref()
            .unwrap()
            .not_after,
        None
    );
    for event in events.list(&ListParams::default()).await.unwrap().items {
        let note = event.note.unwrap_or_default();
        assert!(!note.contains(garbage), "an Event echoes tls.crt: {note}");
    }
    assert!(
        !operator.logs().contains(garbage),
        "the operator's log echoes tls.crt"
    );
}

/// User story: "The TXT record that proved my hostname is removed (a DNS migration gone
/// wrong, or the domain changed hands). CloudDeck notices at its next look, warns me with
/// an Event and a `RecordLost` condition saying until when it keeps serving, and once that
/// grace period is over it stops serving the hostname and frees it for whoever proves it
/// next."
#[tokio::test]
async fn a_verified_domain_whose_record_goes_missing_is_warned_then_given_up() {
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "e2e-domain-lost").await;
    let dns = Dns::start();
    let _serial = support::one_operator_test_at_a_time().await;
    let _operator = Operator::builder(&ns.name, "domains")
        .args(["--dns-server", &format!("127.0.0.1:{}", dns.port)])
        .args(["--default-cluster-issuer", ISSUER])
        .args(["--base-domain", "apps.e2e.test"])
        .args([
            "--verification-recheck",
            "2s",
            "--verification-grace",
            "12s",
        ])
        .args(["--hostname-reservation", "2s"])
        .start();
    let domains = Api::<Domain>::namespaced(client.clone(), &ns.name);
    production_route(&client, &ns.name, "storefront-v1").await;
    let hostname = format!("{}.example.test", ns.name);
    domains
        .create(
            &PostParams::default(),
            &domain("shop", &hostname, json!({})),
        )
        .await
        .unwrap();
    let (name, value) = record(&domains, "shop").await;
    dns.set_txt(&BTreeMap::from([(name, vec![value])]));
    wait_condition(&domains, "shop", VERIFIED, "True", "RecordFound").await;
    let listener_sets = Api::<ListenerSet>::namespaced(client.clone(), &ns.name);
    eventually("the listener for the hostname", TIMEOUT, || async {
        listener_sets.get_opt("shop-listener").await.ok()?
    })
    .await;

    dns.set_txt(&BTreeMap::new());
    let lost = wait_condition(&domains, "shop", VERIFIED, "True", "RecordLost").await;
    let message = condition_message(&lost, VERIFIED);
    assert!(message.contains("stops being served at"), "{message}");
    warning_event(&client, &ns.name, "shop", "VerificationRecordLost").await;
    assert!(
        listener_sets
            .get_opt("shop-listener")
            .await
            .unwrap()
            .is_some(),
        "still served during the grace period"
    );

    let given_up = wait_condition(&domains, "shop", VERIFIED, "False", "NameNotFound").await;
    assert!(
        given_up
            .status
            .as_ref()
            .and_then(|s| s.verification.as_ref())
            .is_some_and(|v| v.verified_at.is_none()),
        "the verification is dropped"
    );
    eventually(
        "the listener, route and certificate to go",
        TIMEOUT,
        || async {
            let listener = listener_sets.get_opt("shop-listener").await.ok()?;
            let route = Api::<HttpRoute>::namespaced(client.clone(), &ns.name)
                .get_opt("shop-domain")
                .await
                .ok()?;
            let certificate = certificates(&client, &ns.name)
                .get_opt("shop-tls")
                .await
                .ok()?;
            (listener.is_none() && route.is_none() && certificate.is_none()).then_some(())
        },
    )
    .await;
    let claims = Api::<HostnameClaim>::all(client.clone());
    assert!(
        claims.get_opt(&hostname).await.unwrap().is_none(),
        "the hostname is free again"
    );
}
