//! `clouddeck run`: connect, check the CRDs, serve health and metrics, take part in leader
//! election, run the controllers while leading, and shut down in order on SIGTERM/SIGINT:
//! controllers stop first, then the Lease is released, then the HTTP server closes.

use std::sync::Arc;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::client::ClientBuilder;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::api_client::ApiTraffic;
use crate::config::OperatorConfig;
use crate::controllers::{self, Context};
use crate::delivery::OriginKey;
use crate::leader::{LeaderElection, Leadership, LeaseSettings};
use crate::server::{self, Health};
use crate::telemetry::{self, Metrics};
use crate::{Error, Result, api, shutdown};

/// Runs the operator until SIGTERM/SIGINT (then `Ok`) or a fatal error.
pub async fn run(config: OperatorConfig) -> Result<()> {
    config.validate()?;
    let mut terminate = signal(SignalKind::terminate()).map_err(|e| Error::Signal("SIGTERM", e))?;
    let mut interrupt = signal(SignalKind::interrupt()).map_err(|e| Error::Signal("SIGINT", e))?;
    let signalled = async move {
        tokio::select! {
            _ = terminate.recv() => "SIGTERM",
            _ = interrupt.recv() => "SIGINT",
        }
    };
    tokio::pin!(signalled);

    let mut registry = telemetry::registry();
    let metrics = Metrics::new(&mut registry);
    let traffic = ApiTraffic::new(&mut registry, config.kube_api_qps, config.kube_api_burst);
    let (client, url) = connect(&config, Some(&traffic)).await?;
    // The caches' lists and watches: counted, not paced (see `Context::watch_client`).
    let (watch_client, _) = connect(&config, Some(&traffic.unpaced())).await?;
    let (lease_client, _) = connect(&config, None).await?;
    let health = Health::default();

    let listener = TcpListener::bind(config.listen_addr)
        .await
        .map_err(|source| Error::Listen {
            addr: config.listen_addr,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| Error::Listen {
        addr: config.listen_addr,
        source,
    })?;
    info!(%addr, "serving /healthz, /readyz and /metrics");
    let (stop_server, server_stop) = shutdown::channel();
    let server = tokio::spawn(server::serve(
        listener,
        Arc::new(registry),
        health.clone(),
        server_stop,
    ));

    // Startup talks to the API server, which may hang; a signal still ends it promptly.
    let startup = async {
        check_api(&client, &url).await?;
        check_crds(&client, &api::crds()).await?;
        health.crds_verified();
        let settings = lease_settings(&config, &client);
        let origin = OriginKey::load_or_create(&client, &settings.namespace).await?;
        info!(lease = %settings.name, namespace = %settings.namespace, identity = %settings.identity, "joining leader election");
        let (stop_election, election_stop) = shutdown::channel();
        let election = LeaderElection::start(lease_client, settings, election_stop).await?;
        Ok::<_, Error>((stop_election, election, origin))
    };
    let (stop_election, election, origin) = tokio::select! {
        started = startup => started?,
        signal = &mut signalled => {
            info!(signal, "shutting down during startup");
            stop_server.stop();
            return Ok(());
        }
    };

    let leadership = election.leadership();
    tokio::spawn(report_leadership(
        leadership.clone(),
        health.clone(),
        metrics.clone(),
    ));

    let ctx = Arc::new(
        Context::new(client, metrics, Arc::new(config.clone()), origin)
            .with_watch_client(watch_client),
    );
    let (stop_controllers, controllers_stop) = shutdown::channel();
    let mut manager = tokio::spawn(controllers::run_while_leading(
        controllers::all(),
        ctx,
        health.clone(),
        leadership,
        controllers_stop,
        config.shutdown_timeout,
    ));
    let mut election = tokio::spawn(election.finished());

    // Run until a signal, or until the controller manager or the election fails.
    let (outcome, manager_done, election_done) = tokio::select! {
        signal = &mut signalled => {
            info!(signal, "shutting down: stopping controllers, then releasing the Lease");
            (Ok(()), false, false)
        }
        done = &mut manager => (flatten("controller manager", done), true, false),
        done = &mut election => {
            let outcome = flatten("leader election", done)
                .and_then(|()| Err(Error::ControllerStopped("leader election")));
            (outcome, false, true)
        }
    };

    health.shutting_down();
    stop_controllers.stop();
    if !manager_done {
        // The manager bounds its own wait by --shutdown-timeout.
        if let Err(err) = flatten("controller manager", manager.await) {
            warn!(error = %crate::one_line(&err), "controllers failed while stopping");
        }
    }
    // Only now, with no controller left running, may another replica lead.
    stop_election.stop();
    if !election_done && let Err(err) = flatten("leader election", election.await) {
        warn!(error = %crate::one_line(&err), "leaving the election failed");
    }
    stop_server.stop();
    let _ = server.await;
    if outcome.is_ok() {
        info!("stopped");
    }
    outcome
}

fn flatten(task: &'static str, joined: Result<Result<()>, tokio::task::JoinError>) -> Result<()> {
    joined.map_err(|e| Error::TaskFailed(task, e))?
}

/// Mirrors the replica's role into `/readyz` and the `clouddeck_leader` gauge.
async fn report_leadership(
    mut leadership: watch::Receiver<Leadership>,
    health: Health,
    metrics: Metrics,
) {
    loop {
        let now = *leadership.borrow_and_update();
        health.set_leadership(now);
        metrics.leader.set(i64::from(now == Leadership::Leader));
        if leadership.changed().await.is_err() {
            return;
        }
    }
}

/// A client from `--kubeconfig`, else the usual rules: `$KUBECONFIG`, `~/.kube/config`,
/// then the in-cluster service account; counted and paced by `traffic` if given (see
/// [`crate::api_client`]). Also returns the API server's URL, for messages.
pub async fn connect(
    config: &OperatorConfig,
    traffic: Option<&ApiTraffic>,
) -> Result<(Client, String)> {
    let kube_config = match &config.kubeconfig {
        Some(path) => {
            let kubeconfig =
                Kubeconfig::read_from(path).map_err(|e| Error::KubeConfig(Box::new(e)))?;
            Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                .await
                .map_err(|e| Error::KubeConfig(Box::new(e)))?
        }
        None => Config::infer()
            .await
            .map_err(|e| Error::KubeConfig(Box::new(e)))?,
    };
    let url = kube_config
        .cluster_url
        .to_string()
        .trim_end_matches('/')
        .to_owned();
    let builder = ClientBuilder::try_from(kube_config).map_err(|source| Error::ApiUnreachable {
        url: url.clone(),
        source: Box::new(source),
    })?;
    let client = match traffic {
        Some(traffic) => builder.with_layer(traffic).build(),
        None => builder.build(),
    };
    Ok((client, url))
}

async fn check_api(client: &Client, url: &str) -> Result<()> {
    match client.apiserver_version().await {
        Ok(version) => {
            info!(version = %version.git_version, "connected to the Kubernetes API server");
            Ok(())
        }
        Err(source) => Err(Error::ApiUnreachable {
            url: url.to_owned(),
            source: Box::new(source),
        }),
    }
}

/// Every CRD the operator serves must be installed: a controller watching a missing kind
/// would only log errors forever, so refuse to start and say how to fix it.
pub async fn check_crds(client: &Client, crds: &[CustomResourceDefinition]) -> Result<()> {
    let api = Api::<CustomResourceDefinition>::all(client.clone());
    for crd in crds {
        let name = crd.metadata.name.clone().unwrap_or_default();
        match api.get_opt(&name).await {
            Ok(Some(_)) => {}
            Ok(None) => return Err(Error::CrdMissing { name }),
            Err(source) => {
                return Err(Error::CrdCheck {
                    name,
                    source: Box::new(source),
                });
            }
        }
    }
    info!(count = crds.len(), "CloudDeck CRDs are installed");
    Ok(())
}

fn lease_settings(config: &OperatorConfig, client: &Client) -> LeaseSettings {
    LeaseSettings {
        name: config.lease.name.clone(),
        namespace: config
            .lease
            .namespace
            .clone()
            .unwrap_or_else(|| client.default_namespace().to_owned()),
        identity: config.lease.resolved_identity(),
        duration: config.lease.duration,
        renew_before: config.lease.renew_before,
    }
}
