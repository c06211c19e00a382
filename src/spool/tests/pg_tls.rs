//! TLS to the PostgreSQL spool, against a real server with `ssl = on` and
//! certificates this test makes: each `sslmode` does what the table in
//! `pg/connect.rs` says, and the session really is encrypted
//! (`pg_stat_ssl`) or really is not.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};

use super::pg_cluster::Pg;
use crate::spool::PgTarget;

const LIMIT: Duration = Duration::from_secs(5);

/// A server with TLS on: its leaf names `localhost` only, signed by a CA
/// whose PEM is at `ca`; `other_ca` signed nothing of it.
struct TlsPg {
    pg: Pg,
    ca: PathBuf,
    other_ca: PathBuf,
}

fn ca(name: &str) -> (rcgen::Certificate, KeyPair) {
    let key = KeyPair::generate().expect("CA key");
    let mut p = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, name);
    let cert = p.self_signed(&key).expect("CA cert");
    (cert, key)
}

fn write_owned(path: &Path, text: &str, mode: u32, like: &Path) {
    std::fs::write(path, text).expect("write PEM");
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(mode))
        .expect("chmod PEM");
    let owner = std::fs::metadata(like).expect("stat cluster dir");
    std::os::unix::fs::chown(path, Some(owner.uid()), Some(owner.gid())).expect("chown PEM");
}

impl TlsPg {
    fn start() -> TlsPg {
        let pg = Pg::start_new();
        let (ca_cert, ca_key) = ca("hookd test CA");
        let (other, _) = ca("some other CA");
        let key = KeyPair::generate().expect("leaf key");
        let mut p = CertificateParams::new(vec!["localhost".to_string()]).expect("leaf params");
        p.distinguished_name.push(DnType::CommonName, "localhost");
        let leaf = p.signed_by(&key, &ca_cert, &ca_key).expect("leaf");
        let dir = pg.dir().to_path_buf();
        write_owned(&dir.join("server.crt"), &leaf.pem(), 0o644, &dir);
        write_owned(&dir.join("server.key"), &key.serialize_pem(), 0o600, &dir);
        let ca = dir.join("ca.pem");
        let other_ca = dir.join("other-ca.pem");
        std::fs::write(&ca, ca_cert.pem()).expect("write CA");
        std::fs::write(&other_ca, other.pem()).expect("write other CA");
        // One statement per psql: ALTER SYSTEM refuses a transaction block.
        pg.psql(&format!(
            "ALTER SYSTEM SET ssl_cert_file = '{}/server.crt'",
            dir.display()
        ));
        pg.psql(&format!(
            "ALTER SYSTEM SET ssl_key_file = '{}/server.key'",
            dir.display()
        ));
        pg.psql("ALTER SYSTEM SET ssl = on");
        pg.psql("SELECT pg_reload_conf()");
        let t = TlsPg { pg, ca, other_ca };
        // The reload reaches the postmaster asynchronously: wait until a
        // new session can have TLS.
        let deadline = Instant::now() + Duration::from_secs(10);
        while t
            .session(
                &format!("sslmode=require&sslrootcert={}", t.ca.display()),
                "localhost",
            )
            .is_err()
        {
            assert!(Instant::now() < deadline, "the server never offered TLS");
            std::thread::sleep(Duration::from_millis(50));
        }
        t
    }

    /// The URL to this server by `host` with `params`.
    fn url(&self, params: &str, host: &str) -> String {
        let url = self.pg.url();
        let at = url.rfind('@').expect("url has a host");
        let slash = url[at..].find('/').expect("url has a database") + at;
        let port = self.pg.addr().port();
        format!("{}@{host}:{port}{}?{params}", &url[..at], &url[slash..])
    }

    /// Connects with `params` by `host`; whether the session is encrypted.
    fn session(&self, params: &str, host: &str) -> Result<bool, String> {
        let target = PgTarget::parse(&self.url(params, host))?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let client = target
                .connect(LIMIT, "hookd tls test")
                .await
                .map_err(|e| e.to_string())?;
            let row = client
                .query_one(
                    "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                    &[],
                )
                .await
                .map_err(|e| e.to_string())?;
            Ok(row.get::<_, bool>(0))
        })
    }
}

#[test]
fn each_sslmode_encrypts_and_verifies_as_libpq_does() {
    let t = TlsPg::start();
    let ca = t.ca.display().to_string();
    let other = t.other_ca.display().to_string();

    // No TLS at all; and TLS when offered, the certificate unchecked.
    assert_eq!(t.session("sslmode=disable", "localhost"), Ok(false));
    assert_eq!(
        t.session("", "127.0.0.1"),
        Ok(true),
        "prefer is the default"
    );
    assert_eq!(t.session("sslmode=require", "127.0.0.1"), Ok(true));

    // verify-full: the chain and the name.
    assert_eq!(
        t.session(
            &format!("sslmode=verify-full&sslrootcert={ca}"),
            "localhost"
        ),
        Ok(true)
    );
    let wrong_name = t
        .session(
            &format!("sslmode=verify-full&sslrootcert={ca}"),
            "127.0.0.1",
        )
        .expect_err("the leaf names localhost, not 127.0.0.1");
    assert!(
        wrong_name.contains("not valid for name") || wrong_name.contains("certificate"),
        "{wrong_name}"
    );
    let wrong_ca = t
        .session(
            &format!("sslmode=verify-full&sslrootcert={other}"),
            "localhost",
        )
        .expect_err("another CA signed nothing of this");
    assert!(wrong_ca.contains("certificate"), "{wrong_ca}");

    // verify-ca: the chain, whatever the name; a root file makes require do the same.
    assert_eq!(
        t.session(&format!("sslmode=verify-ca&sslrootcert={ca}"), "127.0.0.1"),
        Ok(true)
    );
    assert!(t
        .session(
            &format!("sslmode=verify-ca&sslrootcert={other}"),
            "127.0.0.1"
        )
        .is_err());
    assert!(t
        .session(&format!("sslmode=require&sslrootcert={other}"), "127.0.0.1")
        .is_err());
}

#[test]
fn require_refuses_a_server_without_tls_and_prefer_falls_back() {
    let pg = Pg::start_new();
    let t = TlsPg {
        pg,
        ca: PathBuf::new(),
        other_ca: PathBuf::new(),
    };
    assert_eq!(t.session("", "127.0.0.1"), Ok(false));
    let e = t
        .session("sslmode=require", "127.0.0.1")
        .expect_err("no TLS on this server");
    assert!(
        e.contains("TLS") || e.contains("SSL") || e.contains("ssl"),
        "{e}"
    );
}
