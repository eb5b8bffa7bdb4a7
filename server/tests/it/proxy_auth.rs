//! The tested example of an authenticating proxy: real nginx with
//! `auth_basic`, configured from `deploy/nginx/chat-auth.conf` and
//! `chat-proxy.conf`, in front of a server started with `--auth-header
//! X-Remote-User --trust-proxy`. The name people logged in with is their
//! name in the chat, whatever they claim.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use crate::common::{self, TestServer, chat, next_event_message, within};
use base64::Engine;
use chat_proto::{JoinRequest, SubscribeRequest};
use chat_server::config::Config;
use tonic::Request;

pub(crate) struct Nginx {
    child: Child,
    pub(crate) port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM, not SIGKILL: the master then stops its workers too.
        if let Ok(pid) = i32::try_from(self.child.id()) {
            // SAFETY: kill(2) on our own child's pid; no memory is involved.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        let _ = self.child.wait();
    }
}

fn deploy(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy/nginx")
        .join(name)
}

/// nginx on a free loopback port, in front of the chat on `upstream`, with
/// two users: ada (password "secret") and bob ("hunter2").
pub(crate) async fn nginx(upstream: u16) -> Nginx {
    let dir = tempfile::tempdir().expect("temp dir");
    let users = dir.path().join("chat.htpasswd");
    std::fs::write(&users, "ada:{PLAIN}secret\nbob:{PLAIN}hunter2\n").expect("users");
    let auth = std::fs::read_to_string(deploy("chat-auth.conf")).expect("shipped snippet");
    let shipped = "auth_basic_user_file /etc/nginx/chat.htpasswd;";
    assert_eq!(
        auth.matches(shipped).count(),
        1,
        "the snippet changed: update this test"
    );
    let auth = auth.replace(
        shipped,
        &format!("auth_basic_user_file {};", users.display()),
    );
    std::fs::write(dir.path().join("chat-auth.conf"), auth).expect("snippet");

    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let d = dir.path().display();
    let conf = format!(
        "daemon off;
pid {d}/nginx.pid;
error_log {d}/error.log;
events {{}}
http {{
    access_log off;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    upstream chat_server {{ server 127.0.0.1:{upstream}; }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            include {d}/chat-auth.conf;
            include {proxy};
            proxy_pass http://chat_server;
        }}
        location @chat_too_large {{ return 413; }}
    }}
}}
",
        proxy = deploy("chat-proxy.conf").display()
    );
    let conf_path = dir.path().join("nginx.conf");
    std::fs::write(&conf_path, conf).expect("config");
    let nginx = std::env::var("NGINX").unwrap_or_else(|_| "/usr/sbin/nginx".into());
    let child = Command::new(&nginx)
        .arg("-p")
        .arg(dir.path())
        .arg("-e")
        .arg(dir.path().join("error.log"))
        .arg("-c")
        .arg(&conf_path)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {nginx} (scripts/install --tests installs it): {e}"));
    let log = dir.path().join("error.log");
    // Made at once, so that nginx is stopped however this ends.
    let nginx = Nginx {
        child,
        port,
        _dir: dir,
    };
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return nginx;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let log = std::fs::read_to_string(log).unwrap_or_default();
    panic!("nginx did not listen on {port}: {log}");
}

/// A request as a browser logged in as `user` sends it.
pub(crate) fn logged_in<T>(message: T, user: &str, password: &str) -> Request<T> {
    let mut request = Request::new(message);
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    request.metadata_mut().insert(
        "authorization",
        format!("Basic {basic}").parse().expect("ascii"),
    );
    request
}

#[tokio::test]
async fn behind_nginx_auth_basic_the_login_is_the_name() {
    let mut config = Config::with_addr("127.0.0.1:0");
    config.trust_proxy = true;
    config.auth_header = Some("X-Remote-User".into());
    let server = TestServer::start_with(config).await;
    let nginx = nginx(server.addr.port()).await;
    let mut web = common::web_client(&format!("http://127.0.0.1:{}", nginx.port));

    let stranger = within(web.send(chat("ada", "let me in")))
        .await
        .expect_err("nginx asks for a login");
    // nginx's own 401 (a browser shows its login dialog for it).
    assert!(
        stranger.metadata().get("www-authenticate").is_some(),
        "{stranger:?}"
    );

    let joined = within(web.join(logged_in(
        JoinRequest {
            username: "mallory".into(),
            token: String::new(),
            ..Default::default()
        },
        "ada",
        "secret",
    )))
    .await
    .expect("joined")
    .into_inner();
    assert_eq!(joined.username, "ada");
    assert!(joined.proxied, "the proxy names requests: no token needed");

    let mut events = within(web.subscribe(logged_in(
        SubscribeRequest {
            username: "whoever".into(),
            after_id: 0,
            ..Default::default()
        },
        "ada",
        "secret",
    )))
    .await
    .expect("subscribed")
    .into_inner();
    within(events.message()).await.expect("ready");

    // bob claims to be ada, in the message and in the proxy's own header.
    let mut forged = logged_in(chat("ada", "it is me, ada"), "bob", "hunter2");
    forged
        .metadata_mut()
        .insert("x-remote-user", "ada".parse().expect("ascii"));
    within(web.send(forged)).await.expect("sent");
    let got = next_event_message(&mut events).await;
    assert_eq!(
        (got.username.as_str(), got.message.as_str()),
        ("bob", "it is me, ada")
    );
}
