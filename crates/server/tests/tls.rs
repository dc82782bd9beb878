//! TLS in the binary: HTTPS and WSS with a certificate made at test time
//! by the `openssl` command, a plain-HTTP client on the TLS port, and the
//! errors of a bad certificate or key.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use switchboard_server::app::App;
use switchboard_server::server::tls_acceptor;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject as _;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_websockets::{ClientBuilder, Message};

/// The bound of every single wait.
const WAIT: Duration = Duration::from_secs(10);

/// Makes a self-signed certificate for `localhost` and 127.0.0.1 and its
/// key, as `<dir>/<name>.cert.pem` and `<dir>/<name>.key.pem`.
fn self_signed(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    std::fs::create_dir_all(dir).unwrap();
    let cert = dir.join(format!("{name}.cert.pem"));
    let key = dir.join(format!("{name}.key.pem"));
    let out = std::process::Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec"])
        .args(["-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .args(["-days", "1", "-subj", "/CN=localhost"])
        .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .args(["-addext", "extendedKeyUsage=serverAuth"])
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "these tests make their certificate with the `openssl` command line, \
                 which could not be run ({e}): install OpenSSL (e.g. apt-get install openssl)"
            )
        });
    assert!(
        out.status.success(),
        "openssl failed to make a certificate: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (cert, key)
}

/// A server with TLS, and a client configuration trusting its certificate.
async fn start() -> (SocketAddr, Arc<App>, TlsConnector) {
    let config = common::config("tls");
    let (cert, key) = self_signed(&config.server.data_dir.join("tls"), "server");
    let acceptor = tls_acceptor(&cert, &key).unwrap();
    let app = App::new(config).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(switchboard_server::server::serve(
        Arc::clone(&app),
        listener,
        Some(acceptor),
        std::future::pending(),
    ));
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(&cert).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let client = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    (addr, app, TlsConnector::from(Arc::new(client)))
}

async fn tls_connect(addr: SocketAddr, connector: &TlsConnector) -> TlsStream<TcpStream> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    tokio::time::timeout(WAIT, connector.connect(name, tcp))
        .await
        .expect("the TLS handshake timed out")
        .expect("the TLS handshake failed")
}

/// `GET path` over HTTPS: the status and the body.
async fn https_get(addr: SocketAddr, connector: &TlsConnector, path: &str) -> (u16, String) {
    let mut tls = tls_connect(addr, connector).await;
    let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    tls.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    // The server may end TLS without close_notify after the answer: what
    // was read counts.
    let _ = tokio::time::timeout(WAIT, tls.read_to_end(&mut raw))
        .await
        .expect("timed out");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .unwrap_or_else(|| panic!("no HTTP answer: {text:?}"))
        .parse()
        .unwrap();
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_owned();
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_and_wss_are_served_with_the_certificate() {
    let (addr, app, connector) = start().await;
    let (status, body) = https_get(addr, &connector, "/healthz").await;
    assert_eq!(status, 200);
    assert!(body.contains(r#""status":"ok""#), "{body}");

    // WSS: the plain WebSocket protocol over the TLS stream.
    let tls = tls_connect(addr, &connector).await;
    let (mut ws, _) = ClientBuilder::new()
        .uri(&format!("wss://localhost:{}/ws", addr.port()))
        .unwrap()
        .connect_on(tls)
        .await
        .unwrap();
    let token = app
        .verifier
        .issue_dev_token("ada", Some("Ada"), 600)
        .unwrap();
    ws.send(Message::text(
        json!({"type": "auth", "payload": {"token": token}, "id": 1}).to_string(),
    ))
    .await
    .unwrap();
    let msg = tokio::time::timeout(WAIT, ws.next())
        .await
        .expect("timed out")
        .expect("closed")
        .unwrap();
    let ack: Value = serde_json::from_str(msg.as_text().expect("text")).unwrap();
    assert_eq!(
        (ack["type"].as_str(), ack["id"].as_i64()),
        (Some("ack"), Some(1)),
        "{ack}"
    );
    assert_eq!(ack["payload"], json!({"user": "ada", "name": "Ada"}));
    assert_eq!(app.node.hub().connection_counts()[1], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_on_the_tls_port_gets_no_http_answer() {
    let (addr, _app, connector) = start().await;
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    // The handshake fails: the server ends the connection (after a TLS
    // alert at most), never answering in HTTP.
    let mut raw = Vec::new();
    let _ = tokio::time::timeout(WAIT, tcp.read_to_end(&mut raw))
        .await
        .expect("the server kept a failed TLS connection open");
    assert!(
        !raw.starts_with(b"HTTP/"),
        "an HTTP answer on the TLS port: {:?}",
        String::from_utf8_lossy(&raw)
    );
    if let Some(first) = raw.first() {
        assert_eq!(*first, 0x15, "only a TLS alert record: {raw:?}");
    }
    // The server goes on serving.
    let (status, _) = https_get(addr, &connector, "/healthz").await;
    assert_eq!(status, 200);
}

#[test]
fn tls_acceptor_errors_name_the_setting_at_fault() {
    let dir = common::temp_dir("tls-errors");
    let (cert, key) = self_signed(&dir, "one");
    let (_, other_key) = self_signed(&dir, "two");
    assert!(tls_acceptor(&cert, &key).is_ok());

    let message = |r: anyhow::Result<tokio_rustls::TlsAcceptor>| match r {
        Ok(_) => panic!("accepted"),
        Err(e) => format!("{e:#}"),
    };
    let e = message(tls_acceptor(&cert, &other_key));
    assert!(
        e.contains("server.tls_key") && e.contains("does not match"),
        "a key of another certificate: {e}"
    );
    let e = message(tls_acceptor(&dir.join("missing.pem"), &key));
    assert!(
        e.starts_with("server.tls_cert") && e.contains("missing.pem"),
        "a missing certificate: {e}"
    );
    let e = message(tls_acceptor(&cert, &dir.join("missing.pem")));
    assert!(
        e.starts_with("server.tls_key") && e.contains("missing.pem"),
        "a missing key: {e}"
    );
    // A key where the certificate should be: no certificate in it.
    let e = message(tls_acceptor(&key, &key));
    assert!(e.starts_with("server.tls_cert"), "no certificate: {e}");
    // A certificate where the key should be: no key in it.
    let e = message(tls_acceptor(&cert, &cert));
    assert!(e.starts_with("server.tls_key"), "no key: {e}");
}
