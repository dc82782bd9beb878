//! TLS (rustls): the `/ws` client over `wss://` and the Socket.IO client
//! over `https://` (long-polling, then the upgrade to `wss`), against the
//! `switchboard` binary with a self-signed certificate made by `openssl`.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use common::{DEADLINE, Server, next, temp_dir};
use serde_json::{Value as Json, json};
use switchboard_client::rustls;
use switchboard_client::rustls::pki_types::CertificateDer;
use switchboard_client::rustls::pki_types::pem::PemObject as _;
use switchboard_client::ws::{SubEvent, WsClient};
use switchboard_client::{Manager, ManagerEvent, Transports};
use tokio::sync::mpsc;

const ACK: Duration = Duration::from_secs(10);

fn self_signed(dir: &Path) -> (PathBuf, PathBuf) {
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
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
        .expect("the `openssl` command line makes the test certificate");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (cert, key)
}

fn trusting(cert: &Path) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(cert).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth(),
    )
}

#[tokio::test]
async fn wss_and_https_with_rustls() {
    let data = temp_dir("tls");
    // A token from the development login (its secret is kept in data_dir,
    // so it stays valid when the server restarts with TLS).
    let plain = Server::start(0, &data, &[]).await;
    let token = plain.dev_token("tess").await;
    plain.kill().await;
    let (cert, key) = self_signed(&data);
    let cert_opt = format!("server.tls_cert={}", cert.display());
    let key_opt = format!("server.tls_key={}", key.display());
    let server = Server::start(0, &data, &[&cert_opt, &key_opt]).await;
    let tls = trusting(&cert);

    // /ws over wss.
    let t = token.clone();
    let client = WsClient::builder(&format!("wss://127.0.0.1:{}/ws", server.port))
        .token(move || Some(t.clone()))
        .tls_config(tls.clone())
        .build()
        .unwrap();
    let mut sub = client.subscribe("chat:tls");
    loop {
        match tokio::time::timeout(DEADLINE, sub.recv())
            .await
            .unwrap()
            .unwrap()
        {
            SubEvent::Subscribed { .. } => break,
            SubEvent::Error(e) => panic!("{e}"),
            _ => {}
        }
    }
    let ack = client
        .publish("chat:tls", &json!("over wss"), ACK)
        .await
        .unwrap();
    assert_eq!(ack.offset, 1);
    loop {
        if let SubEvent::Publication(p) = tokio::time::timeout(DEADLINE, sub.recv())
            .await
            .unwrap()
            .unwrap()
        {
            assert_eq!(p.data, json!("over wss"));
            break;
        }
    }

    // Socket.IO over https: polling, then the upgrade to wss.
    let manager = Manager::builder(&format!("https://127.0.0.1:{}", server.port))
        .transports(Transports::PollingThenUpgrade)
        .tls_config(tls.clone())
        .build()
        .unwrap();
    let socket = manager.socket("/");
    let t = token.clone();
    socket.set_auth(move || json!({ "token": t }));
    let (tx, mut rx) = mpsc::unbounded_channel();
    socket.on("publication", move |ev| {
        let _ = tx.send(ev.data::<Json>().unwrap());
    });
    socket.connect();
    tokio::time::timeout(DEADLINE, socket.wait_connected())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(manager.transport(), Some("websocket"));
    let answer: Json = socket
        .emit_with_ack("subscribe", &json!({"channel": "chat:tls"}), ACK)
        .await
        .unwrap();
    assert_eq!(answer["channel"], "chat:tls", "{answer}");
    let answer: Json = socket
        .emit_with_ack(
            "publish",
            &json!({"channel": "chat:tls", "data": "over https"}),
            ACK,
        )
        .await
        .unwrap();
    assert_eq!(answer["offset"], 2, "{answer}");
    let publication = next(&mut rx).await;
    assert_eq!(publication["data"], "over https");
    assert_eq!(publication["offset"], 2);
    manager.close();
    client.close();

    // A client that does not trust the certificate is refused.
    let untrusting = Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth(),
    );
    let manager = Manager::builder(&format!("https://127.0.0.1:{}", server.port))
        .tls_config(untrusting)
        .reconnection(switchboard_client::Reconnection::disabled())
        .build()
        .unwrap();
    let (etx, mut erx) = mpsc::unbounded_channel();
    manager.on_event(move |e| {
        let _ = etx.send(e.clone());
    });
    manager.socket("/").connect();
    match next(&mut erx).await {
        ManagerEvent::Error(text) => assert!(text.contains("certificate"), "{text}"),
        other => panic!("{other:?}"),
    }
    drop(server);
    let _ = std::fs::remove_dir_all(&data);
}
