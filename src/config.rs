//! The operator's configuration: every setting of `clouddeck run`, from flags or
//! `CLOUDDECK_*` environment variables (a flag wins over its variable).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};

use crate::{Error, Result};

/// Settings of `clouddeck run`. One struct, shared with controllers through
/// [`crate::controllers::Context`].
#[derive(Debug, Clone, Args)]
pub struct OperatorConfig {
    /// Kubeconfig file to use. Without it: $KUBECONFIG, then ~/.kube/config, then the
    /// in-cluster service account.
    #[arg(long, env = "CLOUDDECK_KUBECONFIG", value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,

    /// Client-side rate limit of the controllers' API requests: this many a second on
    /// average (the leader Lease is renewed outside it).
    #[arg(
        long,
        env = "CLOUDDECK_KUBE_API_QPS",
        value_name = "COUNT",
        default_value_t = 50,
        value_parser = clap::value_parser!(u32).range(1..=100_000)
    )]
    pub kube_api_qps: u32,

    /// Client-side rate limit: this many API requests at once before the QPS applies.
    #[arg(
        long,
        env = "CLOUDDECK_KUBE_API_BURST",
        value_name = "COUNT",
        default_value_t = 100,
        value_parser = clap::value_parser!(u32).range(1..=100_000)
    )]
    pub kube_api_burst: u32,

    /// Address of the HTTP server for /healthz, /readyz and /metrics.
    #[arg(
        long,
        env = "CLOUDDECK_LISTEN_ADDR",
        value_name = "IP:PORT",
        default_value = "0.0.0.0:8080"
    )]
    pub listen_addr: SocketAddr,

    /// How long to wait for controllers to finish their work on SIGTERM/SIGINT before
    /// giving up the Lease anyway (e.g. 10s, 1m).
    #[arg(
        long,
        env = "CLOUDDECK_SHUTDOWN_TIMEOUT",
        value_name = "DURATION",
        default_value = "10s",
        value_parser = parse_seconds
    )]
    pub shutdown_timeout: Duration,

    /// How long a controller waits before looking again at a settled object whose every
    /// input it watches (e.g. 1h, 10m): a safety net for an event a watch missed, not a
    /// poll. A look that finds nothing changed sends no API request.
    #[arg(
        long,
        env = "CLOUDDECK_RESYNC_PERIOD",
        value_name = "DURATION",
        default_value = "1h",
        value_parser = parse_seconds
    )]
    pub resync_period: Duration,

    #[command(flatten)]
    pub lease: LeaseConfig,

    #[command(flatten)]
    pub routing: RoutingConfig,

    #[command(flatten)]
    pub domains: DomainConfig,

    #[command(flatten)]
    pub hostnames: HostnameConfig,

    #[command(flatten)]
    pub webhooks: WebhookConfig,

    #[command(flatten)]
    pub build: crate::build::BuildConfig,

    #[command(flatten)]
    pub cron_jobs: CronJobConfig,

    #[command(flatten)]
    pub log: LogConfig,
}

/// The image CronJob runs use for `spec.http` calls. Platform teams pin it (or point it at a
/// mirror) here, like the build images.
#[derive(Debug, Clone, PartialEq, Eq, Args)]
#[command(next_help_heading = "Cron jobs")]
pub struct CronJobConfig {
    /// Image of the runs of a CronJob with `spec.http` (needs `curl` on its PATH; runs as
    /// uid 65534).
    #[arg(
        long,
        env = "CLOUDDECK_HTTP_CALL_IMAGE",
        value_name = "IMAGE",
        default_value = DEFAULT_HTTP_CALL_IMAGE
    )]
    pub http_call_image: String,
}

/// The default of `--http-call-image`.
pub const DEFAULT_HTTP_CALL_IMAGE: &str = "curlimages/curl:8.11.1";

/// Leader election: only the replica holding the Lease runs controllers; the others wait
/// as hot standbys.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Leader election")]
pub struct LeaseConfig {
    /// Name of the coordination.k8s.io Lease the replicas compete for.
    #[arg(
        long = "lease-name",
        env = "CLOUDDECK_LEASE_NAME",
        value_name = "NAME",
        default_value = "clouddeck-leader"
    )]
    pub name: String,

    /// Namespace of the Lease [default: the operator's own namespace (in a cluster), else
    /// the kubeconfig context's namespace, else "default"]
    #[arg(
        long = "lease-namespace",
        env = "CLOUDDECK_LEASE_NAMESPACE",
        value_name = "NAMESPACE"
    )]
    pub namespace: Option<String>,

    /// This replica's identity in the Lease's holderIdentity [default: $POD_NAME, else
    /// <hostname>-<pid>]
    #[arg(
        long = "lease-identity",
        env = "CLOUDDECK_LEASE_IDENTITY",
        value_name = "ID"
    )]
    pub identity: Option<String>,

    /// How long a leader's claim stays valid without renewal. A standby takes over at most
    /// this long after the leader died; on a clean shutdown the leader releases the Lease.
    #[arg(
        long = "lease-duration",
        env = "CLOUDDECK_LEASE_DURATION",
        value_name = "DURATION",
        default_value = "15s",
        value_parser = parse_seconds
    )]
    pub duration: Duration,

    /// How long before its claim expires the leader renews it. Also the clock skew tolerated
    /// between nodes. Must be shorter than --lease-duration.
    #[arg(
        long = "lease-renew-before",
        env = "CLOUDDECK_LEASE_RENEW_BEFORE",
        value_name = "DURATION",
        default_value = "5s",
        value_parser = parse_seconds
    )]
    pub renew_before: Duration,
}

/// Where deployments get their traffic from.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Routing")]
pub struct RoutingConfig {
    /// Name of the Gateway (gateway.networking.k8s.io) that CloudDeck's HTTPRoutes attach to.
    #[arg(
        long,
        env = "CLOUDDECK_GATEWAY_NAME",
        value_name = "NAME",
        default_value = "clouddeck"
    )]
    pub gateway_name: String,

    /// Namespace of that Gateway.
    #[arg(
        long,
        env = "CLOUDDECK_GATEWAY_NAMESPACE",
        value_name = "NAMESPACE",
        default_value = "clouddeck-system"
    )]
    pub gateway_namespace: String,

    /// Domain under which deployments get their own hostnames
    /// (<project>-<id>.<base-domain>); its wildcard DNS record should point at the Gateway.
    #[arg(
        long,
        env = "CLOUDDECK_BASE_DOMAIN",
        value_name = "DOMAIN",
        default_value = "clouddeck.localhost",
        value_parser = parse_domain
    )]
    pub base_domain: String,

    /// The Service that answers EdgeHandler `deny` rules with the status code they name
    /// (`clouddeck responder`; the chart and the kustomize base deploy it), as
    /// NAMESPACE/NAME:PORT. Without it, an EdgeHandler with a `deny` rule is Stalled: a
    /// Gateway API rule with no backend answers 500, never the code the rule asks for.
    #[arg(
        long,
        env = "CLOUDDECK_DENY_RESPONDER",
        value_name = "NAMESPACE/NAME:PORT",
        value_parser = parse_service_port
    )]
    pub deny_responder: Option<ServicePort>,
}

/// A port of a Service in a given namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePort {
    pub namespace: String,
    pub name: String,
    pub port: i32,
}

/// Accepts `NAMESPACE/NAME:PORT`, e.g. `clouddeck-system/clouddeck-responder:8080`.
pub fn parse_service_port(input: &str) -> Result<ServicePort, String> {
    let invalid = || {
        format!(
            "{input:?} is not NAMESPACE/NAME:PORT, e.g. clouddeck-system/clouddeck-responder:8080"
        )
    };
    let (namespace, rest) = input.trim().split_once('/').ok_or_else(invalid)?;
    let (name, port) = rest.rsplit_once(':').ok_or_else(invalid)?;
    let label = |l: &str| parse_domain(l).is_ok_and(|d| d == l && !l.contains('.'));
    let port: i32 = port.parse().map_err(|_| invalid())?;
    if !label(namespace) || !label(name) || !(1..=65535).contains(&port) {
        return Err(invalid());
    }
    Ok(ServicePort {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        port,
    })
}

/// Who owns a hostname (see docs/domains.md, "How CloudDeck decides who owns a hostname").
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Hostnames")]
pub struct HostnameConfig {
    /// How long a hostname stays reserved for its namespace after the Project or Domain
    /// that held it is gone: a delete and re-create in that time (a GitOps replace) keeps
    /// it, and no other namespace can take it before the time is up (e.g. 24h, 30m).
    #[arg(
        long,
        env = "CLOUDDECK_HOSTNAME_RESERVATION",
        value_name = "DURATION",
        default_value = "24h",
        value_parser = parse_seconds
    )]
    pub hostname_reservation: Duration,
}

/// Custom domains: how ownership is verified and where certificates come from.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Domains")]
pub struct DomainConfig {
    /// DNS server that answers the `_clouddeck.<host>` TXT ownership checks [default: the
    /// nameservers of /etc/resolv.conf]. Point it at a resolver that sees public DNS.
    #[arg(long, env = "CLOUDDECK_DNS_SERVER", value_name = "IP:PORT")]
    pub dns_server: Option<SocketAddr>,

    /// Name, in a refused Domain's condition, the namespace that already owns the hostname.
    /// Off by default: a tenant learns only that the hostname is taken.
    #[arg(long, env = "CLOUDDECK_SHOW_CLAIMING_NAMESPACE")]
    pub show_claiming_namespace: bool,

    /// Accept Domains for wildcard hostnames (`*.example.com`).
    #[arg(long, env = "CLOUDDECK_ALLOW_WILDCARD_DOMAINS")]
    pub allow_wildcard_domains: bool,

    /// Raise a `CertificateExpiring` Warning Event when a Domain's certificate expires
    /// within this many days.
    #[arg(
        long,
        env = "CLOUDDECK_CERTIFICATE_EXPIRY_WARNING_DAYS",
        value_name = "DAYS",
        default_value_t = 14
    )]
    pub certificate_expiry_warning_days: u32,

    /// How often the TXT record of a verified Domain (outside the base domain) is looked
    /// up again (e.g. 1h, 10m).
    #[arg(
        long,
        env = "CLOUDDECK_VERIFICATION_RECHECK",
        value_name = "DURATION",
        default_value = "1h",
        value_parser = parse_seconds
    )]
    pub verification_recheck: Duration,

    /// How long a verified Domain keeps serving after its TXT record went missing: a
    /// Warning Event at once, the hostname given up (route, listener, certificate and
    /// claim) when this has passed without the record coming back (e.g. 7d).
    #[arg(
        long,
        env = "CLOUDDECK_VERIFICATION_GRACE",
        value_name = "DURATION",
        default_value = "7d",
        value_parser = parse_seconds
    )]
    pub verification_grace: Duration,

    /// cert-manager ClusterIssuer for Domains that name no issuer nor Secret.
    #[arg(
        long,
        env = "CLOUDDECK_DEFAULT_CLUSTER_ISSUER",
        value_name = "NAME",
        default_value = "letsencrypt-prod"
    )]
    pub default_cluster_issuer: String,

    /// Where a verified Domain's HTTPS listener goes: a ListenerSet in the Domain's
    /// namespace attached to the Gateway (the Gateway must allow them, and its
    /// implementation support them), or a listener added to the Gateway itself, for
    /// gateways without ListenerSet support such as Traefik (see docs/domains.md).
    #[arg(
        long,
        env = "CLOUDDECK_DOMAIN_LISTENERS",
        value_enum,
        default_value_t = DomainListeners::ListenerSet
    )]
    pub domain_listeners: DomainListeners,

    /// Port of a Domain's HTTPS listener. A gateway serves a listener on the port its own
    /// configuration opens for it (Traefik: the entry point with that port).
    #[arg(
        long,
        env = "CLOUDDECK_HTTPS_LISTENER_PORT",
        value_name = "PORT",
        default_value_t = 443,
        value_parser = clap::value_parser!(u16).range(1..)
    )]
    pub https_listener_port: u16,

    /// How long a Domain's HTTPS listener may go without the gateway reporting on it (in
    /// the Gateway's or the ListenerSet's status) before the Domain's `ListenerReady` says
    /// so (e.g. 60s, 5m).
    #[arg(
        long,
        env = "CLOUDDECK_LISTENER_REPORT_TIMEOUT",
        value_name = "DURATION",
        default_value = "60s",
        value_parser = parse_seconds
    )]
    pub listener_report_timeout: Duration,
}

/// Where a verified Domain's HTTPS listener goes (`--domain-listeners`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DomainListeners {
    /// A ListenerSet `<domain>-listener` in the Domain's namespace, owned by the Domain.
    ListenerSet,
    /// A listener on the operator's Gateway, written by server-side apply under a field
    /// manager of the Domain's own and removed with the Domain (a finalizer), and a
    /// ReferenceGrant in the Domain's namespace that lets the Gateway read its Secret.
    Gateway,
}

/// Outbound webhook deliveries.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Webhooks")]
pub struct WebhookConfig {
    /// Destinations webhooks may reach although they are internal (private, loopback,
    /// link-local, CGNAT... refused by default against SSRF): CIDRs, addresses or host
    /// names, comma-separated, e.g. 10.0.0.0/8,hooks.tools.svc,*.svc.cluster.local. Cloud
    /// metadata addresses are allowed only when listed exactly.
    #[arg(
        long = "webhook-allow-cidrs",
        env = "CLOUDDECK_WEBHOOK_ALLOW_CIDRS",
        value_name = "CIDR|HOST,...",
        value_delimiter = ',',
        value_parser = parse_webhook_allow_entry
    )]
    pub allow_cidrs: Vec<String>,

    /// Retention: how long a Delivered delivery is kept (e.g. 24h, 90m, 2s, 1d).
    #[arg(
        long = "webhook-delivered-ttl",
        env = "CLOUDDECK_WEBHOOK_DELIVERED_TTL",
        value_name = "DURATION",
        default_value = "24h",
        value_parser = parse_seconds
    )]
    pub delivered_ttl: Duration,

    /// Retention: how long a Failed delivery is kept (e.g. 7d, 36h, 1d12h).
    #[arg(
        long = "webhook-failed-ttl",
        env = "CLOUDDECK_WEBHOOK_FAILED_TTL",
        value_name = "DURATION",
        default_value = "7d",
        value_parser = parse_seconds
    )]
    pub failed_ttl: Duration,

    /// Retention: at most this many finished (Delivered or Failed) deliveries are kept per
    /// Webhook, the newest ones. Pending and Retrying deliveries are never pruned.
    #[arg(
        long = "webhook-keep-per-webhook",
        env = "CLOUDDECK_WEBHOOK_KEEP_PER_WEBHOOK",
        value_name = "COUNT",
        default_value_t = 100
    )]
    pub keep_per_webhook: usize,

    /// Fan-out cap: at most this many Webhooks of one namespace receive events, the oldest
    /// first (by creation time, then name); the others are Stalled with reason
    /// TooManyWebhooks. One event makes at most this many deliveries per namespace.
    #[arg(
        long = "webhook-max-per-namespace",
        env = "CLOUDDECK_WEBHOOK_MAX_PER_NAMESPACE",
        value_name = "COUNT",
        default_value_t = 50,
        value_parser = clap::value_parser!(u32).range(1..=10_000)
    )]
    pub max_per_namespace: u32,

    /// Fan-out rate: WebhookDeliveries one namespace's events may create per minute (a
    /// minute's worth at once). An event over it is published when the namespace has room
    /// again, and the object that raised it records its change only then.
    #[arg(
        long = "webhook-deliveries-per-minute",
        env = "CLOUDDECK_WEBHOOK_DELIVERIES_PER_MINUTE",
        value_name = "COUNT",
        default_value_t = 600,
        value_parser = clap::value_parser!(u32).range(1..=1_000_000)
    )]
    pub deliveries_per_minute: u32,
}

impl WebhookConfig {
    /// One event to a namespace's every Webhook must fit in a minute's worth of deliveries,
    /// or it could never be published.
    pub fn validate(&self) -> Result<()> {
        if self.deliveries_per_minute < self.max_per_namespace {
            return Err(Error::InvalidConfig(format!(
                "--webhook-deliveries-per-minute ({}) must be at least --webhook-max-per-namespace ({}): one event may go to that many Webhooks at once",
                self.deliveries_per_minute, self.max_per_namespace
            )));
        }
        Ok(())
    }
}

fn parse_webhook_allow_entry(input: &str) -> Result<String, String> {
    crate::delivery::EgressPolicy::from_allowlist(&[input]).map(|_| input.trim().to_owned())
}

#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Logging")]
pub struct LogConfig {
    /// Log format: human-readable lines, or one JSON object per line for log collectors.
    #[arg(long, env = "CLOUDDECK_LOG_FORMAT", value_enum, default_value_t = LogFormat::Pretty)]
    pub log_format: LogFormat,

    /// Log filter, e.g. "info" or "info,clouddeck=debug,kube=warn" [default: $RUST_LOG,
    /// else "info"]
    #[arg(long, env = "CLOUDDECK_LOG_LEVEL", value_name = "FILTER", value_parser = parse_log_filter)]
    pub log_level: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Pretty,
    Json,
}

impl OperatorConfig {
    /// Checks the rules between settings that no single flag's parser can see.
    pub fn validate(&self) -> Result<()> {
        self.lease.validate()?;
        self.webhooks.validate()
    }
}

impl LeaseConfig {
    pub fn validate(&self) -> Result<()> {
        if self.renew_before.is_zero() {
            return Err(Error::InvalidConfig(
                "--lease-renew-before must be at least 1s".into(),
            ));
        }
        if self.renew_before >= self.duration {
            return Err(Error::InvalidConfig(format!(
                "--lease-renew-before ({}s) must be shorter than --lease-duration ({}s)",
                self.renew_before.as_secs(),
                self.duration.as_secs()
            )));
        }
        Ok(())
    }

    /// The identity this replica writes into the Lease: the flag, else `$POD_NAME` (set
    /// through the downward API), else `<hostname>-<pid>`.
    pub fn resolved_identity(&self) -> String {
        resolve_identity(
            self.identity.as_deref(),
            std::env::var("POD_NAME").ok().as_deref(),
            &hostname(),
            std::process::id(),
        )
    }
}

fn resolve_identity(
    explicit: Option<&str>,
    pod_name: Option<&str>,
    hostname: &str,
    pid: u32,
) -> String {
    [explicit, pod_name]
        .into_iter()
        .flatten()
        .map(str::trim)
        .find(|s| !s.is_empty())
        .map(str::to_owned)
        .unwrap_or_else(|| format!("{hostname}-{pid}"))
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "clouddeck".to_owned())
}

/// Parses a whole number of seconds: `15`, `15s`, `2m`, `1h`, `1m30s`.
/// Leases count whole seconds, so fractions are refused rather than rounded.
pub fn parse_seconds(input: &str) -> Result<Duration, String> {
    let input = input.trim();
    if input.is_empty() {
        return Err("empty duration".into());
    }
    if input.bytes().all(|b| b.is_ascii_digit()) {
        return input
            .parse()
            .map(Duration::from_secs)
            .map_err(|e| format!("{input}: {e}"));
    }
    let invalid = || {
        format!("invalid duration {input:?}: use whole seconds like 15, 15s, 2m, 1m30s or 1d12h")
    };
    let mut total: u64 = 0;
    let mut digits = String::new();
    // Units from the largest down, each at most once: `1d12h`, not `12h1d` or `1h1h`.
    let mut smallest_so_far = u64::MAX;
    for c in input.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            _ => return Err(invalid()),
        };
        if unit >= smallest_so_far {
            return Err(invalid());
        }
        smallest_so_far = unit;
        let n: u64 = digits.parse().map_err(|_| invalid())?;
        total = n
            .checked_mul(unit)
            .and_then(|s| total.checked_add(s))
            .ok_or_else(invalid)?;
        digits.clear();
    }
    if !digits.is_empty() {
        return Err(invalid());
    }
    Ok(Duration::from_secs(total))
}

/// Accepts a lowercase DNS name (RFC 1123 labels), as it goes into HTTPRoute hostnames.
pub fn parse_domain(input: &str) -> Result<String, String> {
    let domain = input.trim().trim_end_matches('.');
    let valid_label = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if domain.is_empty() || domain.len() > 253 || !domain.split('.').all(valid_label) {
        return Err(format!(
            "{input:?} is not a DNS name: use lowercase letters, digits, '-' and '.', e.g. apps.example.com"
        ));
    }
    Ok(domain.to_owned())
}

fn parse_log_filter(input: &str) -> Result<String, String> {
    tracing_subscriber::EnvFilter::builder()
        .parse(input)
        .map(|_| input.to_owned())
        .map_err(|e| format!("invalid log filter {input:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        config: OperatorConfig,
    }

    fn parse(args: &[&str]) -> Result<OperatorConfig, clap::Error> {
        Cli::try_parse_from(std::iter::once("clouddeck").chain(args.iter().copied()))
            .map(|c| c.config)
    }

    /// Whether none of the variables the flags read is set (defaults are then the defaults).
    fn env_is_clean() -> bool {
        use clap::CommandFactory;
        Cli::command()
            .get_arguments()
            .filter_map(|arg| arg.get_env())
            .all(|var| std::env::var_os(var).is_none())
    }

    #[test]
    fn defaults_describe_an_in_cluster_deployment() {
        if !env_is_clean() {
            return; // defaults would come from the environment
        }
        let config = parse(&[]).unwrap();
        assert_eq!(config.listen_addr, "0.0.0.0:8080".parse().unwrap());
        assert_eq!(config.lease.name, "clouddeck-leader");
        assert_eq!(config.lease.namespace, None);
        assert_eq!(config.lease.duration, Duration::from_secs(15));
        assert_eq!(config.lease.renew_before, Duration::from_secs(5));
        assert_eq!(config.shutdown_timeout, Duration::from_secs(10));
        assert_eq!(config.routing.gateway_name, "clouddeck");
        assert_eq!(config.routing.gateway_namespace, "clouddeck-system");
        assert_eq!(config.routing.base_domain, "clouddeck.localhost");
        assert_eq!(
            config.domains.domain_listeners,
            DomainListeners::ListenerSet
        );
        assert_eq!(config.domains.https_listener_port, 443);
        assert_eq!(config.log.log_format, LogFormat::Pretty);
        assert_eq!(config.log.log_level, None);
        config.validate().unwrap();
    }

    #[test]
    fn flags_set_every_setting() {
        let config = parse(&[
            "--kubeconfig=/tmp/kc",
            "--listen-addr=127.0.0.1:9000",
            "--lease-name=l",
            "--lease-namespace=ops",
            "--lease-identity=me",
            "--lease-duration=5s",
            "--lease-renew-before=2",
            "--shutdown-timeout=1m",
            "--gateway-name=edge",
            "--gateway-namespace=net",
            "--base-domain=apps.example.com.",
            "--domain-listeners=gateway",
            "--https-listener-port=8443",
            "--log-format=json",
            "--log-level=info,clouddeck=debug",
        ])
        .unwrap();
        assert_eq!(config.kubeconfig, Some(PathBuf::from("/tmp/kc")));
        assert_eq!(config.listen_addr.port(), 9000);
        assert_eq!(config.lease.name, "l");
        assert_eq!(config.lease.namespace.as_deref(), Some("ops"));
        assert_eq!(config.lease.identity.as_deref(), Some("me"));
        assert_eq!(config.lease.duration, Duration::from_secs(5));
        assert_eq!(config.lease.renew_before, Duration::from_secs(2));
        assert_eq!(config.shutdown_timeout, Duration::from_secs(60));
        assert_eq!(config.routing.gateway_name, "edge");
        assert_eq!(config.routing.gateway_namespace, "net");
        assert_eq!(config.routing.base_domain, "apps.example.com");
        assert_eq!(config.domains.domain_listeners, DomainListeners::Gateway);
        assert_eq!(config.domains.https_listener_port, 8443);
        assert_eq!(config.log.log_format, LogFormat::Json);
        assert_eq!(
            config.log.log_level.as_deref(),
            Some("info,clouddeck=debug")
        );
    }

    #[test]
    fn bad_values_are_refused_with_the_flag_named() {
        let err = parse(&["--lease-duration=1.5s"]).unwrap_err().to_string();
        assert!(err.contains("--lease-duration"), "{err}");
        assert!(err.contains("whole seconds"), "{err}");
        assert!(parse(&["--listen-addr=:8080"]).is_err());
        assert!(parse(&["--log-format=xml"]).is_err());
        assert!(parse(&["--base-domain=Not_A_Domain"]).is_err());
        assert!(parse(&["--log-level=info,=,["]).is_err());
    }

    #[test]
    fn renew_must_come_before_expiry() {
        let config = parse(&["--lease-duration=5s", "--lease-renew-before=5s"]).unwrap();
        let err = config.validate().unwrap_err().to_string();
        assert_eq!(
            err,
            "invalid configuration: --lease-renew-before (5s) must be shorter than --lease-duration (5s)"
        );
        let config = parse(&["--lease-renew-before=0"]).unwrap();
        assert!(config.validate().is_err());
    }

    #[test]
    fn every_flag_has_an_environment_variable() {
        use clap::CommandFactory;
        let cmd = Cli::command();
        for arg in cmd.get_arguments().filter(|a| a.get_long().is_some()) {
            let long = arg.get_long().unwrap();
            if long == "help" {
                continue;
            }
            let env = arg
                .get_env()
                .unwrap_or_else(|| panic!("--{long} has no env var"));
            let expected = format!("CLOUDDECK_{}", long.to_uppercase().replace('-', "_"));
            assert_eq!(env.to_str(), Some(expected.as_str()), "--{long}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_seconds("15"), Ok(Duration::from_secs(15)));
        assert_eq!(parse_seconds("15s"), Ok(Duration::from_secs(15)));
        assert_eq!(parse_seconds("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_seconds("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_seconds("1h"), Ok(Duration::from_secs(3600)));
        for bad in ["", "s", "1.5s", "10ms", "5x", "-1", "m5", "30s1m", "1m1m"] {
            assert!(parse_seconds(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn durations_take_days_for_retention() {
        let h = |n: u64| Duration::from_secs(n * 3600);
        assert_eq!(parse_seconds("7d"), Ok(h(7 * 24)));
        assert_eq!(parse_seconds("1d12h"), Ok(h(36)));
        assert_eq!(parse_seconds("24h"), Ok(h(24)));
        assert_eq!(parse_seconds("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_seconds("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_seconds("0d"), Ok(Duration::ZERO));
        for bad in ["", "d", "1.5d", "7dd", "d7", "1h2d", "-1d", "7 days"] {
            assert!(parse_seconds(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn domains() {
        assert_eq!(
            parse_domain("apps.example.com."),
            Ok("apps.example.com".into())
        );
        assert_eq!(parse_domain("localhost"), Ok("localhost".into()));
        for bad in [
            "",
            "UPPER.example.com",
            "-a.example.com",
            "a..b",
            "a_b.com",
            "*.example.com",
        ] {
            assert!(parse_domain(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn identity_prefers_flag_then_pod_name_then_host_and_pid() {
        assert_eq!(resolve_identity(Some("me"), Some("pod-1"), "host", 7), "me");
        assert_eq!(resolve_identity(None, Some("pod-1"), "host", 7), "pod-1");
        assert_eq!(resolve_identity(Some(" "), Some(""), "host", 7), "host-7");
        assert_eq!(resolve_identity(None, None, "host", 7), "host-7");
    }
}
