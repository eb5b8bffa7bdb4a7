//! Bad input gets a clear status and a readable message, and everyone else
//! keeps chatting.

use crate::common::{
    self, TestServer, chat, http1_request, next_event_message, open_chat_stream, subscribe, within,
};
use chat_proto::{ChatMessage, SubscribeRequest};
use tonic::Code;

fn cases() -> Vec<(&'static str, ChatMessage, Code, &'static str)> {
    let long = |n| "x".repeat(n);
    vec![
        (
            "empty name",
            chat("", "hi"),
            Code::InvalidArgument,
            "username is empty",
        ),
        (
            "blank name",
            chat(" \t ", "hi"),
            Code::InvalidArgument,
            "username is empty",
        ),
        (
            "long name",
            chat(&long(33), "hi"),
            Code::InvalidArgument,
            "username is too long",
        ),
        (
            "control in name",
            chat("a\u{1b}b", "hi"),
            Code::InvalidArgument,
            "control characters",
        ),
        (
            "right-to-left override in name",
            chat("admin\u{202E}nimda", "hi"),
            Code::InvalidArgument,
            "text-direction control characters",
        ),
        (
            "isolate in name",
            chat("\u{2067}bob", "hi"),
            Code::InvalidArgument,
            "text-direction control characters",
        ),
        (
            "invisible name",
            chat("\u{200B}\u{200D}\u{2060}", "hi"),
            Code::InvalidArgument,
            "no visible characters",
        ),
        (
            "empty message",
            chat("ada", "   "),
            Code::InvalidArgument,
            "message is empty",
        ),
        (
            "long message",
            chat("ada", &long(4_001)),
            Code::InvalidArgument,
            "message is too long",
        ),
        (
            "control in message",
            chat("ada", "\u{0}"),
            Code::InvalidArgument,
            "control characters",
        ),
        (
            "long nonce",
            ChatMessage {
                nonce: long(65),
                ..chat("ada", "hi")
            },
            Code::InvalidArgument,
            "nonce is too long",
        ),
        // 20 KiB: over the decoding limit, refused before it is read.
        (
            "oversized",
            chat("ada", &long(20_000)),
            Code::ResourceExhausted,
            "too large",
        ),
    ]
}

#[tokio::test]
async fn send_refuses_bad_input_over_both_protocols() {
    let server = TestServer::start().await;
    let mut native = server.native().await;
    let mut web = server.web();
    for (case, message, code, text) in cases() {
        for (protocol, result) in [
            ("native", within(native.send(message.clone())).await),
            ("grpc-web", within(web.send(message.clone())).await),
        ] {
            let status = result.expect_err(case);
            assert_eq!(status.code(), code, "{case} over {protocol}: {status:?}");
            assert!(
                status.message().contains(text),
                "{case} over {protocol}: {status:?}"
            );
        }
    }
    // The limits are inclusive.
    within(native.send(chat(&"y".repeat(32), &"z".repeat(4_000))))
        .await
        .expect("largest valid");
    server.stop().await;
}

#[tokio::test]
async fn a_forged_id_and_timestamp_are_ignored_and_a_64_character_nonce_is_fine() {
    let server = TestServer::start().await;
    let mut web = server.web();
    let mut events = subscribe(&mut web, "watcher").await;
    let forged = ChatMessage {
        username: "mallory".into(),
        message: "I am message one million".into(),
        timestamp: 42,
        id: 1_000_000,
        nonce: "n".repeat(chat_proto::rules::MAX_NONCE_CHARS),
        room: "General".into(),
        // What only the server sets.
        edited_at: 7,
        deleted: true,
        reactions: vec![chat_proto::Reaction {
            emoji: "👍".into(),
            count: 1_000,
            usernames: vec!["everyone".into()],
        }],
        state_id: 99,
        reply_to: 0,
    };
    let reply = within(web.send(forged.clone()))
        .await
        .expect("accepted")
        .into_inner();
    assert_eq!(reply.id, 1, "the server's id, not the client's");
    assert!(reply.timestamp > 1_600_000_000_000, "the server's clock");
    let relayed = next_event_message(&mut events).await;
    assert_eq!((relayed.id, relayed.timestamp), (1, reply.timestamp));
    assert_eq!(relayed.nonce, forged.nonce);
    assert_eq!(relayed.room, "general", "the room as stored");
    assert_eq!(relayed.message, forged.message);
    assert_eq!(
        (
            relayed.edited_at,
            relayed.deleted,
            relayed.reactions.len(),
            relayed.state_id
        ),
        (0, false, 0, 0),
        "what only the server sets is ignored"
    );
    let too_long = ChatMessage {
        nonce: "n".repeat(chat_proto::rules::MAX_NONCE_CHARS + 1),
        ..forged
    };
    let status = within(web.send(too_long)).await.expect_err("refused");
    assert_eq!(status.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn subscribe_refuses_a_bad_username() {
    let server = TestServer::start().await;
    let mut web = server.web();
    for name in ["", &"n".repeat(33), "tab\there"] {
        let status = within(web.subscribe(SubscribeRequest {
            username: name.into(),
            after_id: 0,
            ..Default::default()
        }))
        .await
        .expect_err("refused");
        assert_eq!(status.code(), Code::InvalidArgument, "{name:?}: {status:?}");
    }
    server.wait_for_subscribers(0).await;
    server.stop().await;
}

#[tokio::test]
async fn chat_stream_ends_a_bad_sender_with_a_status_and_others_carry_on() {
    let server = TestServer::start().await;
    let mut listener = server.web();
    let mut events = subscribe(&mut listener, "listener").await;

    for (case, message, code, text) in cases() {
        let mut client = server.native().await;
        let (tx, mut inbound) = open_chat_stream(&mut client).await;
        tx.send(message).await.expect("queued");
        let status = within(inbound.message()).await.expect_err(case);
        assert_eq!(status.code(), code, "{case}: {status:?}");
        assert!(status.message().contains(text), "{case}: {status:?}");
    }
    within(listener.send(chat("listener", "still here")))
        .await
        .expect("sent");
    assert_eq!(next_event_message(&mut events).await.message, "still here");
    server.wait_for_subscribers(1).await;
    server.stop().await;
}

/// The gRPC status of a gRPC-Web response, from its headers (trailers-only)
/// or its trailer frame.
fn grpc_web_status(response: &common::HttpResponse) -> Option<String> {
    if let Some(status) = response.headers.get("grpc-status") {
        return status.to_str().ok().map(str::to_owned);
    }
    let text = String::from_utf8_lossy(&response.body);
    let start = text.find("grpc-status:")? + "grpc-status:".len();
    Some(
        text[start..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect(),
    )
}

async fn post_grpc_web(server: &TestServer, body: Vec<u8>) -> common::HttpResponse {
    http1_request(
        server.addr,
        "POST",
        "/ChatService/Send",
        &[
            ("content-type", "application/grpc-web+proto"),
            ("x-grpc-web", "1"),
        ],
        body,
    )
    .await
}

#[tokio::test]
async fn garbage_and_lying_frames_get_an_error_status_not_a_hang() {
    let server = TestServer::start().await;
    let mut ada = server.web();
    let mut events = subscribe(&mut ada, "ada").await;

    // Not even a gRPC frame.
    let response = post_grpc_web(&server, b"\xde\xad\xbe\xef garbage".to_vec()).await;
    let status = grpc_web_status(&response).expect("a grpc-status");
    assert_eq!(
        status,
        (Code::Internal as i32).to_string(),
        "INTERNAL, as the README says"
    );

    // A well-formed frame holding bytes that are not protobuf.
    let mut frame = vec![0, 0, 0, 0, 4];
    frame.extend_from_slice(&[0xff, 0xff, 0xff, 0xff]);
    let response = post_grpc_web(&server, frame).await;
    assert_eq!(response.status, 200);
    assert_eq!(
        grpc_web_status(&response),
        Some((Code::Internal as i32).to_string()),
        "INTERNAL, as the README says"
    );

    // A frame that claims 100 MB but brings ten bytes.
    let mut frame = vec![0];
    frame.extend_from_slice(&100_000_000u32.to_be_bytes());
    frame.extend_from_slice(&[0; 10]);
    let response = post_grpc_web(&server, frame).await;
    assert_eq!(
        grpc_web_status(&response).as_deref(),
        Some((Code::ResourceExhausted as i32).to_string().as_str())
    );

    // Everyone else is unaffected.
    within(ada.send(chat("ada", "after the noise")))
        .await
        .expect("sent");
    assert_eq!(
        next_event_message(&mut events).await.message,
        "after the noise"
    );
    server.stop().await;
}
