//! TLS for `listen_tls` and for sockets named `https`: the certificate and key
//! are read once, at start. A renewed certificate is picked up by
//! `systemctl reload`, whose successor reads the files on disk then; the old
//! instance keeps serving with the old one until the successor is ready, so
//! a renewal never drops a connection.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

use crate::config::{PemSource, TlsConfig};

/// The loaded certificate, ready to accept connections with.
#[derive(Clone)]
pub(crate) struct Tls {
    pub(crate) acceptor: TlsAcceptor,
    /// The leaf certificate's notAfter, in unix seconds.
    pub(crate) not_after: i64,
}

impl Tls {
    /// Reads and checks `server.tls`; `None` when it is not set. Errors name
    /// the file and what is wrong with it.
    pub(crate) fn load(cfg: Option<&TlsConfig>) -> Result<Option<Tls>, String> {
        let Some(cfg) = cfg else {
            return Ok(None);
        };
        let cert_path = resolve(&cfg.cert, "cert")?;
        let key_path = resolve(&cfg.key, "key")?;
        let cert_pem = read(&cert_path, "certificate")?;
        let key_pem = read(&key_path, "key")?;

        let mut chain = Vec::new();
        for c in CertificateDer::pem_slice_iter(&cert_pem) {
            chain.push(
                c.map_err(|e| format!("tls certificate {}: bad PEM: {e}", cert_path.display()))?,
            );
        }
        let Some(leaf) = chain.first() else {
            return Err(format!(
                "tls certificate {}: no \"BEGIN CERTIFICATE\" block in the file",
                cert_path.display()
            ));
        };
        let not_after =
            not_after(leaf).map_err(|e| format!("tls certificate {}: {e}", cert_path.display()))?;
        let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
            format!(
                "tls key {}: no usable private key (PKCS#8, RSA or EC PEM): {e}",
                key_path.display()
            )
        })?;

        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut server = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| format!("tls: {e}"))?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|e| match e {
                rustls::Error::InconsistentKeys(_) => format!(
                    "tls key {} does not match the certificate in {}",
                    key_path.display(),
                    cert_path.display()
                ),
                other => format!(
                    "tls key {} / certificate {}: {other}",
                    key_path.display(),
                    cert_path.display()
                ),
            })?;
        // hookd speaks HTTP/1.1 only; a client asking for h2 alone is refused
        // in the handshake rather than sent HTTP/1 bytes it cannot read.
        server.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Some(Tls {
            acceptor: TlsAcceptor::from(Arc::new(server)),
            not_after,
        }))
    }
}

/// The path a PEM source names.
fn resolve(src: &PemSource, what: &str) -> Result<PathBuf, String> {
    match src {
        PemSource::File(p) => Ok(p.clone()),
        PemSource::Credential(name) => match std::env::var_os("CREDENTIALS_DIRECTORY") {
            Some(dir) if !dir.is_empty() => Ok(PathBuf::from(dir).join(name)),
            _ => Err(format!(
                "server.tls.{what}_credential = {name:?}: $CREDENTIALS_DIRECTORY is not set (the unit needs LoadCredential={name}:/path/to/file)"
            )),
        },
    }
}

fn read(path: &std::path::Path, what: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("tls {what} {}: cannot read: {e}", path.display()))
}

/// The leaf's notAfter, for the expiry gauge operators alert on.
fn not_after(leaf: &CertificateDer<'_>) -> Result<i64, String> {
    let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref())
        .map_err(|e| format!("the first certificate does not parse: {e}"))?;
    Ok(cert.validity().not_after.timestamp())
}
