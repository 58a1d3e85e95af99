//! Daemon assembly and lifecycle: state dir, certificates, listeners, start-up reconciliation,
//! serving, and graceful shutdown (health NOT_SERVING, drain, stop within the grace period).
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::transport::Server;

use crate::config::{DaemonConfig, RuntimeName};
use crate::engine::EndReason;
use crate::faults::FaultEngine;
use crate::metrics::{Metrics, RuntimeLabels};
use crate::proto::faultd::v1::{
    doctor_server::DoctorServer, faults_server::FaultsServer, leases_server::LeasesServer,
};
use crate::proto::pb::chaos_daemon_server::ChaosDaemonServer;
use crate::runtime::{RuntimeConfig, RuntimeKind, Runtimes};
use crate::server;
pub use crate::state::DaemonState;
use crate::tls::{self, ReloadingConfig, TlsFiles};

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("state dir {path}: {source}")]
    StateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error("binding {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("gRPC reflection: {0}")]
    Reflection(String),
    #[error("gRPC server: {0}")]
    Serve(#[from] tonic::transport::Error),
    #[error(transparent)]
    Engine(#[from] crate::engine::EngineError),
    #[error("admin socket {path}: {source}")]
    AdminSocket {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A running daemon.
pub struct Daemon {
    pub grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub state: Arc<DaemonState>,
    /// Client certificate files when running with `--dev`.
    pub dev_pki: Option<tls::pki::DevPki>,
    stop: watch::Sender<bool>,
    task: JoinHandle<Result<(), DaemonError>>,
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, DaemonError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| DaemonError::Bind { addr, source })
}

impl Daemon {
    /// Starts the daemon: returns once both ports are bound. gRPC serves only after start-up
    /// reconciliation; `/healthz` answers immediately and `/readyz` once reconciliation is done.
    pub async fn start(config: DaemonConfig) -> Result<Daemon, DaemonError> {
        config.validate().map_err(DaemonError::Config)?;
        let capabilities = crate::privilege::check();
        capabilities.log();
        let state_dir = config.state_dir();
        std::fs::create_dir_all(&state_dir).map_err(|source| DaemonError::StateDir {
            path: state_dir.clone(),
            source,
        })?;

        let dev_pki = if config.dev {
            Some(tls::pki::dev_pki(&state_dir.join("dev-certs"))?)
        } else {
            None
        };
        let tls_files = match (&dev_pki, &config.ca, &config.cert, &config.key) {
            (Some(p), ..) => Some(p.server.clone()),
            (None, Some(ca), Some(cert), Some(key)) if !config.insecure => Some(TlsFiles {
                ca: ca.clone(),
                cert: cert.clone(),
                key: key.clone(),
            }),
            _ => None,
        };
        let tls = match tls_files {
            Some(f) => Some(Arc::new(ReloadingConfig::new(
                f,
                config.allowed_client_names.clone(),
            )?)),
            None => None,
        };

        let ip = config.listen_address();
        let grpc_listener = bind(SocketAddr::new(ip, config.grpc_port)).await?;
        let http_listener = bind(SocketAddr::new(ip, config.http_port)).await?;
        let grpc_addr = grpc_listener
            .local_addr()
            .map_err(|source| DaemonError::Bind {
                addr: SocketAddr::new(ip, config.grpc_port),
                source,
            })?;
        let http_addr = http_listener
            .local_addr()
            .map_err(|source| DaemonError::Bind {
                addr: SocketAddr::new(ip, config.http_port),
                source,
            })?;

        // The journal lock comes first: a second daemon on the same state dir stops here.
        let metrics = Arc::new(Metrics::new());
        crate::faults::jvm::set_byteman_dir(config.byteman_dir.clone());
        crate::faults::io::live::set_allow_shared(config.io_allow_shared_volumes);
        let engine = FaultEngine::open(&state_dir, config.max_fault_duration, metrics.clone())?;

        let admin_path = config.admin_socket();
        let _ = std::fs::remove_file(&admin_path);
        let admin_listener = tokio::net::UnixListener::bind(&admin_path).map_err(|source| {
            DaemonError::AdminSocket {
                path: admin_path.clone(),
                source,
            }
        })?;
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&admin_path, std::fs::Permissions::from_mode(0o600)).map_err(
                |source| DaemonError::AdminSocket {
                    path: admin_path.clone(),
                    source,
                },
            )?;
        }

        let runtimes = Runtimes::new(RuntimeConfig {
            runtime: config.runtime.map(|r| match r {
                RuntimeName::Docker => RuntimeKind::Docker,
                RuntimeName::Containerd => RuntimeKind::Containerd,
                RuntimeName::Crio => RuntimeKind::Crio,
            }),
            socket: config.runtime_socket_path.clone(),
            containerd_ns: config.containerd_ns.clone(),
            ..RuntimeConfig::default()
        })
        .await;
        for d in runtimes.discovered() {
            metrics
                .runtimes
                .get_or_create(&RuntimeLabels {
                    runtime: d.kind.to_string(),
                    socket: d.socket.display().to_string(),
                })
                .set(1);
        }
        tracing::info!(runtimes = %runtimes.describe(), "container runtimes");

        let state = Arc::new(DaemonState::new(config, metrics, engine, runtimes));
        let (stop, stop_rx) = watch::channel(false);
        tokio::spawn(server::http::serve(
            http_listener,
            state.clone(),
            stop_rx.clone(),
        ));

        let reflection_v1 = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()
            .map_err(|e| DaemonError::Reflection(e.to_string()))?;
        let reflection_v1alpha = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1alpha()
            .map_err(|e| DaemonError::Reflection(e.to_string()))?;
        let (health, health_service) = tonic_health::server::health_reporter();

        let task_state = state.clone();
        let task = tokio::spawn(async move {
            let state = task_state;
            // Start-up reconciliation happens here, before the gRPC port serves.
            let report = state.engine.reconcile().await;
            // Corruption reported, and residue of the records it cost removed, before serving.
            let journal = crate::doctor::after_replay(
                &state.engine,
                &state.runtimes,
                &state.metrics,
                &state.config.state_dir(),
            )
            .await;
            tokio::spawn(state.engine.clone().run_deadlines(stop_rx.clone()));
            tokio::spawn(state.engine.clone().run_syncer(stop_rx.clone()));
            state.set_ready(
                true,
                format!(
                    "ready\nreconciled: {} rolled back, {} gone with a reboot, {} failed ({:.1} ms)\n{journal}runtimes: {}\ncapabilities: {}\n",
                    report.rolled_back,
                    report.gone_with_reboot,
                    report.failed,
                    report.took.as_secs_f64() * 1e3,
                    state.runtimes.describe(),
                    capabilities.summary()
                ),
            );
            health
                .set_serving::<ChaosDaemonServer<server::chaos_daemon::ChaosDaemonService>>()
                .await;
            health
                .set_service_status("", tonic_health::ServingStatus::Serving)
                .await;
            tracing::info!(%grpc_addr, %http_addr, tls = tls.is_some(), "faultd serving");

            let faultd = server::faults::FaultdService::new(state.clone());
            let router = Server::builder()
                .add_service(health_service)
                .add_service(reflection_v1)
                .add_service(reflection_v1alpha)
                .add_service(ChaosDaemonServer::new(
                    server::chaos_daemon::ChaosDaemonService::new(state.clone()),
                ))
                .add_service(FaultsServer::new(faultd.clone()))
                .add_service(LeasesServer::new(faultd.clone()))
                .add_service(DoctorServer::new(faultd.clone()));
            // Operators on the node: the same faultd.v1 services on a root-only unix socket.
            let mut admin_stop = stop_rx.clone();
            let admin = Server::builder()
                .add_service(FaultsServer::new(faultd.clone()))
                .add_service(LeasesServer::new(faultd.clone()))
                .add_service(DoctorServer::new(faultd))
                .serve_with_incoming_shutdown(
                    tokio_stream::wrappers::UnixListenerStream::new(admin_listener),
                    async move {
                        let _ = admin_stop.wait_for(|s| *s).await;
                    },
                );
            tokio::spawn(async move {
                if let Err(e) = admin.await {
                    tracing::error!(error = %e, "admin socket server failed");
                }
            });
            let mut stop_signal = stop_rx.clone();
            let health_on_stop = health.clone();
            let signal = async move {
                let _ = stop_signal.wait_for(|s| *s).await;
                health_on_stop
                    .set_not_serving::<ChaosDaemonServer<server::chaos_daemon::ChaosDaemonService>>(
                    )
                    .await;
                health_on_stop
                    .set_service_status("", tonic_health::ServingStatus::NotServing)
                    .await;
                tracing::info!("shutting down: health NOT_SERVING, draining in-flight calls");
            };
            let grace = state.config.shutdown_grace;
            let serve = async {
                match tls {
                    Some(tls) => {
                        let incoming = server::listener::tls_incoming(
                            grpc_listener,
                            tls,
                            state.metrics.clone(),
                        );
                        router.serve_with_incoming_shutdown(incoming, signal).await
                    }
                    None => {
                        router
                            .serve_with_incoming_shutdown(
                                server::listener::tcp_incoming(grpc_listener),
                                signal,
                            )
                            .await
                    }
                }
            };
            // Once stop is requested, in-flight calls get `grace` to finish; idle client
            // connections do not hold the daemon up.
            let mut stop_seen = stop_rx.clone();
            let drain_state = state.clone();
            tokio::pin!(serve);
            tokio::select! {
                r = &mut serve => r?,
                _ = async {
                    let _ = stop_seen.wait_for(|s| *s).await;
                    let deadline = tokio::time::Instant::now() + grace;
                    while drain_state.inflight() > 0 && tokio::time::Instant::now() < deadline {
                        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    }
                } => {
                    let left = state.inflight();
                    if left > 0 {
                        tracing::warn!(grace_s = grace.as_secs_f64(), calls = left, "grace period over; stopping with calls in flight");
                    } else {
                        tracing::info!("in-flight calls drained");
                    }
                }
            }
            // A fault never outlives the process that supervises it.
            let halted = state.engine.halt_all(EndReason::Shutdown).await;
            if halted.rolled_back + halted.failed > 0 {
                tracing::info!(
                    rolled_back = halted.rolled_back,
                    failed = halted.failed,
                    "faults rolled back at shutdown"
                );
            }
            let _ = std::fs::remove_file(state.config.admin_socket());
            state.set_ready(false, "stopped\n".into());
            Ok(())
        });

        Ok(Daemon {
            grpc_addr,
            http_addr,
            state,
            dev_pki,
            stop,
            task,
        })
    }

    /// Asks the daemon to stop (as SIGTERM does).
    pub fn shutdown(&self) {
        let _ = self.stop.send(true);
    }

    /// Waits until the daemon has stopped.
    pub async fn wait(self) -> Result<(), DaemonError> {
        match self.task.await {
            Ok(r) => r,
            Err(e) => Err(DaemonError::Config(format!("daemon task failed: {e}"))),
        }
    }
}
