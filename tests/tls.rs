//! TLS against the real binary: `listen_tls` with a certificate made here by
//! a test CA, a rustls client that trusts only that CA, key/cert checks at
//! start, the expiry gauge, and a renewal picked up by `hookd reload` under
//! load without a failed request.
//!
//! The test process makes itself a child subreaper, as systemd is for a unit,
//! so the successor started by a reload can be reaped.

mod common;

use std::io::{BufReader, Read};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, ServerName};

/// A test CA that signs leaves for `localhost`.
struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

/// A leaf certificate (PEM chain and key) and its DER, to recognise it on the wire.
struct Leaf {
    chain_pem: String,
    key_pem: String,
    der: Vec<u8>,
    not_after: i64,
}

impl Ca {
    fn new() -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name
            .push(DnType::CommonName, "hookd test CA");
        let cert = p.self_signed(&key).unwrap();
        Ca { cert, key }
    }

    fn leaf(&self, year: i32) -> Leaf {
        self.leaf_until(year, 6, 30)
    }

    fn leaf_until(&self, year: i32, month: u8, day: u8) -> Leaf {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        p.distinguished_name.push(DnType::CommonName, "localhost");
        p.not_after = rcgen::date_time_ymd(year, month, day);
        let not_after = p.not_after.unix_timestamp();
        let cert = p.signed_by(&key, &self.cert, &self.key).unwrap();
        Leaf {
            chain_pem: format!("{}{}", cert.pem(), self.cert.pem()),
            key_pem: key.serialize_pem(),
            der: cert.der().to_vec(),
            not_after,
        }
    }

    fn client(
        &self,
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.cert.der().clone()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut c = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        c.alpn_protocols = vec![b"http/1.1".to_vec()];
        Arc::new(c)
    }
}

/// Writes a leaf's files the way certbot renews them: a new file renamed
/// over the old, so a reader never sees half of one.
fn install(leaf: &Leaf, cert: &Path, key: &Path) {
    for (path, text) in [(cert, &leaf.chain_pem), (key, &leaf.key_pem)] {
        let tmp = path.with_extension("new");
        std::fs::write(&tmp, text).unwrap();
        std::fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
        std::fs::rename(&tmp, path).unwrap();
    }
}

/// A hookd with one GitHub-signed hook, plain `listen` as usual and
/// `listen_tls` on a second port with `tls_toml` as its `server.tls`.
fn configure(dir: &Path, tls_toml: &str) -> (Hookd, SocketAddr) {
    let h = Hookd::configure(
        dir,
        &format!(
            "[[hook]]\nname = \"gh\"\nverify = {{ scheme = \"github\", secret_file = \"{}/github.secret\" }}\naction = {{ exec = [\"/bin/true\"] }}\n",
            dir.display()
        ),
    );
    let port = free_port();
    let text = std::fs::read_to_string(&h.config).unwrap().replacen(
        "[server]\n",
        &format!("[server]\nlisten_tls = [\"127.0.0.1:{port}\"]\ntls = {tls_toml}\n"),
        1,
    );
    std::fs::write(&h.config, text).unwrap();
    (h, SocketAddr::from(([127, 0, 0, 1], port)))
}

fn file_tls(dir: &Path) -> (String, PathBuf, PathBuf) {
    let (cert, key) = (dir.join("fullchain.pem"), dir.join("privkey.pem"));
    (
        format!(
            "{{ cert_file = \"{}\", key_file = \"{}\" }}",
            cert.display(),
            key.display()
        ),
        cert,
        key,
    )
}

/// One signed POST on a new TLS connection: the status, the JSON body and
/// the leaf certificate the server presented.
fn post_tls(
    client: &Arc<rustls::ClientConfig>,
    addr: SocketAddr,
    body: &[u8],
) -> std::io::Result<(u16, serde_json::Value, Vec<u8>)> {
    let tcp = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
    tcp.set_write_timeout(Some(Duration::from_secs(10)))?;
    let name = ServerName::try_from("localhost").unwrap();
    let conn =
        rustls::ClientConnection::new(client.clone(), name).map_err(std::io::Error::other)?;
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    let sig = github_sig(SECRET, body);
    write_request(
        &mut tls,
        "POST",
        "/hooks/gh",
        &[
            ("X-Hub-Signature-256", sig.as_str()),
            ("Content-Type", "application/json"),
        ],
        body,
        true,
    )?;
    let leaf: Vec<u8> = tls
        .conn
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c: &CertificateDer<'_>| c.to_vec())
        .unwrap_or_default();
    let alpn = tls.conn.alpn_protocol().map(<[u8]>::to_vec);
    assert_eq!(alpn.as_deref(), Some(&b"http/1.1"[..]), "ALPN");
    let resp = read_response(&mut BufReader::new(&mut tls))?;
    Ok((resp.status, resp.json(), leaf))
}

#[test]
fn a_signed_webhook_over_tls_is_accepted_and_plain_http_on_the_tls_port_is_closed() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new();
    let leaf = ca.leaf(2031);
    let (tls_toml, cert, key) = file_tls(dir.path());
    install(&leaf, &cert, &key);
    let (mut h, tls_addr) = configure(dir.path(), &tls_toml);
    h.start();

    for versions in [
        &[&rustls::version::TLS13][..],
        &[&rustls::version::TLS12][..],
    ] {
        let client = ca.client(versions);
        let (status, body, seen) = post_tls(&client, tls_addr, b"{\"over\":\"tls\"}").unwrap();
        assert_eq!(status, 202, "{body}");
        assert_eq!(body["status"], "queued");
        assert_eq!(seen, leaf.der, "the server presents the configured leaf");
    }

    // Plain HTTP on the TLS port: the handshake fails and the server closes.
    let mut plain = TcpStream::connect_timeout(&tls_addr, Duration::from_secs(5)).unwrap();
    plain
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    write_request(&mut plain, "GET", "/healthz", &[], b"", true).unwrap();
    let mut got = Vec::new();
    // Closed (EOF) or reset: either way, within the deadline and no HTTP answer.
    let res = plain.read_to_end(&mut got);
    if let Err(e) = &res {
        assert!(
            matches!(
                e.kind(),
                std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
            ),
            "the plain connection was not closed: {e}"
        );
    }
    assert!(
        !got.starts_with(b"HTTP/"),
        "{:?}",
        String::from_utf8_lossy(&got)
    );

    // The next TLS client is served as if nothing happened.
    let client = ca.client(&[&rustls::version::TLS13]);
    let (status, body, _) = post_tls(&client, tls_addr, b"{\"after\":\"plain\"}").unwrap();
    assert_eq!(status, 202, "{body}");
    // And so is the plain listener.
    assert_eq!(h.post_signed("gh", b"{\"plain\":1}", &[]).status, 202);

    h.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(h.wait_exit(Duration::from_secs(20)).code(), Some(0));
}

#[test]
fn a_stalled_handshake_is_closed_and_late_headers_get_408_after_the_read_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new();
    let (tls_toml, cert, key) = file_tls(dir.path());
    install(&ca.leaf(2031), &cert, &key);
    let (mut h, tls_addr) = configure(dir.path(), &tls_toml);
    h.start();
    // Connect and say nothing: read_timeout is 2 s in the test config.
    let mut idle = TcpStream::connect_timeout(&tls_addr, Duration::from_secs(5)).unwrap();
    idle.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let start = std::time::Instant::now();
    let mut got = Vec::new();
    let _ = idle.read_to_end(&mut got);
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(1500) && took < Duration::from_secs(8),
        "closed after {took:?}"
    );

    // Handshake done, headers late: the same JSON 408 as on a plain port.
    let client = ca.client(&[&rustls::version::TLS13]);
    let tcp = TcpStream::connect_timeout(&tls_addr, Duration::from_secs(5)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let conn =
        rustls::ClientConnection::new(client, ServerName::try_from("localhost").unwrap()).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    std::io::Write::write_all(&mut tls, b"POST /hooks/gh HTTP/1.1\r\nHost: x\r\n").unwrap();
    let start = std::time::Instant::now();
    let resp = read_response(&mut BufReader::new(&mut tls)).unwrap();
    let took = start.elapsed();
    assert_eq!(resp.status, 408);
    assert_eq!(resp.json()["error"], "request_timeout");
    assert!(took < Duration::from_secs(8), "answered after {took:?}");

    // Neither held anything up.
    let (status, _, _) = post_tls(&ca.client(&[&rustls::version::TLS13]), tls_addr, b"{}").unwrap();
    assert_eq!(status, 202);
    h.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(h.wait_exit(Duration::from_secs(20)).code(), Some(0));
}

#[test]
fn a_key_that_does_not_match_the_certificate_fails_check_config_and_start() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new();
    let (tls_toml, cert, key) = file_tls(dir.path());
    let mut leaf = ca.leaf(2031);
    leaf.key_pem = KeyPair::generate().unwrap().serialize_pem();
    install(&leaf, &cert, &key);
    let (h, _) = configure(dir.path(), &tls_toml);

    let (code, out, err) = h.cli(&["check-config"]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(
        err.contains(&format!(
            "tls key {} does not match the certificate in {}",
            key.display(),
            cert.display()
        )),
        "{err}"
    );

    let st = h.command().status().unwrap();
    assert_eq!(st.code(), Some(2), "{}", h.log_text());
    assert!(h.log_text().contains("does not match"), "{}", h.log_text());

    // A file that is not there is named too.
    std::fs::remove_file(&cert).unwrap();
    let (code, _, err) = h.cli(&["check-config"]);
    assert_eq!(code, 2);
    assert!(
        err.contains(&format!("tls certificate {}: cannot read", cert.display())),
        "{err}"
    );
}

#[test]
fn credentials_are_read_and_metrics_show_the_certificate_expiry() {
    let dir = tempfile::tempdir().unwrap();
    let creds = dir.path().join("credentials");
    std::fs::create_dir(&creds).unwrap();
    let ca = Ca::new();
    let leaf = ca.leaf(2032);
    install(&leaf, &creds.join("hookd-cert"), &creds.join("hookd-key"));
    let (mut h, tls_addr) = configure(
        dir.path(),
        "{ cert_credential = \"hookd-cert\", key_credential = \"hookd-key\" }",
    );

    // Without $CREDENTIALS_DIRECTORY the operator is told what the unit lacks.
    let (code, _, err) = h.cli(&["check-config"]);
    assert_eq!(code, 2);
    assert!(err.contains("$CREDENTIALS_DIRECTORY is not set"), "{err}");

    h.env
        .push(("CREDENTIALS_DIRECTORY".into(), creds.display().to_string()));
    h.start();
    let client = ca.client(&[&rustls::version::TLS13]);
    let (status, body, seen) = post_tls(&client, tls_addr, b"{}").unwrap();
    assert_eq!(status, 202, "{body}");
    assert_eq!(seen, leaf.der);

    let m = request(h.metrics_addr(), "GET", "/metrics", &[], b"").unwrap();
    assert_eq!(m.status, 200);
    let text = String::from_utf8_lossy(&m.body).to_string();
    let line = text
        .lines()
        .find(|l| l.starts_with("hookd_tls_cert_expiry_timestamp_seconds "))
        .unwrap_or_else(|| panic!("no expiry gauge in:\n{text}"));
    assert_eq!(
        line,
        format!("hookd_tls_cert_expiry_timestamp_seconds {}", leaf.not_after)
    );
    h.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(h.wait_exit(Duration::from_secs(20)).code(), Some(0));
}

#[test]
fn a_renewed_certificate_is_served_after_reload_with_no_failed_request() {
    common::subreaper();
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new();
    let (a, b) = (ca.leaf(2031), ca.leaf(2032));
    let (tls_toml, cert, key) = file_tls(dir.path());
    install(&a, &cert, &key);
    let (mut h, tls_addr) = configure(dir.path(), &tls_toml);
    h.start();
    let old = h.pid();

    // Steady paced load, one new TLS connection per request.
    let client = ca.client(&[&rustls::version::TLS13, &rustls::version::TLS12]);
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let saw_b = Arc::new(AtomicBool::new(false));
    let load = {
        let (stop, ok, failures, saw_b) =
            (stop.clone(), ok.clone(), failures.clone(), saw_b.clone());
        let (client, b_der) = (client.clone(), b.der.clone());
        std::thread::spawn(move || {
            for n in 0..3000 {
                if stop.load(Ordering::Acquire) {
                    break;
                }
                let body = format!("{{\"n\":{n}}}");
                match post_tls(&client, tls_addr, body.as_bytes()) {
                    Ok((202, _, leaf)) => {
                        ok.fetch_add(1, Ordering::AcqRel);
                        if leaf == b_der {
                            saw_b.store(true, Ordering::Release);
                        }
                    }
                    Ok((status, body, _)) => failures
                        .lock()
                        .unwrap()
                        .push(format!("request {n}: {status} {body}")),
                    Err(e) => failures.lock().unwrap().push(format!("request {n}: {e}")),
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    wait_for(Duration::from_secs(20), "load before the renewal", || {
        (ok.load(Ordering::Acquire) >= 10).then_some(())
    });
    assert!(!saw_b.load(Ordering::Acquire));

    install(&b, &cert, &key);
    let (code, out, err) = h.cli(&["reload"]);
    assert_eq!(code, 0, "{out}{err}\n{}", h.log_text());
    let at_reload = ok.load(Ordering::Acquire);
    wait_for(
        Duration::from_secs(20),
        "new connections to see cert B",
        || saw_b.load(Ordering::Acquire).then_some(()),
    );
    // A while longer under load after the switch.
    wait_for(Duration::from_secs(20), "load after the renewal", || {
        (ok.load(Ordering::Acquire) >= at_reload + 10).then_some(())
    });
    stop.store(true, Ordering::Release);
    load.join().unwrap();
    let failed = failures.lock().unwrap().clone();
    assert!(
        failed.is_empty(),
        "failed requests: {failed:?}\n{}",
        h.log_text()
    );
    // Every new connection now gets B.
    let (status, _, seen) = post_tls(&client, tls_addr, b"{\"last\":1}").unwrap();
    assert_eq!(status, 202);
    assert_eq!(seen, b.der);

    // The old instance steps aside; the successor is stopped by hand.
    assert_eq!(h.wait_exit(Duration::from_secs(20)).code(), Some(0));

    // A botched renewal (key of another certificate): the reload fails with
    // the reason and the running instance keeps serving B.
    let mut bad = ca.leaf(2033);
    bad.key_pem = b.key_pem.clone();
    install(&bad, &cert, &key);
    let (code, _, err) = h.cli(&["reload"]);
    assert_ne!(code, 0);
    assert!(
        err.contains("reload failed") && err.contains("does not match the certificate"),
        "{err}"
    );
    let (status, _, seen) = post_tls(&client, tls_addr, b"{\"still\":1}").unwrap();
    assert_eq!(status, 202);
    assert_eq!(seen, b.der);
    let new = h.successor_pid();
    assert_ne!(new, old);
    stop_successor(new, Duration::from_secs(20));
}

/// Starts `h` as systemd would with `fds` as 3, 4, … named `names`.
fn spawn_activated(h: &Hookd, fds: &[std::os::fd::RawFd], names: &str) -> std::process::Child {
    activate(h, fds, names).spawn().unwrap()
}

#[test]
fn a_socket_named_https_is_tls_and_stays_tls_across_a_reload() {
    use std::os::fd::AsRawFd;
    common::subreaper();
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new();
    let leaf = ca.leaf(2031);
    let (tls_toml, cert, key) = file_tls(dir.path());
    install(&leaf, &cert, &key);
    let (mut h, _) = configure(dir.path(), &tls_toml);
    let plain = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let secure = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let (plain_addr, tls_addr) = (plain.local_addr().unwrap(), secure.local_addr().unwrap());
    h.child = Some(spawn_activated(
        &h,
        &[plain.as_raw_fd(), secure.as_raw_fd()],
        "http:https",
    ));
    drop((plain, secure));
    h.notify.wait_line("READY=1", Duration::from_secs(20));
    let old = h.pid();

    let client = ca.client(&[&rustls::version::TLS13]);
    let check = |when: &str| {
        let (status, body, seen) = post_tls(&client, tls_addr, b"{}")
            .unwrap_or_else(|e| panic!("{when}: TLS on the https socket: {e}"));
        assert_eq!(status, 202, "{when}: {body}");
        assert_eq!(seen, leaf.der);
        let body = b"{\"plain\":1}";
        let r = request(
            plain_addr,
            "POST",
            "/hooks/gh",
            &[("X-Hub-Signature-256", &github_sig(SECRET, body))],
            body,
        )
        .unwrap_or_else(|e| panic!("{when}: plain HTTP on the http socket: {e}"));
        assert_eq!(r.status, 202, "{when}");
    };
    check("before the reload");

    let (code, out, err) = h.cli(&["reload"]);
    assert_eq!(code, 0, "{out}{err}\n{}", h.log_text());
    assert_eq!(h.wait_exit(Duration::from_secs(20)).code(), Some(0));
    // Only the successor answers now, on the sockets it was passed.
    check("after the reload");

    let new = h.successor_pid();
    assert_ne!(new, old);
    stop_successor(new, Duration::from_secs(20));
}

#[test]
fn a_socket_named_https_without_server_tls_is_a_config_error() {
    use std::os::fd::AsRawFd;
    let dir = tempfile::tempdir().unwrap();
    let mut h = Hookd::configure(dir.path(), "");
    let secure = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    h.child = Some(spawn_activated(&h, &[secure.as_raw_fd()], "https"));
    let st = h.wait_exit(Duration::from_secs(20));
    assert_eq!(st.code(), Some(2), "{}", h.log_text());
    assert!(
        h.log_text()
            .contains("systemd passed a socket named \"https\" (TLS), but server.tls is not set"),
        "{}",
        h.log_text()
    );
}

/// The civil date (UTC) `days` days from now, for a certificate's notAfter.
fn date_in(days: i64) -> (i32, u8, u8) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    // Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's
    // civil_from_days, written out).
    let z = now.div_euclid(86_400) + days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u8;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
    let y = (yoe + era * 400 + i64::from(m <= 2)) as i32;
    (y, m, d)
}

#[test]
fn status_warns_when_the_certificate_expires_within_14_days() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new();
    let (y, m, d) = date_in(3);
    let leaf = ca.leaf_until(y, m, d);
    let (tls_toml, cert, key) = file_tls(dir.path());
    install(&leaf, &cert, &key);
    let (mut h, _) = configure(dir.path(), &tls_toml);
    h.start();
    let (code, out, err) = h.cli(&["status"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("tls cert expires in"), "{out}");
    assert!(
        err.contains("warning: the TLS certificate expires in"),
        "no warning for a certificate 3 days from expiry: {err}"
    );
    let (_, json, _) = h.cli(&["status", "--json"]);
    assert!(
        json.contains(&format!("\"tls_cert_expiry\": {}", leaf.not_after)),
        "{json}"
    );

    // Far from expiry: the date, and no warning.
    let dir = tempfile::tempdir().unwrap();
    let leaf = ca.leaf(2032);
    let (tls_toml, cert, key) = file_tls(dir.path());
    install(&leaf, &cert, &key);
    let (mut h, _) = configure(dir.path(), &tls_toml);
    h.start();
    let (code, out, err) = h.cli(&["status"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("tls cert expires in"), "{out}");
    assert!(!err.contains("warning"), "{err}");
}
