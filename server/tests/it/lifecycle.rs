//! Connections come and go: departed clients leave nothing behind, a reader
//! that stops reading cannot hold anyone else up, and shutdown ends streams.

use crate::common::{
    self, TestServer, chat, next_event_message, open_chat_stream, subscribe, within,
};
use chat_server::Config;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::Code;

#[tokio::test]
async fn departed_clients_leave_no_subscription_behind() {
    let server = TestServer::start().await;

    // Politely: a gRPC-Web stream dropped by its client.
    let mut web = server.web();
    let events = subscribe(&mut web, "leaving").await;
    // Mid-conversation: a native ChatStream whose whole connection is dropped.
    let mut native = server.native().await;
    let (tx, inbound) = open_chat_stream(&mut native).await;
    tx.send(chat("paper", "bye")).await.expect("sent");
    server.wait_for_subscribers(2).await;
    drop((events, web, inbound, tx, native));
    server.wait_for_subscribers(0).await;

    // Abruptly: a raw socket that starts a gRPC-Web Subscribe over HTTP/1.1
    // and vanishes without closing anything.
    let mut socket = tokio::net::TcpStream::connect(server.addr)
        .await
        .expect("connect");
    let body = [0u8, 0, 0, 0, 5, 0x0a, 3, b'r', b'a', b'w'];
    let head = format!(
        "POST /ChatService/Subscribe HTTP/1.1\r\nhost: {}\r\ncontent-type: application/grpc-web+proto\r\n\
         x-grpc-web: 1\r\ncontent-length: {}\r\n\r\n",
        server.addr,
        body.len()
    );
    socket.write_all(head.as_bytes()).await.expect("write");
    socket.write_all(&body).await.expect("write");
    let mut first = [0u8; 64];
    let read = within(socket.read(&mut first))
        .await
        .expect("response starts");
    assert!(
        first[..read].starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&first[..read])
    );
    server.wait_for_subscribers(1).await;
    drop(socket);
    server.wait_for_subscribers(0).await;
    server.stop().await;
}

#[tokio::test]
async fn a_reader_that_stops_reading_holds_up_nobody_and_later_catches_up_without_loss() {
    const BUFFER: u32 = 16;
    let mut config = common::unthrottled(Config::with_addr("127.0.0.1:0"));
    config.buffer = BUFFER;
    let server = TestServer::start_with(config).await;

    // The stuck reader: its connection stays open, it does not read. A small
    // HTTP/2 window (hyper's default is 2 MiB) makes it back up sooner.
    let channel = tonic::transport::Channel::from_shared(server.url())
        .expect("valid url")
        .initial_stream_window_size(65_535)
        .initial_connection_window_size(65_535)
        .connect()
        .await
        .expect("connect");
    let mut stuck = chat_proto::ChatServiceClient::new(channel);
    let (_stuck_tx, mut stuck_in) = open_chat_stream(&mut stuck).await;

    let mut fast = server.web();
    let mut fast_events = subscribe(&mut fast, "fast").await;
    let mut sender = server.native().await;
    server.wait_for_subscribers(2).await;

    // In lock-step: the fast reader gets each message before the next is
    // sent. If the stuck reader could block the hub, this would never end.
    // Messages are large so that they overflow the HTTP/2 flow-control window
    // in front of the stuck reader, and far more than the ring holds.
    let total = BUFFER * 10;
    let padding = "p".repeat(3_990);
    let text = |i: u32| format!("m{i} {padding}");
    for i in 0..total {
        within(sender.send(chat("sender", &text(i))))
            .await
            .expect("sent");
        assert_eq!(next_event_message(&mut fast_events).await.message, text(i));
    }

    // Now it reads: everything, once, in order (what the ring no longer
    // held comes from the store).
    for i in 0..total {
        let message = within(stuck_in.message())
            .await
            .expect("no error status")
            .expect("stream open");
        assert_eq!(message.message, text(i));
    }
    server.stop().await;
}

#[tokio::test]
async fn shutdown_ends_open_streams_with_unavailable() {
    let server = TestServer::start().await;
    let mut web = server.web();
    let mut events = subscribe(&mut web, "ada").await;
    let mut native = server.native().await;
    let (_tx, mut inbound) = open_chat_stream(&mut native).await;
    server.wait_for_subscribers(2).await;

    let stopping = tokio::spawn(server.stop());
    let status = within(events.message()).await.expect_err("ended");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    let status = within(inbound.message()).await.expect_err("ended");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    drop((events, inbound, web, native));
    within(stopping).await.expect("server stopped");
}
