//! In-process API tests (tier 1, no root): every `pb.ChaosDaemon` RPC is reachable over mTLS,
//! reflection and health work, metrics count the calls, and shutdown is graceful.
mod common;

use common::*;
use faultd::proto::pb;
use faultd::proto::pb::chaos_daemon_client::ChaosDaemonClient;
use tonic::Code;

#[tokio::test]
async fn every_rpc_is_reachable_and_unsupported_ones_say_so() {
    let pki = Pki::new();
    let (d, _state) = start_tls(&pki, &[]).await;
    let mut c = ChaosDaemonClient::new(good_channel(&d, &pki).await);

    // (rpc, result, fault kind named in the message)
    let mut seen = Vec::new();
    macro_rules! call {
        ($name:literal, $kind:literal, $fut:expr) => {
            let r = $fut.await;
            seen.push((
                $name,
                r.map(|_| ())
                    .map_err(|s| (s.code(), s.message().to_string())),
                $kind,
            ));
        };
    }
    let ctr = || "containerd://0123abcd".to_string();
    call!(
        "SetTcs",
        "NetworkChaos",
        c.set_tcs(pb::TcsRequest {
            container_id: ctr(),
            ..Default::default()
        })
    );
    call!(
        "FlushIPSets",
        "NetworkChaos",
        c.flush_ip_sets(pb::IpSetsRequest {
            container_id: ctr(),
            ..Default::default()
        })
    );
    call!(
        "SetIptablesChains",
        "NetworkChaos",
        c.set_iptables_chains(pb::IptablesChainsRequest {
            container_id: ctr(),
            ..Default::default()
        })
    );
    call!(
        "SetTimeOffset",
        "TimeChaos",
        c.set_time_offset(pb::TimeRequest {
            container_id: ctr(),
            ..Default::default()
        })
    );
    call!(
        "RecoverTimeOffset",
        "TimeChaos",
        c.recover_time_offset(pb::TimeRequest {
            container_id: ctr(),
            ..Default::default()
        })
    );
    call!(
        "ContainerKill",
        "PodChaos",
        c.container_kill(pb::ContainerRequest {
            container_id: ctr(),
            ..Default::default()
        })
    );
    call!(
        "ContainerGetPid",
        "KernelChaos",
        c.container_get_pid(pb::ContainerRequest {
            container_id: ctr(),
            ..Default::default()
        })
    );
    call!(
        "ExecStressors",
        "StressChaos",
        c.exec_stressors(pb::ExecStressRequest {
            target: ctr(),
            ..Default::default()
        })
    );
    call!(
        "CancelStressors",
        "StressChaos",
        c.cancel_stressors(pb::CancelStressRequest::default())
    );
    call!(
        "ApplyIOChaos",
        "IOChaos",
        c.apply_io_chaos(pb::ApplyIoChaosRequest {
            container_id: ctr(),
            ..Default::default()
        })
    );
    call!(
        "ApplyHttpChaos",
        "HTTPChaos",
        c.apply_http_chaos(pb::ApplyHttpChaosRequest {
            container_id: ctr(),
            ..Default::default()
        })
    );
    call!(
        "ApplyBlockChaos",
        "BlockChaos",
        c.apply_block_chaos(pb::ApplyBlockChaosRequest {
            container_id: ctr(),
            ..Default::default()
        })
    );
    call!(
        "RecoverBlockChaos",
        "BlockChaos",
        c.recover_block_chaos(pb::RecoverBlockChaosRequest::default())
    );
    call!(
        "SetDNSServer",
        "DNSChaos",
        c.set_dns_server(pb::SetDnsServerRequest {
            container_id: ctr(),
            ..Default::default()
        })
    );
    call!(
        "InstallJVMRules",
        "JVMChaos",
        c.install_jvm_rules(pb::InstallJvmRulesRequest {
            container_id: ctr(),
            ..Default::default()
        })
    );
    call!(
        "UninstallJVMRules",
        "JVMChaos",
        c.uninstall_jvm_rules(pb::UninstallJvmRulesRequest {
            container_id: ctr(),
            ..Default::default()
        })
    );
    assert_eq!(seen.len(), 16);

    for (rpc, result, kind) in &seen {
        match result {
            // Implemented RPCs reach their handler; with this fake id they must fail cleanly
            // with a status that is not UNIMPLEMENTED and not a fake OK.
            Err((Code::Unimplemented, msg)) => {
                assert!(
                    msg.contains(kind) && msg.contains("not supported by faultd"),
                    "{rpc}: {msg}"
                );
            }
            Err((code, msg)) => {
                assert!(
                    !matches!(code, Code::Unknown | Code::Internal),
                    "{rpc}: {code:?} {msg}"
                );
            }
            Ok(()) => {
                // Only idempotent recover paths may answer OK for a request that names nothing
                // (SetDNSServer with enable = false is DNSChaos's recover).
                assert!(
                    matches!(
                        *rpc,
                        "CancelStressors"
                            | "SetTcs"
                            | "FlushIPSets"
                            | "SetIptablesChains"
                            | "SetDNSServer"
                            | "RecoverTimeOffset"
                    ),
                    "{rpc} answered OK"
                );
            }
        }
    }

    let (code, metrics) = http_get(d.http_addr, "/metrics").await;
    assert_eq!(code, 200);
    assert!(metrics.contains(r#"grpc_server_handled_total{grpc_service="pb.ChaosDaemon",grpc_method="ApplyBlockChaos",grpc_code="Unimplemented"} 1"#), "{metrics}");
    assert!(
        metrics.contains("chaos_daemon_grpc_server_handling_seconds_bucket"),
        "{metrics}"
    );
    d.shutdown();
    d.wait().await.unwrap();
}

#[tokio::test]
async fn health_reflection_and_http_endpoints() {
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;
    let pki = Pki::new();
    let (d, _state) = start_tls(&pki, &[]).await;
    let ch = good_channel(&d, &pki).await;

    let mut h = HealthClient::new(ch.clone());
    for service in ["", "pb.ChaosDaemon"] {
        let r = h
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            r.status(),
            tonic_health::pb::health_check_response::ServingStatus::Serving,
            "{service}"
        );
    }

    // Reflection v1: list services and resolve pb.ChaosDaemon with its imports.
    {
        use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
        use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
        use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
        use tonic_reflection::pb::v1::ServerReflectionRequest;
        let mut r = ServerReflectionClient::new(ch.clone());
        let reqs = vec![
            ServerReflectionRequest {
                host: String::new(),
                message_request: Some(MessageRequest::ListServices(String::new())),
            },
            ServerReflectionRequest {
                host: String::new(),
                message_request: Some(MessageRequest::FileContainingSymbol(
                    "pb.ChaosDaemon".into(),
                )),
            },
        ];
        let mut stream = r
            .server_reflection_info(tokio_stream::iter(reqs))
            .await
            .unwrap()
            .into_inner();
        let first = stream.message().await.unwrap().unwrap();
        let Some(MessageResponse::ListServicesResponse(list)) = first.message_response else {
            panic!("{first:?}")
        };
        let names: Vec<_> = list.service.iter().map(|s| s.name.as_str()).collect();
        assert!(
            !names.iter().any(|n| n.starts_with("containerd.")),
            "client-only protos listed: {names:?}"
        );
        for want in [
            "pb.ChaosDaemon",
            "faultd.v1.Faults",
            "faultd.v1.Leases",
            "faultd.v1.Doctor",
            "grpc.health.v1.Health",
            "grpc.reflection.v1.ServerReflection",
        ] {
            assert!(names.contains(&want), "{names:?}");
        }
        let second = stream.message().await.unwrap().unwrap();
        let Some(MessageResponse::FileDescriptorResponse(fd)) = second.message_response else {
            panic!("{second:?}")
        };
        assert!(!fd.file_descriptor_proto.is_empty());
    }
    // Reflection v1alpha (older grpcurl).
    {
        use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient;
        use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest;
        use tonic_reflection::pb::v1alpha::server_reflection_response::MessageResponse;
        use tonic_reflection::pb::v1alpha::ServerReflectionRequest;
        let mut r = ServerReflectionClient::new(ch.clone());
        let reqs = vec![ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        }];
        let mut stream = r
            .server_reflection_info(tokio_stream::iter(reqs))
            .await
            .unwrap()
            .into_inner();
        let first = stream.message().await.unwrap().unwrap();
        let Some(MessageResponse::ListServicesResponse(list)) = first.message_response else {
            panic!()
        };
        assert!(list.service.iter().any(|s| s.name == "pb.ChaosDaemon"));
    }

    assert_eq!(http_get(d.http_addr, "/healthz").await.0, 200);
    let (code, body) = http_get(d.http_addr, "/readyz").await;
    assert_eq!(code, 200, "{body}");
    // Which of the capabilities deploy/README.md documents the daemon lacks.
    assert!(
        body.lines()
            .any(|l| l.starts_with("capabilities: all ") || l.starts_with("capabilities: missing ")),
        "{body}"
    );
    assert_eq!(http_get(d.http_addr, "/nope").await.0, 404);
    // pprof is off unless asked for.
    assert_eq!(http_get(d.http_addr, "/debug/pprof/").await.0, 404);

    d.shutdown();
    tokio::time::timeout(std::time::Duration::from_secs(15), d.wait())
        .await
        .expect("shutdown within the grace period")
        .unwrap();
}

#[tokio::test]
async fn plaintext_only_when_asked_for() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let state = tempfile::tempdir().unwrap();
    let d = faultd::daemon::Daemon::start(config(&[
        "--insecure",
        "--state-dir",
        state.path().to_str().unwrap(),
    ]))
    .await
    .unwrap();
    let ch = tonic::transport::Endpoint::from_shared(format!("http://{}", d.grpc_addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut c = ChaosDaemonClient::new(ch);
    let e = c
        .set_time_offset(pb::TimeRequest::default())
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    d.shutdown();
    d.wait().await.unwrap();
}

#[test]
fn bad_flags_exit_64_with_one_line() {
    let bin = env!("CARGO_BIN_EXE_faultd");
    for args in [
        vec!["--grpc-port", "notaport"],
        vec!["--runtime", "rkt"],
        vec!["--no-such-flag"],
        vec![],                             // no TLS material and no --insecure
        vec!["--ca", "/x", "--cert", "/y"], // incomplete TLS material
        vec!["--insecure", "--log-format", "xml"],
    ] {
        let out = std::process::Command::new(bin)
            .args(&args)
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(64),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let err = String::from_utf8(out.stderr).unwrap();
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
        assert!(err.starts_with("faultd: "), "{err}");
    }
    let out = std::process::Command::new(bin)
        .arg("--version")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains(env!("CARGO_PKG_VERSION")));
}

#[test]
fn flags_read_environment_variables() {
    let bin = env!("CARGO_BIN_EXE_faultd");
    let out = std::process::Command::new(bin)
        .env("FAULTD_GRPC_PORT", "notaport")
        .arg("--insecure")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("notaport"));
}

#[tokio::test]
async fn shutdown_does_not_wait_for_idle_client_connections() {
    let pki = Pki::new();
    let (d, _state) = start_tls(&pki, &["--shutdown-grace", "30s"]).await;
    let ch = good_channel(&d, &pki).await;
    let mut c = ChaosDaemonClient::new(ch.clone());
    let _ = c.set_time_offset(pb::TimeRequest::default()).await;
    let t0 = std::time::Instant::now();
    d.shutdown();
    d.wait().await.unwrap();
    // The client still holds its connection open; only in-flight calls may delay the stop.
    assert!(
        t0.elapsed() < std::time::Duration::from_secs(3),
        "{:?}",
        t0.elapsed()
    );
    drop(ch);
}
