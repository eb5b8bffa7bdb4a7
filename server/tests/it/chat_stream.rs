//! The paper's RPC over native gRPC: everyone else gets each message, the
//! sender does not, and the server sets the time.

use crate::common::{TestServer, chat, next_message, open_chat_stream};

#[tokio::test]
async fn two_clients_exchange_messages_without_echo() {
    let server = TestServer::start().await;
    let (mut ada, mut bob) = (server.native().await, server.native().await);

    let (ada_tx, mut ada_in) = open_chat_stream(&mut ada).await;
    let (bob_tx, mut bob_in) = open_chat_stream(&mut bob).await;
    server.wait_for_subscribers(2).await;

    let before = chat_server::log::now_millis();
    let mut forged = chat("ada", "hello bob");
    forged.timestamp = 42;
    ada_tx.send(forged).await.expect("send");
    let got = next_message(&mut bob_in).await;
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
    let got = next_message(&mut ada_in).await;
    assert_eq!(
        (got.username.as_str(), got.message.as_str()),
        ("bob", "hi ada")
    );

    // Had bob's own messages come back to him, "hi ada" would be next.
    ada_tx.send(chat("ada", "third")).await.expect("send");
    let got = next_message(&mut bob_in).await;
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
    let (ada_tx, mut ada_in) = open_chat_stream(&mut ada).await;
    drop(ada_tx); // ada half-closes, like a listener with nothing to say
    let (bob_tx, _bob_in) = open_chat_stream(&mut bob).await;
    server.wait_for_subscribers(2).await;
    bob_tx
        .send(chat("bob", "still there?"))
        .await
        .expect("send");
    let got = next_message(&mut ada_in).await;
    assert_eq!(got.message, "still there?");
    server.stop().await;
}
