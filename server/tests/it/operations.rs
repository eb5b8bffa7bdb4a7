//! What an operator relies on: heartbeats on idle streams, health checks,
//! reflection for grpcurl, a base path, and client addresses behind a proxy.

use std::io::BufRead;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::{self, TestServer, chat, http1_request, next_event_message, subscribe, within};
use chat_proto::{ChatEvent, Event};
use chat_server::Config;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

#[tokio::test]
async fn idle_subscribe_streams_carry_heartbeats_at_the_announced_interval() {
    let mut config = Config::with_addr("127.0.0.1:0");
    config.heartbeat = 1;
    let server = TestServer::start_with(config).await;
    let mut web = server.web();
    let mut events = within(web.subscribe(chat_proto::SubscribeRequest {
        username: "idle".into(),
        after_id: 0,
        ..Default::default()
    }))
    .await
    .expect("subscribed")
    .into_inner();
    match within(events.message()).await {
        Ok(Some(ChatEvent {
            event: Some(Event::Ready(ready)),
        })) => {
            assert_eq!(ready.heartbeat_interval_ms, 1_000);
        }
        other => panic!("expected Ready, got {other:?}"),
    }
    match within(events.message()).await {
        Ok(Some(ChatEvent {
            event: Some(Event::Presence(presence)),
        })) => assert!(presence.online.is_empty(), "a listener is nobody"),
        other => panic!("expected who is here, got {other:?}"),
    }
    for _ in 0..2 {
        match within(events.message()).await {
            Ok(Some(ChatEvent {
                event: Some(Event::Heartbeat(beat)),
            })) => assert!(beat.timestamp > 0),
            other => panic!("expected a heartbeat, got {other:?}"),
        }
    }
    // Messages still flow between heartbeats.
    within(web.send(chat("idle", "between beats")))
        .await
        .expect("sent");
    let message = loop {
        match within(events.message()).await {
            Ok(Some(ChatEvent {
                event: Some(Event::Message(m)),
            })) => break m,
            Ok(Some(ChatEvent {
                event: Some(Event::Heartbeat(_)),
            })) => {}
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!(message.message, "between beats");
    server.stop().await;
}

#[tokio::test]
async fn health_checks_answer_over_grpc_and_plain_http() {
    let server = TestServer::start().await;
    let channel = common::channel(&server.url()).await;
    let mut health = HealthClient::new(channel);
    for service in ["", "ChatService"] {
        let reply = within(health.check(HealthCheckRequest {
            service: service.into(),
        }))
        .await
        .expect("health answered")
        .into_inner();
        assert_eq!(reply.status(), ServingStatus::Serving, "{service:?}");
    }
    let page = http1_request(server.addr, "GET", "/healthz", &[], Vec::new()).await;
    assert_eq!((page.status, page.body.as_slice()), (200, &b"ok\n"[..]));
    server.stop().await;
}

#[tokio::test]
async fn healthz_answers_503_once_the_server_is_shutting_down() {
    let server = TestServer::start().await;
    let ok = http1_request(server.addr, "GET", "/healthz", &[], Vec::new()).await;
    assert_eq!((ok.status, ok.body.as_slice()), (200, &b"ok\n"[..]));
    // What a SIGTERM does first, before connections drain.
    server.hub.shut_down();
    let stopping = http1_request(server.addr, "GET", "/healthz", &[], Vec::new()).await;
    assert_eq!(stopping.status, 503);
}

#[tokio::test]
async fn reflection_lists_the_services_for_grpcurl() {
    let server = TestServer::start().await;
    let channel = common::channel(&server.url()).await;
    let mut reflection = ServerReflectionClient::new(channel);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut replies = within(reflection.server_reflection_info(tokio_stream::iter([request])))
        .await
        .expect("reflection answered")
        .into_inner();
    let reply = within(replies.message())
        .await
        .expect("ok")
        .expect("a reply");
    let Some(MessageResponse::ListServicesResponse(list)) = reply.message_response else {
        panic!("expected a service list, got {reply:?}");
    };
    let names: Vec<_> = list.service.into_iter().map(|s| s.name).collect();
    for expected in [
        "ChatService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} not in {names:?} (v1)"
        );
    }

    // The older version, which grpcurl asks first, lists both as well.
    use tonic_reflection::pb::v1alpha;
    let reply = ask_v1alpha(
        &server,
        v1alpha::server_reflection_request::MessageRequest::ListServices(String::new()),
    )
    .await;
    let Some(v1alpha::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
        reply
    else {
        panic!("expected a service list, got {reply:?}");
    };
    let old_names: Vec<_> = list.service.into_iter().map(|s| s.name).collect();
    for expected in &names {
        assert!(
            old_names.contains(expected),
            "{expected} not in {old_names:?} (v1alpha)"
        );
    }
    server.stop().await;
}

/// One question to v1alpha reflection (the version grpcurl asks first).
async fn ask_v1alpha(
    server: &TestServer,
    question: tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest,
) -> Option<tonic_reflection::pb::v1alpha::server_reflection_response::MessageResponse> {
    use tonic_reflection::pb::v1alpha;
    let mut reflection = v1alpha::server_reflection_client::ServerReflectionClient::new(
        common::channel(&server.url()).await,
    );
    let request = v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(question),
    };
    let mut replies = within(reflection.server_reflection_info(tokio_stream::iter([request])))
        .await
        .expect("v1alpha reflection answered")
        .into_inner();
    within(replies.message())
        .await
        .expect("ok")
        .expect("a reply")
        .message_response
}

/// What grpcurl does for `grpcurl -d '{...}' HOST ChatService/Send` with no
/// proto file: asks v1alpha reflection for the file that defines the
/// symbol, and builds the request from it.
#[tokio::test]
async fn reflection_describes_send_for_grpcurl_without_the_proto_file() {
    use prost::Message;
    use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1alpha::server_reflection_response::MessageResponse;
    let server = TestServer::start().await;
    let reply = ask_v1alpha(
        &server,
        MessageRequest::FileContainingSymbol("ChatService".into()),
    )
    .await;
    let Some(MessageResponse::FileDescriptorResponse(files)) = reply else {
        panic!("expected file descriptors, got {reply:?}");
    };
    let files: Vec<prost_types::FileDescriptorProto> = files
        .file_descriptor_proto
        .iter()
        .map(|bytes| {
            prost_types::FileDescriptorProto::decode(bytes.as_slice()).expect("a descriptor")
        })
        .collect();
    let send = files
        .iter()
        .flat_map(|f| &f.service)
        .filter(|s| s.name() == "ChatService")
        .flat_map(|s| &s.method)
        .find(|m| m.name() == "Send")
        .expect("ChatService.Send described");
    assert_eq!(send.input_type(), ".ChatMessage");
    let message = files
        .iter()
        .flat_map(|f| &f.message_type)
        .find(|m| m.name() == "ChatMessage")
        .expect("ChatMessage described");
    let fields: Vec<_> = message
        .field
        .iter()
        .map(|f| (f.name(), f.number()))
        .collect();
    for expected in [("username", 1), ("message", 2), ("timestamp", 3)] {
        assert!(fields.contains(&expected), "{expected:?} not in {fields:?}");
    }
}

#[tokio::test]
async fn a_base_path_puts_everything_under_a_prefix() {
    let mut config = Config::with_addr("127.0.0.1:0");
    config.base_path = "/chat".into();
    let server = TestServer::start_with(config).await;
    let redirect = http1_request(server.addr, "GET", "/chat", &[], Vec::new()).await;
    assert_eq!(redirect.status, 308);
    assert_eq!(
        redirect.headers.get("location").map(|v| v.as_bytes()),
        Some(&b"/chat/"[..])
    );
    let health = http1_request(server.addr, "GET", "/chat/healthz", &[], Vec::new()).await;
    assert_eq!(health.status, 200);
    assert_eq!(
        http1_request(server.addr, "GET", "/healthz", &[], Vec::new())
            .await
            .status,
        404
    );

    let mut watcher = common::web_client(&format!("{}/chat", server.url()));
    let mut events = subscribe(&mut watcher, "prefixed").await;
    within(watcher.send(chat("prefixed", "under /chat")))
        .await
        .expect("sent under the prefix");
    assert_eq!(next_event_message(&mut events).await.message, "under /chat");
    server.stop().await;
}

/// Starts the binary with JSON logs and `envs`, runs `visit` against it,
/// stops it, and returns every log entry it wrote.
fn json_logs_of<F, Fut>(envs: &[(&str, &str)], visit: F) -> Vec<serde_json::Value>
where
    F: FnOnce(std::net::SocketAddr) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("port")
        .local_addr()
        .expect("addr")
        .port();
    let db = tempfile::tempdir().expect("temp dir");
    let mut child = Command::new(env!("CARGO_BIN_EXE_chat-server"))
        .env_clear()
        .env("CHAT_ADDR", format!("127.0.0.1:{port}"))
        .env("CHAT_LOG_FORMAT", "json")
        .env("CHAT_WEB_DIR", "/nonexistent")
        .env("CHAT_DB", db.path().join("chat.db"))
        .envs(envs.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start chat-server");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        within(async {
            while tokio::net::TcpStream::connect(addr).await.is_err() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        visit(addr).await;
    });
    let _ = child.kill();
    let logs = child.stderr.take().expect("stderr");
    let entries = std::io::BufReader::new(logs)
        .lines()
        .map_while(Result::ok)
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(&line).ok())
        .collect();
    let _ = child.wait();
    entries
}

/// Makes one request claiming to be forwarded for 203.0.113.7, and returns
/// the client the access log names.
fn logged_client(trust_proxy: bool) -> String {
    let trust = trust_proxy.to_string();
    json_logs_of(&[("CHAT_TRUST_PROXY", &trust)], |addr| async move {
        http1_request(
            addr,
            "GET",
            "/healthz",
            &[("x-forwarded-for", "198.51.100.9, 203.0.113.7")],
            Vec::new(),
        )
        .await;
    })
    .into_iter()
    .find(|entry| entry["path"] == "/healthz")
    .and_then(|entry| entry["client"].as_str().map(str::to_owned))
    .expect("an access log line for /healthz")
}

#[test]
fn streaming_clients_are_logged_when_they_connect_and_disconnect() {
    let entries = json_logs_of(&[], |addr| async move {
        let mut web = common::web_client(&format!("http://{addr}"));
        let events = subscribe(&mut web, "logged-ada").await;
        drop(events);
        // The line is written when the server drops the stream: wait for it.
        within(async {
            loop {
                let metrics = http1_request(addr, "GET", "/metrics", &[], Vec::new()).await;
                let text = String::from_utf8_lossy(&metrics.body).into_owned();
                if text.contains(r#"chat_streams_open{kind="subscribe"} 0"#) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
    });
    let line = |message: &str| {
        entries.iter().find(|entry| {
            entry["message"] == message
                && entry["rpc"] == "subscribe"
                && entry["username"] == "logged-ada"
        })
    };
    let connected = line("client connected").expect("a connect line");
    assert_eq!(connected["client"], "127.0.0.1");
    line("client disconnected").expect("a disconnect line");
}

#[test]
fn trust_proxy_takes_the_client_from_forwarded_headers_only_when_asked() {
    assert_eq!(logged_client(true), "203.0.113.7");
    assert_eq!(logged_client(false), "127.0.0.1");
}
