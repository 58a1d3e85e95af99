//! mTLS refusals and certificate reload (tier 1, no root). Each refusal must happen before any
//! RPC runs; with TLS 1.3 it may surface at connect or on the first call, so both count.
mod common;

use common::*;
use faultd::proto::pb;
use faultd::proto::pb::chaos_daemon_client::ChaosDaemonClient;
use faultd::tls::pki::{Ca, Leaf};

/// Tries one RPC; Ok(()) if the server answered at the application level.
async fn try_call(
    d: &faultd::daemon::Daemon,
    ca_pem: &str,
    client: Option<&Leaf>,
) -> Result<(), String> {
    let ch = channel(d, ca_pem, client)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let mut c = ChaosDaemonClient::new(ch);
    match c.set_time_offset(pb::TimeRequest::default()).await {
        // INVALID_ARGUMENT (an empty request) comes from the handler: the call got through TLS.
        Err(s) if s.code() == tonic::Code::InvalidArgument => Ok(()),
        Ok(_) => Ok(()),
        Err(s) => Err(format!("rpc: {s}")),
    }
}

#[tokio::test]
async fn good_client_is_accepted() {
    let pki = Pki::new();
    let (d, _s) = start_tls(&pki, &[]).await;
    try_call(
        &d,
        &pki.ca.cert_pem,
        Some(&pki.client("controller-manager.chaos-mesh.org")),
    )
    .await
    .unwrap();
    d.shutdown();
}

#[tokio::test]
async fn no_client_certificate_is_refused() {
    let pki = Pki::new();
    let (d, _s) = start_tls(&pki, &[]).await;
    assert!(try_call(&d, &pki.ca.cert_pem, None).await.is_err());
    let (_, m) = http_get(d.http_addr, "/metrics").await;
    assert!(
        m.contains(r#"faultd_tls_handshake_failures_total{reason="no_client_certificate"} 1"#),
        "{m}"
    );
    d.shutdown();
}

#[tokio::test]
async fn certificate_from_another_ca_is_refused() {
    let pki = Pki::new();
    let (d, _s) = start_tls(&pki, &[]).await;
    let rogue = Ca::new("rogue CA").unwrap();
    let leaf = rogue
        .issue(
            "controller-manager.chaos-mesh.org",
            &["controller-manager.chaos-mesh.org"],
            false,
            false,
        )
        .unwrap();
    assert!(try_call(&d, &pki.ca.cert_pem, Some(&leaf)).await.is_err());
    d.shutdown();
}

#[tokio::test]
async fn expired_client_certificate_is_refused() {
    let pki = Pki::new();
    let (d, _s) = start_tls(&pki, &[]).await;
    let leaf = pki
        .ca
        .issue(
            "controller-manager.chaos-mesh.org",
            &["controller-manager.chaos-mesh.org"],
            false,
            true,
        )
        .unwrap();
    assert!(try_call(&d, &pki.ca.cert_pem, Some(&leaf)).await.is_err());
    let (_, m) = http_get(d.http_addr, "/metrics").await;
    assert!(m.contains(r#"reason="expired_certificate"} 1"#), "{m}");
    d.shutdown();
}

#[tokio::test]
async fn name_outside_the_allow_list_is_refused() {
    let pki = Pki::new();
    let (d, _s) = start_tls(
        &pki,
        &[
            "--allowed-client-names",
            "controller-manager.chaos-mesh.org,ops.example",
        ],
    )
    .await;
    try_call(
        &d,
        &pki.ca.cert_pem,
        Some(&pki.client("controller-manager.chaos-mesh.org")),
    )
    .await
    .unwrap();
    try_call(&d, &pki.ca.cert_pem, Some(&pki.client("ops.example")))
        .await
        .unwrap();
    assert!(
        try_call(&d, &pki.ca.cert_pem, Some(&pki.client("intruder.example")))
            .await
            .is_err()
    );
    d.shutdown();
}

#[tokio::test]
async fn plaintext_to_the_tls_port_is_refused() {
    let pki = Pki::new();
    let (d, _s) = start_tls(&pki, &[]).await;
    let result = async {
        let ch = tonic::transport::Endpoint::from_shared(format!("http://{}", d.grpc_addr))
            .unwrap()
            .connect()
            .await
            .map_err(|e| e.to_string())?;
        ChaosDaemonClient::new(ch)
            .set_time_offset(pb::TimeRequest::default())
            .await
            .map_err(|e| e.to_string())
    }
    .await;
    assert!(result.is_err(), "{result:?}");
    d.shutdown();
}

#[tokio::test]
async fn certificates_are_reloaded_when_files_change() {
    let pki = Pki::new();
    let (d, _s) = start_tls(&pki, &[]).await;
    let old_client = pki.client("controller-manager.chaos-mesh.org");
    try_call(&d, &pki.ca.cert_pem, Some(&old_client))
        .await
        .unwrap();

    // Rotate everything to a new CA, as cert-manager or a Helm upgrade would.
    let new_ca = Ca::new("rotated CA").unwrap();
    let server = new_ca
        .issue(
            faultd::tls::CHAOS_DAEMON_SERVER_NAME,
            &[faultd::tls::CHAOS_DAEMON_SERVER_NAME],
            true,
            false,
        )
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));
    std::fs::write(&pki.ca_path, &new_ca.cert_pem).unwrap();
    std::fs::write(&pki.server_cert, &server.cert_pem).unwrap();
    std::fs::write(&pki.server_key, &server.key_pem).unwrap();

    let new_client = new_ca
        .issue(
            "controller-manager.chaos-mesh.org",
            &["controller-manager.chaos-mesh.org"],
            false,
            false,
        )
        .unwrap();
    try_call(&d, &new_ca.cert_pem, Some(&new_client))
        .await
        .unwrap();
    // The old CA no longer verifies the server, and the server no longer trusts the old client.
    assert!(try_call(&d, &pki.ca.cert_pem, Some(&old_client))
        .await
        .is_err());
    assert!(try_call(&d, &new_ca.cert_pem, Some(&old_client))
        .await
        .is_err());

    // A half-written rotation keeps the last good certificates.
    std::fs::write(&pki.server_key, "garbage").unwrap();
    try_call(&d, &new_ca.cert_pem, Some(&new_client))
        .await
        .unwrap();
    d.shutdown();
}
