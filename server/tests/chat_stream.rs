//! The paper's RPC over native gRPC: everyone else gets each message, the
//! sender does not, and the server sets the time.

mod common;

use common::{TestServer, chat, within};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

#[tokio::test]
async fn two_clients_exchange_messages_without_echo() {
    let server = TestServer::start().await;
    let (mut ada, mut bob) = (server.native().await, server.native().await);

    let (ada_tx, ada_out) = mpsc::channel(8);
    let (bob_tx, bob_out) = mpsc::channel(8);
    let mut ada_in = ada
        .chat_stream(ReceiverStream::new(ada_out))
        .await
        .expect("open")
        .into_inner();
    let mut bob_in = bob
        .chat_stream(ReceiverStream::new(bob_out))
        .await
        .expect("open")
        .into_inner();
    server.wait_for_subscribers(2).await;

    let before = chat_server::hub::now_millis();
    let mut forged = chat("ada", "hello bob");
    forged.timestamp = 42;
    ada_tx.send(forged).await.expect("send");
    let got = within(bob_in.message())
        .await
        .expect("ok")
        .expect("a message");
    assert_eq!(
        (got.username.as_str(), got.message.as_str()),
        ("ada", "hello bob")
    );
    assert!(
        got.timestamp >= before,
        "server time replaces the client's: {}",
        got.timestamp
    );

    bob_tx.send(chat("bob", "hi ada")).await.expect("send");
    let got = within(ada_in.message())
        .await
        .expect("ok")
        .expect("a message");
    assert_eq!(
        (got.username.as_str(), got.message.as_str()),
        ("bob", "hi ada")
    );

    // Had bob's own messages come back to him, "hi ada" would be next.
    ada_tx.send(chat("ada", "third")).await.expect("send");
    let got = within(bob_in.message())
        .await
        .expect("ok")
        .expect("a message");
    assert_eq!(
        got.message, "third",
        "a sender must not get its own messages back"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_client_that_stops_sending_keeps_receiving() {
    let server = TestServer::start().await;
    let (mut ada, mut bob) = (server.native().await, server.native().await);
    let (ada_tx, ada_out) = mpsc::channel(1);
    let mut ada_in = ada
        .chat_stream(ReceiverStream::new(ada_out))
        .await
        .expect("open")
        .into_inner();
    drop(ada_tx); // ada half-closes, like a listener with nothing to say
    let (bob_tx, bob_out) = mpsc::channel(1);
    let _bob_in = bob
        .chat_stream(ReceiverStream::new(bob_out))
        .await
        .expect("open")
        .into_inner();
    server.wait_for_subscribers(2).await;
    bob_tx
        .send(chat("bob", "still there?"))
        .await
        .expect("send");
    let got = within(ada_in.message())
        .await
        .expect("ok")
        .expect("a message");
    assert_eq!(got.message, "still there?");
    server.stop().await;
}
