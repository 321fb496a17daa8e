//! The children of a Domain, as pure functions: its HTTPRoute (serving a deployment's
//! Service, or redirecting), and its cert-manager Certificate.

use std::collections::BTreeMap;

use gateway_api::apis::standard::httproutes::{HttpRoute, HttpRouteParentRefs};
use gateway_api::apis::standard::listenersets::ListenerSet;
use gateway_api::apis::standard::referencegrants::{
    ReferenceGrant, ReferenceGrantFrom, ReferenceGrantSpec, ReferenceGrantTo,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    ManagedFieldsEntry, ObjectMeta, OwnerReference,
};
use serde_json::json;

use super::certificate::{Certificate, CertificateSpec, IssuerRef, SecretTemplate};
use crate::api::domain::{Domain, IssuerKind, IssuerReference};
use crate::api::edge_handler::ServedHostname;
use crate::config::RoutingConfig;
use crate::delivery::PlatformEvent;
use crate::labels::{MANAGED_BY, MANAGER, PROJECT_LABEL};
use crate::routing::{self, bounded_name, edge::EdgePlan, split::SplitPlan};

pub const DOMAIN_LABEL: &str = "clouddeck.io/domain";

/// Name of a Domain's HTTPRoute.
pub fn route_name(domain: &str) -> String {
    bounded_name(domain, "domain")
}

/// Name of a Domain's ListenerSet (its HTTPS listener on the Gateway).
pub fn listener_set_name(domain: &str) -> String {
    bounded_name(domain, "listener")
}

/// The listener of a Domain's ListenerSet.
pub const HTTPS_LISTENER: &str = "https";

/// Name of a Domain's Certificate (and of the Secret cert-manager writes).
pub fn certificate_name(domain: &str) -> String {
    bounded_name(domain, "tls")
}

/// Labels of every child of a Domain.
pub fn labels(domain: &Domain) -> BTreeMap<String, String> {
    BTreeMap::from([
        (MANAGED_BY.to_owned(), MANAGER.to_owned()),
        (
            PROJECT_LABEL.to_owned(),
            domain.spec.project_ref.name.clone(),
        ),
        // A label value has at most 63 characters; a Domain's name up to 253.
        (
            DOMAIN_LABEL.to_owned(),
            routing::bounded_to(domain.metadata.name.as_deref().unwrap_or_default(), 63),
        ),
    ])
}

fn child_meta(domain: &Domain, name: String, owner: &OwnerReference) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: domain.metadata.namespace.clone(),
        labels: Some(labels(domain)),
        owner_references: Some(vec![owner.clone()]),
        ..Default::default()
    }
}

/// What a verified Domain's route does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RouteTarget {
    /// Send requests to this Service (the deployment production or the branch serves).
    Service(String),
    /// Answer every request with a redirect to this hostname, path and query kept.
    Redirect { hostname: String, status_code: i32 },
}

/// The HTTPRoute for `hostname`, attached to the operator's Gateway: its plain HTTP
/// listeners and a Domain listener on it; [`attach_to_listener_set`] adds the Domain's
/// ListenerSet listener.
pub fn route(
    domain: &Domain,
    hostname: &str,
    target: &RouteTarget,
    gateway: &RoutingConfig,
    edge: &EdgePlan,
    split: Option<&SplitPlan>,
    owner: &OwnerReference,
) -> HttpRoute {
    let domain_name = domain.metadata.name.clone().unwrap_or_default();
    let mut meta = child_meta(domain, route_name(&domain_name), owner);
    // A Domain that only redirects carries no edge rule, but it is rendered with the
    // current ones all the same.
    routing::mark_edge_digest(&mut meta, edge);
    match target {
        RouteTarget::Service(service) => routing::project_route(
            meta,
            hostname,
            &match split {
                Some(split) => routing::Serving::Split(split),
                None => routing::Serving::Service(service),
            },
            gateway,
            edge,
            ServedHostname::Domain,
        ),
        RouteTarget::Redirect {
            hostname: to,
            status_code,
        } => {
            // No `path` in the filter: Gateway API keeps the request's path and query.
            serde_json::from_value(json!({
                "apiVersion": "gateway.networking.k8s.io/v1",
                "kind": "HTTPRoute",
                "metadata": meta,
                "spec": {
                    "hostnames": [hostname],
                    "parentRefs": [{
                        "group": "gateway.networking.k8s.io",
                        "kind": "Gateway",
                        "name": gateway.gateway_name,
                        "namespace": gateway.gateway_namespace,
                    }],
                    "rules": [{
                        "filters": [{
                            "type": "RequestRedirect",
                            "requestRedirect": {
                                "hostname": to,
                                "statusCode": status_code,
                            }
                        }]
                    }]
                }
            }))
            .expect("a redirect HTTPRoute is a valid HTTPRoute")
        }
    }
}

/// Attaches `route` to the Domain's ListenerSet listener too (`--domain-listeners
/// listener-set`). With a listener on the Gateway itself, the route's Gateway parentRef
/// (no section) already attaches it to that listener.
pub fn attach_to_listener_set(route: &mut HttpRoute, domain: &Domain) {
    let domain_name = domain.metadata.name.clone().unwrap_or_default();
    route
        .spec
        .parent_refs
        .get_or_insert_with(Vec::new)
        .push(HttpRouteParentRefs {
            group: Some("gateway.networking.k8s.io".into()),
            kind: Some("ListenerSet".into()),
            name: listener_set_name(&domain_name),
            section_name: Some(HTTPS_LISTENER.into()),
            ..Default::default()
        });
}

/// Name of a Domain's listener on the Gateway (`--domain-listeners gateway`): from the
/// Domain's uid, so that a Domain deleted and made again gets a listener of its own.
pub fn gateway_listener_name(domain: &Domain) -> String {
    listener_name_of(domain.metadata.uid.as_deref().unwrap_or_default())
}

/// [`gateway_listener_name`] of the Domain with uid `uid`.
pub fn listener_name_of(uid: &str) -> String {
    format!("domain-{uid}")
}

/// Field managers of Domains' listeners on the Gateway: this prefix and the Domain's uid.
const LISTENER_MANAGER_PREFIX: &str = "clouddeck-domain-";

/// The field manager that applies a Domain's listener to the Gateway: one per Domain, so
/// that applying nothing under it removes that listener and no other.
pub fn gateway_listener_manager(domain: &Domain) -> String {
    listener_manager_of(domain.metadata.uid.as_deref().unwrap_or_default())
}

/// [`gateway_listener_manager`] of the Domain with uid `uid`.
pub fn listener_manager_of(uid: &str) -> String {
    format!("{LISTENER_MANAGER_PREFIX}{uid}")
}

/// The uids of the Domains whose field managers have applied something to the Gateway
/// whose managed fields are `managed` (each once, in order).
pub fn listener_owners(managed: &[ManagedFieldsEntry]) -> Vec<String> {
    let mut uids: Vec<String> = managed
        .iter()
        .filter(|entry| entry.operation.as_deref() == Some("Apply"))
        .filter_map(|entry| {
            entry
                .manager
                .as_deref()?
                .strip_prefix(LISTENER_MANAGER_PREFIX)
        })
        .filter(|uid| !uid.is_empty())
        .map(str::to_owned)
        .collect();
    uids.sort();
    uids.dedup();
    uids
}

/// What applying nothing to the operator's Gateway looks like: under a Domain's field
/// manager, it removes that Domain's listener.
pub fn no_gateway_listener(gateway: &RoutingConfig) -> serde_json::Value {
    json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "Gateway",
        "metadata": { "name": gateway.gateway_name, "namespace": gateway.gateway_namespace },
    })
}

/// What the Domain's field manager applies to the operator's Gateway: the Domain's HTTPS
/// listener for exactly `hostname` on `port`, terminating TLS with `secret` in the
/// Domain's namespace (readable through [`listener_grant`]), taking routes of that
/// namespace only ([`no_gateway_listener`] removes it). Only the fields the Domain owns:
/// a typed Gateway would also claim `gatewayClassName`.
pub fn gateway_listener(
    domain: &Domain,
    gateway: &RoutingConfig,
    (hostname, secret, port): (&str, &str, u16),
) -> serde_json::Value {
    let namespace = domain.metadata.namespace.as_deref().unwrap_or_default();
    let mut applied = no_gateway_listener(gateway);
    applied["spec"] = json!({ "listeners": [{
        "name": gateway_listener_name(domain),
        "hostname": hostname,
        "port": port,
        "protocol": "HTTPS",
        "tls": {
            "mode": "Terminate",
            "certificateRefs": [{
                "group": "", "kind": "Secret", "name": secret, "namespace": namespace,
            }],
        },
        "allowedRoutes": { "namespaces": {
            "from": "Selector",
            "selector": { "matchLabels": { "kubernetes.io/metadata.name": namespace } },
        } },
    }] });
    applied
}

/// Lets the operator's Gateway read the Domain's TLS Secret (`secret`, in the Domain's
/// namespace) for its listener on the Gateway: that Secret and no other.
pub fn listener_grant(
    domain: &Domain,
    secret: &str,
    gateway: &RoutingConfig,
    owner: &OwnerReference,
) -> ReferenceGrant {
    let name = listener_set_name(&domain.metadata.name.clone().unwrap_or_default());
    ReferenceGrant {
        metadata: child_meta(domain, name, owner),
        spec: ReferenceGrantSpec {
            from: vec![ReferenceGrantFrom {
                group: "gateway.networking.k8s.io".into(),
                kind: "Gateway".into(),
                namespace: gateway.gateway_namespace.clone(),
            }],
            to: vec![ReferenceGrantTo {
                group: String::new(),
                kind: "Secret".into(),
                name: Some(secret.to_owned()),
            }],
        },
    }
}

/// The Domain's HTTPS listener, attached to the operator's Gateway through a ListenerSet
/// in the Domain's namespace: TLS terminated with `secret` (same namespace, so no
/// ReferenceGrant), and only routes of this namespace attach to it. The Gateway must
/// allow ListenerSets from the Domains' namespaces (`spec.allowedListeners`).
pub fn listener_set(
    domain: &Domain,
    (hostname, secret, port): (&str, &str, u16),
    gateway: &RoutingConfig,
    owner: &OwnerReference,
) -> ListenerSet {
    let name = listener_set_name(&domain.metadata.name.clone().unwrap_or_default());
    serde_json::from_value(json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "ListenerSet",
        "metadata": child_meta(domain, name, owner),
        "spec": {
            "parentRef": {
                "group": "gateway.networking.k8s.io",
                "kind": "Gateway",
                "name": gateway.gateway_name,
                "namespace": gateway.gateway_namespace,
            },
            "listeners": [{
                "name": HTTPS_LISTENER,
                "hostname": hostname,
                "port": port,
                "protocol": "HTTPS",
                "tls": {
                    "mode": "Terminate",
                    "certificateRefs": [{ "group": "", "kind": "Secret", "name": secret }],
                },
                "allowedRoutes": { "namespaces": { "from": "Same" } },
            }],
        }
    }))
    .expect("a ListenerSet is a valid ListenerSet")
}

/// The issuer of a Domain's certificate: its own, else the operator's default.
pub fn issuer(domain: &Domain, default_cluster_issuer: &str) -> IssuerReference {
    domain
        .spec
        .tls
        .as_ref()
        .and_then(|tls| tls.issuer_ref.clone())
        .unwrap_or_else(|| IssuerReference {
            name: default_cluster_issuer.to_owned(),
            kind: IssuerKind::ClusterIssuer,
        })
}

/// The cert-manager Certificate for `hostname`, issued by `issuer` into a Secret of the
/// same name as the Certificate.
pub fn certificate(
    domain: &Domain,
    hostname: &str,
    issuer: &IssuerReference,
    owner: &OwnerReference,
) -> Certificate {
    let name = certificate_name(&domain.metadata.name.clone().unwrap_or_default());
    let kind = match issuer.kind {
        IssuerKind::ClusterIssuer => "ClusterIssuer",
        IssuerKind::Issuer => "Issuer",
    };
    let mut certificate = Certificate::new(
        &name,
        CertificateSpec {
            secret_name: name.clone(),
            dns_names: vec![hostname.to_owned()],
            issuer_ref: IssuerRef {
                group: "cert-manager.io".into(),
                kind: kind.into(),
                name: issuer.name.clone(),
            },
            secret_template: Some(SecretTemplate {
                labels: labels(domain),
            }),
        },
    );
    certificate.metadata = child_meta(domain, name, owner);
    certificate
}

/// A `domain.*`, `certificate.*` or `alert.*` webhook event about `domain`. Its id is
/// `<uid>/<type>/<occurrence>`: the same occurrence (a verification, a failure reason, a
/// certificate's notAfter) published again is the same delivery, not a second one.
pub fn platform_event(
    domain: &Domain,
    hostname: &str,
    event_type: &str,
    occurrence: &str,
    summary: &str,
) -> PlatformEvent {
    let uid = domain.metadata.uid.as_deref().unwrap_or_default();
    PlatformEvent::new(
        event_type,
        format!("{uid}/{event_type}/{occurrence}"),
        domain.metadata.namespace.as_deref().unwrap_or_default(),
        format!("{hostname}: {summary}"),
    )
    .with("domain", domain.metadata.name.clone().unwrap_or_default())
    .with("hostname", hostname.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::common::ProjectReference;
    use crate::api::domain::{DomainRedirect, DomainSpec, DomainTls};

    fn domain(tls: Option<DomainTls>) -> Domain {
        let mut d = Domain::new(
            "shop",
            DomainSpec {
                hostname: "shop.example.com".into(),
                project_ref: ProjectReference {
                    name: "storefront".into(),
                },
                branch: None,
                redirect_to: None,
                tls,
            },
        );
        d.metadata.namespace = Some("team-a".into());
        d.metadata.uid = Some("uid-1".into());
        d
    }

    fn owner() -> OwnerReference {
        OwnerReference {
            api_version: "clouddeck.io/v1alpha1".into(),
            kind: "Domain".into(),
            name: "shop".into(),
            uid: "uid-1".into(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        }
    }

    fn gateway() -> RoutingConfig {
        RoutingConfig {
            gateway_name: "edge".into(),
            gateway_namespace: "net".into(),
            base_domain: "apps.example.com".into(),
            deny_responder: None,
        }
    }

    #[test]
    fn a_domain_event_is_one_delivery_per_occurrence() {
        let mut domain: Domain = serde_json::from_value(json!({
            "apiVersion": "clouddeck.io/v1alpha1", "kind": "Domain",
            "metadata": { "name": "shop", "namespace": "team", "uid": "d-uid" },
            "spec": { "hostname": "shop.example.com", "projectRef": { "name": "web" } }
        }))
        .unwrap();
        let failed = platform_event(
            &domain,
            "shop.example.com",
            "domain.verification_failed",
            "RecordMissing",
            "no TXT record",
        );
        assert_eq!(failed.id, "d-uid/domain.verification_failed/RecordMissing");
        assert_eq!(failed.namespace, "team");
        assert_eq!(failed.summary, "shop.example.com: no TXT record");
        assert_eq!(failed.data["hostname"], "shop.example.com");
        assert_eq!(failed.data["domain"], "shop");
        domain.metadata.uid = Some("other-uid".into());
        let other = platform_event(&domain, "shop.example.com", "domain.verified", "x", "ok");
        assert_ne!(other.id, failed.id);
    }

    #[test]
    fn route_serves_the_service_for_the_hostname() {
        let mut route = route(
            &domain(None),
            "shop.example.com",
            &RouteTarget::Service("web-2".into()),
            &gateway(),
            &EdgePlan::default(),
            None,
            &owner(),
        );
        let json = serde_json::to_value(&route).unwrap();
        assert_eq!(json["metadata"]["name"], "shop-domain");
        assert_eq!(json["metadata"]["namespace"], "team-a");
        assert_eq!(json["metadata"]["labels"][MANAGED_BY], "clouddeck");
        assert_eq!(json["metadata"]["labels"][PROJECT_LABEL], "storefront");
        assert_eq!(json["metadata"]["ownerReferences"][0]["uid"], "uid-1");
        assert_eq!(json["spec"]["hostnames"], json!(["shop.example.com"]));
        assert_eq!(json["spec"]["parentRefs"][0]["name"], "edge");
        assert_eq!(json["spec"]["rules"][0]["backendRefs"][0]["name"], "web-2");
        // With a listener on the Gateway, the Gateway parentRef (no section) is the only
        // one: it attaches the route to that listener too.
        assert_eq!(json["spec"]["parentRefs"].as_array().unwrap().len(), 1);
        assert_eq!(json["spec"]["parentRefs"][0].get("sectionName"), None);
        attach_to_listener_set(&mut route, &domain(None));
        let json = serde_json::to_value(&route).unwrap();
        assert_eq!(
            json["spec"]["parentRefs"][1],
            json!({ "group": "gateway.networking.k8s.io", "kind": "ListenerSet",
                    "name": "shop-listener", "sectionName": "https" })
        );
    }

    #[test]
    fn listener_set_terminates_tls_for_the_hostname_only_for_this_namespace() {
        let set = listener_set(
            &domain(None),
            ("shop.example.com", "shop-tls", 443),
            &gateway(),
            &owner(),
        );
        let json = serde_json::to_value(&set).unwrap();
        assert_eq!(json["metadata"]["name"], "shop-listener");
        assert_eq!(json["metadata"]["ownerReferences"][0]["uid"], "uid-1");
        assert_eq!(
            json["spec"]["parentRef"],
            json!({ "group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "edge", "namespace": "net" })
        );
        let listener = &json["spec"]["listeners"][0];
        assert_eq!(listener["name"], HTTPS_LISTENER);
        assert_eq!(listener["hostname"], "shop.example.com");
        assert_eq!(listener["port"], 443);
        assert_eq!(listener["protocol"], "HTTPS");
        assert_eq!(listener["tls"]["certificateRefs"][0]["name"], "shop-tls");
        assert_eq!(listener["allowedRoutes"]["namespaces"]["from"], "Same");
    }

    #[test]
    fn the_listener_owners_of_a_gateway_are_the_domains_that_applied_to_it() {
        let entry = |manager: &str, operation: &str| ManagedFieldsEntry {
            manager: Some(manager.into()),
            operation: Some(operation.into()),
            ..Default::default()
        };
        let managed = [
            entry("hack-cluster", "Apply"),
            entry("clouddeck-domain-uid-2", "Apply"),
            entry("clouddeck-domain-uid-1", "Apply"),
            // The gateway's own status writes, and a hand edit under a look-alike name.
            entry("traefik", "Update"),
            entry("clouddeck-domain-uid-3", "Update"),
            entry("clouddeck-domain-", "Apply"),
            entry("clouddeck", "Apply"),
        ];
        assert_eq!(listener_owners(&managed), ["uid-1", "uid-2"]);
        assert_eq!(
            listener_manager_of("uid-1"),
            gateway_listener_manager(&{
                let mut d = domain(None);
                d.metadata.uid = Some("uid-1".into());
                d
            })
        );
    }

    #[test]
    fn gateway_listener_is_the_domains_alone_and_takes_only_its_namespaces_routes() {
        let applied = gateway_listener(
            &domain(None),
            &gateway(),
            ("shop.example.com", "shop-tls", 8443),
        );
        assert_eq!(
            applied["metadata"],
            json!({ "name": "edge", "namespace": "net" })
        );
        // Only the listener: gatewayClassName and the other listeners stay the platform's.
        assert_eq!(applied["spec"].as_object().unwrap().len(), 1);
        let listeners = applied["spec"]["listeners"].as_array().unwrap();
        assert_eq!(listeners.len(), 1);
        let listener = &listeners[0];
        assert_eq!(listener["name"], "domain-uid-1");
        assert_eq!(listener["hostname"], "shop.example.com");
        assert_eq!(listener["port"], 8443);
        assert_eq!(listener["protocol"], "HTTPS");
        assert_eq!(
            listener["tls"]["certificateRefs"][0],
            json!({ "group": "", "kind": "Secret", "name": "shop-tls", "namespace": "team-a" })
        );
        assert_eq!(
            listener["allowedRoutes"]["namespaces"],
            json!({ "from": "Selector",
                    "selector": { "matchLabels": { "kubernetes.io/metadata.name": "team-a" } } })
        );
        // Applying nothing under the Domain's own manager removes that listener alone.
        let removal = no_gateway_listener(&gateway());
        assert_eq!(removal.get("spec"), None);
        assert_eq!(
            gateway_listener_manager(&domain(None)),
            "clouddeck-domain-uid-1"
        );
    }

    #[test]
    fn listener_grant_lets_the_gateway_read_the_domains_secret_only() {
        let grant = listener_grant(&domain(None), "shop-tls", &gateway(), &owner());
        let json = serde_json::to_value(&grant).unwrap();
        assert_eq!(json["metadata"]["namespace"], "team-a");
        assert_eq!(json["metadata"]["ownerReferences"][0]["uid"], "uid-1");
        assert_eq!(
            json["spec"]["from"],
            json!([{ "group": "gateway.networking.k8s.io", "kind": "Gateway", "namespace": "net" }])
        );
        assert_eq!(
            json["spec"]["to"],
            json!([{ "group": "", "kind": "Secret", "name": "shop-tls" }])
        );
    }

    #[test]
    fn redirect_route_keeps_path_and_query() {
        let mut d = domain(None);
        d.spec.redirect_to = Some(DomainRedirect {
            domain: "example.com".into(),
            status_code: 301,
        });
        let target = RouteTarget::Redirect {
            hostname: "example.com".into(),
            status_code: 301,
        };
        let route = route(
            &d,
            "www.example.com",
            &target,
            &gateway(),
            &EdgePlan::default(),
            None,
            &owner(),
        );
        let json = serde_json::to_value(&route).unwrap();
        let rule = &json["spec"]["rules"][0];
        assert!(rule.get("backendRefs").is_none());
        assert_eq!(
            rule["filters"],
            json!([{
                "type": "RequestRedirect",
                "requestRedirect": { "hostname": "example.com", "statusCode": 301 }
            }])
        );
    }

    #[test]
    fn certificate_uses_the_domain_issuer_or_the_default() {
        let d = domain(None);
        let issuer = issuer(&d, "letsencrypt-prod");
        let cert = certificate(&d, "shop.example.com", &issuer, &owner());
        let json = serde_json::to_value(&cert).unwrap();
        assert_eq!(json["apiVersion"], "cert-manager.io/v1");
        assert_eq!(json["kind"], "Certificate");
        assert_eq!(json["metadata"]["name"], "shop-tls");
        assert_eq!(json["metadata"]["labels"][DOMAIN_LABEL], "shop");
        assert_eq!(json["metadata"]["ownerReferences"][0]["uid"], "uid-1");
        assert_eq!(
            json["spec"],
            json!({
                "secretName": "shop-tls",
                "dnsNames": ["shop.example.com"],
                "issuerRef": { "group": "cert-manager.io", "kind": "ClusterIssuer", "name": "letsencrypt-prod" },
                "secretTemplate": { "labels": json["metadata"]["labels"] },
            })
        );
        assert!(
            json.get("status").is_none(),
            "status is cert-manager's: {json}"
        );

        let own = domain(Some(DomainTls {
            issuer_ref: Some(IssuerReference {
                name: "team-ca".into(),
                kind: IssuerKind::Issuer,
            }),
            secret_name: None,
        }));
        let issuer = super::issuer(&own, "letsencrypt-prod");
        assert_eq!(issuer.name, "team-ca");
        let json =
            serde_json::to_value(certificate(&own, "shop.example.com", &issuer, &owner())).unwrap();
        assert_eq!(json["spec"]["issuerRef"]["kind"], "Issuer");
    }
}
