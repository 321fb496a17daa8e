//! The `clouddeck` command line: parse arguments, call into the library, and turn a fatal
//! error into one line on stderr and a non-zero exit.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use clouddeck::config::OperatorConfig;

#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's settings, read at its start: background threads return freed pages after a
/// second even when the operator is idle (no allocation to trigger the purge).
#[allow(non_upper_case_globals)]
#[unsafe(export_name = "_rjem_malloc_conf")]
pub static malloc_conf: &[u8; 43] = b"background_thread:true,dirty_decay_ms:1000\0";

/// CloudDeck turns a Kubernetes cluster into a Vercel/Netlify-style deployment platform:
/// Projects, Deployments, Domains and friends are clouddeck.io resources, and this operator
/// reconciles them.
///
/// Every option can also be set through the environment variable shown next to it
/// (CLOUDDECK_*); an option on the command line wins over the variable.
#[derive(Parser)]
#[command(name = "clouddeck", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the operator: all controllers in one process, with leader election.
    ///
    /// Run two or more replicas: the one holding the Lease runs the controllers, the others
    /// stand by and take over when it stops. Each replica serves /healthz (liveness),
    /// /readyz (200 with "ok: leader" or "ok: standby" once it is ready, else 503 with the
    /// reason) and /metrics (OpenMetrics) on --listen-addr. The CloudDeck CRDs must be
    /// installed first (kubectl apply --server-side -f crds/). SIGTERM or SIGINT stops the
    /// controllers and releases the Lease, so that a standby takes over quickly.
    Run(Box<OperatorConfig>),

    /// Answer the requests of EdgeHandler `deny` rules with the status each rule names (the
    /// gateway sends them here; see docs/edge.md). The chart runs it next to the operator.
    Responder {
        /// Address to listen on.
        #[arg(
            long,
            env = "CLOUDDECK_RESPONDER_LISTEN_ADDR",
            value_name = "IP:PORT",
            default_value = "0.0.0.0:8080"
        )]
        listen_addr: std::net::SocketAddr,

        #[command(flatten)]
        log: clouddeck::config::LogConfig,
    },

    /// Print the CloudDeck CustomResourceDefinitions as YAML, e.g.
    /// `clouddeck crds | kubectl apply --server-side -f -`.
    Crds,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(config) => run(*config),
        Command::Responder { listen_addr, log } => respond(listen_addr, &log),
        Command::Crds => print_crds(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(line) => {
            eprintln!("error: {line}");
            ExitCode::FAILURE
        }
    }
}

fn run(config: OperatorConfig) -> Result<(), String> {
    clouddeck::telemetry::init_logging(&config.log);
    let runtime = tokio::runtime::Runtime::new()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    let result = runtime.block_on(clouddeck::operator::run(config));
    // Tasks still blocked on the API server must not delay the exit.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    result.map_err(|e| clouddeck::one_line(&e))
}

fn respond(addr: std::net::SocketAddr, log: &clouddeck::config::LogConfig) -> Result<(), String> {
    clouddeck::telemetry::init_logging(log);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    runtime
        .block_on(clouddeck::responder::serve(addr))
        .map_err(|e| clouddeck::one_line(&e))
}

fn print_crds() -> Result<(), String> {
    use std::io::Write;
    match std::io::stdout()
        .lock()
        .write_all(clouddeck::api::crds_yaml().as_bytes())
    {
        // `clouddeck crds | head` closing the pipe early is not an error.
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(format!("cannot write the CRDs: {e}"))
        }
        _ => Ok(()),
    }
}
