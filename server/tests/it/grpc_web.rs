//! The browser's path: gRPC-Web over HTTP/1.1 with `Subscribe` + `Send`, and
//! delivery across the two protocols in both directions.

use crate::common::{
    self, TestServer, chat, next_event_message, next_message, open_chat_stream, subscribe, within,
};
use chat_proto::ChatMessage;

#[tokio::test]
async fn subscribers_get_every_message_including_their_own_with_its_nonce() {
    let server = TestServer::start().await;
    let mut ada = server.web();
    let mut bob = server.web();
    let mut ada_events = subscribe(&mut ada, "ada").await;
    let mut bob_events = subscribe(&mut bob, "bob").await;

    let before = chat_server::log::now_millis();
    let reply = within(ada.send(ChatMessage {
        nonce: "n-1".into(),
        timestamp: 7,
        ..chat("ada", "  hello over grpc-web  ")
    }))
    .await
    .expect("send accepted")
    .into_inner();
    assert!(reply.timestamp >= before);

    for events in [&mut ada_events, &mut bob_events] {
        let got = next_event_message(events).await;
        assert_eq!(got.username, "ada");
        assert_eq!(got.message, "hello over grpc-web", "trimmed");
        assert_eq!(got.nonce, "n-1", "the sender can recognise its own message");
        assert_eq!(
            got.timestamp, reply.timestamp,
            "the reply carries the relayed time"
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn messages_cross_between_native_and_web_clients_both_ways() {
    let server = TestServer::start().await;
    let mut web = server.web();
    let mut web_events = subscribe(&mut web, "browser").await;
    let mut native = server.native().await;
    let (native_tx, mut native_in) = open_chat_stream(&mut native).await;
    server.wait_for_subscribers(2).await;

    native_tx
        .send(chat("paper", "from the paper client"))
        .await
        .expect("send");
    let got = next_event_message(&mut web_events).await;
    assert_eq!(
        (got.username.as_str(), got.message.as_str()),
        ("paper", "from the paper client")
    );

    within(web.send(chat("browser", "from the browser")))
        .await
        .expect("sent");
    let got = next_message(&mut native_in).await;
    assert_eq!(
        (got.username.as_str(), got.message.as_str()),
        ("browser", "from the browser")
    );
    let own = next_event_message(&mut web_events).await;
    assert_eq!(own.message, "from the browser");

    // A native unary Send reaches both kinds of client as well.
    within(native.send(chat("cli", "unary over h2")))
        .await
        .expect("sent");
    assert_eq!(
        next_event_message(&mut web_events).await.message,
        "unary over h2"
    );
    let got = next_message(&mut native_in).await;
    assert_eq!(got.message, "unary over h2");
    server.stop().await;
}

#[tokio::test]
async fn grpc_web_text_works_too() {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use prost::Message;

    let server = TestServer::start().await;
    let mut watcher = server.web();
    let mut events = subscribe(&mut watcher, "watcher").await;

    let body = chat("texter", "sent as grpc-web-text").encode_to_vec();
    let mut frame = vec![0u8];
    frame.extend_from_slice(&u32::try_from(body.len()).expect("small").to_be_bytes());
    frame.extend_from_slice(&body);
    let response = common::http1_request(
        server.addr,
        "POST",
        "/ChatService/Send",
        &[
            ("content-type", "application/grpc-web-text"),
            ("accept", "application/grpc-web-text"),
            ("x-grpc-web", "1"),
        ],
        STANDARD.encode(&frame).into_bytes(),
    )
    .await;
    assert_eq!(response.status, 200);
    // Each frame is base64-encoded on its own; 4-character groups decode
    // independently, so decoding group by group handles the padding between.
    let decoded: Vec<u8> = response
        .body
        .trim_ascii()
        .chunks(4)
        .flat_map(|group| STANDARD.decode(group).expect("base64 response"))
        .collect();
    let trailers = String::from_utf8_lossy(&decoded);
    assert!(trailers.contains("grpc-status:0"), "trailers: {trailers}");
    assert_eq!(
        next_event_message(&mut events).await.message,
        "sent as grpc-web-text"
    );

    server.stop().await;
}
