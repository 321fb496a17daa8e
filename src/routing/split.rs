//! Split tests: when a SplitTest runs, which Deployment serves each variant, and the rules
//! of the production route that send each visitor to one of them.
//!
//! Standard Gateway API only. A first-time visitor gets a variant by weight (weighted
//! backendRefs), and the backend that answers sets the sticky cookie (a
//! ResponseHeaderModifier on each backendRef). A returning visitor's cookie is matched
//! (a `Cookie` header match by regular expression) and sends them to their variant. The
//! override header and cookie force a variant the same way. All of these rules match the
//! path `/` and one header, so Gateway API ranks them equally and list order decides: the
//! override header, then the override cookie, then the sticky cookie.

use gateway_api::apis::standard::httproutes::{
    HttpRouteRules, HttpRouteRulesBackendRefs, HttpRouteRulesBackendRefsFilters,
    HttpRouteRulesBackendRefsFiltersResponseHeaderModifier,
    HttpRouteRulesBackendRefsFiltersResponseHeaderModifierAdd,
    HttpRouteRulesBackendRefsFiltersType, HttpRouteRulesMatches, HttpRouteRulesMatchesHeaders,
    HttpRouteRulesMatchesHeadersType, HttpRouteRulesMatchesPath, HttpRouteRulesMatchesPathType,
};
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;

use crate::api::deployment::{Deployment, DeploymentPhase};
use crate::api::split_test::{SplitTest, SplitTestPhase, SplitTestSpec};

/// Annotation on the production route: the SplitTest it carries and a digest of its plan.
pub const SPLIT_TEST_ANNOTATION: &str = "clouddeck.io/split-test";

/// Annotation on a split production route: the Deployment production serves outside the
/// split (the route's own backends are the variants).
pub const PRODUCTION_ANNOTATION: &str = "clouddeck.io/production-deployment";

/// Where a SplitTest stands at `now`, and when that changes next (start or stop time).
pub fn window(spec: &SplitTestSpec, now: Timestamp) -> (SplitTestPhase, Option<Timestamp>) {
    let start = spec.start_time.as_ref().map(|t| t.0);
    let stop = spec.stop_time.as_ref().map(|t| t.0);
    if !spec.active || stop.is_some_and(|stop| stop <= now) {
        return (SplitTestPhase::Stopped, None);
    }
    match start {
        Some(start) if start > now => (SplitTestPhase::Scheduled, Some(start)),
        _ => (SplitTestPhase::Running, stop),
    }
}

/// One variant and the Deployment (its Service) that serves it, if one is Ready.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolved {
    pub name: String,
    pub deployment: Option<String>,
    pub weight: i32,
}

/// Resolves each variant among the Project's `deployments`: a named Deployment when it is
/// Ready, or the newest Ready Deployment of a branch.
pub fn resolve(spec: &SplitTestSpec, deployments: &[Deployment]) -> Vec<Resolved> {
    let ready = |d: &&Deployment| {
        d.spec.project_ref.name == spec.project_ref.name
            && d.status.as_ref().and_then(|s| s.phase) == Some(DeploymentPhase::Ready)
    };
    spec.variants
        .iter()
        .map(|variant| {
            let deployment = match (&variant.deployment, &variant.branch) {
                (Some(name), _) => deployments
                    .iter()
                    .filter(ready)
                    .find(|d| &d.name_any() == name)
                    .map(|d| d.name_any()),
                (None, Some(branch)) => deployments
                    .iter()
                    .filter(ready)
                    .filter(|d| d.spec.source.git.as_ref().map(|g| &g.branch) == Some(branch))
                    .max_by_key(|d| {
                        (
                            d.metadata.creation_timestamp.as_ref().map(|t| t.0),
                            d.name_any(),
                        )
                    })
                    .map(|d| d.name_any()),
                (None, None) => None,
            };
            Resolved {
                name: variant.name.clone(),
                deployment,
                weight: variant.weight,
            }
        })
        .collect()
}

/// A running split with at least two variants served: what the production route needs.
#[derive(Clone, Debug, PartialEq)]
pub struct SplitPlan {
    pub test: String,
    /// Served variants: name, Service (the Deployment's name), weight as given.
    pub variants: Vec<(String, String, i32)>,
    sticky_cookie: String,
    max_age: i32,
    force_header: String,
    force_cookie: String,
}

impl SplitPlan {
    /// The plan of `test`, from its resolved variants. `None` when fewer than two variants
    /// with weight are served (production is then plain: no route to nothing).
    pub fn new(test: &SplitTest, resolved: &[Resolved]) -> Option<SplitPlan> {
        let variants: Vec<(String, String, i32)> = resolved
            .iter()
            .filter(|v| v.weight > 0)
            .filter_map(|v| Some((v.name.clone(), v.deployment.clone()?, v.weight)))
            .collect();
        (variants.len() >= 2).then(|| SplitPlan {
            test: test.name_any(),
            variants,
            sticky_cookie: test.spec.stickiness.cookie_name.clone(),
            max_age: test.spec.stickiness.max_age_seconds,
            force_header: test.spec.force.header.clone(),
            force_cookie: test.spec.force.cookie.clone(),
        })
    }

    /// The weight each served variant gets, in percent of the total (a variant with no
    /// Ready Deployment gives its share to the others in proportion).
    pub fn effective_weights(&self) -> Vec<(String, i32)> {
        let total: i32 = self.variants.iter().map(|v| v.2).sum();
        self.variants
            .iter()
            .map(|(name, _, weight)| (name.clone(), weight * 100 / total.max(1)))
            .collect()
    }

    /// How many rules the split adds before the route's last rule: three per variant.
    pub fn rule_count(&self) -> usize {
        3 * self.variants.len()
    }

    /// Names the plan, for [`SPLIT_TEST_ANNOTATION`].
    pub fn digest(&self) -> String {
        let text = format!(
            "{:?}|{}|{}|{}|{}",
            self.variants, self.sticky_cookie, self.max_age, self.force_header, self.force_cookie
        );
        let sum = ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
        let hex: String = sum.as_ref()[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        format!("{}/{hex}", self.test)
    }

    /// First-time visitors: every served variant by weight, each answer setting the sticky
    /// cookie to that variant.
    pub fn weighted_backends(&self) -> Vec<HttpRouteRulesBackendRefs> {
        self.variants
            .iter()
            .map(|(name, service, weight)| HttpRouteRulesBackendRefs {
                weight: Some(*weight),
                filters: Some(vec![HttpRouteRulesBackendRefsFilters {
                    r#type: HttpRouteRulesBackendRefsFiltersType::ResponseHeaderModifier,
                    response_header_modifier: Some(
                        HttpRouteRulesBackendRefsFiltersResponseHeaderModifier {
                            add: Some(vec![
                                HttpRouteRulesBackendRefsFiltersResponseHeaderModifierAdd {
                                    name: "Set-Cookie".into(),
                                    value: format!(
                                        "{}={name}; Max-Age={}; Path=/; SameSite=Lax",
                                        self.sticky_cookie, self.max_age
                                    ),
                                },
                            ]),
                            ..Default::default()
                        },
                    ),
                    ..Default::default()
                }]),
                ..super::service_backend(service)
            })
            .collect()
    }

    /// The rules that send a visitor who names a variant (override header, override
    /// cookie) or has one (sticky cookie) to it, in that order. `action` gives each rule
    /// the filters and backend of the edge rule that every request would otherwise meet
    /// (see [`super::edge::EdgePlan::catch_all`]); `None` sends it to the variant.
    pub fn variant_rules(
        &self,
        action: impl Fn(
            &str,
        ) -> (
            Option<Vec<gateway_api::apis::standard::httproutes::HttpRouteRulesFilters>>,
            Option<Vec<HttpRouteRulesBackendRefs>>,
        ),
    ) -> Vec<HttpRouteRules> {
        let cookie = |cookie: &str, variant: &str| HttpRouteRulesMatchesHeaders {
            name: "Cookie".into(),
            r#type: Some(HttpRouteRulesMatchesHeadersType::RegularExpression),
            value: format!(
                "(^|;\\s*){}={}(;|$)",
                regex::escape(cookie),
                regex::escape(variant)
            ),
        };
        let mut rules = Vec::new();
        for kind in ["header", "cookie", "sticky"] {
            for (name, service, _) in &self.variants {
                let header = match kind {
                    "header" => HttpRouteRulesMatchesHeaders {
                        name: self.force_header.clone(),
                        r#type: Some(HttpRouteRulesMatchesHeadersType::Exact),
                        value: name.clone(),
                    },
                    "cookie" => cookie(&self.force_cookie, name),
                    _ => cookie(&self.sticky_cookie, name),
                };
                let (filters, backends) = action(service);
                rules.push(HttpRouteRules {
                    name: Some(super::bounded_to(&format!("split-{kind}-{name}"), 253)),
                    matches: Some(vec![HttpRouteRulesMatches {
                        path: Some(HttpRouteRulesMatchesPath {
                            r#type: Some(HttpRouteRulesMatchesPathType::PathPrefix),
                            value: Some("/".into()),
                        }),
                        headers: Some(vec![header]),
                        ..Default::default()
                    }]),
                    filters,
                    backend_refs: backends,
                    ..Default::default()
                });
            }
        }
        rules
    }
}

/// What the production route of a Project does about its SplitTests at `now`.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    /// The SplitTest that splits production now, if any (its plan).
    pub plan: Option<SplitPlan>,
    /// Why the test that would run does not, if that is the case: its name and why.
    pub held: Option<(String, super::edge::Refusal)>,
    /// When a test's window opens or closes next: look again then.
    pub next: Option<Timestamp>,
}

/// Decides among `tests` (the SplitTests of one Project) which one splits production:
/// the oldest running one (creation time, then name), if at least two of its variants are
/// served and the edge rules let it.
pub fn decide(
    tests: &[&SplitTest],
    deployments: &[Deployment],
    edge: &super::edge::EdgePlan,
    now: Timestamp,
) -> Decision {
    let mut decision = Decision {
        plan: None,
        held: None,
        next: None,
    };
    let mut running: Vec<&&SplitTest> = Vec::new();
    for test in tests {
        let (phase, next) = window(&test.spec, now);
        if let Some(next) = next {
            decision.next = Some(decision.next.map_or(next, |n| n.min(next)));
        }
        if phase == SplitTestPhase::Running {
            running.push(test);
        }
    }
    running.sort_by_key(|t| {
        (
            t.metadata.creation_timestamp.as_ref().map(|t| t.0),
            t.name_any(),
        )
    });
    let Some(test) = running.first() else {
        return decision;
    };
    let Some(plan) = SplitPlan::new(test, &resolve(&test.spec, deployments)) else {
        return decision;
    };
    let refusal = edge.split_conflict().or_else(|| {
        use crate::api::edge_handler::ServedHostname::{Domain, Production};
        let count = edge.rule_count(Production).max(edge.rule_count(Domain)) + plan.rule_count();
        (count > super::edge::MAX_EDGE_RULES).then(|| super::edge::Refusal {
            reason: "TooManyRules",
            field: "spec.variants".into(),
            message: format!(
                "the production route (or a Domain's) would need {count} rules before the application's ({} for the split, three per served variant, and the edge rules); an HTTPRoute holds {}",
                plan.rule_count(),
                super::edge::MAX_ROUTE_RULES
            ),
        })
    });
    match refusal {
        Some(refusal) => decision.held = Some((test.name_any(), refusal)),
        None => decision.plan = Some(plan),
    }
    decision
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use serde_json::{Value, json};

    use super::*;
    use crate::api::edge_handler::{EdgeHandler, ServedHostname};
    use crate::routing::Serving;
    use crate::routing::edge::EdgePlan;

    fn at(second: i64) -> Timestamp {
        Timestamp::from_second(second).unwrap()
    }

    fn test(name: &str, created: i64, spec: Value) -> SplitTest {
        let mut spec = spec;
        spec["projectRef"] = json!({ "name": "web" });
        let mut test: SplitTest = serde_json::from_value(json!({
            "apiVersion": "clouddeck.io/v1alpha1", "kind": "SplitTest",
            "metadata": { "name": name, "namespace": "team" },
            "spec": spec
        }))
        .unwrap();
        test.metadata.creation_timestamp = Some(Time(at(created)));
        test
    }

    fn two_variants() -> Value {
        json!({ "variants": [
            { "name": "control", "deployment": "web-1", "weight": 90 },
            { "name": "new", "branch": "feature/new", "weight": 10 }
        ] })
    }

    fn deployment(name: &str, branch: &str, ready: bool, created: i64) -> Deployment {
        let mut d: Deployment = serde_json::from_value(json!({
            "apiVersion": "clouddeck.io/v1alpha1", "kind": "Deployment",
            "metadata": { "name": name, "namespace": "team" },
            "spec": { "projectRef": { "name": "web" }, "target": "preview",
                      "source": { "git": { "branch": branch } } },
            "status": { "phase": if ready { "Ready" } else { "Building" } }
        }))
        .unwrap();
        d.metadata.creation_timestamp = Some(Time(at(created)));
        d
    }

    #[test]
    fn the_window_opens_and_closes_on_time() {
        let mut spec = test("t", 0, two_variants()).spec;
        assert_eq!(window(&spec, at(100)), (SplitTestPhase::Running, None));
        spec.start_time = Some(Time(at(200)));
        spec.stop_time = Some(Time(at(300)));
        assert_eq!(
            window(&spec, at(100)),
            (SplitTestPhase::Scheduled, Some(at(200)))
        );
        assert_eq!(
            window(&spec, at(200)),
            (SplitTestPhase::Running, Some(at(300)))
        );
        assert_eq!(window(&spec, at(300)), (SplitTestPhase::Stopped, None));
        spec.active = false;
        assert_eq!(window(&spec, at(250)), (SplitTestPhase::Stopped, None));
    }

    #[test]
    fn variants_resolve_to_ready_deployments_and_the_newest_of_a_branch() {
        let t = test("t", 0, two_variants());
        let deployments = [
            deployment("web-1", "main", true, 1),
            deployment("web-2", "feature/new", true, 2),
            deployment("web-3", "feature/new", true, 3),
            deployment("web-4", "feature/new", false, 4),
        ];
        let resolved = resolve(&t.spec, &deployments);
        assert_eq!(resolved[0].deployment.as_deref(), Some("web-1"));
        assert_eq!(
            resolved[1].deployment.as_deref(),
            Some("web-3"),
            "newest Ready"
        );
        let plan = SplitPlan::new(&t, &resolved).unwrap();
        assert_eq!(
            plan.effective_weights(),
            [("control".into(), 90), ("new".into(), 10)]
        );

        // Without a Ready Deployment for one of two variants, production is plain.
        let resolved = resolve(&t.spec, &deployments[..1]);
        assert_eq!(resolved[1].deployment, None);
        assert_eq!(SplitPlan::new(&t, &resolved), None);
    }

    #[test]
    fn a_missing_variant_gives_its_share_to_the_others() {
        let t = test(
            "t",
            0,
            json!({ "variants": [
                { "name": "a", "deployment": "web-1", "weight": 50 },
                { "name": "b", "deployment": "web-2", "weight": 30 },
                { "name": "c", "deployment": "web-9", "weight": 20 }
            ] }),
        );
        let deployments = [
            deployment("web-1", "main", true, 1),
            deployment("web-2", "main", true, 2),
        ];
        let plan = SplitPlan::new(&t, &resolve(&t.spec, &deployments)).unwrap();
        assert_eq!(
            plan.effective_weights(),
            [("a".into(), 62), ("b".into(), 37)]
        );
        let backends = plan.weighted_backends();
        assert_eq!(backends.len(), 2);
        assert_eq!(
            (backends[0].weight, backends[1].weight),
            (Some(50), Some(30))
        );
    }

    fn sample_plan() -> SplitPlan {
        let t = test("checkout", 0, two_variants());
        let deployments = [
            deployment("web-1", "main", true, 1),
            deployment("web-3", "feature/new", true, 3),
        ];
        SplitPlan::new(&t, &resolve(&t.spec, &deployments)).unwrap()
    }

    #[test]
    fn forced_then_sticky_rules_then_weights_that_set_the_cookie() {
        let plan = sample_plan();
        let rules =
            EdgePlan::default().route_rules(ServedHostname::Production, &Serving::Split(&plan));
        let names: Vec<&str> = rules.iter().map(|r| r.name.as_deref().unwrap()).collect();
        assert_eq!(
            names,
            [
                "split-header-control",
                "split-header-new",
                "split-cookie-control",
                "split-cookie-new",
                "split-sticky-control",
                "split-sticky-new"
            ]
        );
        let header = &rules[1].matches.as_ref().unwrap()[0]
            .headers
            .as_ref()
            .unwrap()[0];
        assert_eq!(
            (header.name.as_str(), header.value.as_str()),
            ("X-Clouddeck-Variant", "new")
        );
        assert_eq!(rules[1].backend_refs.as_ref().unwrap()[0].name, "web-3");
        // The cookie rules match the cookie by regular expression, among other cookies.
        let sticky = &rules[4].matches.as_ref().unwrap()[0]
            .headers
            .as_ref()
            .unwrap()[0];
        assert_eq!(sticky.name, "Cookie");
        let re = regex::Regex::new(&sticky.value).unwrap();
        assert!(re.is_match("clouddeck-split=control"));
        assert!(re.is_match("a=b; clouddeck-split=control; c=d"));
        assert!(!re.is_match("clouddeck-split=controller"));
        assert!(!re.is_match("xclouddeck-split=control"));
        assert!(!re.is_match("clouddeck-variant=control"));

        let weighted = Serving::Split(&plan).backends();
        let set_cookie = weighted[1].filters.as_ref().unwrap()[0]
            .response_header_modifier
            .as_ref()
            .unwrap()
            .add
            .as_ref()
            .unwrap()[0]
            .clone();
        assert_eq!(set_cookie.name, "Set-Cookie");
        assert_eq!(
            set_cookie.value,
            "clouddeck-split=new; Max-Age=2592000; Path=/; SameSite=Lax"
        );
    }

    fn edge(rules: Value) -> EdgePlan {
        let handler: EdgeHandler = serde_json::from_value(json!({
            "apiVersion": "clouddeck.io/v1alpha1", "kind": "EdgeHandler",
            "metadata": { "name": "edge", "namespace": "team" },
            "spec": { "projectRef": { "name": "web" }, "rules": rules }
        }))
        .unwrap();
        EdgePlan::new(&[&handler], None)
    }

    #[test]
    fn the_split_copies_the_catch_all_edge_rule_it_outranks() {
        // The sample: a redirect for /blog, security headers on everything else.
        let edge = edge(json!([
            { "match": { "path": { "type": "PathPrefix", "value": "/blog" } },
              "redirect": { "hostname": "blog.example.com" } },
            { "headers": { "response": { "set": [{ "name": "X-Frame-Options", "value": "DENY" }] } } }
        ]));
        assert_eq!(edge.split_conflict(), None);
        let plan = sample_plan();
        let rules = edge.route_rules(ServedHostname::Production, &Serving::Split(&plan));
        assert_eq!(rules.len(), 2 + 6);
        // The catch-all edge rule sends first-time visitors by weight, setting the cookie.
        let catch_all = rules[1].backend_refs.as_ref().unwrap();
        assert_eq!(catch_all.len(), 2);
        assert!(catch_all[0].filters.is_some());
        // Every variant rule does what the catch-all does, for its variant.
        for rule in &rules[2..] {
            let filters = rule.filters.as_ref().unwrap();
            assert!(filters[0].response_header_modifier.is_some(), "{rule:?}");
            assert_eq!(rule.backend_refs.as_ref().unwrap().len(), 1);
        }
    }

    #[test]
    fn edge_rules_that_would_lose_the_visitors_variant_hold_the_split() {
        for (rules, what) in [
            (
                json!([{ "match": { "path": { "type": "PathPrefix", "value": "/docs" } },
                      "rewrite": { "path": { "replacePrefixMatch": "/documentation" } } }]),
                "sends its requests",
            ),
            (
                json!([{ "match": { "path": { "type": "RegularExpression", "value": "^/x" } },
                      "redirect": { "hostname": "x.example.com" } }]),
                "regular-expression",
            ),
            (
                json!([{ "match": { "queryParams": [{ "name": "debug", "value": "1" }] },
                      "headers": { "request": { "set": [{ "name": "X-Debug", "value": "1" }] } } }]),
                "query",
            ),
        ] {
            let refusal = edge(rules).split_conflict().expect("a conflict");
            assert_eq!(refusal.reason, "EdgeRuleConflict");
            assert!(refusal.message.contains(what), "{}", refusal.message);
        }
        // A deny or redirect on a narrower path answers the same whatever the variant.
        let fine = edge(
            json!([{ "match": { "path": { "type": "PathPrefix", "value": "/admin" } },
                                 "redirect": { "hostname": "admin.example.com" } }]),
        );
        assert_eq!(fine.split_conflict(), None);
        // Rules that do not apply to production do not matter.
        let elsewhere = edge(json!([{ "appliesTo": ["Preview"],
                                      "match": { "path": { "type": "PathPrefix", "value": "/docs" } },
                                      "rewrite": { "hostname": "docs.internal" } }]));
        assert_eq!(elsewhere.split_conflict(), None);
    }

    #[test]
    fn the_oldest_running_test_splits_and_the_rule_limit_holds() {
        let deployments = [
            deployment("web-1", "main", true, 1),
            deployment("web-3", "feature/new", true, 3),
        ];
        let older = test("b-older", 10, two_variants());
        let newer = test("a-newer", 20, two_variants());
        let mut later = test("c-later", 5, two_variants());
        later.spec.start_time = Some(Time(at(500)));
        let decision = decide(
            &[&newer, &older, &later],
            &deployments,
            &EdgePlan::default(),
            at(100),
        );
        assert_eq!(decision.plan.unwrap().test, "b-older");
        assert_eq!(
            decision.next,
            Some(at(500)),
            "look again when c-later starts"
        );

        // Ten edge rules and six split rules do not fit in one route.
        let rules: Value = (0..10)
            .map(|i| {
                json!({ "match": { "path": { "type": "Exact", "value": format!("/p{i}") } },
                              "redirect": { "hostname": "x.example.com" } })
            })
            .collect();
        let decision = decide(&[&older], &deployments, &edge(rules), at(100));
        assert_eq!(decision.plan, None);
        let (held, refusal) = decision.held.unwrap();
        assert_eq!((held.as_str(), refusal.reason), ("b-older", "TooManyRules"));
    }
}
