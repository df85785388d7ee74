//! TLS (SPEC section 9) with the real binary: https masters trusted through `tls_ca`
//! or the system roots (and one signed by another CA, which must get nothing), https
//! health checks and alert webhook, the client and admin listeners over HTTPS (and the
//! admin commands with `--ca`), certificate reloads, a stalled handshake, and the config
//! errors of half-set keys. Certificates are made here with `rcgen`; the system roots
//! are pointed at a test CA with `SSL_CERT_FILE`.

mod common;

use bytes::Bytes;
use common::*;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncReadExt;

const MESSAGE: &str = r#"{"to":"+15550100","text":"hi"}"#;

/// A certificate authority made for one test.
struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let cert = params.self_signed(&key).unwrap();
        Ca { cert, key }
    }

    fn pem(&self) -> String {
        self.cert.pem()
    }

    /// Writes the CA bundle as `dir/{name}.pem`.
    fn write(&self, dir: &Path, name: &str) -> PathBuf {
        let path = dir.join(format!("{name}.pem"));
        std::fs::write(&path, self.pem()).unwrap();
        path
    }

    /// A certificate for 127.0.0.1 and localhost signed by this CA, written as
    /// `dir/{name}.crt` and `dir/{name}.key`.
    fn leaf(&self, dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let key = KeyPair::generate().unwrap();
        let params =
            CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        let (crt, k) = (
            dir.join(format!("{name}.crt")),
            dir.join(format!("{name}.key")),
        );
        std::fs::write(&crt, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        (crt, k)
    }
}

fn client_config(ca_pem: &str) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

/// `host:port` of an `https://host:port...` URL.
fn authority(url: &str) -> &str {
    let rest = url.strip_prefix("https://").expect("an https URL");
    rest.split('/').next().unwrap()
}

/// A new HTTPS keep-alive connection to `url` trusting `ca_pem`.
async fn tls_connect(url: &str, ca_pem: &str) -> Result<SendRequest<Full<Bytes>>, String> {
    let tcp = tokio::net::TcpStream::connect(authority(url))
        .await
        .map_err(|e| e.to_string())?;
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let tls = tokio_rustls::TlsConnector::from(client_config(ca_pem))
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS: {e}"))?;
    let (sender, conn) = http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    Ok(sender)
}

/// One exchange on `sender`; `url` gives the path.
async fn exchange(
    sender: &mut SendRequest<Full<Bytes>>,
    method: Method,
    url: &str,
    body: &str,
) -> Result<(StatusCode, Bytes), String> {
    let path = &url["https://".len() + authority(url).len()..];
    let req = Request::builder()
        .method(method)
        .uri(if path.is_empty() { "/" } else { path })
        .header("host", authority(url))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap();
    sender.ready().await.map_err(|e| e.to_string())?;
    let resp = tokio::time::timeout(Duration::from_secs(30), sender.send_request(req))
        .await
        .map_err(|_| "timed out".to_string())?
        .map_err(|e| e.to_string())?;
    let status = resp.status();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, body))
}

/// One request on a new HTTPS connection.
async fn https(method: Method, url: &str, ca_pem: &str, body: &str) -> (StatusCode, Bytes) {
    let mut sender = tls_connect(url, ca_pem).await.unwrap();
    exchange(&mut sender, method, url, body).await.unwrap()
}

/// How many sends an https mock accepted.
async fn received(mock: &Mock, ca_pem: &str) -> u64 {
    let (_, body) = https(Method::GET, &format!("{}/received", mock.url), ca_pem, "").await;
    json(&body)["count"].as_u64().unwrap()
}

/// `[[masters]]` for an https mock, its health checked, trusted through `bundle`.
fn checked_with_ca(mock: &Mock, bundle: &std::path::Path) -> String {
    let extra = format!(
        "health_url = \"{}/health\"\ntls_ca = \"{}\"",
        mock.url,
        bundle.display()
    );
    masters_toml(&[(mock, &extra)])
}

fn https_mock(id: &str, cert: &(PathBuf, PathBuf)) -> Mock {
    let mock = Mock::start(
        id,
        &[
            "--tls-cert",
            cert.0.to_str().unwrap(),
            "--tls-key",
            cert.1.to_str().unwrap(),
        ],
    );
    assert!(mock.url.starts_with("https://"), "{}", mock.url);
    mock
}

#[tokio::test]
async fn https_master_with_its_ca_delivers_and_passes_health_checks() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("masters ca");
    let bundle = ca.write(dir.path(), "ca");
    let mock = https_mock("a", &ca.leaf(dir.path(), "a"));
    let sy = Switchyard::start(&format!(
        "[health]\ninterval_ms = 100\n{}",
        checked_with_ca(&mock, &bundle)
    ));
    let http = Http::new();
    let (code, h, body) = http.post(&sy.messages(), MESSAGE).await;
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(header(&h, "x-switchyard-master"), "a");
    assert_eq!(received(&mock, &ca.pem()).await, 1);
    // The https probes pass: checks are counted as passes, and the master stays
    // healthy. (It starts healthy, so wait for the counter, not the state.)
    eventually(Duration::from_secs(10), "a passed https check", || async {
        let metrics = http.get(&format!("{}/metrics", sy.admin)).await.2;
        String::from_utf8_lossy(&metrics).lines().any(|l| {
            l.starts_with("switchyard_health_checks_total")
                && l.contains("result=\"pass\"")
                && !l.ends_with(" 0")
        })
    })
    .await;
    assert_eq!(status_of(&http, &sy, "a").await["state"], "healthy");
}

#[tokio::test]
async fn a_master_signed_by_another_ca_gets_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let trusted = Ca::new("trusted ca");
    let other = Ca::new("other ca");
    let bundle = trusted.write(dir.path(), "trusted");
    let mock = https_mock("a", &other.leaf(dir.path(), "a"));
    let sy = Switchyard::start(&format!(
        "[queue]\nenabled = false\n[health]\ninterval_ms = 100\n{}",
        checked_with_ca(&mock, &bundle)
    ));
    let http = Http::new();
    let (code, _, body) = http.post(&sy.messages(), MESSAGE).await;
    assert!(code.is_server_error(), "{code}");
    let text = String::from_utf8_lossy(&body);
    assert!(text.contains("TLS handshake failed"), "{text}");
    // The client hears no library detail; the operator does.
    assert!(!text.contains("UnknownIssuer"), "{text}");
    let status = status_of(&http, &sy, "a").await;
    let last = status["last_error"].as_str().unwrap_or_default();
    assert!(last.contains("TLS handshake"), "{status}");
    // The probes fail the same way, and the master is taken out.
    eventually(Duration::from_secs(10), "a not healthy", || async {
        status_of(&http, &sy, "a").await["state"] != "healthy"
    })
    .await;
    assert_eq!(received(&mock, &other.pem()).await, 0, "nothing was sent");
}

#[tokio::test]
async fn a_wrong_ca_master_keeps_its_messages_queued() {
    let dir = tempfile::tempdir().unwrap();
    let trusted = Ca::new("trusted ca");
    let other = Ca::new("other ca");
    let bundle = trusted.write(dir.path(), "trusted");
    let mock = https_mock("a", &other.leaf(dir.path(), "a"));
    let sy = Switchyard::start(&masters_toml(&[(
        &mock,
        &format!("tls_ca = \"{}\"", bundle.display()),
    )]));
    let http = Http::new();
    let (code, _, body) = http.post(&sy.messages(), MESSAGE).await;
    assert_eq!(code, 202, "{}", String::from_utf8_lossy(&body));
    let id = json(&body)["id"].as_str().unwrap().to_string();
    let msg = message(&http, &sy, &id).await;
    assert_ne!(msg["status"], "delivered", "{msg}");
    assert_eq!(received(&mock, &other.pem()).await, 0, "nothing was sent");
}

#[tokio::test]
async fn client_and_admin_listeners_speak_https() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("listener ca");
    let (crt, key) = ca.leaf(dir.path(), "proxy");
    let (acrt, akey) = ca.leaf(dir.path(), "admin");
    let mock = Mock::start("a", &[]);
    let sy = Switchyard::start(&format!(
        "{SERVER}tls_cert = \"{}\"\ntls_key = \"{}\"\nadmin_tls_cert = \"{}\"\nadmin_tls_key = \"{}\"\n{}",
        crt.display(),
        key.display(),
        acrt.display(),
        akey.display(),
        masters_toml(&[(&mock, "")])
    ));
    assert!(sy.url.starts_with("https://"), "{}", sy.url);
    assert!(sy.admin.starts_with("https://"), "{}", sy.admin);
    let (code, body) = https(Method::POST, &sy.messages(), &ca.pem(), MESSAGE).await;
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
    let (code, body) = https(Method::GET, &format!("{}/health", sy.admin), &ca.pem(), "").await;
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
    // Plain HTTP gets no answer from a TLS listener.
    let plain = sy.messages().replace("https://", "http://");
    let result = Http::new()
        .try_send(
            Request::post(plain)
                .body(Full::new(Bytes::from(MESSAGE)))
                .unwrap(),
        )
        .await;
    assert!(result.is_err(), "{result:?}");
    // A client that does not trust the CA cannot connect.
    let stranger = Ca::new("stranger");
    assert!(tls_connect(&sy.url, &stranger.pem()).await.is_err());

    // The admin commands speak https, trusting --ca.
    let bundle = ca.write(dir.path(), "ca");
    let admin = sy.admin.clone();
    let (trusted, untrusted) = tokio::task::spawn_blocking(move || {
        let run = |extra: &[&str]| {
            let mut args = vec!["status", "--admin", admin.as_str()];
            args.extend_from_slice(extra);
            Command::new(BIN).args(&args).output().unwrap()
        };
        (run(&["--ca", bundle.to_str().unwrap()]), run(&[]))
    })
    .await
    .unwrap();
    let out = String::from_utf8_lossy(&trusted.stdout);
    assert!(
        trusted.status.success(),
        "{}",
        String::from_utf8_lossy(&trusted.stderr)
    );
    assert!(out.contains("a "), "{out}");
    let err = String::from_utf8_lossy(&untrusted.stderr);
    assert!(!untrusted.status.success());
    assert!(err.contains("TLS handshake"), "{err}");
}

#[tokio::test]
async fn a_reload_serves_new_certificates_to_new_connections_only() {
    let dir = tempfile::tempdir().unwrap();
    let (first, second) = (Ca::new("first ca"), Ca::new("second ca"));
    let (crt, key) = first.leaf(dir.path(), "proxy");
    let mock = Mock::start("a", &[]);
    let sy = Switchyard::start(&format!(
        "{SERVER}tls_cert = \"{}\"\ntls_key = \"{}\"\n{}",
        crt.display(),
        key.display(),
        masters_toml(&[(&mock, "")])
    ));
    let mut open = tls_connect(&sy.url, &first.pem()).await.unwrap();
    let (code, _) = exchange(&mut open, Method::POST, &sy.messages(), MESSAGE)
        .await
        .unwrap();
    assert_eq!(code, 200);

    // New files at the same paths; the config text is unchanged.
    second.leaf(dir.path(), "proxy");
    let http = Http::new();
    let (code, _, body) = http.post(&format!("{}/admin/reload", sy.admin), "").await;
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
    let (code, _) = https(Method::POST, &sy.messages(), &second.pem(), MESSAGE).await;
    assert_eq!(code, 200);
    assert!(
        tls_connect(&sy.url, &first.pem()).await.is_err(),
        "a new connection still got the old certificate"
    );
    // The connection opened before the reload keeps working.
    let (code, _) = exchange(&mut open, Method::POST, &sy.messages(), MESSAGE)
        .await
        .unwrap();
    assert_eq!(code, 200);

    // A broken certificate is rejected and the running one stays.
    std::fs::write(&crt, "not a certificate").unwrap();
    let (code, _, _) = http.post(&format!("{}/admin/reload", sy.admin), "").await;
    assert_eq!(code, 400);
    let health = json(&http.get(&format!("{}/health", sy.admin)).await.2);
    let error = health["last_reload_error"].as_str().unwrap_or_default();
    assert!(error.contains("server.tls_cert"), "{health}");
    let (code, _) = https(Method::POST, &sy.messages(), &second.pem(), MESSAGE).await;
    assert_eq!(code, 200);
}

#[tokio::test]
async fn a_client_that_stalls_the_handshake_is_cut_by_the_read_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("ca");
    let (crt, key) = ca.leaf(dir.path(), "proxy");
    let mock = Mock::start("a", &[]);
    let sy = Switchyard::start(&format!(
        "{SERVER}read_timeout_ms = 300\ntls_cert = \"{}\"\ntls_key = \"{}\"\n{}",
        crt.display(),
        key.display(),
        masters_toml(&[(&mock, "")])
    ));
    // Opens TCP and sends nothing; then one that sends half a ClientHello.
    for first_bytes in [&[][..], &[0x16, 0x03, 0x01, 0x02, 0x00, 0x01][..]] {
        let mut tcp = tokio::net::TcpStream::connect(authority(&sy.url))
            .await
            .unwrap();
        tokio::io::AsyncWriteExt::write_all(&mut tcp, first_bytes)
            .await
            .unwrap();
        let mut buf = [0u8; 64];
        let read = tokio::time::timeout(Duration::from_secs(20), tcp.read(&mut buf)).await;
        match read {
            Ok(Ok(0) | Err(_)) => {}
            Ok(Ok(n)) => panic!("got {n} bytes instead of a close"),
            Err(_) => panic!("the stalled handshake was not cut"),
        }
    }
    // Past the handshake, half a head gets its 408 through TLS.
    let tcp = tokio::net::TcpStream::connect(authority(&sy.url))
        .await
        .unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(client_config(&ca.pem()))
        .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
        .await
        .unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut tls, b"POST /v1/messages HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(20), tls.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "the half head was not cut");
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 408"), "{text:?}");
}

fn check(config: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, config).unwrap();
    let out = Command::new(BIN)
        .args(["check", "--config", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{config}");
    String::from_utf8(out.stderr).unwrap()
}

#[test]
fn half_set_or_unreadable_tls_keys_are_config_errors() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("ca");
    let (crt, key) = ca.leaf(dir.path(), "x");
    let master = "[[masters]]\nid = \"a\"\nsend_url = \"https://127.0.0.1:9/send\"\n";
    let err = check(&format!(
        "[server]\ntls_cert = \"{}\"\n{master}",
        crt.display()
    ));
    assert!(err.contains("server.tls_key: is required"), "{err}");
    let err = check(&format!(
        "[server]\nadmin_tls_key = \"{}\"\n{master}",
        key.display()
    ));
    assert!(err.contains("server.admin_tls_cert: is required"), "{err}");
    // A key that is not the certificate's.
    let (_, other_key) = ca.leaf(dir.path(), "y");
    let err = check(&format!(
        "[server]\ntls_cert = \"{}\"\ntls_key = \"{}\"\n{master}",
        crt.display(),
        other_key.display()
    ));
    assert!(err.contains("server.tls_key:"), "{err}");
    let err = check(&format!("{master}tls_ca = \"/nonexistent/ca.pem\"\n"));
    assert!(err.contains("masters[0].tls_ca: cannot read"), "{err}");
    let err = check(&format!("{master}tls_ca = \"{}\"\n", "x".repeat(5000)));
    assert!(
        err.contains("masters[0].tls_ca: is 5000 bytes long"),
        "{err}"
    );
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "").unwrap();
    let err = check(&format!("{master}tls_ca = \"{}\"\n", empty.display()));
    assert!(err.contains("masters[0].tls_ca:"), "{err}");
    let err = check(&format!(
        "[[masters]]\nid = \"a\"\nsend_url = \"http://127.0.0.1:9/send\"\ntls_ca = \"{}\"\n",
        ca.write(dir.path(), "ca").display()
    ));
    assert!(err.contains("masters[0].tls_ca: is set but"), "{err}");
}

#[tokio::test]
async fn a_reload_can_turn_tls_on_for_new_connections() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("ca");
    let (crt, key) = ca.leaf(dir.path(), "proxy");
    let mock = Mock::start("a", &[]);
    let masters = masters_toml(&[(&mock, "")]);
    let sy = Switchyard::start(&masters);
    let http = Http::new();
    let (code, _, _) = http.post(&sy.messages(), MESSAGE).await;
    assert_eq!(code, 200);
    let text = sy.config_text().replacen(
        "[server]\n",
        &format!(
            "[server]\ntls_cert = \"{}\"\ntls_key = \"{}\"\n",
            crt.display(),
            key.display()
        ),
        1,
    );
    sy.rewrite_config(&text);
    let (code, _, body) = http.post(&format!("{}/admin/reload", sy.admin), "").await;
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
    let https_url = sy.messages().replace("http://", "https://");
    let (code, _) = https(Method::POST, &https_url, &ca.pem(), MESSAGE).await;
    assert_eq!(code, 200);
}

#[tokio::test]
async fn without_tls_ca_a_master_is_checked_against_the_system_roots() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("system ca");
    let bundle = ca.write(dir.path(), "system");
    let mock = https_mock("a", &ca.leaf(dir.path(), "a"));
    let config = dir.path().join("switchyard.toml");
    std::fs::write(
        &config,
        format!(
            "{SERVER}[queue]\nenabled = false\n{}",
            masters_toml(&[(&mock, "")])
        ),
    )
    .unwrap();
    // The system trust store, as rustls-native-certs reads it, is this one CA.
    let proc = Proc::spawn_env(
        &["run", "--config", config.to_str().unwrap()],
        dir.path(),
        &[("SSL_CERT_FILE", bundle.to_str().unwrap())],
    );
    let line = proc.wait_line("switchyard listening on", Duration::from_secs(20));
    let url = url_after(&line, "listening on ");
    let (code, _, body) = Http::new()
        .post(&format!("{url}/v1/messages"), MESSAGE)
        .await;
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(received(&mock, &ca.pem()).await, 1);
}

#[tokio::test]
async fn alerts_reach_an_https_webhook() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("system ca");
    let bundle = ca.write(dir.path(), "system");
    let webhook = https_mock("hook", &ca.leaf(dir.path(), "hook"));
    let a = Mock::start("a", &[]);
    let config = dir.path().join("switchyard.toml");
    std::fs::write(
        &config,
        format!(
            "{SERVER}[health]\ninterval_ms = 100\ntimeout_ms = 300\nunhealthy_threshold = 2\n\
             [alerts]\nwebhook_url = \"{}/alerts\"\n{}",
            webhook.url,
            masters_toml(&[(&a, &format!("health_url = \"{}/health\"", a.url))])
        ),
    )
    .unwrap();
    let proc = Proc::spawn_env(
        &["run", "--config", config.to_str().unwrap()],
        dir.path(),
        &[("SSL_CERT_FILE", bundle.to_str().unwrap())],
    );
    proc.wait_line("switchyard listening on", Duration::from_secs(20));
    let http = Http::new();
    http.post(&format!("{}/control/down", a.url), "").await;
    eventually(
        Duration::from_secs(20),
        "an alert at the webhook",
        || async { received(&webhook, &ca.pem()).await > 0 },
    )
    .await;
}
