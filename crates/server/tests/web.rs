//! The web chat's files: embedded, served at `/` with their headers, or
//! read from `web.dir`; nothing outside them is reachable.

mod common;

use std::net::SocketAddr;

use switchboard_server::app::App;
use switchboard_server::config::Config;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn start(config: Config) -> SocketAddr {
    let app = App::new(config).unwrap();
    common::serve(&app).await
}

/// One GET; returns the head (lower-cased) and the body.
async fn get(addr: SocketAddr, path: &str, extra: &str) -> (String, Vec<u8>) {
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{extra}\r\n");
    tcp.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tcp.read_to_end(&mut out).await.unwrap();
    let split = out.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&out[..split]).to_ascii_lowercase();
    (head, out[split + 4..].to_vec())
}

fn status(head: &str) -> &str {
    head.split_whitespace().nth(1).unwrap()
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}: ")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_is_served_from_the_binary_with_safe_headers() {
    let addr = start(common::config("web")).await;
    let (head, body) = get(addr, "/", "").await;
    assert_eq!(status(&head), "200", "{head}");
    assert_eq!(
        header(&head, "content-type"),
        Some("text/html; charset=utf-8")
    );
    let html = String::from_utf8(body).unwrap();
    assert!(html.to_ascii_lowercase().contains("<!doctype html>"));
    let csp = header(&head, "content-security-policy").expect("a CSP");
    assert!(csp.contains("script-src 'self'"), "{csp}");
    assert_eq!(header(&head, "x-content-type-options"), Some("nosniff"));
    // A revalidation with the ETag costs no body.
    let etag = header(&head, "etag").expect("an etag").to_owned();
    let (head, body) = get(addr, "/index.html", &format!("If-None-Match: {etag}\r\n")).await;
    assert_eq!(status(&head), "304", "{head}");
    assert!(body.is_empty());
    // Only plain file names, only the page's files.
    for path in [
        "/../Cargo.toml",
        "/%2e%2e/Cargo.toml",
        "/nope.js",
        "/.hidden",
        "/a/b.js",
    ] {
        let (head, _) = get(addr, path, "").await;
        assert_eq!(status(&head), "404", "{path}: {head}");
    }
    // The API and the gateways are not shadowed by the page.
    let (head, _) = get(addr, "/healthz", "").await;
    assert_eq!(status(&head), "200");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_dir_serves_files_from_disk_and_the_page_can_be_turned_off() {
    let dir = common::temp_dir("webdir");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("index.html"), "<!doctype html><p>from disk</p>").unwrap();
    std::fs::write(dir.join("app.js"), "export {};").unwrap();
    let mut config = common::config("web-dir");
    config.web.dir = Some(dir.clone());
    let addr = start(config).await;
    let (head, body) = get(addr, "/", "").await;
    assert_eq!(status(&head), "200");
    assert_eq!(body, b"<!doctype html><p>from disk</p>");
    let (head, _) = get(addr, "/app.js", "").await;
    assert_eq!(
        header(&head, "content-type"),
        Some("text/javascript; charset=utf-8")
    );
    let (head, _) = get(addr, "/missing.css", "").await;
    assert_eq!(status(&head), "404");

    let mut config = common::config("web-off");
    config.web.enabled = false;
    let addr = start(config).await;
    let (head, _) = get(addr, "/", "").await;
    assert_eq!(status(&head), "404");
    let _ = std::fs::remove_dir_all(dir);
}
