//! Edge rules: a Project's EdgeHandlers merged into the HTTPRoute rules that go in front of
//! the application in each of its routes.
//!
//! EdgeHandler promises "in order, the first match wins"; Gateway API picks among matching
//! rules by its own precedence (an Exact path over any prefix, then the longest prefix,
//! then the most header matches, then the most query matches) and only then by list
//! order. [`EdgePlan::new`] keeps the promise by refusing every order the gateway would
//! change: a later rule that can match a request an earlier one matches and ranks above
//! it. Gateway API leaves the precedence of regular-expression paths to each
//! implementation, so a regular-expression path rule may share no request with another
//! rule. Handlers are taken in the order of their names; a refused handler is applied not
//! at all (and says why in its status), the others are applied whole.

use std::collections::BTreeMap;

use gateway_api::apis::standard::httproutes::{
    HttpRouteRules, HttpRouteRulesBackendRefs, HttpRouteRulesFilters,
    HttpRouteRulesFiltersRequestHeaderModifier, HttpRouteRulesFiltersRequestHeaderModifierAdd,
    HttpRouteRulesFiltersRequestHeaderModifierSet, HttpRouteRulesFiltersRequestRedirect,
    HttpRouteRulesFiltersRequestRedirectPath, HttpRouteRulesFiltersRequestRedirectPathType,
    HttpRouteRulesFiltersRequestRedirectScheme, HttpRouteRulesFiltersResponseHeaderModifier,
    HttpRouteRulesFiltersResponseHeaderModifierAdd, HttpRouteRulesFiltersResponseHeaderModifierSet,
    HttpRouteRulesFiltersType, HttpRouteRulesFiltersUrlRewrite,
    HttpRouteRulesFiltersUrlRewritePath, HttpRouteRulesFiltersUrlRewritePathType,
    HttpRouteRulesMatches, HttpRouteRulesMatchesHeaders, HttpRouteRulesMatchesHeadersType,
    HttpRouteRulesMatchesPath, HttpRouteRulesMatchesPathType, HttpRouteRulesMatchesQueryParams,
    HttpRouteRulesMatchesQueryParamsType,
};
use kube::ResourceExt;

use crate::api::edge_handler::{
    EdgeHandler, EdgeRule, HeaderChanges, MatchType, PathMatch, PathModifier, ServedHostname,
    ValueMatch, ValueMatchType,
};
use crate::api::validation;
use crate::config::ServicePort;
use crate::routing::Serving;

/// Rules one HTTPRoute may hold (Gateway API's `maxItems`).
pub const MAX_ROUTE_RULES: usize = 16;

/// Edge rules one route may carry: all but the rule that sends the rest to the application.
pub const MAX_EDGE_RULES: usize = MAX_ROUTE_RULES - 1;

/// The request header through which a `deny` rule tells the responder which status code to
/// answer. Set (not added) by the gateway, so a client cannot choose it.
pub const DENY_STATUS_HEADER: &str = "X-Clouddeck-Deny-Status";

/// Annotation on every route that carries a plan's rules: the plan's [`EdgePlan::digest`].
/// The EdgeHandler controller reports the routes that carry the current one.
pub const EDGE_RULES_ANNOTATION: &str = "clouddeck.io/edge-rules";

/// Why a handler is not applied: the field to change and what is wrong with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// The condition reason, CamelCase.
    pub reason: &'static str,
    /// JSON path of the field, e.g. `spec.rules[2].match.path`.
    pub field: String,
    pub message: String,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// One accepted rule and where it came from.
#[derive(Clone, Debug, PartialEq)]
struct PlacedRule {
    handler: String,
    index: usize,
    rule: EdgeRule,
}

impl PlacedRule {
    fn label(&self) -> String {
        match &self.rule.name {
            Some(name) => format!("rule {name:?} (spec.rules[{}])", self.index),
            None => format!("spec.rules[{}]", self.index),
        }
    }

    fn serves(&self, served: ServedHostname) -> bool {
        self.rule.applies_to.is_empty() || self.rule.applies_to.contains(&served)
    }
}

/// A Project's EdgeHandlers merged: which are applied, which are refused and why, and the
/// rules every route of the Project puts in front of the application.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EdgePlan {
    rules: Vec<PlacedRule>,
    /// Per handler name: the number of its rules applied, or why none is.
    pub handlers: BTreeMap<String, Result<usize, Refusal>>,
    responder: Option<ServicePort>,
}

impl EdgePlan {
    /// Merges `handlers` (those of one Project, in any order) in the order of their names.
    pub fn new(handlers: &[&EdgeHandler], responder: Option<&ServicePort>) -> Self {
        let mut sorted: Vec<&EdgeHandler> = handlers.to_vec();
        sorted.sort_by_key(|h| h.name_any());
        let mut plan = EdgePlan {
            responder: responder.cloned(),
            ..Default::default()
        };
        for handler in sorted {
            let name = handler.name_any();
            let outcome = plan.admit(&name, &handler.spec.rules);
            plan.handlers.insert(name, outcome);
        }
        plan
    }

    /// Adds the rules of one handler after those already accepted, or refuses them all.
    fn admit(&mut self, handler: &str, rules: &[EdgeRule]) -> Result<usize, Refusal> {
        validation::edge_handler_rules(rules).map_err(|invalid| Refusal {
            reason: "InvalidSpec",
            field: invalid.field,
            message: invalid.message,
        })?;
        let mut accepted = self.rules.clone();
        for (index, rule) in rules.iter().enumerate() {
            if rule.deny.is_some() && self.responder.is_none() {
                return Err(Refusal {
                    reason: "NoDenyResponder",
                    field: format!("spec.rules[{index}].deny"),
                    message: "this operator runs without a deny responder (--deny-responder; the chart and the kustomize base set it), and a rule with no backend answers 500, not the status asked for".into(),
                });
            }
            let candidate = PlacedRule {
                handler: handler.to_owned(),
                index,
                rule: rule.clone(),
            };
            if let Some(earlier) = accepted.iter().find(|e| reordered(e, &candidate)) {
                let whose = if earlier.handler == handler {
                    String::new()
                } else {
                    format!(" of EdgeHandler {:?}", earlier.handler)
                };
                let why = if is_regex(&earlier.rule) || is_regex(rule) {
                    "Gateway API leaves the precedence of regular-expression paths to the gateway, so it may not keep the order"
                } else {
                    "the gateway ranks its match higher (an Exact path, a longer prefix, more header or query matches) and would apply it first"
                };
                return Err(Refusal {
                    reason: "RuleOrder",
                    field: format!("spec.rules[{index}].match"),
                    message: format!(
                        "can match requests that {}{whose}, listed earlier, also matches: {why}; put it first or narrow one of them",
                        earlier.label()
                    ),
                });
            }
            accepted.push(candidate);
        }
        for served in ServedHostname::ALL {
            let count = accepted.iter().filter(|r| r.serves(served)).count();
            if count > MAX_EDGE_RULES {
                return Err(Refusal {
                    reason: "TooManyRules",
                    field: "spec.rules".into(),
                    message: format!(
                        "{served:?} routes would need {count} edge rules with the EdgeHandlers named before this one; an HTTPRoute holds {MAX_ROUTE_RULES} rules, one of them for the application"
                    ),
                });
            }
        }
        self.rules = accepted;
        Ok(rules.len())
    }

    /// Whether any rule is applied.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Whether any applied rule denies (its routes need the responder).
    pub fn denies(&self) -> bool {
        self.rules.iter().any(|r| r.rule.deny.is_some())
    }

    /// Names the applied rules, for the [`EDGE_RULES_ANNOTATION`] of the routes that carry
    /// them: `None` when there are none, so a Project without EdgeHandlers keeps routes
    /// exactly as before.
    pub fn digest(&self) -> Option<String> {
        if self.rules.is_empty() {
            return None;
        }
        let responder = self
            .responder
            .as_ref()
            .map(|r| format!("{}/{}:{}", r.namespace, r.name, r.port));
        let rules: Vec<_> = self.rules.iter().map(|r| (&r.handler, &r.rule)).collect();
        let text = serde_json::to_string(&(responder, rules)).unwrap_or_default();
        let sum = ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
        Some(
            sum.as_ref()[..8]
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect(),
        )
    }

    /// The rules a route for a `served` hostname puts before the application's own rule;
    /// `serving` is what the route sends the rest to.
    pub fn route_rules(&self, served: ServedHostname, serving: &Serving) -> Vec<HttpRouteRules> {
        let mut rules: Vec<HttpRouteRules> = self
            .rules
            .iter()
            .filter(|r| r.serves(served))
            .map(|r| self.render(r, serving))
            .collect();
        if let Serving::Split(split) = serving {
            // Every request meets the catch-all edge rule, if there is one, unless a more
            // specific rule takes it; the variant rules outrank it, so they do what it does.
            let catch_all = self.catch_all(served).map(|r| self.render(r, serving));
            rules.extend(split.variant_rules(|service| match &catch_all {
                Some(rule) => {
                    let backends = match &rule.backend_refs {
                        Some(refs) if refs.iter().all(|b| b.namespace.is_none()) => {
                            Some(vec![super::service_backend(service)])
                        }
                        other => other.clone(),
                    };
                    (rule.filters.clone(), backends)
                }
                None => (None, Some(vec![super::service_backend(service)])),
            }));
        }
        rules
    }

    /// The first rule for `served` hostnames that every request can meet: path prefix `/`
    /// and no header condition.
    fn catch_all(&self, served: ServedHostname) -> Option<&PlacedRule> {
        self.rules.iter().filter(|r| r.serves(served)).find(|r| {
            let path = &r.rule.matches.path;
            path.kind == MatchType::PathPrefix
                && path.value.trim_end_matches('/').is_empty()
                && r.rule.matches.headers.is_empty()
        })
    }

    /// Why a split test cannot run on the production route with these rules, if it cannot.
    /// The split's rules (path `/` and one header) outrank a catch-all rule, which they
    /// therefore copy, but not a rule with a more specific match that sends requests to the
    /// application: on its paths a returning visitor would not keep their variant.
    pub fn split_conflict(&self) -> Option<Refusal> {
        // The split goes into the production route and the routes of the Domains that
        // serve production.
        [ServedHostname::Production, ServedHostname::Domain]
            .into_iter()
            .find_map(|served| self.split_conflict_for(served))
    }

    fn split_conflict_for(&self, served: ServedHostname) -> Option<Refusal> {
        let catch_all = self.catch_all(served);
        let conflict = |r: &PlacedRule, why: &str| Refusal {
            reason: "EdgeRuleConflict",
            field: "spec.projectRef".into(),
            message: format!(
                "{} of EdgeHandler {:?} {why}; narrow it with appliesTo or stop the split test",
                r.label(),
                r.handler
            ),
        };
        for rule in self.rules.iter().filter(|r| r.serves(served)) {
            if is_regex(&rule.rule) {
                return Some(conflict(
                    rule,
                    "matches a regular-expression path, whose rank against the split's rules is the gateway's choice",
                ));
            }
            if Some(rule) == catch_all {
                if !rule.rule.matches.query_params.is_empty() {
                    return Some(conflict(
                        rule,
                        "matches every path by query parameters, which the split's rules would outrank",
                    ));
                }
                continue;
            }
            if rule.rule.rewrite.is_some() || rule.rule.headers.is_some() {
                return Some(conflict(
                    rule,
                    "sends its requests to the application by a match the split's rules cannot carry, so a returning visitor would not keep their variant there",
                ));
            }
        }
        None
    }

    /// How many rules this plan puts in a route for `served` hostnames.
    pub fn rule_count(&self, served: ServedHostname) -> usize {
        self.rules.iter().filter(|r| r.serves(served)).count()
    }

    fn render(&self, placed: &PlacedRule, serving: &Serving) -> HttpRouteRules {
        let rule = &placed.rule;
        let matches = Some(vec![route_match(&rule.matches)]);
        let name = Some(super::bounded_to(
            &format!("edge-{}-{}", placed.handler, placed.index),
            253,
        ));
        let app = || Some(serving.backends());
        let (filters, backend_refs) = if let Some(redirect) = &rule.redirect {
            let filter = HttpRouteRulesFilters {
                r#type: HttpRouteRulesFiltersType::RequestRedirect,
                request_redirect: Some(HttpRouteRulesFiltersRequestRedirect {
                    scheme: redirect.scheme.as_deref().map(|s| match s {
                        "http" => HttpRouteRulesFiltersRequestRedirectScheme::Http,
                        _ => HttpRouteRulesFiltersRequestRedirectScheme::Https,
                    }),
                    hostname: redirect.hostname.clone(),
                    path: redirect.path.as_ref().map(redirect_path),
                    port: redirect.port,
                    status_code: Some(i64::from(redirect.status_code)),
                }),
                ..filter_defaults(HttpRouteRulesFiltersType::RequestRedirect)
            };
            // Gateway API refuses backends next to a redirect.
            (vec![filter], None)
        } else if let Some(rewrite) = &rule.rewrite {
            let filter = HttpRouteRulesFilters {
                url_rewrite: Some(HttpRouteRulesFiltersUrlRewrite {
                    hostname: rewrite.hostname.clone(),
                    path: rewrite.path.as_ref().map(rewrite_path),
                }),
                ..filter_defaults(HttpRouteRulesFiltersType::UrlRewrite)
            };
            (vec![filter], app())
        } else if let Some(headers) = &rule.headers {
            let mut filters = Vec::new();
            if let Some(changes) = &headers.request {
                filters.push(HttpRouteRulesFilters {
                    request_header_modifier: Some(request_headers(changes)),
                    ..filter_defaults(HttpRouteRulesFiltersType::RequestHeaderModifier)
                });
            }
            if let Some(changes) = &headers.response {
                filters.push(HttpRouteRulesFilters {
                    response_header_modifier: Some(response_headers(changes)),
                    ..filter_defaults(HttpRouteRulesFiltersType::ResponseHeaderModifier)
                });
            }
            (filters, app())
        } else if let (Some(deny), Some(responder)) = (&rule.deny, &self.responder) {
            let filter = HttpRouteRulesFilters {
                request_header_modifier: Some(HttpRouteRulesFiltersRequestHeaderModifier {
                    set: Some(vec![HttpRouteRulesFiltersRequestHeaderModifierSet {
                        name: DENY_STATUS_HEADER.into(),
                        value: deny.status_code.to_string(),
                    }]),
                    ..Default::default()
                }),
                ..filter_defaults(HttpRouteRulesFiltersType::RequestHeaderModifier)
            };
            let backend = HttpRouteRulesBackendRefs {
                namespace: Some(responder.namespace.clone()),
                port: Some(responder.port),
                ..super::service_backend(&responder.name)
            };
            (vec![filter], Some(vec![backend]))
        } else {
            // Unreachable: admission requires one action and `admit` a responder for deny.
            (Vec::new(), app())
        };
        HttpRouteRules {
            name,
            matches,
            filters: Some(filters),
            backend_refs,
            ..Default::default()
        }
    }
}

/// Whether Gateway API could apply `later` where EdgeHandler order says `earlier`: both can
/// match one request on one hostname, and the gateway ranks `later` higher (or the order of
/// a regular-expression path is the gateway's own choice).
fn reordered(earlier: &PlacedRule, later: &PlacedRule) -> bool {
    let share_hostnames = ServedHostname::ALL
        .iter()
        .any(|s| earlier.serves(*s) && later.serves(*s));
    if !share_hostnames || !paths_overlap(&earlier.rule.matches.path, &later.rule.matches.path) {
        return false;
    }
    if is_regex(&earlier.rule) || is_regex(&later.rule) {
        return true;
    }
    rank(&later.rule) > rank(&earlier.rule)
}

fn is_regex(rule: &EdgeRule) -> bool {
    rule.matches.path.kind == MatchType::RegularExpression
}

/// Gateway API's precedence among non-regex matches: Exact over prefix, longer prefix,
/// more header matches, more query matches.
fn rank(rule: &EdgeRule) -> (bool, usize, usize, usize) {
    let path = &rule.matches.path;
    let exact = path.kind == MatchType::Exact;
    let length = if exact { 0 } else { path.value.len() };
    (
        exact,
        length,
        rule.matches.headers.len(),
        rule.matches.query_params.len(),
    )
}

/// Whether one request path can satisfy both conditions. Header and query conditions are
/// not used to prove two rules apart: a request may repeat a header or a parameter.
fn paths_overlap(a: &PathMatch, b: &PathMatch) -> bool {
    use MatchType::*;
    match (a.kind, b.kind) {
        (RegularExpression, _) | (_, RegularExpression) => true,
        (Exact, Exact) => a.value == b.value,
        (Exact, PathPrefix) => under_prefix(&a.value, &b.value),
        (PathPrefix, Exact) => under_prefix(&b.value, &a.value),
        (PathPrefix, PathPrefix) => {
            under_prefix(&a.value, &b.value) || under_prefix(&b.value, &a.value)
        }
    }
}

/// Whether `path` is matched by the segment-wise prefix `prefix` (`/blog` matches `/blog`
/// and `/blog/x`, not `/blogs`).
fn under_prefix(path: &str, prefix: &str) -> bool {
    let prefix = prefix.trim_end_matches('/');
    let path = path.trim_end_matches('/');
    prefix.is_empty()
        || path == prefix
        || path
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('/'))
}

fn filter_defaults(kind: HttpRouteRulesFiltersType) -> HttpRouteRulesFilters {
    HttpRouteRulesFilters {
        r#type: kind,
        cors: None,
        extension_ref: None,
        request_header_modifier: None,
        request_mirror: None,
        request_redirect: None,
        response_header_modifier: None,
        url_rewrite: None,
    }
}

fn route_match(matches: &crate::api::edge_handler::RequestMatch) -> HttpRouteRulesMatches {
    let path_type = match matches.path.kind {
        MatchType::PathPrefix => HttpRouteRulesMatchesPathType::PathPrefix,
        MatchType::Exact => HttpRouteRulesMatchesPathType::Exact,
        MatchType::RegularExpression => HttpRouteRulesMatchesPathType::RegularExpression,
    };
    let regex = |m: &ValueMatch| m.kind == ValueMatchType::RegularExpression;
    HttpRouteRulesMatches {
        path: Some(HttpRouteRulesMatchesPath {
            r#type: Some(path_type),
            value: Some(matches.path.value.clone()),
        }),
        headers: (!matches.headers.is_empty()).then(|| {
            matches
                .headers
                .iter()
                .map(|m| HttpRouteRulesMatchesHeaders {
                    name: m.name.clone(),
                    value: m.value.clone(),
                    r#type: Some(if regex(m) {
                        HttpRouteRulesMatchesHeadersType::RegularExpression
                    } else {
                        HttpRouteRulesMatchesHeadersType::Exact
                    }),
                })
                .collect()
        }),
        query_params: (!matches.query_params.is_empty()).then(|| {
            matches
                .query_params
                .iter()
                .map(|m| HttpRouteRulesMatchesQueryParams {
                    name: m.name.clone(),
                    value: m.value.clone(),
                    r#type: Some(if regex(m) {
                        HttpRouteRulesMatchesQueryParamsType::RegularExpression
                    } else {
                        HttpRouteRulesMatchesQueryParamsType::Exact
                    }),
                })
                .collect()
        }),
        method: None,
    }
}

fn redirect_path(path: &PathModifier) -> HttpRouteRulesFiltersRequestRedirectPath {
    HttpRouteRulesFiltersRequestRedirectPath {
        r#type: if path.replace_prefix_match.is_some() {
            HttpRouteRulesFiltersRequestRedirectPathType::ReplacePrefixMatch
        } else {
            HttpRouteRulesFiltersRequestRedirectPathType::ReplaceFullPath
        },
        replace_full_path: path.replace_full_path.clone(),
        replace_prefix_match: path.replace_prefix_match.clone(),
    }
}

fn rewrite_path(path: &PathModifier) -> HttpRouteRulesFiltersUrlRewritePath {
    HttpRouteRulesFiltersUrlRewritePath {
        r#type: if path.replace_prefix_match.is_some() {
            HttpRouteRulesFiltersUrlRewritePathType::ReplacePrefixMatch
        } else {
            HttpRouteRulesFiltersUrlRewritePathType::ReplaceFullPath
        },
        replace_full_path: path.replace_full_path.clone(),
        replace_prefix_match: path.replace_prefix_match.clone(),
    }
}

fn nonempty<T>(items: Vec<T>) -> Option<Vec<T>> {
    (!items.is_empty()).then_some(items)
}

/// A request or response header modifier from [`HeaderChanges`]: the two Gateway API
/// types have the same shape under different names.
macro_rules! header_modifier {
    ($changes:expr, $modifier:ident, $add:ident, $set:ident) => {
        $modifier {
            add: nonempty(
                $changes
                    .add
                    .iter()
                    .map(|h| $add {
                        name: h.name.clone(),
                        value: h.value.clone(),
                    })
                    .collect(),
            ),
            set: nonempty(
                $changes
                    .set
                    .iter()
                    .map(|h| $set {
                        name: h.name.clone(),
                        value: h.value.clone(),
                    })
                    .collect(),
            ),
            remove: nonempty($changes.remove.clone()),
        }
    };
}

fn request_headers(changes: &HeaderChanges) -> HttpRouteRulesFiltersRequestHeaderModifier {
    header_modifier!(
        changes,
        HttpRouteRulesFiltersRequestHeaderModifier,
        HttpRouteRulesFiltersRequestHeaderModifierAdd,
        HttpRouteRulesFiltersRequestHeaderModifierSet
    )
}

fn response_headers(changes: &HeaderChanges) -> HttpRouteRulesFiltersResponseHeaderModifier {
    header_modifier!(
        changes,
        HttpRouteRulesFiltersResponseHeaderModifier,
        HttpRouteRulesFiltersResponseHeaderModifierAdd,
        HttpRouteRulesFiltersResponseHeaderModifierSet
    )
}

#[cfg(test)]
mod tests {
    use gateway_api::apis::standard::httproutes::HttpRouteRulesFiltersRequestRedirectPathType as RedirectPath;
    use serde_json::{Value, json};

    use super::*;

    fn handler(name: &str, rules: Value) -> EdgeHandler {
        serde_json::from_value(json!({
            "apiVersion": "clouddeck.io/v1alpha1",
            "kind": "EdgeHandler",
            "metadata": { "name": name, "namespace": "team" },
            "spec": { "projectRef": { "name": "web" }, "rules": rules }
        }))
        .unwrap()
    }

    fn prefix(path: &str) -> Value {
        json!({ "path": { "type": "PathPrefix", "value": path } })
    }

    fn headers_rule(matches: Value) -> Value {
        json!({ "match": matches, "headers": { "response": { "set": [{ "name": "X-A", "value": "1" }] } } })
    }

    fn responder() -> ServicePort {
        ServicePort {
            namespace: "clouddeck-system".into(),
            name: "clouddeck-responder".into(),
            port: 8080,
        }
    }

    fn plan_all(handlers: &[EdgeHandler]) -> EdgePlan {
        let refs: Vec<&EdgeHandler> = handlers.iter().collect();
        EdgePlan::new(&refs, Some(&responder()))
    }

    fn refusal(plan: &EdgePlan, name: &str) -> Refusal {
        plan.handlers[name].clone().unwrap_err()
    }

    #[test]
    fn the_sample_becomes_a_redirect_and_a_header_rule_before_the_app() {
        let sample = handler(
            "storefront-edge",
            json!([
                { "name": "legacy-blog", "match": prefix("/blog"),
                  "redirect": { "path": { "replacePrefixMatch": "/articles" }, "statusCode": 301 } },
                { "name": "security-headers",
                  "headers": { "response": {
                      "set": [{ "name": "X-Frame-Options", "value": "DENY" }],
                      "remove": ["X-Powered-By"] } } }
            ]),
        );
        let plan = plan_all(&[sample]);
        assert_eq!(plan.handlers["storefront-edge"], Ok(2));
        let rules = plan.route_rules(ServedHostname::Production, &Serving::Service("web-3"));
        assert_eq!(rules.len(), 2);

        let redirect = &rules[0];
        assert_eq!(redirect.backend_refs, None, "a redirect has no backend");
        let filter = &redirect.filters.as_ref().unwrap()[0];
        let to = filter.request_redirect.as_ref().unwrap();
        assert_eq!(to.status_code, Some(301));
        let path = to.path.as_ref().unwrap();
        assert_eq!(path.r#type, RedirectPath::ReplacePrefixMatch);
        assert_eq!(path.replace_prefix_match.as_deref(), Some("/articles"));
        let matched = &redirect.matches.as_ref().unwrap()[0];
        assert_eq!(
            matched.path.as_ref().unwrap().value.as_deref(),
            Some("/blog")
        );

        let headers = &rules[1];
        let modifier = headers.filters.as_ref().unwrap()[0]
            .response_header_modifier
            .as_ref()
            .unwrap();
        assert_eq!(modifier.set.as_ref().unwrap()[0].name, "X-Frame-Options");
        assert_eq!(
            modifier.remove.as_deref(),
            Some(&["X-Powered-By".to_owned()][..])
        );
        assert_eq!(headers.backend_refs.as_ref().unwrap()[0].name, "web-3");
    }

    #[test]
    fn a_later_rule_the_gateway_would_rank_first_is_refused() {
        // Each pair: (earlier, later). The gateway prefers the later one for some request
        // both match, so the order the user wrote would not hold.
        let reordered = [
            (prefix("/"), prefix("/admin")),
            (prefix("/api"), prefix("/api/v2")),
            (
                prefix("/api"),
                json!({ "path": { "type": "Exact", "value": "/api/health" } }),
            ),
            (
                prefix("/api"),
                json!({ "path": { "type": "PathPrefix", "value": "/api" },
                                     "headers": [{ "name": "X-Beta", "value": "1" }] }),
            ),
            (
                prefix("/api"),
                json!({ "path": { "type": "PathPrefix", "value": "/api" },
                                     "queryParams": [{ "name": "debug", "value": "1" }] }),
            ),
            (
                prefix("/"),
                json!({ "path": { "type": "RegularExpression", "value": "^/x.*" } }),
            ),
            (
                json!({ "path": { "type": "RegularExpression", "value": "^/x.*" } }),
                prefix("/y"),
            ),
        ];
        for (earlier, later) in reordered {
            let plan = plan_all(&[handler(
                "h",
                json!([headers_rule(earlier.clone()), headers_rule(later.clone())]),
            )]);
            let refused = refusal(&plan, "h");
            assert_eq!(refused.reason, "RuleOrder", "{earlier} then {later}");
            assert_eq!(refused.field, "spec.rules[1].match");
            assert!(
                refused.message.contains("spec.rules[0]"),
                "{}",
                refused.message
            );
            assert!(plan.is_empty(), "a refused handler applies nothing");

            // The other way round the gateway's order is the user's.
            let regex = [&earlier, &later]
                .iter()
                .any(|m| m["path"]["type"] == "RegularExpression");
            let plan = plan_swapped(later, earlier);
            assert_eq!(plan.handlers["h"].is_ok(), !regex);
        }
    }

    fn plan_swapped(first: Value, second: Value) -> EdgePlan {
        plan_all(&[handler(
            "h",
            json!([headers_rule(first), headers_rule(second)]),
        )])
    }

    #[test]
    fn rules_that_share_no_request_keep_any_order() {
        let disjoint = [
            (prefix("/api"), prefix("/apix/v2")),
            (
                prefix("/blog"),
                json!({ "path": { "type": "Exact", "value": "/about" } }),
            ),
            (
                json!({ "path": { "type": "Exact", "value": "/a" } }),
                json!({ "path": { "type": "Exact", "value": "/b" } }),
            ),
            // Equal rank: the gateway falls back to list order, which is the user's.
            (prefix("/"), json!({})),
        ];
        for (earlier, later) in disjoint {
            let plan = plan_swapped(earlier.clone(), later.clone());
            assert_eq!(plan.handlers["h"], Ok(2), "{earlier} then {later}");
        }
    }

    #[test]
    fn handlers_merge_by_name_and_a_conflict_refuses_the_later_one() {
        let a = handler("a-headers", json!([headers_rule(prefix("/"))]));
        let b = handler(
            "b-admin",
            json!([{ "match": prefix("/admin"), "deny": {} }]),
        );
        let plan = plan_all(&[b.clone(), a.clone()]);
        assert_eq!(plan.handlers["a-headers"], Ok(1));
        let refused = refusal(&plan, "b-admin");
        assert_eq!(refused.reason, "RuleOrder");
        assert!(
            refused.message.contains("of EdgeHandler \"a-headers\""),
            "{}",
            refused.message
        );
        assert_eq!(
            plan.route_rules(ServedHostname::Production, &Serving::Service("web-1"))
                .len(),
            1
        );

        // Named so that it comes first, the deny rule stands.
        let first = handler(
            "0-admin",
            b.spec
                .rules
                .iter()
                .map(|r| serde_json::to_value(r).unwrap())
                .collect::<Value>(),
        );
        let plan = plan_all(&[a, first]);
        assert_eq!(plan.handlers["0-admin"], Ok(1));
        assert_eq!(plan.handlers["a-headers"], Ok(1));
        let rules = plan.route_rules(ServedHostname::Production, &Serving::Service("web-1"));
        assert!(
            rules[0]
                .name
                .as_deref()
                .unwrap()
                .starts_with("edge-0-admin")
        );
    }

    #[test]
    fn applies_to_narrows_the_hostnames_and_the_order_checks() {
        let h = handler(
            "h",
            json!([
                { "match": prefix("/"), "appliesTo": ["Production"],
                  "headers": { "request": { "set": [{ "name": "X-Env", "value": "prod" }] } } },
                { "match": prefix("/admin"), "appliesTo": ["Preview", "BranchAlias"], "deny": { "statusCode": 401 } }
            ]),
        );
        let plan = plan_all(&[h]);
        assert_eq!(plan.handlers["h"], Ok(2));
        assert_eq!(
            plan.route_rules(ServedHostname::Production, &Serving::Service("s"))
                .len(),
            1
        );
        assert_eq!(
            plan.route_rules(ServedHostname::Domain, &Serving::Service("s"))
                .len(),
            0
        );
        let preview = plan.route_rules(ServedHostname::Preview, &Serving::Service("s"));
        assert_eq!(preview.len(), 1);
        let backend = &preview[0].backend_refs.as_ref().unwrap()[0];
        assert_eq!(backend.name, "clouddeck-responder");
        assert_eq!(backend.namespace.as_deref(), Some("clouddeck-system"));
        assert_eq!(backend.port, Some(8080));
        let set = preview[0].filters.as_ref().unwrap()[0]
            .request_header_modifier
            .as_ref()
            .unwrap()
            .set
            .clone()
            .unwrap();
        assert_eq!(
            (set[0].name.as_str(), set[0].value.as_str()),
            (DENY_STATUS_HEADER, "401")
        );
    }

    #[test]
    fn more_rules_than_a_route_holds_refuses_the_handler_that_overflows() {
        let rules = |n: usize, applies: Value| {
            (0..n)
                .map(|i| {
                    let mut rule = headers_rule(
                        json!({ "path": { "type": "Exact", "value": format!("/p{i}") } }),
                    );
                    rule["appliesTo"] = applies.clone();
                    rule
                })
                .collect::<Value>()
        };
        let a = handler("a", rules(10, json!(["Production"])));
        let b = handler("b", rules(6, json!([])));
        let plan1 = plan_all(&[a.clone(), b]);
        assert_eq!(plan1.handlers["a"], Ok(10));
        let refused = refusal(&plan1, "b");
        assert_eq!(
            (refused.reason, refused.field.as_str()),
            ("TooManyRules", "spec.rules")
        );
        assert!(
            refused.message.contains("Production routes would need 16"),
            "{}",
            refused.message
        );

        let c = handler("c", rules(6, json!(["Preview", "Domain"])));
        assert_eq!(plan_all(&[a, c]).handlers["c"], Ok(6));
    }

    #[test]
    fn deny_needs_a_responder_and_regexes_must_compile() {
        let deny = handler("d", json!([{ "match": prefix("/admin"), "deny": {} }]));
        let plan_without = EdgePlan::new(&[&deny], None);
        let refused = refusal(&plan_without, "d");
        assert_eq!(
            (refused.reason, refused.field.as_str()),
            ("NoDenyResponder", "spec.rules[0].deny")
        );
        assert_eq!(plan_all(&[deny]).handlers["d"], Ok(1));

        let broken = handler(
            "r",
            json!([headers_rule(
                json!({ "path": { "type": "RegularExpression", "value": "/(unclosed" } })
            )]),
        );
        let refused = refusal(&plan_all(&[broken]), "r");
        assert_eq!(
            (refused.reason, refused.field.as_str()),
            ("InvalidSpec", "spec.rules[0].match.path.value")
        );
    }

    #[test]
    fn the_digest_names_the_applied_rules() {
        assert_eq!(plan_all(&[]).digest(), None);
        let a = handler("a", json!([headers_rule(prefix("/a"))]));
        let b = handler("b", json!([headers_rule(prefix("/b"))]));
        let one = plan_all(&[a.clone(), b.clone()]).digest().unwrap();
        assert_eq!(plan_all(&[b.clone(), a.clone()]).digest().unwrap(), one);
        let changed = handler("b", json!([headers_rule(prefix("/c"))]));
        assert_ne!(plan_all(&[a, changed]).digest().unwrap(), one);
        assert_eq!(one.len(), 16);
    }
}
