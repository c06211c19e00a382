//! Reaching the PostgreSQL spool: what the `[spool] url` says about TLS, one
//! deadline over the whole connect, and the session settings every hookd
//! connection carries.
//!
//! tokio-postgres knows `sslmode` disable / prefer / require and verifies
//! nothing itself; libpq's `verify-ca` and `verify-full` and its
//! `sslrootcert` are what an operator writes in a URL, so hookd takes those
//! two parameters out of the query string before tokio-postgres parses the
//! rest, and builds the rustls verifier they ask for:
//!
//! | sslmode              | TLS                     | server certificate checked                 |
//! |----------------------|-------------------------|--------------------------------------------|
//! | `disable`            | never                   | —                                          |
//! | `prefer` (default)   | if the server offers it | no (as libpq), or chain if `sslrootcert`   |
//! | `require`            | always                  | no (as libpq), or chain if `sslrootcert`   |
//! | `verify-ca`          | always                  | chain to `sslrootcert`                     |
//! | `verify-full`        | always                  | chain to `sslrootcert` and the host's name |
//!
//! `sslrootcert=system` means the system's store
//! (`/etc/ssl/certs/ca-certificates.crt`). The verify modes need
//! `sslrootcert`: hookd has no home directory to find libpq's
//! `~/.postgresql/root.crt` in, and a default that silently trusts nothing
//! would only move the error.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres::config::SslMode;
use tokio_postgres::{Client, Config, NoTls};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::{with_causes, Connector};
use crate::spool::SpoolError;

/// The system's CA bundle (Debian's ca-certificates), for `sslrootcert=system`.
const SYSTEM_ROOTS: &str = "/etc/ssl/certs/ca-certificates.crt";

/// A transaction left open this long is ended by the server: a hookd stuck
/// mid-batch (or a partition that keeps its session alive) must not hold
/// row locks and the xmin horizon, which is how queue tables bloat.
const IDLE_IN_TRANSACTION: &str = "60s";

/// A parsed `[spool] url`: how to connect, and what messages call it.
#[derive(Clone)]
pub(crate) struct Target {
    config: Config,
    tls: Option<MakeRustlsConnect>,
    name: String,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the password: the Config's own Debug redacts it too, but
        // this is all anyone needs to see.
        f.debug_struct("Target").field("name", &self.name).finish()
    }
}

impl Target {
    /// Parses a `postgres://` (or `postgresql://`) URL; the error says what
    /// is wrong without repeating the URL (it may hold a password).
    pub(crate) fn parse(url: &str) -> Result<Target, String> {
        let url = url.trim();
        let rest = url
            .strip_prefix("postgres://")
            .or_else(|| url.strip_prefix("postgresql://"))
            .ok_or("the URL must start with postgres:// or postgresql://")?;
        let (base, query) = match rest.split_once('?') {
            Some((b, q)) => (b, q),
            None => (rest, ""),
        };
        let mut mode = None;
        let mut root = None;
        let mut kept = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            // form_urlencoded decodes %XX (and '+' as a space, which no
            // sslmode or CA path needs).
            let Some((k, v)) = form_urlencoded::parse(pair.as_bytes()).next() else {
                continue;
            };
            match k.as_ref() {
                "sslmode" => mode = Some(v.into_owned()),
                "sslrootcert" => root = Some(v.into_owned()),
                _ => kept.push(pair),
            }
        }
        let rebuilt = if kept.is_empty() {
            format!("postgres://{base}")
        } else {
            format!("postgres://{base}?{}", kept.join("&"))
        };
        let mut config = Config::from_str(&rebuilt).map_err(|e| with_causes(&e))?;
        if config.get_hosts().is_empty() {
            return Err("the URL names no host".into());
        }
        let mode = match mode.as_deref().unwrap_or("prefer") {
            "disable" => Mode::Disable,
            "prefer" => Mode::Prefer,
            "require" => Mode::Require,
            "verify-ca" => Mode::VerifyCa,
            "verify-full" => Mode::VerifyFull,
            other => {
                return Err(format!(
                    "sslmode={other} is not one hookd knows (disable, prefer, require, verify-ca, verify-full)"
                ))
            }
        };
        let tls = tls_config(mode, root.as_deref())?;
        config.ssl_mode(match mode {
            Mode::Disable => SslMode::Disable,
            Mode::Prefer => SslMode::Prefer,
            _ => SslMode::Require,
        });
        let name = describe(&config);
        Ok(Target { config, tls, name })
    }

    /// What messages call the database: user, hosts, ports and database,
    /// never the password.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// One new connection, the whole of it (DNS, TCP, TLS, login) within
    /// `limit`; its connection task is spawned on the current runtime.
    /// `application_name` shows in `pg_stat_activity`.
    pub(crate) async fn connect(
        &self,
        limit: Duration,
        application_name: &str,
    ) -> Result<Client, SpoolError> {
        let mut config = self.config.clone();
        if config.get_application_name().is_none() {
            config.application_name(application_name);
        }
        let session = format!("-c idle_in_transaction_session_timeout={IDLE_IN_TRANSACTION}");
        let options = match config.get_options() {
            Some(given) => format!("{given} {session}"),
            None => session,
        };
        config.options(options);
        // tokio-postgres's own connect_timeout covers each TCP connect only.
        let attempt = async {
            match &self.tls {
                None => {
                    let (client, conn) = config.connect(NoTls).await?;
                    tokio::spawn(async move {
                        let _ = conn.await;
                    });
                    Ok::<_, tokio_postgres::Error>(client)
                }
                Some(tls) => {
                    let (client, conn) = config.connect(tls.clone()).await?;
                    tokio::spawn(async move {
                        let _ = conn.await;
                    });
                    Ok(client)
                }
            }
        };
        match tokio::time::timeout(limit, attempt).await {
            Ok(Ok(client)) => Ok(client),
            // The server's own refusal (a wrong password, no such
            // database) is its answer, not an outage; "starting up" is one.
            Ok(Err(e))
                if e.as_db_error().is_some()
                    && e.code() != Some(&tokio_postgres::error::SqlState::CANNOT_CONNECT_NOW) =>
            {
                Err(SpoolError::Postgres(e))
            }
            // Callers name the database (`Target::name`) themselves.
            Ok(Err(e)) => Err(SpoolError::Unreachable(with_causes(&e))),
            Err(_) => Err(SpoolError::Unreachable(format!(
                "no connection within {}",
                humantime::format_duration(limit)
            ))),
        }
    }

    /// A [`Connector`] for the spool's writer, which reconnects with it.
    pub(crate) fn connector(self: Arc<Self>, application_name: String) -> Connector {
        Arc::new(move |limit| {
            let (target, app) = (self.clone(), application_name.clone());
            Box::pin(async move { target.connect(limit, &app).await })
        })
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

/// The rustls side of `mode`; `None` for no TLS at all.
fn tls_config(mode: Mode, root: Option<&str>) -> Result<Option<MakeRustlsConnect>, String> {
    if mode == Mode::Disable {
        return Ok(None);
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let roots = match root {
        Some(path) => Some(Arc::new(load_roots(path)?)),
        None if matches!(mode, Mode::VerifyCa | Mode::VerifyFull) => {
            return Err(
                "sslmode=verify-ca and verify-full need sslrootcert=/path/to/ca.pem (or sslrootcert=system)"
                    .into(),
            )
        }
        None => None,
    };
    let verifier: Arc<dyn ServerCertVerifier> = match roots {
        None => Arc::new(Unverified(provider.clone())),
        Some(roots) => {
            let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
                .build()
                .map_err(|e| format!("sslrootcert: {e}"))?;
            if mode == Mode::VerifyFull {
                webpki
            } else {
                // libpq: require/prefer with a root file verify the chain
                // as verify-ca does.
                Arc::new(ChainOnly(webpki))
            }
        }
    };
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(Some(MakeRustlsConnect::new(config)))
}

fn load_roots(path: &str) -> Result<RootCertStore, String> {
    let path = if path == "system" { SYSTEM_ROOTS } else { path };
    let pem = std::fs::read(path).map_err(|e| format!("sslrootcert {path}: {e}"))?;
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| format!("sslrootcert {path}: {e}"))?;
        roots
            .add(cert)
            .map_err(|e| format!("sslrootcert {path}: {e}"))?;
    }
    if roots.is_empty() {
        return Err(format!("sslrootcert {path}: no certificate in it"));
    }
    Ok(roots)
}

/// `user@host:port/db` from a parsed config.
fn describe(config: &Config) -> String {
    use tokio_postgres::config::Host;
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .zip(config.get_ports().iter().chain(std::iter::repeat(&5432)))
        .map(|(h, port)| match h {
            Host::Tcp(name) => format!("{name}:{port}"),
            Host::Unix(dir) => format!("{}:{port}", dir.display()),
        })
        .collect();
    format!(
        "postgres://{}{}/{}",
        config
            .get_user()
            .map(|u| format!("{u}@"))
            .unwrap_or_default(),
        hosts.join(","),
        config.get_dbname().unwrap_or("")
    )
}

/// `require`/`prefer` without a root file: encrypted, the certificate not
/// checked (libpq's meaning; a self-signed `ssl-cert-snakeoil` works). The
/// handshake's signatures are still verified, so the session is bound to
/// whatever key the server showed.
#[derive(Debug)]
struct Unverified(Arc<CryptoProvider>);

impl ServerCertVerifier for Unverified {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
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

/// `verify-ca`: the chain must lead to a trusted root; the name in the
/// certificate is not compared with the host (a database reached by an
/// address its certificate does not list).
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            // webpki checks the chain before the name, so a name error
            // means the chain held.
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_name_never_holds_the_password() {
        let t = Target::parse("postgres://hookd:s3cret@db.example:6432/spool?sslmode=disable")
            .expect("parses");
        assert_eq!(t.name(), "postgres://hookd@db.example:6432/spool");
        assert!(!format!("{t:?}").contains("s3cret"));
    }

    #[test]
    fn verify_modes_need_a_root_file_and_unknown_modes_are_refused() {
        let e = Target::parse("postgres://h/db?sslmode=verify-full").unwrap_err();
        assert!(e.contains("sslrootcert"), "{e}");
        let e = Target::parse("postgres://h/db?sslmode=allow").unwrap_err();
        assert!(e.contains("sslmode=allow"), "{e}");
        let e = Target::parse("mysql://h/db").unwrap_err();
        assert!(e.contains("postgres://"), "{e}");
        let e =
            Target::parse("postgres://h/db?sslmode=verify-ca&sslrootcert=/nonexistent%2Fca.pem")
                .unwrap_err();
        assert!(e.contains("/nonexistent/ca.pem"), "{e}");
    }

    #[test]
    fn other_parameters_reach_tokio_postgres() {
        let t = Target::parse(
            "postgresql://u@h/db?sslmode=disable&application_name=x&connect_timeout=3",
        )
        .expect("parses");
        assert_eq!(t.config.get_application_name(), Some("x"));
        assert_eq!(
            t.config.get_connect_timeout(),
            Some(&Duration::from_secs(3))
        );
        let e = Target::parse("postgres://u@h/db?nonsense=1").unwrap_err();
        assert!(e.contains("nonsense"), "{e}");
    }
}
