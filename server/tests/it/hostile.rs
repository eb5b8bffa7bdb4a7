//! Clients that would hurt the server if it let them: too many streams on
//! one connection, sockets that never speak, streams reset without pause,
//! peers that stop answering pings, and people posting faster than anyone
//! can read. Each limit is tested at its default unless its default would
//! make the test minutes long (then the test says so).

use std::time::{Duration, Instant};

use crate::common::{
    self, PATIENCE, TestServer, chat, grpc_frame, grpc_head, next_message, open_chat_stream,
    raw_h2, within,
};
use chat_proto::SubscribeRequest;
use chat_server::Config;
use tokio::io::AsyncReadExt;
use tonic::Code;

#[tokio::test]
async fn http2_connections_advertise_a_stream_limit() {
    let server = TestServer::start().await;
    let h2 = raw_h2(server.addr, 65_535).await;
    assert_eq!(h2.max_concurrent_streams, Some(100));
}

#[tokio::test]
async fn connections_past_the_cap_are_closed_at_once_and_the_rest_still_served() {
    // The default (10,000) would take 10,000 sockets to reach.
    let mut config = Config::with_addr("127.0.0.1:0");
    config.limits.max_connections = 2;
    let server = TestServer::start_with(config).await;
    let mut first = server.native().await;
    let _second = raw_h2(server.addr, 65_535).await;
    let mut third = tokio::net::TcpStream::connect(server.addr)
        .await
        .expect("the kernel accepts");
    let mut buf = [0u8; 16];
    // Closed at once: long before the first-request timeout.
    let read = tokio::time::timeout(Duration::from_secs(5), third.read(&mut buf))
        .await
        .expect("closed at once");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    within(first.send(chat("ada", "still served")))
        .await
        .expect("the open connections carry on");
    assert!(
        server
            .hub
            .metrics()
            .render()
            .contains(r#"kind="connections"} 1"#),
        "{}",
        server.hub.metrics().render()
    );
}

#[tokio::test]
async fn connections_that_never_send_a_request_are_closed() {
    let server = TestServer::start().await;
    let default = Config::with_addr("x").limits.first_request_timeout;
    let silent = tokio::net::TcpStream::connect(server.addr)
        .await
        .expect("connect");
    let mut half_preface = tokio::net::TcpStream::connect(server.addr)
        .await
        .expect("connect");
    tokio::io::AsyncWriteExt::write_all(&mut half_preface, b"PRI * HTTP/2.0\r\n")
        .await
        .expect("write");
    let started = Instant::now();
    for mut socket in [silent, half_preface] {
        let mut buf = [0u8; 64];
        // EOF (0) or a reset: either way the server let go.
        let read = tokio::time::timeout(
            Duration::from_secs(default) + PATIENCE,
            socket.read(&mut buf),
        )
        .await
        .expect("the server closed the connection");
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    }
    assert!(
        started.elapsed() >= Duration::from_secs(default) - Duration::from_millis(500),
        "closed before the first-request timeout"
    );
    assert!(
        server
            .hub
            .metrics()
            .render()
            .contains(r#"kind="first_request_timeout"} 2"#),
        "{}",
        server.hub.metrics().render()
    );
}

#[tokio::test]
async fn connections_with_nothing_open_are_closed_after_the_idle_timeout() {
    // The default (120 s) is too long for a test; the mechanism is the same.
    let mut config = Config::with_addr("127.0.0.1:0");
    config.limits.idle_timeout = 1;
    let server = TestServer::start_with(config).await;
    let mut h2 = raw_h2(server.addr, 65_535).await;
    let (response, mut body) = h2
        .send
        .send_request(
            grpc_head(server.addr, "/ChatService/Send", "application/grpc"),
            false,
        )
        .expect("request");
    body.send_data(grpc_frame(&chat("ada", "then silence")), true)
        .expect("body");
    let response = within(response).await.expect("answered");
    assert_eq!(response.status(), 200);
    drop(response);
    let started = Instant::now();
    within(&mut h2.closed)
        .await
        .expect("task")
        .expect("a clean GOAWAY, not an error");
    assert!(started.elapsed() >= Duration::from_millis(500));
}

#[tokio::test]
async fn an_open_stream_keeps_its_connection_past_the_idle_timeout() {
    let mut config = Config::with_addr("127.0.0.1:0");
    config.limits.idle_timeout = 1;
    let server = TestServer::start_with(config).await;
    let mut native = server.native().await;
    let mut events = common::subscribe(&mut native, "patient").await;
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let mut other = server.native().await;
    within(other.send(chat("other", "still there?")))
        .await
        .expect("sent");
    assert_eq!(
        common::next_event_message(&mut events).await.message,
        "still there?"
    );
}

#[tokio::test]
async fn peers_that_stop_answering_pings_are_dropped() {
    // Pings every second, one second to answer (defaults: 15 s and 20 s).
    let mut config = Config::with_addr("127.0.0.1:0");
    config.heartbeat = 1;
    config.limits.keepalive_timeout = 1;
    let server = TestServer::start_with(config).await;

    let tcp = tokio::net::TcpStream::connect(server.addr)
        .await
        .expect("connect");
    let (mut send, connection) = within(h2::client::handshake(tcp)).await.expect("handshake");
    // Drive the connection until the stream is open, then stop: the socket
    // stays open but nothing answers the server's pings any more.
    let (freeze, frozen) = tokio::sync::oneshot::channel::<()>();
    let driver = tokio::spawn(async move {
        let mut connection = connection;
        tokio::select! {
            _ = &mut connection => return,
            _ = frozen => {}
        }
        // Kept, not polled: the socket stays open and says nothing.
        std::future::pending::<()>().await;
        drop(connection);
    });
    let (response, mut body) = send
        .send_request(
            grpc_head(server.addr, "/ChatService/Subscribe", "application/grpc"),
            false,
        )
        .expect("request");
    body.send_data(
        grpc_frame(&SubscribeRequest {
            username: "ghost".into(),
            after_id: 0,
            ..Default::default()
        }),
        true,
    )
    .expect("body");
    // Held: dropping it would cancel the stream, which ends it too.
    let _subscribed = within(response).await.expect("subscribed");
    server.wait_for_subscribers(1).await;
    let _ = freeze.send(());
    // The server gives up on the peer and its stream ends.
    server.wait_for_subscribers(0).await;
    driver.abort();
}

#[tokio::test]
async fn a_connection_resetting_streams_without_pause_is_ended() {
    let server = TestServer::start().await;
    let mut h2 = raw_h2(server.addr, 65_535).await;
    let mut resets = 0;
    let outcome = tokio::time::timeout(PATIENCE, async {
        loop {
            let ready = std::future::poll_fn(|cx| h2.send.poll_ready(cx)).await;
            if ready.is_err() {
                return "refused";
            }
            let Ok((response, mut body)) = h2.send.send_request(
                grpc_head(server.addr, "/ChatService/Subscribe", "application/grpc"),
                false,
            ) else {
                return "refused";
            };
            let _ = body.send_data(
                grpc_frame(&SubscribeRequest {
                    username: "flood".into(),
                    after_id: 0,
                    ..Default::default()
                }),
                true,
            );
            // Let the server start it, then cancel it.
            let _ = response.await;
            body.send_reset(h2::Reason::CANCEL);
            resets += 1;
            if h2.closed.is_finished() {
                return "closed";
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("still open after {resets} resets"));
    eprintln!("outcome {outcome} after {resets} resets");
    assert!(
        resets <= 400,
        "ended only after {resets} resets ({outcome})"
    );
    assert!(
        server
            .hub
            .metrics()
            .render()
            .contains(r#"kind="reset_flood"} 1"#),
        "{}",
        server.hub.metrics().render()
    );
    // Everyone else carries on.
    let mut web = server.web();
    within(web.send(chat("bystander", "still here")))
        .await
        .expect("sent");
}

#[tokio::test]
async fn an_ordinary_client_that_cancels_a_few_streams_is_left_alone() {
    let server = TestServer::start().await;
    let mut native = server.native().await;
    for _ in 0..30 {
        let events = common::subscribe(&mut native, "fickle").await;
        drop(events);
    }
    within(native.send(chat("fickle", "settled")))
        .await
        .expect("the connection still works");
}

fn too_fast(status: &tonic::Status) -> bool {
    status.code() == Code::ResourceExhausted && status.message().starts_with("sending too fast")
}

#[tokio::test]
async fn send_is_refused_past_the_rate_limit_with_when_to_retry() {
    let server = TestServer::start().await;
    let limits = Config::with_addr("x").limits;
    let mut web = server.web();
    let started = Instant::now();
    let mut accepted = 0u32;
    let mut refusal = None;
    for i in 0..60 {
        match within(web.send(chat("flooder", &format!("spam {i}")))).await {
            Ok(_) => accepted += 1,
            Err(status) => {
                assert!(too_fast(&status), "{status:?}");
                refusal.get_or_insert(status);
            }
        }
    }
    let allowed =
        f64::from(limits.rate_burst) + limits.rate_limit * started.elapsed().as_secs_f64() + 1.0;
    assert!(
        f64::from(accepted) <= allowed,
        "{accepted} accepted, at most {allowed} allowed"
    );
    let refusal = refusal.expect("the flood was refused");
    assert!(
        refusal.message().contains("try again"),
        "{}",
        refusal.message()
    );
    // Another name on another connection is not held back by the flooder.
    let mut native = server.native().await;
    within(native.send(chat("bystander", "hello")))
        .await
        .expect("sent");
    // Nor is the flooder once it waits (about 1 / rate).
    let wait = Duration::from_secs_f64(1.0 / limits.rate_limit);
    tokio::time::sleep(wait + Duration::from_millis(100)).await;
    within(web.send(chat("flooder", "calmer now")))
        .await
        .expect("allowed again");
}

#[tokio::test]
async fn one_name_is_limited_across_connections() {
    let server = TestServer::start().await;
    let burst = Config::with_addr("x").limits.rate_burst;
    let mut refused = false;
    for i in 0..(burst * 2) {
        // A fresh connection for every message: only the name is shared.
        let mut native = server.native().await;
        if let Err(status) = within(native.send(chat("hydra", &format!("{i}")))).await {
            assert!(too_fast(&status), "{status:?}");
            refused = true;
            break;
        }
    }
    assert!(refused, "a new connection per message escaped the limit");
}

#[tokio::test]
async fn a_flooding_chat_stream_is_slowed_not_dropped_or_cut_off() {
    let server = TestServer::start().await;
    let limits = Config::with_addr("x").limits;
    let mut listener = server.web();
    let mut events = common::subscribe(&mut listener, "listener").await;

    let mut flooder = server.native().await;
    let (tx, mut incoming) = open_chat_stream(&mut flooder).await;
    let started = Instant::now();
    // Far more than flow control lets through while paused: the sender
    // blocks rather than the server buffering or dropping.
    let sending = tokio::spawn(async move {
        for i in 0..100_000 {
            if tx.send(chat("flooder", &format!("f{i}"))).await.is_err() {
                break;
            }
        }
        tx
    });
    // Three seconds of what the listener gets.
    let until = tokio::time::Instant::now() + Duration::from_secs(3);
    let mut received = Vec::new();
    while let Ok(Ok(Some(event))) = tokio::time::timeout_at(until, events.message()).await {
        if let Some(chat_proto::Event::Message(m)) = event.event {
            received.push(m.message);
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let allowed = f64::from(limits.rate_burst) + limits.rate_limit * (elapsed + 0.5) + 1.0;
    assert!(
        received.len() as f64 <= allowed,
        "{} relayed in {elapsed:.1} s, at most {allowed} allowed",
        received.len()
    );
    assert!(received.len() >= limits.rate_burst as usize, "{received:?}");
    let expected: Vec<String> = (0..received.len()).map(|i| format!("f{i}")).collect();
    assert_eq!(received, expected, "in order, none dropped");
    assert!(!sending.is_finished(), "the sender was slowed down");

    // The flooder's connection is alive: it still hears others.
    let mut other = server.web();
    within(other.send(chat("other", "can you hear me")))
        .await
        .expect("sent");
    assert_eq!(next_message(&mut incoming).await.message, "can you hear me");
    sending.abort();
}

#[tokio::test]
async fn a_chat_stream_message_that_cannot_be_stored_ends_the_stream_with_unavailable() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("chat.db");
    let mut config = Config::with_addr("127.0.0.1:0");
    config.db = chat_server::log::sqlite::Location::File(db.clone());
    let server = TestServer::start_with(config).await;
    let mut native = server.native().await;
    within(native.send(chat("ada", "stored fine")))
        .await
        .expect("sent");

    // Another process takes the database's write lock and keeps it.
    let blocker = rusqlite::Connection::open(&db).expect("open");
    blocker
        .execute_batch("BEGIN IMMEDIATE")
        .expect("write lock");

    let (tx, mut incoming) = open_chat_stream(&mut native).await;
    tx.send(chat("ada", "lost?")).await.expect("queued");
    let status = tokio::time::timeout(PATIENCE * 2, incoming.message())
        .await
        .expect("the stream ended")
        .expect_err("an error status");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(
        status.message().contains("could not be stored"),
        "{}",
        status.message()
    );
    drop(blocker);
}
