//! Statuses and headers as gRPC and gRPC-Web specify them, where tonic
//! alone would get them wrong: deadlines, content types, unknown methods,
//! text answers, CORS for any client library, reflection, refused bodies
//! under a proxy, and the metrics that show limits being hit.

use std::io::{Read, Write};
use std::time::Duration;

use crate::common::{
    self, TestServer, chat, grpc_frame, grpc_head, h2_call, http1_request, within,
};
use base64::Engine;
use chat_server::Config;

/// A server on its own database file, and a second connection to that file
/// that can take the write lock away from it.
async fn server_on_a_file() -> (TestServer, std::path::PathBuf, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("chat.db");
    let mut config = Config::with_addr("127.0.0.1:0");
    config.db = chat_server::log::sqlite::Location::File(db.clone());
    (TestServer::start_with(config).await, db, dir)
}

#[tokio::test]
async fn a_deadline_that_passes_before_the_answer_is_deadline_exceeded() {
    let (server, db, _dir) = server_on_a_file().await;
    let blocker = rusqlite::Connection::open(&db).expect("open");
    blocker
        .execute_batch("BEGIN IMMEDIATE")
        .expect("write lock");
    let mut request = grpc_head(server.addr, "/ChatService/Send", "application/grpc");
    request
        .headers_mut()
        .insert("grpc-timeout", "300m".parse().expect("header"));
    let answer = h2_call(server.addr, request, grpc_frame(&chat("ada", "late"))).await;
    assert_eq!(
        answer.grpc_status().as_deref(),
        Some("4"),
        "DEADLINE_EXCEEDED"
    );
    assert!(
        answer.grpc_message().contains("deadline"),
        "{}",
        answer.grpc_message()
    );
    drop(blocker);
}

#[tokio::test]
async fn a_deadline_that_passes_mid_stream_ends_it_with_deadline_exceeded() {
    let server = TestServer::start().await;
    let mut request = grpc_head(server.addr, "/ChatService/Subscribe", "application/grpc");
    request
        .headers_mut()
        .insert("grpc-timeout", "500m".parse().expect("header"));
    let subscribe = chat_proto::SubscribeRequest {
        username: "ada".into(),
        after_id: 0,
        ..Default::default()
    };
    let answer = h2_call(server.addr, request, grpc_frame(&subscribe)).await;
    assert_eq!(answer.head.status, 200);
    assert!(!answer.body.is_empty(), "Ready came first");
    assert_eq!(
        answer.grpc_status().as_deref(),
        Some("4"),
        "DEADLINE_EXCEEDED"
    );
}

#[tokio::test]
async fn native_requests_without_a_grpc_content_type_get_415() {
    let server = TestServer::start().await;
    let request = grpc_head(server.addr, "/ChatService/Send", "application/json");
    let answer = h2_call(server.addr, request, grpc_frame(&chat("ada", "hi"))).await;
    assert_eq!(answer.head.status, 415);
    let metrics = server.hub.metrics().render();
    assert!(
        metrics.contains("chat_messages_stored_total 0\n"),
        "{metrics}"
    );
    assert!(metrics.contains(r#"kind="content_type"} 1"#), "{metrics}");
}

#[tokio::test]
async fn unknown_methods_and_services_are_unimplemented_with_a_message() {
    let server = TestServer::start().await;
    for path in ["/ChatService/Nope", "/no.Such/Service"] {
        let request = grpc_head(server.addr, path, "application/grpc");
        let answer = h2_call(server.addr, request, grpc_frame(&chat("ada", "hi"))).await;
        assert_eq!(answer.grpc_status().as_deref(), Some("12"), "{path}");
        assert!(
            answer.grpc_message().contains(path),
            "{path}: {:?}",
            answer.grpc_message()
        );
    }
    // gRPC-Web too.
    let response = http1_request(
        server.addr,
        "POST",
        "/no.Such/Service",
        &[
            ("content-type", "application/grpc-web+proto"),
            ("x-grpc-web", "1"),
        ],
        grpc_frame(&chat("ada", "hi")).to_vec(),
    )
    .await;
    let status = response
        .headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok());
    assert_eq!(status, Some("12"));
    assert!(response.headers.contains_key("grpc-message"));
}

#[tokio::test]
async fn grpc_web_text_requests_get_text_answers_errors_included() {
    let server = TestServer::start().await;
    let text = |message: &chat_proto::ChatMessage| {
        base64::engine::general_purpose::STANDARD
            .encode(grpc_frame(message))
            .into_bytes()
    };
    for accept in [None, Some("*/*")] {
        let mut headers = vec![
            ("content-type", "application/grpc-web-text"),
            ("x-grpc-web", "1"),
        ];
        if let Some(accept) = accept {
            headers.push(("accept", accept));
        }
        let send = |message| {
            http1_request(
                server.addr,
                "POST",
                "/ChatService/Send",
                &headers,
                text(&message),
            )
        };
        let is_text = |response: &common::HttpResponse| {
            response
                .headers
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|t| t.starts_with("application/grpc-web-text"))
        };
        // An empty name: refused, in text.
        let refused = send(chat("", "hi")).await;
        assert!(is_text(&refused), "{:?}", refused.headers);
        assert_eq!(
            refused
                .headers
                .get("grpc-status")
                .and_then(|v| v.to_str().ok()),
            Some("3"),
            "INVALID_ARGUMENT"
        );
        // Accepted: the body is base64 too.
        let accepted = send(chat("ada", "hi")).await;
        assert_eq!(accepted.status, 200);
        assert!(is_text(&accepted), "{:?}", accepted.headers);
        let base64_alphabet = |b: &u8| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=');
        assert!(
            !accepted.body.is_empty() && accepted.body.iter().all(base64_alphabet),
            "not a text body: {:?}",
            String::from_utf8_lossy(&accepted.body)
        );
    }
}

#[tokio::test]
async fn preflights_allow_whatever_headers_a_grpc_web_client_sends() {
    let server = TestServer::start().await;
    let response = http1_request(
        server.addr,
        "OPTIONS",
        "/ChatService/Send",
        &[
            ("origin", "http://localhost:8080"),
            ("access-control-request-method", "POST"),
            (
                "access-control-request-headers",
                "authorization,x-request-id,content-type,x-grpc-web,x-user-agent,grpc-timeout",
            ),
        ],
        Vec::new(),
    )
    .await;
    let allowed = response
        .headers
        .get("access-control-allow-headers")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    for name in [
        "authorization",
        "x-request-id",
        "content-type",
        "grpc-timeout",
    ] {
        assert!(allowed.contains(name), "{name} not in {allowed:?}");
    }
}

/// Over HTTP/1.1, the way nginx talks to the server: a 1 MiB message is
/// refused from its length prefix, and the connection survives the rest of
/// the body arriving afterwards, so a proxy never sees a reset (which it
/// would turn into a 502 instead of the status).
#[tokio::test]
async fn an_oversized_message_is_refused_and_its_connection_survives() {
    let server = TestServer::start().await;
    let addr = server.addr;
    let outcome = tokio::task::spawn_blocking(move || {
        const BODY: usize = 1024 * 1024;
        let mut socket = std::net::TcpStream::connect(addr).expect("connect");
        socket
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let head = format!(
            "POST /ChatService/Send HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/grpc-web+proto\r\n\
             x-grpc-web: 1\r\ncontent-length: {BODY}\r\n\r\n"
        );
        socket.write_all(head.as_bytes()).expect("head");
        let mut body = vec![b'x'; BODY];
        body[0] = 0;
        body[1..5].copy_from_slice(&u32::try_from(BODY - 5).expect("small").to_be_bytes());
        // The first part, then a pause in which the server answers, then
        // the rest, as a proxy streaming the body would.
        socket.write_all(&body[..64 * 1024]).expect("first part");
        std::thread::sleep(Duration::from_millis(300));
        for chunk in body[64 * 1024..].chunks(64 * 1024) {
            socket.write_all(chunk)?;
        }
        // The connection is still good for another request.
        let health = format!("GET /healthz HTTP/1.1\r\nhost: {addr}\r\n\r\n");
        socket.write_all(health.as_bytes())?;
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        while !String::from_utf8_lossy(&seen).contains("ok\n") {
            let n = socket.read(&mut buf)?;
            if n == 0 {
                break;
            }
            seen.extend_from_slice(&buf[..n]);
        }
        Ok::<_, std::io::Error>(String::from_utf8_lossy(&seen).into_owned())
    })
    .await
    .expect("thread");
    let answers = outcome.expect("the server kept the connection open while the body arrived");
    assert!(answers.contains("grpc-status: 8"), "{answers}");
    assert!(answers.contains("ok\n"), "{answers}");
    let metrics = server.hub.metrics().render();
    assert!(metrics.contains(r#"kind="message_size"} 1"#), "{metrics}");
}

#[tokio::test]
async fn metrics_show_connections_streams_messages_and_limits() {
    let server = TestServer::start().await;
    let mut native = server.native().await;
    let _events = common::subscribe(&mut native, "watcher").await;
    let mut web = server.web();
    let mut stored = 0;
    for i in 0..25 {
        if within(web.send(chat("eager", &format!("{i}"))))
            .await
            .is_ok()
        {
            stored += 1;
        }
    }
    assert!(stored < 25, "the rate limit refused some");
    let response = http1_request(server.addr, "GET", "/metrics", &[], Vec::new()).await;
    assert_eq!(response.status, 200);
    let text = String::from_utf8(response.body).expect("utf-8");
    for expected in [
        "chat_connections_open ".to_owned(),
        r#"chat_streams_open{kind="subscribe"} 1"#.to_owned(),
        format!("chat_messages_stored_total {stored}\n"),
        format!("chat_messages_relayed_total {stored}\n"),
        "chat_store_commit_seconds_bucket".to_owned(),
        format!(
            r#"chat_limit_hits_total{{kind="rate_send"}} {}"#,
            25 - stored
        ),
    ] {
        assert!(text.contains(&expected), "{expected} not in:\n{text}");
    }
}
