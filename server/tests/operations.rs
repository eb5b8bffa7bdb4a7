//! What an operator relies on: heartbeats on idle streams, health checks,
//! reflection for grpcurl, a base path, and client addresses behind a proxy.

mod common;

use std::io::BufRead;
use std::process::{Command, Stdio};
use std::time::Duration;

use chat_proto::{ChatEvent, Event};
use chat_server::Config;
use common::{TestServer, chat, http1_request, next_event_message, subscribe, within};
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
    let mut old = v1alpha::server_reflection_client::ServerReflectionClient::new(
        common::channel(&server.url()).await,
    );
    let request = v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            v1alpha::server_reflection_request::MessageRequest::ListServices(String::new()),
        ),
    };
    let mut replies = within(old.server_reflection_info(tokio_stream::iter([request])))
        .await
        .expect("v1alpha answered")
        .into_inner();
    let reply = within(replies.message())
        .await
        .expect("ok")
        .expect("a reply");
    let Some(v1alpha::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
        reply.message_response
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

/// Starts the binary with JSON logs, makes one request claiming to be
/// forwarded for 203.0.113.7, and returns the client its access log names.
fn logged_client(trust_proxy: bool) -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("port")
        .local_addr()
        .expect("addr")
        .port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_chat-server"))
        .env_clear()
        .env("CHAT_ADDR", format!("127.0.0.1:{port}"))
        .env("CHAT_LOG_FORMAT", "json")
        .env("CHAT_TRUST_PROXY", trust_proxy.to_string())
        .env("CHAT_WEB_DIR", "/nonexistent")
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
        http1_request(
            addr,
            "GET",
            "/healthz",
            &[("x-forwarded-for", "198.51.100.9, 203.0.113.7")],
            Vec::new(),
        )
        .await
    });
    let _ = child.kill();
    let logs = child.stderr.take().expect("stderr");
    let client = std::io::BufReader::new(logs)
        .lines()
        .map_while(Result::ok)
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(&line).ok())
        .find(|entry| entry["path"] == "/healthz")
        .and_then(|entry| entry["client"].as_str().map(str::to_owned))
        .expect("an access log line for /healthz");
    let _ = child.wait();
    client
}

#[test]
fn trust_proxy_takes_the_client_from_forwarded_headers_only_when_asked() {
    assert_eq!(logged_client(true), "203.0.113.7");
    assert_eq!(logged_client(false), "127.0.0.1");
}
