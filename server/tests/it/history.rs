//! Stored history: what a new subscriber gets first, resuming with
//! `after_id` while others keep sending, gaps when retention removed what
//! was asked for, and the paper's ChatStream staying live-only.

use std::collections::HashMap;

use crate::common::{
    self, TestServer, WebClient, chat, next_event_message, next_message, open_chat_stream,
    subscribe_after, within,
};
use chat_proto::{ChatEvent, Event, Gap};
use chat_server::Config;
use tonic::Streaming;

async fn next_event(events: &mut Streaming<ChatEvent>) -> Event {
    common::next_chat_event(events).await
}

async fn send_all(web: &mut WebClient, texts: impl IntoIterator<Item = String>) -> Vec<u64> {
    let mut ids = Vec::new();
    for text in texts {
        let reply = within(web.send(chat("writer", &text)))
            .await
            .expect("stored")
            .into_inner();
        ids.push(reply.id);
    }
    ids
}

#[tokio::test]
async fn a_new_subscriber_gets_the_recent_history_then_live_messages() {
    let mut config = Config::with_addr("127.0.0.1:0");
    config.history = 5;
    let server = TestServer::start_with(config).await;
    let mut web = server.web();
    let ids = send_all(&mut web, (1..=8).map(|i| format!("old {i}"))).await;

    let (ready, mut events) = subscribe_after(&mut web, 0).await;
    assert_eq!(ready.last_id, ids[7]);
    for i in 4..=8 {
        let message = next_event_message(&mut events).await;
        assert_eq!(message.message, format!("old {i}"));
        assert_eq!(message.id, ids[i - 1]);
    }
    let live = send_all(&mut web, ["new".to_owned()]).await;
    let message = next_event_message(&mut events).await;
    assert_eq!((message.id, message.message.as_str()), (live[0], "new"));
}

#[tokio::test]
async fn resuming_with_after_id_while_others_send_misses_nothing_and_repeats_nothing() {
    const SENDERS: usize = 3;
    const EACH: usize = 150;
    let server = TestServer::unthrottled().await;
    let url = server.url();
    let (_, mut events) = subscribe_after(&mut server.web(), 0).await;

    let mut senders = tokio::task::JoinSet::new();
    for s in 0..SENDERS {
        let mut web = common::web_client(&url);
        senders
            .spawn(async move { send_all(&mut web, (0..EACH).map(|i| format!("{s}:{i}"))).await });
    }

    // Drop the stream every 40 messages and resume after the last id seen,
    // while the senders keep going.
    let mut seen: Vec<(u64, String)> = Vec::new();
    let mut reader = server.web();
    while seen.len() < SENDERS * EACH {
        if !seen.is_empty() && seen.len().is_multiple_of(40) {
            drop(events);
            let last = seen.last().map(|(id, _)| *id).unwrap_or(0);
            events = subscribe_after(&mut reader, last).await.1;
        }
        let message = next_event_message(&mut events).await;
        seen.push((message.id, message.message));
    }
    while let Some(sent) = senders.join_next().await {
        sent.expect("sender finished");
    }

    let ids: Vec<u64> = seen.iter().map(|(id, _)| *id).collect();
    let expected: Vec<u64> = (1..=(SENDERS * EACH) as u64).collect();
    assert_eq!(ids, expected, "every id once, in order");
    let mut next_per_sender: HashMap<&str, usize> = HashMap::new();
    for (_, text) in &seen {
        let (sender, index) = text.split_once(':').expect("sender:index");
        let next = next_per_sender.entry(sender).or_default();
        assert_eq!(index.parse::<usize>().expect("index"), *next, "{text}");
        *next += 1;
    }
}

#[tokio::test]
async fn asking_for_more_than_retention_kept_gets_a_gap_event() {
    let mut config = Config::with_addr("127.0.0.1:0");
    config.retain = chat_server::log::Retention::Count(3);
    let server = TestServer::start_with(config).await;
    let mut web = server.web();
    let ids = send_all(&mut web, (1..=10).map(|i| format!("m{i}"))).await;
    // Retention runs at most once a second; one more send after that prunes.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let last = send_all(&mut web, ["m11".to_owned()]).await[0];

    let (_, mut events) = subscribe_after(&mut web, ids[1]).await;
    match next_event(&mut events).await {
        Event::Gap(Gap { after_id, next_id }) => {
            assert_eq!(after_id, ids[1]);
            assert_eq!(next_id, last - 2, "the oldest kept");
        }
        other => panic!("expected a gap, got {other:?}"),
    }
    for id in last - 2..=last {
        assert_eq!(next_event_message(&mut events).await.id, id);
    }
}

#[tokio::test]
async fn an_after_id_from_another_database_is_reported_and_history_starts_over() {
    let server = TestServer::start().await;
    let mut web = server.web();
    let ids = send_all(&mut web, ["only".to_owned()]).await;

    let (ready, mut events) = subscribe_after(&mut web, 500).await;
    assert_eq!(ready.last_id, ids[0]);
    match next_event(&mut events).await {
        Event::Gap(Gap { after_id, next_id }) => {
            assert_eq!(after_id, 500);
            assert!(next_id <= after_id, "tells the client to start over");
        }
        other => panic!("expected a gap, got {other:?}"),
    }
    assert_eq!(next_event_message(&mut events).await.message, "only");
}

#[tokio::test]
async fn chat_stream_stays_live_only_as_in_the_paper() {
    let server = TestServer::start().await;
    let mut web = server.web();
    send_all(&mut web, ["before".to_owned()]).await;

    let mut native = server.native().await;
    let (_tx, mut inbound) = open_chat_stream(&mut native).await;
    send_all(&mut web, ["after".to_owned()]).await;
    let message = next_message(&mut inbound).await;
    assert_eq!(message.message, "after", "no history on ChatStream");
    assert_eq!(message.id, 2, "but it does carry the id");
}

/// Group commit: messages that arrive while a commit is under way share
/// the next transaction and fsync. Another connection holds the database's
/// write lock while 50 senders post, so they all arrive "together"; the
/// store must then need a handful of commits for them, not 50.
#[tokio::test]
async fn messages_arriving_together_share_a_commit() {
    const SENDERS: usize = 50;
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("chat.db");
    let mut config = Config::with_addr("127.0.0.1:0");
    config.db = chat_server::log::sqlite::Location::File(db.clone());
    let server = TestServer::start_with(config).await;
    let commits = |server: &TestServer| -> u64 {
        let metrics = server.hub.metrics().render();
        metrics
            .lines()
            .find_map(|l| l.strip_prefix("chat_store_commit_seconds_count "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no commit count in {metrics}"))
    };
    let before = commits(&server);

    let blocker = rusqlite::Connection::open(&db).expect("open");
    blocker
        .execute_batch("BEGIN IMMEDIATE")
        .expect("write lock");
    let url = server.url();
    let mut senders = tokio::task::JoinSet::new();
    for s in 0..SENDERS {
        let url = url.clone();
        senders.spawn(async move {
            let mut native = chat_proto::ChatServiceClient::new(common::channel(&url).await);
            within(native.send(chat(&format!("s{s}"), "together")))
                .await
                .expect("stored");
        });
    }
    // Well within the writer's 5 s busy timeout.
    tokio::time::sleep(std::time::Duration::from_millis(1_000)).await;
    blocker.execute_batch("COMMIT").expect("release");
    while let Some(done) = senders.join_next().await {
        done.expect("sender");
    }
    let used = commits(&server) - before;
    assert!(
        used <= 5,
        "{used} commits for {SENDERS} messages that arrived together"
    );
}

/// A `ChatStream` sender is read at full speed until the database writer
/// has `QUEUE` messages waiting, and only then held back by flow control;
/// nothing is lost either way.
#[tokio::test]
async fn chat_stream_senders_are_slowed_only_when_the_writer_queue_is_full() {
    const QUEUE: i64 = chat_server::log::sqlite::QUEUE as i64;
    const SENT: usize = 12_000;
    assert_eq!(QUEUE, 8_192, "the README's figure");
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("chat.db");
    // Thousands of messages from one name: the rate limit is not tested here.
    let mut config = common::unthrottled(Config::with_addr("127.0.0.1:0"));
    config.db = chat_server::log::sqlite::Location::File(db.clone());
    let server = TestServer::start_with(config).await;
    let gauge = |server: &TestServer, name: &str| -> i64 {
        let metrics = server.hub.metrics().render();
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };

    // The writer is stuck behind another connection's write lock.
    let blocker = rusqlite::Connection::open(&db).expect("open");
    blocker
        .execute_batch("BEGIN IMMEDIATE")
        .expect("write lock");
    let mut native = server.native().await;
    let (tx, _incoming) = open_chat_stream(&mut native).await;
    let sending = tokio::spawn(async move {
        for i in 0..SENT {
            if tx.send(chat("bulk", &format!("{i}"))).await.is_err() {
                break;
            }
        }
        tx
    });
    // Read at full speed up to the queue's size...
    within(async {
        while gauge(&server, "chat_store_queue ") < QUEUE - 1 {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    })
    .await;
    // ...and no further: the sender waits.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(gauge(&server, "chat_store_queue ") <= QUEUE);
    assert_eq!(gauge(&server, "chat_messages_stored_total "), 0);

    // Released in time (the writer waits up to 5 s for the lock): all of it
    // is stored, in order, nothing dropped.
    blocker.execute_batch("COMMIT").expect("release");
    let _tx = within(sending).await.expect("sender");
    within(async {
        while gauge(&server, "chat_messages_stored_total ") < SENT as i64 {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await;
}
