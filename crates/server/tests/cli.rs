//! The `switchboard` binary: help, configuration errors, and a start with
//! the embedded defaults.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_switchboard");

fn temp_dir() -> String {
    common::temp_dir("cli").display().to_string()
}

#[test]
fn help_lists_every_option() {
    let out = Command::new(BIN).arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for key in [
        "--config",
        "--port",
        "--set",
        "server.host",
        "server.data_dir",
        "auth.algorithm",
        "auth.secret",
        "auth.public_key_file",
        "auth.dev_login",
        "api.key",
        "log.format",
        "history_storage",
        "join_leave",
        "max_message_size",
    ] {
        assert!(help.contains(key), "--help does not mention {key}:\n{help}");
    }
    // Every key the configuration has (as `--check` prints it), outside
    // the per-namespace channel policies, is named by --help.
    let out = Command::new(BIN).arg("--check").output().unwrap();
    assert!(out.status.success());
    let mut section = String::new();
    let mut checked = 0;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_owned();
        } else if let Some((key, _)) = line.split_once(" = ")
            && !section.starts_with("channels")
        {
            let full = format!("{section}.{key}");
            assert!(help.contains(&full), "--help does not mention {full}");
            checked += 1;
        }
    }
    assert!(checked >= 20, "only {checked} keys found in --check");
}

#[test]
fn an_invalid_configuration_names_the_key_and_the_reason() {
    let out = Command::new(BIN)
        .args(["--set", "server.port=70000", "--check"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("server.port"), "{err}");
    let out = Command::new(BIN)
        .arg("--check")
        .env("SWITCHBOARD_AUTH__SECRET", "short")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("auth.secret") && err.contains("32 bytes"),
        "{err}"
    );
    let file = format!("{}.toml", temp_dir());
    std::fs::write(&file, "[channels.chat]\npresence = \"yes\"\n").unwrap();
    let out = Command::new(BIN)
        .args(["--config", &file, "--check"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("channels.chat.presence"), "{err}");
}

#[test]
fn it_starts_with_embedded_defaults_and_the_dev_login_works() {
    let data = temp_dir();
    let mut child = Command::new(BIN)
        .args(["--host", "127.0.0.1", "--port", "0", "--data-dir", &data])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port: u16 = line
        .trim()
        .strip_prefix("listening on ")
        .expect(&line)
        .parse()
        .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let body = rt.block_on(async {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let json = r#"{"user":"ada","name":"Ada"}"#;
        let req = format!(
            "POST /api/dev/token HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{json}",
            json.len()
        );
        tcp.write_all(req.as_bytes()).await.unwrap();
        let mut out = String::new();
        tcp.read_to_string(&mut out).await.unwrap();
        out
    });
    let _ = child.kill();
    let _ = child.wait();
    assert!(body.starts_with("HTTP/1.1 200"), "{body}");
    assert!(body.contains("\"token\":\"ey"), "{body}");
    assert!(
        std::path::Path::new(&data).join("history.db").exists(),
        "the embedded database is created"
    );
}
