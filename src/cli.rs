//! Process entry: parses the command line, sets up logging, runs the daemon or `faultd ctl`.
use clap::{Parser, Subcommand};

use crate::config::{DaemonConfig, LogFormat, EXIT_USAGE};
use crate::daemon::Daemon;

#[derive(Debug, Parser)]
#[command(
    name = "faultd",
    version,
    about = "Node-level chaos injection daemon, wire-compatible with Chaos Mesh's chaos-daemon",
    args_conflicts_with_subcommands = true,
    args_override_self = true
)]
pub struct Cli {
    #[command(flatten)]
    pub daemon: DaemonConfig,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once per process
pub enum Command {
    /// Talk to a running faultd (list, get, halt-all, doctor, apply).
    Ctl(crate::ctl::CtlArgs),
    /// Internal: one stress fault's worker, started by the daemon (not for people).
    #[command(name = "stress-worker", hide = true)]
    StressWorker(crate::faults::stress::worker::WorkerArgs),
}

/// Runs faultd and returns the process exit code.
pub fn run() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(
                e.kind(),
                ErrorKind::DisplayHelp
                    | ErrorKind::DisplayVersion
                    | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            ) {
                let _ = e.print();
                return 0;
            }
            let text = e.to_string();
            let line = text.lines().next().unwrap_or("invalid arguments");
            eprintln!("faultd: {}", line.trim_start_matches("error: "));
            return EXIT_USAGE;
        }
    };
    // A stress worker stays single-threaded (it forks its load processes): no async runtime.
    if let Some(Command::StressWorker(args)) = &cli.command {
        return crate::faults::stress::worker::run(args);
    }
    // Only one rustls crypto provider may be the process default.
    let _ = rustls::crypto::ring::default_provider().install_default();
    // The daemon's runtime has --worker-threads threads; `ctl` is a client and needs one.
    let workers = match &cli.command {
        None => usize::from(cli.daemon.worker_threads),
        Some(_) => 1,
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .thread_name("faultd-worker")
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("faultd: cannot start the async runtime: {e}");
            return 1;
        }
    };
    match cli.command {
        Some(Command::Ctl(args)) => rt.block_on(crate::ctl::run(args)),
        Some(Command::StressWorker(args)) => crate::faults::stress::worker::run(&args),
        None => {
            if let Err(e) = cli.daemon.validate() {
                eprintln!("faultd: {e}");
                return EXIT_USAGE;
            }
            init_logging(cli.daemon.log_format);
            let code = rt.block_on(serve(cli.daemon));
            // Every fault is rolled back and journaled by now, and the caller exits at once.
            // Shutting the runtime down would drop tasks still running (proxied connections,
            // keep-alive timers) after its timer driver stopped, and a timer polled then
            // panics ("the runtime is being shut down"); the exit reclaims everything.
            std::mem::forget(rt);
            code
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        // fuser logs a reply to a connection faultd just ended (IOChaos teardown) as an error;
        // the teardown itself is logged by faultd.
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,fuser::reply=off"));
    // Colours only for a person at a terminal: a log file or a container's log pipe gets
    // plain text (escape codes there are noise, and cost a tenth of each line's formatting).
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().with_current_span(true).init(),
        LogFormat::Text => builder.init(),
    }
}

async fn serve(config: crate::config::DaemonConfig) -> i32 {
    let daemon = match Daemon::start(config).await {
        Ok(d) => d,
        Err(e) => {
            tracing::error!(error = %e, "faultd failed to start");
            eprintln!("faultd: {e}");
            return 1;
        }
    };
    if let Some(pki) = &daemon.dev_pki {
        print_dev_banner(&daemon, pki);
    }
    wait_for_signal().await;
    daemon.shutdown();
    match daemon.wait().await {
        Ok(()) => {
            tracing::info!("faultd stopped");
            0
        }
        Err(e) => {
            tracing::error!(error = %e, "faultd stopped with an error");
            1
        }
    }
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
}

fn print_dev_banner(daemon: &Daemon, pki: &crate::tls::pki::DevPki) {
    let abs = |p: &std::path::Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    let (ca, cert, key) = (
        abs(&pki.client.ca),
        abs(&pki.client.cert),
        abs(&pki.client.key),
    );
    let addr = daemon.grpc_addr;
    println!(
        "faultd --dev: serving gRPC (mTLS) on {addr} and HTTP on {}",
        daemon.http_addr
    );
    println!("  throwaway certificates in {}", abs(&pki.dir).display());
    println!("  call it with faultd ctl:");
    println!(
        "    cargo run -- ctl --addr {addr} --ca {} --cert {} --key {} list",
        ca.display(),
        cert.display(),
        key.display()
    );
    println!("  or with grpcurl:");
    println!(
        "    grpcurl -cacert {} -cert {} -key {} -authority {} {addr} list",
        ca.display(),
        cert.display(),
        key.display(),
        crate::tls::CHAOS_DAEMON_SERVER_NAME
    );
    println!("  metrics: curl http://{}/metrics", daemon.http_addr);
}
