//! `ApplyHttpChaosRequest.tls`: the certificate and key the proxy terminates TLS with, and the
//! CA it trusts when it re-encrypts towards the app.
//!
//! The controller (`controllers/podhttpchaos/controller.go`) marshals
//! `pkg/chaosdaemon/tproxyconfig/config.go` `TLSConfig` from the secret's data:
//! `{"cert_file":{"type":"Contents","value":<base64 PEM>},"key_file":{…},"ca_file":{…}}`, with
//! `ca_file` left out when the HTTPChaos names no CA; `""` when there is no TLS at all.
//!
//! - Only `"type": "Contents"` is accepted (upstream's tproxy also reads `"Path"`, a file in its
//!   own filesystem; the controller never sends one).
//! - The key may be PKCS#8, PKCS#1 (RSA) or SEC1 (EC) PEM; the certificate file may hold a
//!   chain. The pair is checked now (a key that does not match the certificate is refused).
//! - Towards the app: TLS 1.2 or 1.3, ALPN `http/1.1`, server name = the client's SNI, else the
//!   original destination IP (as IPv4 when it is IPv4-mapped). With `ca_file` the app's certificate must chain to it and match
//!   that name; without, it is not verified (the connection goes to the destination the client
//!   chose, inside the pod's network namespace; upstream would require a public web CA, which
//!   in practice fails every request of a private-CA app).
use std::sync::Arc;

use base64::Engine as _;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};
use serde_json::Value;

use super::HttpError;

/// The two rustls configurations of a TLS-terminating proxy.
#[derive(Debug, Clone)]
pub struct TlsSetup {
    /// Serves the client with the given certificate (ALPN `http/1.1`).
    pub server: Arc<ServerConfig>,
    /// Connects to the app (trusting `ca_file`, or anything without one).
    pub client: Arc<ClientConfig>,
    /// Whether the app's certificate is verified (a `ca_file` was given).
    pub verifies_upstream: bool,
}

/// Parses and checks the TLS JSON; `""` or `null` is no TLS.
pub fn parse_tls(json: &str) -> Result<Option<TlsSetup>, HttpError> {
    let json = json.trim();
    if json.is_empty() {
        return Ok(None);
    }
    let value: Value = serde_json::from_str(json).map_err(|e| HttpError::TlsJson(e.to_string()))?;
    let obj = match value {
        Value::Null => return Ok(None),
        Value::Object(o) => o,
        _ => return Err(HttpError::TlsJson("expected a JSON object".into())),
    };
    let file = |key: &str, required: bool| -> Result<Option<Vec<u8>>, HttpError> {
        let bad = |reason: String| HttpError::Tls {
            field: key.to_string(),
            reason,
        };
        let item = match obj.get(key) {
            None | Some(Value::Null) if required => return Err(bad("missing".into())),
            None | Some(Value::Null) => return Ok(None),
            Some(Value::Object(item)) => item,
            Some(_) => return Err(bad("expected {\"type\":\"Contents\",\"value\":…}".into())),
        };
        match item.get("type").and_then(Value::as_str) {
            Some("Contents") => {}
            other => {
                return Err(bad(format!(
                    "type {other:?}: only \"Contents\" is supported"
                )))
            }
        }
        match item.get("value") {
            None | Some(Value::Null) => Ok(Some(Vec::new())),
            Some(Value::String(b64)) => base64::engine::general_purpose::STANDARD
                .decode(b64)
                .map(Some)
                .map_err(|e| bad(format!("value is not base64: {e}"))),
            Some(_) => Err(bad("value: expected a base64 string".into())),
        }
    };
    let cert_pem = file("cert_file", true)?.unwrap_or_default();
    let key_pem = file("key_file", true)?.unwrap_or_default();
    let ca_pem = file("ca_file", false)?;

    let bad = |field: &str, reason: String| HttpError::Tls {
        field: field.to_string(),
        reason,
    };
    let certs = pem_certs(&cert_pem).map_err(|r| bad("cert_file", r))?;
    let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut key_pem.as_slice())
        .map_err(|e| bad("key_file", format!("not PEM: {e}")))?
        .ok_or_else(|| bad("key_file", "no private key found".into()))?;

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut server = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| bad("cert_file", e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| bad("key_file", format!("certificate and key: {e}")))?;
    server.alpn_protocols = vec![b"http/1.1".to_vec()];

    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| bad("ca_file", e.to_string()))?;
    let verifies_upstream = ca_pem.is_some();
    let mut client = match ca_pem {
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for c in pem_certs(&ca).map_err(|r| bad("ca_file", r))? {
                roots
                    .add(c)
                    .map_err(|e| bad("ca_file", format!("CA certificate rejected: {e}")))?;
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        None => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyServerCert(provider)))
            .with_no_client_auth(),
    };
    client.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Some(TlsSetup {
        server: Arc::new(server),
        client: Arc::new(client),
        verifies_upstream,
    }))
}

fn pem_certs(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Result<Vec<_>, _> = rustls_pemfile::certs(&mut &*pem).collect();
    let certs = certs.map_err(|e| format!("not PEM: {e}"))?;
    if certs.is_empty() {
        return Err("no PEM certificate found".into());
    }
    Ok(certs)
}

/// Accepts the app's certificate whatever it is (no `ca_file`), still checking that the
/// handshake is signed by its key.
#[derive(Debug)]
struct AnyServerCert(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyServerCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::pki::Ca;

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    fn item(pem: &str) -> Value {
        serde_json::json!({"type": "Contents", "value": b64(pem)})
    }

    #[test]
    fn parses_the_controller_form() {
        let ca = Ca::new("test CA").unwrap();
        let leaf = ca.issue("app", &["app.default.svc"], true, false).unwrap();
        let json = serde_json::json!({
            "cert_file": item(&leaf.cert_pem),
            "key_file": item(&leaf.key_pem),
            "ca_file": item(&ca.cert_pem),
        })
        .to_string();
        let setup = parse_tls(&json).unwrap().unwrap();
        assert!(setup.verifies_upstream);
        assert_eq!(setup.server.alpn_protocols, [b"http/1.1".to_vec()]);
        let no_ca = serde_json::json!({
            "cert_file": item(&leaf.cert_pem),
            "key_file": item(&leaf.key_pem),
        })
        .to_string();
        assert!(!parse_tls(&no_ca).unwrap().unwrap().verifies_upstream);
        for none in ["", " ", "null"] {
            assert!(parse_tls(none).unwrap().is_none());
        }
    }

    #[test]
    fn errors_name_the_field() {
        let ca = Ca::new("test CA").unwrap();
        let leaf = ca.issue("app", &["app"], true, false).unwrap();
        let other = ca.issue("other", &["other"], true, false).unwrap();
        let cases = [
            ("[]".to_string(), "tls: expected a JSON object"),
            ("{".to_string(), "tls: EOF"),
            (
                serde_json::json!({"key_file": item(&leaf.key_pem)}).to_string(),
                "tls.cert_file: missing",
            ),
            (
                serde_json::json!({"cert_file": item(&leaf.cert_pem), "key_file": {"type": "Path", "value": "L2V0Yy9rZXk="}}).to_string(),
                "tls.key_file: type Some(\"Path\"): only \"Contents\" is supported",
            ),
            (
                serde_json::json!({"cert_file": {"type": "Contents", "value": "%%"}, "key_file": item(&leaf.key_pem)}).to_string(),
                "tls.cert_file: value is not base64",
            ),
            (
                serde_json::json!({"cert_file": item("junk"), "key_file": item(&leaf.key_pem)}).to_string(),
                "tls.cert_file: no PEM certificate found",
            ),
            (
                serde_json::json!({"cert_file": item(&leaf.cert_pem), "key_file": item(&leaf.cert_pem)}).to_string(),
                "tls.key_file: no private key found",
            ),
            (
                serde_json::json!({"cert_file": item(&leaf.cert_pem), "key_file": item(&other.key_pem)}).to_string(),
                "tls.key_file: certificate and key",
            ),
            (
                serde_json::json!({"cert_file": item(&leaf.cert_pem), "key_file": item(&leaf.key_pem), "ca_file": item("nope")}).to_string(),
                "tls.ca_file: no PEM certificate found",
            ),
        ];
        for (json, want) in cases {
            let got = parse_tls(&json).unwrap_err().to_string();
            assert!(got.starts_with(want), "{json}\n got: {got}\nwant: {want}…");
        }
    }
}
