//! The shipped systemd unit (`deploy/chat-server.service`): systemd accepts
//! every line of it, and the server runs as the unit starts it, with the
//! unit's own command, environment and state directory.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::{self, chat, http1_request, within};

const BIN: &str = env!("CARGO_BIN_EXE_chat-server");
const INSTALLED_BIN: &str = "/usr/local/bin/chat-server";

fn unit_text() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/chat-server.service");
    std::fs::read_to_string(path).expect("deploy/chat-server.service")
}

/// `key=value` lines of the unit, in order (comments and sections dropped).
fn directives(unit: &str) -> Vec<(String, String)> {
    unit.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with('['))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect()
}

#[test]
fn systemd_accepts_every_line_of_the_unit() {
    let dir = tempfile::tempdir().expect("temp dir");
    // The binary is not installed here: point the unit at the one just built.
    let unit = unit_text().replace(
        &format!("ExecStart={INSTALLED_BIN}"),
        &format!("ExecStart={BIN}"),
    );
    let path = dir.path().join("chat-server.service");
    std::fs::write(&path, unit).expect("write the unit");
    let output = Command::new("systemd-analyze")
        .args(["verify", "--man=no", "--generators=no"])
        .arg(&path)
        .output()
        .expect("systemd-analyze (Debian's systemd package) is needed for this test");
    let complaints = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{complaints}");
    // It only warns about a line it cannot parse, and ignores the line.
    assert!(
        complaints.trim().is_empty(),
        "systemd-analyze: {complaints}"
    );
}

#[tokio::test]
async fn the_server_runs_as_the_unit_starts_it() {
    let unit = unit_text();
    let lines = directives(&unit);
    let one = |key: &str| {
        lines
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("{key}= missing from the unit"))
    };
    assert_eq!(
        one("ExecStart"),
        INSTALLED_BIN,
        "the command the README installs"
    );
    let state = PathBuf::from("/var/lib").join(one("StateDirectory"));
    assert_eq!(PathBuf::from(one("WorkingDirectory")), state);
    let mut env: HashMap<String, String> = lines
        .iter()
        .filter(|(k, _)| k == "Environment")
        .filter_map(|(_, v)| v.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    assert_eq!(
        env.get("CHAT_DB").map(PathBuf::from),
        Some(state.join("chat.db")),
        "history lives in the state directory, the only writable place"
    );

    // What systemd would provide: the state directory (a temp dir stands in
    // for /var/lib/chat-server), the web app, and the port (a free one).
    let fake_state = tempfile::tempdir().expect("temp dir");
    let map = |value: &str| {
        value.replace(
            state.to_str().expect("utf-8"),
            fake_state.path().to_str().expect("utf-8"),
        )
    };
    for value in env.values_mut() {
        *value = map(value);
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("port")
        .local_addr()
        .expect("addr")
        .port();
    let addr = env.get("CHAT_ADDR").expect("CHAT_ADDR").clone();
    assert!(
        addr.starts_with("127.0.0.1:"),
        "behind the proxy only: {addr}"
    );
    env.insert("CHAT_ADDR".into(), format!("127.0.0.1:{port}"));
    let web = tempfile::tempdir().expect("temp dir");
    std::fs::write(
        web.path().join("index.html"),
        "<!doctype html><title>Chat</title>",
    )
    .expect("index");
    env.insert(
        "CHAT_WEB_DIR".into(),
        web.path().to_str().expect("utf-8").to_owned(),
    );

    let mut child = Command::new(BIN)
        .env_clear()
        .envs(&env)
        .current_dir(fake_state.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start chat-server");
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    within(async {
        while tokio::net::TcpStream::connect(addr).await.is_err() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let health = http1_request(addr, "GET", "/healthz", &[], Vec::new()).await;
    assert_eq!(health.status, 200);
    let mut web_client = common::web_client(&format!("http://{addr}"));
    within(web_client.send(chat("ops", "stored in the state directory")))
        .await
        .expect("sent");
    assert!(
        fake_state.path().join("chat.db").is_file(),
        "the database is in the state directory"
    );

    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let exit = child.wait().expect("exited");
    assert!(exit.success(), "{exit:?}");
    let mut logs = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut logs)
        .expect("logs");
    // CHAT_LOG_FORMAT=json: every line is a JSON object, for journald shippers.
    let lines: Vec<&str> = logs.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty());
    for line in lines {
        assert!(
            serde_json::from_str::<serde_json::Value>(line).is_ok(),
            "not JSON: {line}"
        );
    }
}
