//! mTLS for the gRPC port: TLS 1.3 only, client certificate required and verified against the
//! CA, an optional CN/SAN allow-list, and certificates reloaded from disk when their files change
//! (expired certificates are a top complaint upstream, where a restart is the only remedy).
//! Also generates throwaway PKIs for `--dev` and for tests.
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{
    DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig, SignatureScheme,
};

/// The name Chaos Mesh's controller expects in the daemon's server certificate.
pub const CHAOS_DAEMON_SERVER_NAME: &str = "chaos-daemon.chaos-mesh.org";

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {what}")]
    Pem { path: PathBuf, what: String },
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("client verifier: {0}")]
    Verifier(String),
    #[error("generating certificates: {0}")]
    Generate(#[from] rcgen::Error),
}

/// The three PEM files of an mTLS identity.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Parses every certificate in a PEM file.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path)?;
    let certs: Result<Vec<_>, _> = rustls_pemfile::certs(&mut pem.as_slice()).collect();
    let certs = certs.map_err(|e| TlsError::Pem {
        path: path.to_path_buf(),
        what: e.to_string(),
    })?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            path: path.to_path_buf(),
            what: "no certificate found".into(),
        });
    }
    Ok(certs)
}

fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read(path)?;
    rustls_pemfile::private_key(&mut pem.as_slice())
        .map_err(|e| TlsError::Pem {
            path: path.to_path_buf(),
            what: e.to_string(),
        })?
        .ok_or_else(|| TlsError::Pem {
            path: path.to_path_buf(),
            what: "no private key found".into(),
        })
}

/// Builds the server configuration from the files as they are now.
pub fn server_config(
    files: &TlsFiles,
    allowed_names: &[String],
) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    for c in load_certs(&files.ca)? {
        roots.add(c).map_err(|e| TlsError::Pem {
            path: files.ca.clone(),
            what: format!("CA certificate rejected: {e}"),
        })?;
    }
    let webpki = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| TlsError::Verifier(e.to_string()))?;
    let verifier = Arc::new(NameCheckingVerifier {
        inner: webpki,
        allowed: allowed_names.to_vec(),
    });
    let mut cfg = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(load_certs(&files.cert)?, load_key(&files.key)?)?;
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(cfg))
}

/// The names a certificate speaks for: its subject CN, then its DNS, URI and e-mail SANs.
pub fn certificate_names(der: &CertificateDer<'_>) -> Vec<String> {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return Vec::new();
    };
    let mut names: Vec<String> = cert
        .subject()
        .iter_common_name()
        .filter_map(|cn| cn.as_str().ok().map(str::to_string))
        .collect();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            use x509_parser::extensions::GeneralName;
            match n {
                GeneralName::DNSName(s) | GeneralName::URI(s) | GeneralName::RFC822Name(s) => {
                    names.push(s.to_string())
                }
                _ => {}
            }
        }
    }
    names
}

/// The identity faultd records as a fault's owner: the client certificate's first name.
pub fn peer_identity(certs: &[CertificateDer<'_>]) -> Option<String> {
    certs
        .first()
        .and_then(|c| certificate_names(c).into_iter().next())
}

/// WebPKI client verification plus the `--allowed-client-names` check, so a client outside the
/// list is refused during the handshake, before any RPC runs.
#[derive(Debug)]
struct NameCheckingVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    allowed: Vec<String>,
}

impl ClientCertVerifier for NameCheckingVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let ok = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        if self.allowed.is_empty() {
            return Ok(ok);
        }
        let names = certificate_names(end_entity);
        if names.iter().any(|n| self.allowed.iter().any(|a| a == n)) {
            Ok(ok)
        } else {
            tracing::warn!(client_names = ?names, "client certificate not in --allowed-client-names");
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Server configuration that follows its files: every new connection asks for [`current`], which
/// rebuilds the configuration when any file's modification time or size changed. A rebuild that
/// fails (files half written) keeps serving the previous configuration and logs why.
///
/// [`current`]: ReloadingConfig::current
/// (modification time, size) of each file, `None` when unreadable.
type FileStamps = Vec<Option<(SystemTime, u64)>>;

pub struct ReloadingConfig {
    files: TlsFiles,
    allowed: Vec<String>,
    state: Mutex<(FileStamps, Arc<ServerConfig>)>,
}

impl ReloadingConfig {
    pub fn new(files: TlsFiles, allowed: Vec<String>) -> Result<Self, TlsError> {
        let stamp = Self::stamp(&files);
        let cfg = server_config(&files, &allowed)?;
        Ok(ReloadingConfig {
            files,
            allowed,
            state: Mutex::new((stamp, cfg)),
        })
    }

    fn stamp(files: &TlsFiles) -> FileStamps {
        [&files.ca, &files.cert, &files.key]
            .iter()
            .map(|p| {
                std::fs::metadata(p)
                    .ok()
                    .and_then(|m| Some((m.modified().ok()?, m.len())))
            })
            .collect()
    }

    /// The configuration for the next handshake.
    pub fn current(&self) -> Arc<ServerConfig> {
        let stamp = Self::stamp(&self.files);
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if st.0 != stamp {
            match server_config(&self.files, &self.allowed) {
                Ok(cfg) => {
                    tracing::info!(cert = %self.files.cert.display(), "TLS certificates reloaded");
                    *st = (stamp, cfg);
                }
                Err(e) => {
                    tracing::error!(error = %e, "TLS certificate reload failed; keeping the previous certificates");
                    st.0 = stamp;
                }
            }
        }
        st.1.clone()
    }
}

/// Throwaway PKIs for `--dev` and tests.
pub mod pki {
    use super::*;
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };

    /// A certificate authority that can issue leaves.
    pub struct Ca {
        pub cert_pem: String,
        issuer: Issuer<'static, KeyPair>,
    }

    /// A leaf certificate and its key, PEM encoded.
    pub struct Leaf {
        pub cert_pem: String,
        pub key_pem: String,
    }

    impl Ca {
        pub fn new(name: &str) -> Result<Ca, TlsError> {
            let mut params = CertificateParams::new(Vec::<String>::new())?;
            params.distinguished_name.push(DnType::CommonName, name);
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.key_usages = vec![
                KeyUsagePurpose::KeyCertSign,
                KeyUsagePurpose::CrlSign,
                KeyUsagePurpose::DigitalSignature,
            ];
            let key = KeyPair::generate()?;
            let cert = params.self_signed(&key)?;
            Ok(Ca {
                cert_pem: cert.pem(),
                issuer: Issuer::new(params, key),
            })
        }

        /// Issues a leaf for `cn` with DNS/IP SANs. `expired` makes one that ended in 2001.
        pub fn issue(
            &self,
            cn: &str,
            sans: &[&str],
            server: bool,
            expired: bool,
        ) -> Result<Leaf, TlsError> {
            let mut params =
                CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())?;
            params.distinguished_name.push(DnType::CommonName, cn);
            params.key_usages = vec![
                KeyUsagePurpose::DigitalSignature,
                KeyUsagePurpose::KeyEncipherment,
            ];
            params.extended_key_usages = vec![if server {
                ExtendedKeyUsagePurpose::ServerAuth
            } else {
                ExtendedKeyUsagePurpose::ClientAuth
            }];
            if expired {
                params.not_before = rcgen::date_time_ymd(2000, 1, 1);
                params.not_after = rcgen::date_time_ymd(2001, 1, 1);
            }
            let key = KeyPair::generate()?;
            let cert = params.signed_by(&key, &self.issuer)?;
            Ok(Leaf {
                cert_pem: cert.pem(),
                key_pem: key.serialize_pem(),
            })
        }
    }

    /// File paths of a generated development PKI.
    #[derive(Debug, Clone)]
    pub struct DevPki {
        pub dir: PathBuf,
        pub server: TlsFiles,
        pub client: TlsFiles,
    }

    /// Creates (or reuses, if all files exist) a CA, a server certificate valid for localhost,
    /// 127.0.0.1 and the Chaos Mesh daemon name, and a client certificate, under `dir`.
    pub fn dev_pki(dir: &Path) -> Result<DevPki, TlsError> {
        let p = |n: &str| dir.join(n);
        let pki = DevPki {
            dir: dir.to_path_buf(),
            server: TlsFiles {
                ca: p("ca.crt"),
                cert: p("server.crt"),
                key: p("server.key"),
            },
            client: TlsFiles {
                ca: p("ca.crt"),
                cert: p("client.crt"),
                key: p("client.key"),
            },
        };
        let all = [
            &pki.server.ca,
            &pki.server.cert,
            &pki.server.key,
            &pki.client.cert,
            &pki.client.key,
        ];
        if all.iter().all(|f| f.exists()) {
            return Ok(pki);
        }
        let write = |path: &Path, data: &str, mode: u32| -> Result<(), TlsError> {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(mode)
                .open(path)
                .map_err(|source| TlsError::Read {
                    path: path.to_path_buf(),
                    source,
                })?;
            f.write_all(data.as_bytes())
                .map_err(|source| TlsError::Read {
                    path: path.to_path_buf(),
                    source,
                })
        };
        std::fs::create_dir_all(dir).map_err(|source| TlsError::Read {
            path: dir.to_path_buf(),
            source,
        })?;
        let ca = Ca::new("faultd dev CA")?;
        let server = ca.issue(
            CHAOS_DAEMON_SERVER_NAME,
            &["localhost", "127.0.0.1", CHAOS_DAEMON_SERVER_NAME],
            true,
            false,
        )?;
        let client = ca.issue("faultd-dev-client", &["faultd-dev-client"], false, false)?;
        write(&pki.server.ca, &ca.cert_pem, 0o644)?;
        write(&pki.server.cert, &server.cert_pem, 0o644)?;
        write(&pki.server.key, &server.key_pem, 0o600)?;
        write(&pki.client.cert, &client.cert_pem, 0o644)?;
        write(&pki.client.key, &client.key_pem, 0o600)?;
        Ok(pki)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_come_from_cn_and_sans() {
        let ca = pki::Ca::new("t").unwrap();
        let leaf = ca
            .issue(
                "controller-manager.chaos-mesh.org",
                &["a.example", "b.example"],
                false,
                false,
            )
            .unwrap();
        let der = rustls_pemfile::certs(&mut leaf.cert_pem.as_bytes())
            .next()
            .unwrap()
            .unwrap();
        assert_eq!(
            certificate_names(&der),
            vec![
                "controller-manager.chaos-mesh.org",
                "a.example",
                "b.example"
            ]
        );
        assert_eq!(
            peer_identity(&[der]).as_deref(),
            Some("controller-manager.chaos-mesh.org")
        );
    }

    #[test]
    fn dev_pki_builds_a_server_config_and_is_reused() {
        let dir = tempfile::tempdir().unwrap();
        let a = pki::dev_pki(dir.path()).unwrap();
        let ca_before = std::fs::read(&a.server.ca).unwrap();
        server_config(&a.server, &[]).unwrap();
        let b = pki::dev_pki(dir.path()).unwrap();
        assert_eq!(std::fs::read(&b.server.ca).unwrap(), ca_before);
    }

    #[test]
    fn missing_or_empty_files_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let files = TlsFiles {
            ca: dir.path().join("nope.crt"),
            cert: dir.path().join("c"),
            key: dir.path().join("k"),
        };
        let e = server_config(&files, &[]).unwrap_err().to_string();
        assert!(e.contains("nope.crt"), "{e}");
        std::fs::write(&files.ca, "not pem").unwrap();
        let e = server_config(&files, &[]).unwrap_err().to_string();
        assert!(e.contains("no certificate"), "{e}");
    }
}
