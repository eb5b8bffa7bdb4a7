//! The `chat-server` binary itself: its flags and environment variables, the
//! web app on the same port as the API, and a clean exit on SIGTERM.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{self, PATIENCE, chat, http1_request, next_event_message, subscribe, within};
use chat_proto::ChatServiceClient;
use tonic::Code;

const BIN: &str = env!("CARGO_BIN_EXE_chat-server");

/// The binary running on a free loopback port; killed when dropped.
struct Running {
    child: Child,
    addr: std::net::SocketAddr,
    _db_dir: Option<tempfile::TempDir>,
}

impl Running {
    /// Starts the binary with a database of its own.
    async fn start(envs: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = dir.path().join("chat.db");
        let mut envs = envs.to_vec();
        envs.push(("CHAT_DB", db.to_str().expect("utf-8 path")));
        let mut running = Self::start_on(&envs).await;
        running._db_dir = Some(dir);
        running
    }

    /// Starts the binary with exactly these variables.
    async fn start_on(envs: &[(&str, &str)]) -> Self {
        let port = {
            let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
            probe.local_addr().expect("addr").port()
        };
        let addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
        let child = Command::new(BIN)
            .env_clear()
            .env("CHAT_ADDR", addr.to_string())
            .envs(envs.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chat-server");
        within(async {
            while tokio::net::TcpStream::connect(addr).await.is_err() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        Self {
            child,
            addr,
            _db_dir: None,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn help_explains_every_flag_and_its_environment_variable() {
    let output = Command::new(BIN)
        .arg("--help")
        .output()
        .expect("run --help");
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    for (flag, env) in [
        ("--addr", "CHAT_ADDR"),
        ("--allowed-origin", "CHAT_ALLOWED_ORIGIN"),
        ("--web-dir", "CHAT_WEB_DIR"),
        ("--db", "CHAT_DB"),
        ("--history", "CHAT_HISTORY"),
        ("--retain", "CHAT_RETAIN"),
        ("--buffer", "CHAT_BUFFER"),
        ("--buffer-mib", "CHAT_BUFFER_MIB"),
        ("--name-grace", "CHAT_NAME_GRACE"),
        ("--require-join", "CHAT_REQUIRE_JOIN"),
        ("--max-rooms", "CHAT_MAX_ROOMS"),
        ("--auth-header", "CHAT_AUTH_HEADER"),
        ("--heartbeat", "CHAT_HEARTBEAT"),
        ("--trust-proxy", "CHAT_TRUST_PROXY"),
        ("--base-path", "CHAT_BASE_PATH"),
        ("--log-format", "CHAT_LOG_FORMAT"),
        ("--max-connections", "CHAT_MAX_CONNECTIONS"),
        (
            "--max-streams-per-connection",
            "CHAT_MAX_STREAMS_PER_CONNECTION",
        ),
        ("--first-request-timeout", "CHAT_FIRST_REQUEST_TIMEOUT"),
        ("--idle-timeout", "CHAT_IDLE_TIMEOUT"),
        ("--keepalive-timeout", "CHAT_KEEPALIVE_TIMEOUT"),
        ("--max-stream-resets", "CHAT_MAX_STREAM_RESETS"),
        ("--rate-limit", "CHAT_RATE_LIMIT"),
        ("--rate-burst", "CHAT_RATE_BURST"),
    ] {
        assert!(help.contains(flag), "{flag} missing from:\n{help}");
        assert!(help.contains(env), "{env} missing from:\n{help}");
    }
    assert!(help.contains("127.0.0.1:50051"), "default address shown");
}

#[test]
fn a_bad_flag_is_refused_with_a_reason() {
    let output = Command::new(BIN)
        .args(["--allowed-origin", "not an origin", "--addr", "127.0.0.1:0"])
        .output()
        .expect("run");
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("invalid --allowed-origin"));
}

#[tokio::test]
async fn one_port_serves_the_web_app_grpc_and_grpc_web() {
    let web_dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(
        web_dir.path().join("index.html"),
        "<!doctype html><title>chat test page</title>",
    )
    .expect("write index");
    std::fs::write(
        web_dir.path().join("app.js"),
        "console.log('x');".repeat(200),
    )
    .expect("write js");
    let dir = web_dir.path().to_str().expect("utf-8 path");
    let server = Running::start(&[("CHAT_WEB_DIR", dir)]).await;

    let index = http1_request(server.addr, "GET", "/", &[], Vec::new()).await;
    assert_eq!(index.status, 200);
    assert!(String::from_utf8_lossy(&index.body).contains("chat test page"));
    // Client-side routes fall back to the app.
    let deep = http1_request(server.addr, "GET", "/some/page", &[], Vec::new()).await;
    assert!(String::from_utf8_lossy(&deep.body).contains("chat test page"));
    let js = http1_request(
        server.addr,
        "GET",
        "/app.js",
        &[("accept-encoding", "gzip")],
        Vec::new(),
    )
    .await;
    assert_eq!(
        js.headers.get("content-encoding").map(|v| v.as_bytes()),
        Some(&b"gzip"[..])
    );

    // Native gRPC and gRPC-Web on the same port.
    let channel = common::channel(&server.url()).await;
    let mut native = ChatServiceClient::new(channel);
    let mut web = common::web_client(&server.url());
    let mut events = subscribe(&mut web, "web").await;
    within(native.send(chat("native", "same port")))
        .await
        .expect("sent");
    assert_eq!(next_event_message(&mut events).await.message, "same port");
}

/// The web app as a browser caches it: trunk's content-named files for a
/// year, everything else revalidated by `ETag` (a `304` with no body);
/// brotli for browsers that take it (made once, after start), gzip for the
/// others, as it is for those that take neither.
#[tokio::test]
async fn the_web_app_is_cached_by_its_names_and_revalidated_by_etag() {
    let web_dir = tempfile::tempdir().expect("temp dir");
    let script = "console.log('a chat, compressed once');\n".repeat(400);
    for (name, content) in [
        (
            "index.html",
            "<!doctype html><title>chat test page</title>".to_owned(),
        ),
        ("chat-web-0123456789abcdef.js", script.clone()),
        ("chat-web-0123456789abcdef_bg.wasm", "\0asm".repeat(300)),
    ] {
        std::fs::write(web_dir.path().join(name), content).expect("write");
    }
    let dir = web_dir.path().to_str().expect("utf-8 path");
    let server = Running::start(&[("CHAT_WEB_DIR", dir)]).await;
    let get = |path: &'static str, headers: &'static [(&'static str, &'static str)]| {
        http1_request(server.addr, "GET", path, headers, Vec::new())
    };
    let header = |response: &common::HttpResponse, name: &str| {
        response
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };

    // Content-named: for a year; compressed as the browser asks.
    let js = get("/chat-web-0123456789abcdef.js", &[]).await;
    assert_eq!(js.status, 200);
    assert_eq!(js.body, script.as_bytes(), "no encoding asked, none given");
    assert_eq!(
        header(&js, "cache-control").as_deref(),
        Some("public, max-age=31536000, immutable")
    );
    assert_eq!(
        header(&js, "content-type").as_deref(),
        Some("text/javascript; charset=utf-8")
    );
    let gzipped = get(
        "/chat-web-0123456789abcdef.js",
        &[("accept-encoding", "gzip")],
    )
    .await;
    assert_eq!(
        header(&gzipped, "content-encoding").as_deref(),
        Some("gzip")
    );
    let mut unzipped = String::new();
    std::io::Read::read_to_string(
        &mut flate2::read::GzDecoder::new(gzipped.body.as_slice()),
        &mut unzipped,
    )
    .expect("gzip");
    assert_eq!(unzipped, script);
    // brotli is made by a thread of its own after start: gzip until then.
    let deadline = Instant::now() + PATIENCE;
    let brotli = loop {
        let response = get(
            "/chat-web-0123456789abcdef.js",
            &[("accept-encoding", "gzip, deflate, br, zstd")],
        )
        .await;
        match header(&response, "content-encoding").as_deref() {
            Some("br") => break response,
            Some("gzip") if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            other => panic!("no brotli in time: {other:?}"),
        }
    };
    let mut unpacked = String::new();
    std::io::Read::read_to_string(
        &mut brotli::Decompressor::new(brotli.body.as_slice(), 4096),
        &mut unpacked,
    )
    .expect("brotli");
    assert_eq!(unpacked, script);
    assert!(brotli.body.len() < gzipped.body.len());
    let wasm = get("/chat-web-0123456789abcdef_bg.wasm", &[]).await;
    assert_eq!(
        header(&wasm, "content-type").as_deref(),
        Some("application/wasm")
    );
    assert_eq!(
        header(&wasm, "cache-control").as_deref(),
        Some("public, max-age=31536000, immutable")
    );

    // Everything else: revalidated, and unchanged means 304 and no body.
    let index = get("/", &[]).await;
    assert_eq!(header(&index, "cache-control").as_deref(), Some("no-cache"));
    let etag = header(&index, "etag").expect("an ETag");
    let again = http1_request(
        server.addr,
        "GET",
        "/",
        &[("if-none-match", etag.as_str())],
        Vec::new(),
    )
    .await;
    assert_eq!(again.status, 304);
    assert!(again.body.is_empty());
    let changed = get("/", &[("if-none-match", "\"something-else\"")]).await;
    assert_eq!(changed.status, 200);
    assert!(String::from_utf8_lossy(&changed.body).contains("chat test page"));
    let head = http1_request(server.addr, "HEAD", "/", &[], Vec::new()).await;
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
}

#[tokio::test]
async fn without_a_built_app_the_page_says_how_to_build_it() {
    let server = Running::start(&[("CHAT_WEB_DIR", "/nonexistent/dist")]).await;
    let page = http1_request(server.addr, "GET", "/", &[], Vec::new()).await;
    assert_eq!(page.status, 503);
    assert!(String::from_utf8_lossy(&page.body).contains("not built"));
}

/// Waits for the process to exit, successfully, at most `limit` after
/// `signalled`.
async fn exits_cleanly_within(server: &mut Running, signalled: Instant, limit: Duration) {
    let exit = loop {
        if let Some(exit) = server.child.try_wait().expect("wait") {
            break exit;
        }
        assert!(
            signalled.elapsed() < limit,
            "still running {:?} after SIGTERM",
            signalled.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(exit.success(), "{exit:?}");
}

fn sigterm(server: &Running) {
    let killed = Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
}

#[tokio::test]
async fn sigterm_ends_open_streams_and_exits_promptly() {
    let mut server = Running::start(&[]).await;
    let mut web = common::web_client(&server.url());
    let mut events = subscribe(&mut web, "stayer").await;

    let signalled = Instant::now();
    sigterm(&server);
    let status = within(events.message()).await.expect_err("stream ended");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    exits_cleanly_within(&mut server, signalled, PATIENCE).await;
}

/// A client that keeps a stream the server does not end (a health watch)
/// hears NOT_SERVING, and still cannot keep the server from exiting within
/// the 5 s drain limit.
#[tokio::test]
async fn sigterm_says_not_serving_and_exits_within_five_seconds_whoever_holds_on() {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    const DRAIN_LIMIT: Duration = Duration::from_secs(5);
    let mut server = Running::start(&[]).await;
    let mut health = HealthClient::new(common::channel(&server.url()).await);
    let mut watch = within(health.watch(HealthCheckRequest {
        service: String::new(),
    }))
    .await
    .expect("watching")
    .into_inner();
    let first = within(watch.message())
        .await
        .expect("ok")
        .expect("a status");
    assert_eq!(first.status(), ServingStatus::Serving);

    let signalled = Instant::now();
    sigterm(&server);
    let next = within(watch.message())
        .await
        .expect("ok")
        .expect("a status");
    assert_eq!(next.status(), ServingStatus::NotServing);
    // The drain limit, plus a wide margin for a loaded machine (CI found
    // 3 s too narrow beside heavy builds: closing the database waits for the
    // disk). Without the limit the held watch would keep it running forever.
    exits_cleanly_within(&mut server, signalled, DRAIN_LIMIT + 2 * PATIENCE).await;
}

#[tokio::test]
async fn allowed_origins_from_the_environment_are_a_comma_separated_list() {
    let server = Running::start(&[(
        "CHAT_ALLOWED_ORIGIN",
        "https://a.example, https://b.example",
    )])
    .await;
    for (origin, allowed) in [
        ("https://a.example", true),
        ("https://b.example", true),
        ("https://c.example", false),
    ] {
        let response = http1_request(
            server.addr,
            "OPTIONS",
            "/ChatService/Send",
            &[
                ("origin", origin),
                ("access-control-request-method", "POST"),
                ("access-control-request-headers", "content-type,x-grpc-web"),
            ],
            Vec::new(),
        )
        .await;
        let echoed = response
            .headers
            .get("access-control-allow-origin")
            .is_some_and(|v| v == origin);
        assert_eq!(echoed, allowed, "{origin}");
    }
}

#[tokio::test]
async fn chat_client_sends_typed_lines_and_prints_what_others_say() {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

    let server = Running::start(&[]).await;
    let mut web = common::web_client(&server.url());
    let mut events = subscribe(&mut web, "browser").await;

    let mut client = tokio::process::Command::new(env!("CARGO_BIN_EXE_chat-client"))
        .env_clear()
        .env("CHAT_SERVER", server.url())
        .env("CHAT_NAME", "terminal-ada")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start chat-client");
    let mut stdin = client.stdin.take().expect("stdin");
    let mut stdout = BufReader::new(client.stdout.take().expect("stdout")).lines();

    stdin
        .write_all(b"hello from a terminal\n")
        .await
        .expect("type");
    let got = next_event_message(&mut events).await;
    assert_eq!(
        (got.username.as_str(), got.message.as_str()),
        ("terminal-ada", "hello from a terminal")
    );

    within(web.send(chat("browser", "hello terminal")))
        .await
        .expect("sent");
    let line = within(stdout.next_line())
        .await
        .expect("read")
        .expect("a line");
    assert!(line.ends_with("] browser: hello terminal"), "{line}");
    assert!(line.starts_with('['), "{line}");

    drop(stdin); // Ctrl-D
    let exit = within(client.wait()).await.expect("exit");
    assert!(exit.success(), "{exit:?}");
}

#[tokio::test]
async fn acknowledged_messages_survive_kill_9_and_ids_are_never_reused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("chat.db");
    // 50 quick sends from one name: not a test of the rate limit.
    let envs = [
        ("CHAT_DB", db.to_str().expect("utf-8 path")),
        ("CHAT_RATE_LIMIT", "0"),
    ];

    let mut server = Running::start_on(&envs).await;
    let mut web = common::web_client(&server.url());
    let mut acked = Vec::new();
    for i in 0..50 {
        let reply = within(web.send(chat("ada", &format!("durable {i}"))))
            .await
            .expect("stored")
            .into_inner();
        acked.push(reply.id);
    }
    assert!(acked.windows(2).all(|w| w[0] < w[1]), "{acked:?}");
    // SIGKILL: no shutdown, no flush; only what was committed survives.
    server.child.kill().expect("kill -9");
    server.child.wait().expect("reaped");

    let server = Running::start_on(&envs).await;
    let mut web = common::web_client(&server.url());
    let mut events = within(web.subscribe(chat_proto::SubscribeRequest {
        username: "bob".into(),
        after_id: 0,
        ..Default::default()
    }))
    .await
    .expect("subscribed")
    .into_inner();
    let Ok(Some(chat_proto::ChatEvent {
        event: Some(chat_proto::Event::Ready(ready)),
    })) = within(events.message()).await
    else {
        panic!("expected Ready first");
    };
    assert_eq!(ready.last_id, *acked.last().expect("some"));
    for (i, id) in acked.iter().enumerate() {
        let message = next_event_message(&mut events).await;
        assert_eq!((message.id, message.message), (*id, format!("durable {i}")));
    }
    let after = within(web.send(chat("ada", "after the crash")))
        .await
        .expect("stored")
        .into_inner();
    assert_eq!(after.id, acked.last().expect("some") + 1);
}

/// The attack from the hardening issue: the largest messages in history,
/// then as many `Subscribe` streams as one HTTP/2 connection may open, from
/// a client that never opens its flow-control window. Each stream may hold
/// only a page of history, so memory stays bounded; closing them gives it
/// back.
#[tokio::test]
async fn readers_that_never_read_hold_bounded_memory_and_give_it_back() {
    // 100 quick sends from one name set the scene; the rate limit is not
    // what is tested here.
    let server = Running::start(&[("CHAT_RATE_LIMIT", "0")]).await;
    let pid = server.child.id();
    let mut web = common::web_client(&server.url());
    within(web.send(chat("warm", "up"))).await.expect("sent");
    let baseline = common::rss_bytes(pid);
    let largest = "😀".repeat(chat_proto::rules::MAX_MESSAGE_CHARS);
    for _ in 0..100 {
        within(web.send(chat("ada", &largest)))
            .await
            .expect("stored");
    }
    let stored = common::rss_bytes(pid);

    let mut h2 = common::raw_h2(server.addr, 0).await;
    let streams = h2.max_concurrent_streams.expect("a stream limit");
    let mut open = Vec::new();
    for _ in 0..streams {
        within(std::future::poll_fn(|cx| h2.send.poll_ready(cx)))
            .await
            .expect("ready");
        let (response, mut body) = h2
            .send
            .send_request(
                common::grpc_head(server.addr, "/ChatService/Subscribe", "application/grpc"),
                false,
            )
            .expect("request");
        body.send_data(
            common::grpc_frame(&chat_proto::SubscribeRequest {
                username: "attacker".into(),
                after_id: 0,
                ..Default::default()
            }),
            true,
        )
        .expect("body");
        open.push((response, body));
    }
    let mut responses = Vec::new();
    for (response, body) in open {
        responses.push((within(response).await.expect("answered"), body));
    }
    // Give every stream time to read what it would buffer.
    let mut peak = 0;
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        peak = peak.max(common::rss_bytes(pid));
    }
    const MB: u64 = 1024 * 1024;
    let per_stream = peak.saturating_sub(stored) / streams as u64;
    eprintln!(
        "baseline {} MB, with history {} MB, peak {} MB with {streams} stuck streams",
        baseline / MB,
        stored / MB,
        peak / MB
    );
    // However many readers, the database has a fixed number of connections
    // (none at all when the ring still holds the history they asked for).
    let metrics = http1_request(server.addr, "GET", "/metrics", &[], Vec::new()).await;
    let metrics = String::from_utf8(metrics.body).expect("utf-8");
    let readers: usize = metrics
        .lines()
        .find_map(|l| l.strip_prefix("chat_store_readers_open "))
        .and_then(|n| n.trim().parse().ok())
        .expect("a reader gauge");
    assert!(
        readers <= chat_server::log::sqlite::MAX_READERS,
        "{readers} readers"
    );
    assert!(
        per_stream < 400 * 1024,
        "{streams} stuck streams grew the server from {} MB to {} MB ({} KB each)",
        stored / MB,
        peak / MB,
        per_stream / 1024
    );

    drop(responses);
    drop(h2);
    let limit = 2 * baseline + 20 * MB;
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut now = common::rss_bytes(pid);
    while now > limit && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        now = common::rss_bytes(pid);
    }
    assert!(
        now <= limit,
        "15 s after closing, RSS is {} MB (baseline {} MB, peak {} MB)",
        now / MB,
        baseline / MB,
        peak / MB
    );
}

/// Runs `chat-server admin ARGS` against the server on `db` (found the way
/// the server put it: next to the database); its output, or why it failed.
async fn admin(db: &std::path::Path, args: &[&str]) -> Result<String, String> {
    let output = within(
        tokio::process::Command::new(BIN)
            .env_clear()
            .env("CHAT_DB", db)
            .arg("admin")
            .args(args)
            .output(),
    )
    .await
    .expect("run chat-server admin");
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}

#[tokio::test]
async fn the_operator_moderates_from_the_servers_machine_over_the_admin_socket() {
    use std::os::unix::fs::PermissionsExt;
    let mut server = Running::start(&[]).await;
    let db = server
        ._db_dir
        .as_ref()
        .expect("db dir")
        .path()
        .join("chat.db");
    let socket = db.with_file_name("chat.db.admin.sock");
    let mode = std::fs::metadata(&socket)
        .expect("the socket is next to the database")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "only the server's user may use it");

    let mut web = common::web_client(&server.url());
    let ada = within(web.join(chat_proto::JoinRequest {
        username: "Ada".into(),
        ..Default::default()
    }))
    .await
    .expect("joined")
    .into_inner()
    .token;
    let spam = within(web.send(common::with_session(chat("", "buy watches"), &ada)))
        .await
        .expect("sent")
        .into_inner()
        .id;

    let said = admin(
        &db,
        &[
            "mute", "ada", "--room", "general", "--for", "10m", "--reason", "spam",
        ],
    )
    .await
    .expect("muted");
    assert!(said.starts_with("done (audit entry 1)"), "{said}");
    let refused = within(web.send(common::with_session(chat("", "more"), &ada)))
        .await
        .expect_err("muted");
    assert!(
        refused.message().contains("muted you in #general until"),
        "{refused:?}"
    );
    let said = admin(
        &db,
        &["delete", "general", &spam.to_string(), "--reason", "spam"],
    )
    .await
    .expect("deleted");
    assert!(said.starts_with("deleted (change"), "{said}");
    admin(&db, &["lift", "Ada"]).await.expect("lifted");
    let sorry = within(web.send(common::with_session(chat("", "sorry"), &ada)))
        .await
        .expect("posts again")
        .into_inner()
        .id;
    let refused = admin(&db, &["slow", "general", "99999"])
        .await
        .expect_err("too slow");
    assert!(
        refused.contains("slow mode is 0 (off) to 21600 seconds"),
        "{refused}"
    );
    assert_eq!(
        refused.trim().lines().count(),
        1,
        "the refusal, not a backtrace: {refused}"
    );

    // Bob reports it; the operator lists the reports and dismisses it.
    let bob = within(web.join(chat_proto::JoinRequest {
        username: "Bob".into(),
        ..Default::default()
    }))
    .await
    .expect("joined")
    .into_inner()
    .token;
    let report = within(
        chat_proto::moderation_client::ModerationClient::new(common::channel(&server.url()).await)
            .report(common::with_session(
                chat_proto::ReportRequest {
                    room: "general".into(),
                    id: sorry,
                    reason: "not sorry".into(),
                },
                &bob,
            )),
    )
    .await
    .expect("reported")
    .into_inner()
    .audit_id;
    let reports = admin(&db, &["reports"]).await.expect("reports");
    assert!(
        reports.contains(&format!(
            "Bob reported message {sorry} in #general  \"not sorry\""
        )),
        "{reports}"
    );
    admin(&db, &["dismiss", &report.to_string()])
        .await
        .expect("dismissed");
    let reports = admin(&db, &["reports"]).await.expect("reports");
    assert_eq!(reports.trim(), "no open reports");
    admin(&db, &["topic", "general", "Be kind"])
        .await
        .expect("topic");
    let rooms = within(web.list_rooms(chat_proto::ListRoomsRequest {}))
        .await
        .expect("rooms")
        .into_inner()
        .rooms;
    assert_eq!(rooms[0].topic, "Be kind");

    let audit = admin(&db, &["audit"]).await.expect("audit");
    let lines: Vec<&str> = audit.lines().collect();
    assert_eq!(lines.len(), 5, "{audit}");
    assert!(
        lines[3].contains(&format!(
            "operator  dismiss_report  Bob  #general  report {report}"
        )),
        "{audit}"
    );
    assert!(
        lines[4].contains("operator  topic  #general  \"Be kind\""),
        "{audit}"
    );
    assert!(
        lines[0].contains("operator  mute  ada  #general  \"spam\""),
        "{audit}"
    );
    assert!(
        lines[1].contains(&format!(
            "operator  delete  Ada  #general  message {spam}  \"spam\""
        )),
        "{audit}"
    );
    assert!(lines[2].contains("operator  lift  Ada"), "{audit}");
    let later = admin(&db, &["audit", "--after", "2"]).await.expect("audit");
    assert_eq!(later.lines().count(), 3, "{later}");

    // The socket goes with the server.
    let signalled = Instant::now();
    sigterm(&server);
    exits_cleanly_within(&mut server, signalled, PATIENCE).await;
    assert!(!socket.exists(), "the socket file is removed on shutdown");
}
