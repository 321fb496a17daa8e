//! Routing: the Gateway API HTTPRoutes that give deployments their URLs — a preview
//! route per Deployment, a branch alias per branch and the production route of a Project —
//! all attached to the Gateway the operator is configured with. Their hostnames come from
//! [`crate::hostnames`], which also decides who may be served under them.

use gateway_api::apis::standard::httproutes::{
    HttpRoute, HttpRouteParentRefs, HttpRouteRules, HttpRouteRulesBackendRefs, HttpRouteSpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::api::edge_handler::ServedHostname;
use crate::config::RoutingConfig;

pub mod edge;
pub mod split;

/// What a route sends the requests no edge rule answers to.
#[derive(Clone, Copy, Debug)]
pub enum Serving<'a> {
    /// One Deployment's Service.
    Service(&'a str),
    /// A running split test's variants (production only).
    Split(&'a split::SplitPlan),
}

impl Serving<'_> {
    /// The backends of a rule that sends requests to the application.
    pub fn backends(&self) -> Vec<HttpRouteRulesBackendRefs> {
        match self {
            Serving::Service(service) => vec![service_backend(service)],
            Serving::Split(split) => split.weighted_backends(),
        }
    }
}

/// The port every CloudDeck Service exposes; it forwards to the application's port.
pub const SERVICE_PORT: i32 = 80;

/// Longest DNS label (and longest label value, Service or Job name).
const MAX_LABEL: usize = 63;

/// `<base>-<suffix>`, kept within a DNS label: when too long, the base is cut and a hash
/// of the whole name keeps distinct inputs distinct. Deterministic, so the same input
/// always names the same object.
pub fn bounded_name(base: &str, suffix: &str) -> String {
    let full = format!("{base}-{suffix}");
    if full.len() <= MAX_LABEL {
        return full;
    }
    let hash = format!("{:08x}", fnv1a(full.as_bytes()));
    if suffix.len() <= 20 {
        let keep = MAX_LABEL - suffix.len() - hash.len() - 2;
        let head = cut(base, keep);
        format!("{head}-{hash}-{suffix}")
    } else {
        let head = cut(&full, MAX_LABEL - hash.len() - 1);
        format!("{head}-{hash}")
    }
}

/// `name` kept within `max` characters (e.g. 52 for a batch CronJob, whose Jobs append
/// `-<11 digits>`): when too long, it is cut and a hash of the whole name keeps distinct
/// names distinct. Deterministic, like [`bounded_name`].
pub fn bounded_to(name: &str, max: usize) -> String {
    if name.len() <= max {
        return name.to_owned();
    }
    let hash = format!("{:08x}", fnv1a(name.as_bytes()));
    let head = cut(name, max.saturating_sub(hash.len() + 1));
    format!("{head}-{hash}")
}

pub(crate) fn cut(text: &str, max: usize) -> &str {
    let mut end = max.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].trim_end_matches(['-', '.'])
}

pub(crate) fn fnv1a(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5u32, |hash, b| {
        (hash ^ u32::from(*b)).wrapping_mul(0x0100_0193)
    })
}

pub use crate::hostnames::scheme::{branch_slug, short_id};

/// Name of a branch's alias HTTPRoute (also the first label of its hostname).
pub fn branch_route_name(project: &str, branch: &str) -> String {
    bounded_name(&format!("{project}-git"), &branch_slug(branch))
}

/// Name of a Project's production HTTPRoute.
pub fn production_route_name(project: &str) -> String {
    bounded_name(project, "production")
}

/// The URL users open for a hostname. The Gateway terminates TLS.
pub fn url(hostname: &str) -> String {
    format!("https://{hostname}")
}

/// An HTTPRoute for `hostname`, attached to the configured Gateway: the `edge` rules
/// first (see [`edge::EdgePlan::route_rules`]), then one that sends every other request to
/// `service` (port [`SERVICE_PORT`]). `meta` carries name, namespace, labels and owner.
pub fn http_route(
    meta: ObjectMeta,
    hostname: &str,
    service: &str,
    gateway: &RoutingConfig,
    edge: Vec<HttpRouteRules>,
) -> HttpRoute {
    routed(meta, hostname, &Serving::Service(service), gateway, edge)
}

fn routed(
    meta: ObjectMeta,
    hostname: &str,
    serving: &Serving,
    gateway: &RoutingConfig,
    edge: Vec<HttpRouteRules>,
) -> HttpRoute {
    let mut rules = edge;
    rules.push(HttpRouteRules {
        backend_refs: Some(serving.backends()),
        ..Default::default()
    });
    let spec = HttpRouteSpec {
        hostnames: Some(vec![hostname.to_owned()]),
        parent_refs: Some(vec![HttpRouteParentRefs {
            group: Some("gateway.networking.k8s.io".into()),
            kind: Some("Gateway".into()),
            name: gateway.gateway_name.clone(),
            namespace: Some(gateway.gateway_namespace.clone()),
            ..Default::default()
        }]),
        rules: Some(rules),
    };
    HttpRoute {
        metadata: meta,
        spec,
        status: None,
    }
}

/// The route for one of a Project's hostnames: [`http_route`] with the edge rules `plan`
/// has for hostnames of kind `served`, annotated with the plan's digest so the
/// EdgeHandler controller can tell which routes carry the current rules.
pub fn project_route(
    meta: ObjectMeta,
    hostname: &str,
    serving: &Serving,
    gateway: &RoutingConfig,
    plan: &edge::EdgePlan,
    served: ServedHostname,
) -> HttpRoute {
    let rules = plan.route_rules(served, serving);
    let mut route = routed(meta, hostname, serving, gateway, rules);
    mark_edge_digest(&mut route.metadata, plan);
    if let Serving::Split(split) = serving {
        route
            .metadata
            .annotations
            .get_or_insert_default()
            .insert(split::SPLIT_TEST_ANNOTATION.to_owned(), split.digest());
    }
    route
}

/// Annotates a route rendered with `plan` (see [`edge::EDGE_RULES_ANNOTATION`]).
pub fn mark_edge_digest(meta: &mut ObjectMeta, plan: &edge::EdgePlan) {
    if let Some(digest) = plan.digest() {
        meta.annotations
            .get_or_insert_default()
            .insert(edge::EDGE_RULES_ANNOTATION.to_owned(), digest);
    }
}

/// A backend reference to port [`SERVICE_PORT`] of `service`, in the route's namespace.
pub fn service_backend(service: &str) -> HttpRouteRulesBackendRefs {
    HttpRouteRulesBackendRefs {
        group: Some(String::new()),
        kind: Some("Service".into()),
        name: service.to_owned(),
        port: Some(SERVICE_PORT),
        weight: Some(1),
        ..Default::default()
    }
}

/// The Service an HTTPRoute sends the requests no edge rule takes to (the backend of its
/// last rule), or for a split production route the Deployment production serves.
pub fn backend_service(route: &HttpRoute) -> Option<&str> {
    if let Some(production) = route
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(split::PRODUCTION_ANNOTATION))
    {
        return Some(production);
    }
    route
        .spec
        .rules
        .as_ref()?
        .last()?
        .backend_refs
        .as_ref()?
        .first()
        .map(|b| b.name.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_to_keeps_short_names_and_hashes_long_ones() {
        assert_eq!(bounded_to("nightly", 52), "nightly");
        let long = format!("{}-cleanup", "a".repeat(60));
        let other = format!("{}-cleanups", "a".repeat(60));
        let (a, b) = (bounded_to(&long, 52), bounded_to(&other, 52));
        assert!(a.len() <= 52 && b.len() <= 52, "{a} {b}");
        assert_ne!(a, b);
        assert_eq!(a, bounded_to(&long, 52));
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
    fn long_names_stay_dns_labels_and_distinct() {
        let project = "p".repeat(60);
        let a = branch_route_name(
            &project,
            "feature/a-very-long-branch-name-that-goes-on-and-on",
        );
        let b = branch_route_name(
            &project,
            "feature/a-very-long-branch-name-that-goes-on-and-on-2",
        );
        assert!(a.len() <= 63 && b.len() <= 63, "{a} {b}");
        assert_ne!(a, b);
        assert!(!a.ends_with('-') && !a.contains("--"), "{a}");
    }

    #[test]
    fn route_attaches_to_the_configured_gateway_and_targets_the_service() {
        let meta = ObjectMeta {
            name: Some("web-production".into()),
            namespace: Some("team".into()),
            ..Default::default()
        };
        let route = http_route(
            meta,
            "web.apps.example.com",
            "web-2",
            &gateway(),
            Vec::new(),
        );
        let parent = &route.spec.parent_refs.as_ref().unwrap()[0];
        assert_eq!(
            (parent.name.as_str(), parent.namespace.as_deref()),
            ("edge", Some("net"))
        );
        assert_eq!(
            route.spec.hostnames.as_deref(),
            Some(&["web.apps.example.com".to_owned()][..])
        );
        assert_eq!(backend_service(&route), Some("web-2"));
        let backend = &route.spec.rules.as_ref().unwrap()[0]
            .backend_refs
            .as_ref()
            .unwrap()[0];
        assert_eq!(backend.port, Some(SERVICE_PORT));
        let json = serde_json::to_value(&route).unwrap();
        assert_eq!(json["apiVersion"], "gateway.networking.k8s.io/v1");
        assert_eq!(json["kind"], "HTTPRoute");
    }
}
