//! Command-line and environment configuration. Flag names and meanings follow Chaos Mesh's
//! `chaos-daemon` so its Helm chart can start faultd unchanged; faultd's own flags are added
//! beside them. Every flag can also be set through the environment variable named in `--help`.
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};

/// Exit code for a bad command line (BSD `EX_USAGE`).
pub const EXIT_USAGE: i32 = 64;

/// Container runtime names accepted by `--runtime` (upstream spelling).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RuntimeName {
    Docker,
    Containerd,
    Crio,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Json,
    Text,
}

/// Everything the daemon needs to start.
#[derive(Debug, Clone, Args)]
pub struct DaemonConfig {
    /// gRPC port (Chaos Mesh: --grpc-port).
    #[arg(long, env = "FAULTD_GRPC_PORT", default_value_t = 31767)]
    pub grpc_port: u16,

    /// HTTP port for /metrics, /healthz, /readyz (Chaos Mesh: --http-port).
    #[arg(long, env = "FAULTD_HTTP_PORT", default_value_t = 31766)]
    pub http_port: u16,

    /// Address both ports bind to (default 0.0.0.0; 127.0.0.1 with --dev).
    #[arg(long, env = "FAULTD_LISTEN_ADDRESS")]
    pub listen_address: Option<IpAddr>,

    /// Container runtime used for ids without a prefix and for --runtime-socket-path. Ids with a
    /// `containerd://`, `cri-o://` or `docker://` prefix are routed by their prefix.
    #[arg(long, env = "FAULTD_RUNTIME", value_enum)]
    pub runtime: Option<RuntimeName>,

    /// Socket of the --runtime runtime. Without it faultd probes the known socket paths.
    #[arg(long, env = "FAULTD_RUNTIME_SOCKET_PATH")]
    pub runtime_socket_path: Option<PathBuf>,

    /// containerd namespace of Kubernetes containers.
    #[arg(long, env = "FAULTD_CONTAINERD_NS", default_value = "k8s.io")]
    pub containerd_ns: String,

    /// CA certificate (PEM) that client certificates must chain to.
    #[arg(long, env = "FAULTD_CA")]
    pub ca: Option<PathBuf>,

    /// Server certificate chain (PEM).
    #[arg(long, env = "FAULTD_CERT")]
    pub cert: Option<PathBuf>,

    /// Server private key (PEM).
    #[arg(long, env = "FAULTD_KEY")]
    pub key: Option<PathBuf>,

    /// Accept only client certificates whose CN or a SAN is in this comma-separated list.
    #[arg(long, env = "FAULTD_ALLOWED_CLIENT_NAMES", value_delimiter = ',')]
    pub allowed_client_names: Vec<String>,

    /// Serve gRPC without TLS. Upstream falls back to plaintext silently; faultd only on request.
    #[arg(long, env = "FAULTD_INSECURE")]
    pub insecure: bool,

    /// Serve /debug/pprof/ on the HTTP port (accepted for chart compatibility; see README).
    #[arg(long, env = "FAULTD_PPROF")]
    pub pprof: bool,

    /// Journal and lock directory.
    #[arg(long, env = "FAULTD_STATE_DIR")]
    pub state_dir: Option<PathBuf>,

    /// Log format.
    #[arg(long, env = "FAULTD_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Developer mode: generate a throwaway CA, server and client certificate under the state
    /// dir (default ./.faultd-dev), serve on 127.0.0.1 and print how to call the daemon.
    #[arg(long, env = "FAULTD_DEV")]
    pub dev: bool,

    /// How long SIGTERM waits for in-flight calls before stopping.
    #[arg(long, env = "FAULTD_SHUTDOWN_GRACE", value_parser = crate::duration::parse_duration, default_value = "10s")]
    pub shutdown_grace: Duration,

    /// Longest life of any fault; 0 disables the cap.
    #[arg(long, env = "FAULTD_MAX_FAULT_DURATION", value_parser = crate::duration::parse_duration, default_value = "24h")]
    pub max_fault_duration: Duration,

    /// Local unix socket for operators (HaltAll, list) that works without the control plane.
    /// Default: <state-dir>/faultd.sock.
    #[arg(long, env = "FAULTD_ADMIN_SOCKET")]
    pub admin_socket: Option<PathBuf>,

    /// Allow memory stressors against containers without a memory limit.
    #[arg(long, env = "FAULTD_ALLOW_UNBOUNDED_MEMORY_STRESS")]
    pub allow_unbounded_memory_stress: bool,

    /// Let IOChaos stack its layer on a volume whose mount is shared (`shared:` in mountinfo):
    /// the layer then propagates to the mount's peers (upstream always lets it). Off: such a
    /// volume is FAILED_PRECONDITION.
    #[arg(long, env = "FAULTD_IO_ALLOW_SHARED_VOLUMES")]
    pub io_allow_shared_volumes: bool,

    /// Directory of Byteman's jars for JVMChaos: byteman.jar (the agent), optionally
    /// byteman-helper.jar and chaos-agent.jar (Chaos Mesh's helpers).
    #[arg(
        long,
        env = "FAULTD_BYTEMAN_DIR",
        default_value = "/opt/faultd/byteman"
    )]
    pub byteman_dir: PathBuf,

    /// Threads of the async runtime. It parses requests, journals and waits: namespace work,
    /// ptrace, FUSE and stressors run on threads of their own. One thread answers fastest
    /// (no wake-ups between runtime threads); raise it for HTTPChaos on busy services (the
    /// proxy is served by the runtime).
    #[arg(long, env = "FAULTD_WORKER_THREADS", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub worker_threads: u16,
}

impl DaemonConfig {
    pub fn state_dir(&self) -> PathBuf {
        match &self.state_dir {
            Some(d) => d.clone(),
            None if self.dev => PathBuf::from(".faultd-dev"),
            None => PathBuf::from("/var/lib/faultd"),
        }
    }

    pub fn listen_address(&self) -> IpAddr {
        match self.listen_address {
            Some(a) => a,
            None if self.dev => IpAddr::from([127, 0, 0, 1]),
            None => IpAddr::from([0, 0, 0, 0]),
        }
    }

    pub fn admin_socket(&self) -> PathBuf {
        self.admin_socket
            .clone()
            .unwrap_or_else(|| self.state_dir().join("faultd.sock"))
    }

    /// Checks combinations clap cannot express; the message is one line.
    pub fn validate(&self) -> Result<(), String> {
        let tls_files = [&self.ca, &self.cert, &self.key];
        let given = tls_files.iter().filter(|f| f.is_some()).count();
        if self.dev && given > 0 {
            return Err("--dev generates its own certificates; drop --ca/--cert/--key".into());
        }
        if self.dev && self.insecure {
            return Err("--dev serves mTLS; it cannot be combined with --insecure".into());
        }
        if self.insecure && given > 0 {
            return Err("--insecure cannot be combined with --ca/--cert/--key".into());
        }
        if !self.dev && !self.insecure && given != 3 {
            return Err(
                "mTLS needs --ca, --cert and --key (or --dev for throwaway certificates, or --insecure for plaintext)"
                    .into(),
            );
        }
        if self.grpc_port != 0 && self.grpc_port == self.http_port {
            return Err(format!(
                "--grpc-port and --http-port are both {}",
                self.grpc_port
            ));
        }
        if self.containerd_ns.is_empty()
            || !self
                .containerd_ns
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        {
            return Err(format!(
                "--containerd-ns {:?} is not a valid containerd namespace",
                self.containerd_ns
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn parse(args: &[&str]) -> Result<crate::cli::Cli, clap::Error> {
        crate::cli::Cli::try_parse_from(std::iter::once("faultd").chain(args.iter().copied()))
    }

    #[test]
    fn upstream_flags_are_accepted() {
        let cli = parse(&[
            "--runtime",
            "containerd",
            "--runtime-socket-path",
            "/host-run/containerd.sock",
            "--containerd-ns",
            "k8s.io",
            "--grpc-port",
            "31767",
            "--http-port",
            "31766",
            "--ca",
            "/etc/chaos-daemon/cert/ca.crt",
            "--cert",
            "/etc/chaos-daemon/cert/tls.crt",
            "--key",
            "/etc/chaos-daemon/cert/tls.key",
            "--pprof",
        ])
        .unwrap();
        let d = cli.daemon;
        assert_eq!(d.runtime, Some(RuntimeName::Containerd));
        assert_eq!(d.grpc_port, 31767);
        assert!(d.pprof);
        d.validate().unwrap();
        assert_eq!(d.state_dir(), PathBuf::from("/var/lib/faultd"));
        assert_eq!(d.listen_address().to_string(), "0.0.0.0");
    }

    #[test]
    fn defaults_match_upstream_ports() {
        let d = parse(&["--insecure"]).unwrap().daemon;
        // Where the image puts Byteman's jars (deploy/image/assemble-rootfs.sh).
        assert_eq!(d.byteman_dir, PathBuf::from("/opt/faultd/byteman"));
        assert_eq!(d.worker_threads, 1);
        assert!(parse(&["--insecure", "--worker-threads", "0"]).is_err());
        assert_eq!((d.grpc_port, d.http_port), (31767, 31766));
        assert_eq!(d.containerd_ns, "k8s.io");
        assert_eq!(d.max_fault_duration, Duration::from_secs(24 * 3600));
    }

    #[test]
    fn tls_is_required_unless_asked_otherwise() {
        let d = parse(&[]).unwrap().daemon;
        assert!(d.validate().unwrap_err().contains("mTLS needs"));
        let d = parse(&["--ca", "a", "--cert", "b"]).unwrap().daemon;
        assert!(d.validate().is_err());
        let d = parse(&["--dev", "--insecure"]).unwrap().daemon;
        assert!(d.validate().is_err());
        let d = parse(&["--dev"]).unwrap().daemon;
        d.validate().unwrap();
        assert_eq!(d.state_dir(), PathBuf::from(".faultd-dev"));
        assert_eq!(d.listen_address().to_string(), "127.0.0.1");
    }

    #[test]
    fn bad_values_are_rejected() {
        assert!(parse(&["--grpc-port", "70000"]).is_err());
        assert!(parse(&["--runtime", "rkt"]).is_err());
        assert!(parse(&["--log-format", "xml"]).is_err());
        let d = parse(&["--insecure", "--containerd-ns", "a/b"])
            .unwrap()
            .daemon;
        assert!(d.validate().is_err());
        let d = parse(&["--insecure", "--grpc-port", "5", "--http-port", "5"])
            .unwrap()
            .daemon;
        assert!(d.validate().is_err());
    }
}
