//! Rooms: names, their own ids and history, isolation, `CreateRoom` and
//! `ListRooms`, the paper's `ChatStream` in a room of its choice, the
//! migration of a database from before rooms, and per-room retention.

use crate::common::{self, TestServer, chat, next_message, open_chat_stream, within};
use chat_proto::{
    ChatEvent, ChatMessage, CreateRoomRequest, Event, ListRoomsRequest, Room, SubscribeRequest,
};
use chat_server::config::Config;
use tonic::{Code, Request, Streaming};

fn in_room(room: &str, username: &str, message: &str) -> ChatMessage {
    ChatMessage {
        room: room.into(),
        ..chat(username, message)
    }
}

fn authorized<T>(message: T, token: &str) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("ascii"),
    );
    request
}

async fn create(server: &TestServer, name: &str, topic: &str) -> Result<Room, tonic::Status> {
    within(server.web().create_room(CreateRoomRequest {
        name: name.into(),
        topic: topic.into(),
    }))
    .await
    .map(tonic::Response::into_inner)
}

/// A Subscribe stream to `room` after `after_id`, past `Ready` (whose
/// `last_id` is returned) and the presence snapshot.
async fn follow(server: &TestServer, room: &str, after_id: u64) -> (u64, Streaming<ChatEvent>) {
    let mut events = within(server.web().subscribe(SubscribeRequest {
        username: "reader".into(),
        after_id,
        room: room.into(),
        ..SubscribeRequest::default()
    }))
    .await
    .expect("subscribed")
    .into_inner();
    let last_id = match within(events.message()).await {
        Ok(Some(ChatEvent {
            event: Some(Event::Ready(ready)),
        })) => ready.last_id,
        other => panic!("expected Ready, got {other:?}"),
    };
    (last_id, events)
}

/// The next message on a Subscribe stream: (room, id, text).
async fn next(events: &mut Streaming<ChatEvent>) -> (String, u64, String) {
    let m = common::next_event_message(events).await;
    (m.room, m.id, m.message)
}

#[tokio::test]
async fn room_names_are_lower_cased_checked_and_empty_means_general() {
    let server = TestServer::start().await;
    let made = create(&server, "Dev-Ops_1", "builds and pagers")
        .await
        .expect("created");
    assert_eq!(
        (made.name.as_str(), made.topic.as_str(), made.last_id),
        ("dev-ops_1", "builds and pagers", 0)
    );
    for bad in ["-dev", "a b", "café", &"x".repeat(33), "#general"] {
        let refused = create(&server, bad, "").await.expect_err("not a room name");
        assert_eq!(refused.code(), Code::InvalidArgument, "{bad:?}");
    }
    let again = create(&server, "DEV-OPS_1", "").await.expect_err("exists");
    assert_eq!(again.code(), Code::AlreadyExists);
    assert!(again.message().contains("dev-ops_1"), "{again:?}");
    assert_eq!(
        create(&server, "general", "")
            .await
            .expect_err("exists")
            .code(),
        Code::AlreadyExists
    );

    let listed = within(server.web().list_rooms(ListRoomsRequest {}))
        .await
        .expect("listed")
        .into_inner()
        .rooms;
    let names: Vec<_> = listed.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["dev-ops_1", "general"], "sorted by name");

    // No room by that name: NOT_FOUND, for Send and for Subscribe.
    let mut web = server.web();
    let lost = within(web.send(in_room("nowhere", "ada", "hello?")))
        .await
        .expect_err("no such room");
    assert_eq!(lost.code(), Code::NotFound);
    let lost = within(web.subscribe(SubscribeRequest {
        username: "ada".into(),
        room: "nowhere".into(),
        ..SubscribeRequest::default()
    }))
    .await
    .expect_err("no such room");
    assert_eq!(lost.code(), Code::NotFound);
    let bad = within(web.send(in_room("Not A Room", "ada", "hi")))
        .await
        .expect_err("bad name");
    assert_eq!(bad.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn each_room_has_its_own_ids_history_and_messages() {
    let server = TestServer::unthrottled().await;
    create(&server, "dev", "").await.expect("created");
    let (_, mut general) = follow(&server, "", 0).await;
    let (_, mut dev) = follow(&server, "DEV", 0).await;
    let mut web = server.web();
    for (room, text) in [("", "g1"), ("dev", "d1"), ("general", "g2"), ("Dev", "d2")] {
        within(web.send(in_room(room, "ada", text)))
            .await
            .expect("sent");
    }
    assert_eq!(next(&mut general).await, ("general".into(), 1, "g1".into()));
    assert_eq!(next(&mut general).await, ("general".into(), 2, "g2".into()));
    assert_eq!(next(&mut dev).await, ("dev".into(), 1, "d1".into()));
    assert_eq!(next(&mut dev).await, ("dev".into(), 2, "d2".into()));
    let reply = within(web.send(in_room("dev", "ada", "d3")))
        .await
        .expect("sent")
        .into_inner();
    assert_eq!(reply.id, 3, "SendReply.id is the room's");
    assert_eq!(next(&mut dev).await, ("dev".into(), 3, "d3".into()));
    // Nothing of dev's ever reached general: its next is general's own.
    within(web.send(in_room("", "ada", "g3")))
        .await
        .expect("sent");
    assert_eq!(next(&mut general).await, ("general".into(), 3, "g3".into()));

    // Resuming is per room: after dev's 1, dev's 2 and 3, nothing else.
    let (last_id, mut resumed) = follow(&server, "dev", 1).await;
    assert_eq!(last_id, 3, "Ready.last_id is the room's");
    assert_eq!(next(&mut resumed).await, ("dev".into(), 2, "d2".into()));
    assert_eq!(next(&mut resumed).await, ("dev".into(), 3, "d3".into()));

    let rooms = within(web.list_rooms(ListRoomsRequest {}))
        .await
        .expect("listed")
        .into_inner()
        .rooms;
    let last: Vec<_> = rooms.iter().map(|r| (r.name.as_str(), r.last_id)).collect();
    assert_eq!(last, [("dev", 3), ("general", 3)]);
}

#[tokio::test]
async fn the_papers_chat_stream_lives_in_general_unless_it_names_a_room() {
    let server = TestServer::start().await;
    create(&server, "dev", "").await.expect("created");
    let mut native = server.native().await;
    let (paper_tx, mut paper) = open_chat_stream(&mut native).await;
    let (dev_tx, dev_rx) = tokio::sync::mpsc::channel(8);
    dev_tx.send(chat("bob", "hello dev")).await.expect("queued");
    let mut in_dev = Request::new(tokio_stream::wrappers::ReceiverStream::new(dev_rx));
    in_dev
        .metadata_mut()
        .insert("chat-room", "dev".parse().expect("ascii"));
    let _dev_stream = within(server.native().await.chat_stream(in_dev))
        .await
        .expect("opened in dev")
        .into_inner();
    let (_, mut dev) = follow(&server, "dev", 0).await;
    assert_eq!(next(&mut dev).await, ("dev".into(), 1, "hello dev".into()));

    // The paper client is in general: it hears general, not dev.
    paper_tx.send(chat("ada", "hi all")).await.expect("sent");
    let (_, mut general) = follow(&server, "", 0).await;
    assert_eq!(
        next(&mut general).await,
        ("general".into(), 1, "hi all".into())
    );
    within(server.web().send(in_room("dev", "cy", "dev only")))
        .await
        .expect("sent");
    within(server.web().send(chat("cy", "for general")))
        .await
        .expect("sent");
    assert_eq!(next_message(&mut paper).await.message, "for general");

    let mut nowhere = Request::new(tokio_stream::iter(Vec::<ChatMessage>::new()));
    nowhere
        .metadata_mut()
        .insert("chat-room", "nowhere".parse().expect("ascii"));
    let refused = within(server.native().await.chat_stream(nowhere))
        .await
        .expect_err("no such room");
    assert_eq!(refused.code(), Code::NotFound);
}

#[tokio::test]
async fn max_rooms_counts_general_and_is_resource_exhausted_past_it() {
    let mut config = Config::with_addr("127.0.0.1:0");
    config.max_rooms = 3;
    let server = TestServer::start_with(config).await;
    create(&server, "one", "").await.expect("second room");
    create(&server, "two", "").await.expect("third room");
    let full = create(&server, "three", "").await.expect_err("full");
    assert_eq!(full.code(), Code::ResourceExhausted);
    assert!(full.message().contains("--max-rooms"), "{full:?}");
}

#[tokio::test]
async fn retention_keeps_the_newest_of_each_room() {
    let mut config = common::unthrottled(Config::with_addr("127.0.0.1:0"));
    config.retain = chat_server::log::Retention::Count(2);
    let server = TestServer::start_with(config).await;
    create(&server, "quiet", "").await.expect("created");
    let mut web = server.web();
    within(web.send(in_room("quiet", "ada", "q1")))
        .await
        .expect("sent");
    for i in 1..=5 {
        within(web.send(chat("ada", &format!("g{i}"))))
            .await
            .expect("sent");
    }
    within(web.send(in_room("quiet", "ada", "q2")))
        .await
        .expect("sent");
    // Retention runs at most once a second: let it.
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
    within(web.send(chat("ada", "g6"))).await.expect("sent");
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
    within(web.send(in_room("quiet", "ada", "q3")))
        .await
        .expect("sent");

    let (_, mut general) = follow(&server, "general", 0).await;
    let first = next(&mut general).await;
    assert_eq!(first.1, 5, "general keeps its newest two: {first:?}");
    let (_, mut quiet) = follow(&server, "quiet", 0).await;
    assert_eq!(next(&mut quiet).await, ("quiet".into(), 2, "q2".into()));
    assert_eq!(next(&mut quiet).await, ("quiet".into(), 3, "q3".into()));
}

/// A copy of `tests/fixtures/pre-rooms.db` (in the returned folder), and a
/// configuration that opens it.
pub(crate) fn pre_rooms_db() -> (tempfile::TempDir, Config) {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("chat.db");
    std::fs::copy(
        concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/pre-rooms.db"),
        &db,
    )
    .expect("fixture copied");
    let mut config = Config::with_addr("127.0.0.1:0");
    config.db = chat_server::log::sqlite::Location::File(db);
    (dir, config)
}

/// `tests/fixtures/pre-rooms.db` was written by the server as it was before
/// rooms (215d578, `--retain 2`, four messages sent by the web app's
/// protocol): ids 3 and 4 are stored, 1 and 2 were pruned, `last_id` is 4.
#[tokio::test]
async fn a_database_from_before_rooms_becomes_general_with_its_ids() {
    let (_dir, config) = pre_rooms_db();
    let server = TestServer::start_with(config.clone()).await;
    let (last_id, mut general) = follow(&server, "general", 0).await;
    assert_eq!(last_id, 4);
    let kept = [next(&mut general).await, next(&mut general).await];
    assert_eq!(
        kept,
        [
            ("general".into(), 3, "third".into()),
            ("general".into(), 4, "fourth".into())
        ]
    );
    let reply = within(server.web().send(chat("dan", "fifth")))
        .await
        .expect("sent")
        .into_inner();
    assert_eq!(reply.id, 5, "ids go on from where they were, never reused");
    server.stop().await;

    // And once migrated, it opens again as it is.
    let server = TestServer::start_with(config).await;
    let (last_id, _) = follow(&server, "", 0).await;
    assert_eq!(last_id, 5);
}

#[tokio::test]
async fn one_stream_hears_of_watched_rooms_at_most_once_a_second_each() {
    let server = TestServer::unthrottled().await;
    create(&server, "dev", "").await.expect("created");
    create(&server, "ops", "").await.expect("created");
    let mut web = server.web();
    within(web.send(in_room("ops", "ada", "earlier")))
        .await
        .expect("sent");
    let mut events = within(web.subscribe(SubscribeRequest {
        username: "reader".into(),
        watch: vec![
            "DEV".into(),
            "ops".into(),
            "nowhere".into(),
            "general".into(),
            "dev".into(),
        ],
        ..SubscribeRequest::default()
    }))
    .await
    .expect("subscribed")
    .into_inner();
    let mut first = Vec::new();
    while first.len() < 4 {
        match within(events.message()).await {
            Ok(Some(ChatEvent { event: Some(event) })) => first.push(event),
            other => panic!("expected an event, got {other:?}"),
        }
    }
    assert!(matches!(first[0], Event::Ready(_)), "{first:?}");
    assert!(matches!(first[1], Event::Presence(_)), "{first:?}");
    let told: Vec<_> = first[2..]
        .iter()
        .map(|e| match e {
            Event::Activity(a) => (a.room.clone(), a.last_id),
            other => panic!("expected activity before history, got {other:?}"),
        })
        .collect();
    // Each known room once, the stream's own and unknown ones not at all.
    assert_eq!(told, [("dev".to_owned(), 0), ("ops".to_owned(), 1)]);

    let started = std::time::Instant::now();
    for i in 1..=5 {
        within(web.send(in_room("dev", "ada", &format!("d{i}"))))
            .await
            .expect("sent");
    }
    let mut seen = Vec::new();
    // Two seconds: at least one tick after the burst, at most two.
    while started.elapsed() < std::time::Duration::from_millis(2_500) {
        let Ok(next) = tokio::time::timeout(
            std::time::Duration::from_millis(2_600).saturating_sub(started.elapsed()),
            events.message(),
        )
        .await
        else {
            break;
        };
        match next {
            Ok(Some(ChatEvent {
                event: Some(Event::Activity(a)),
            })) => seen.push((a.room, a.last_id, started.elapsed())),
            Ok(Some(ChatEvent {
                event: Some(Event::Heartbeat(_) | Event::Presence(_)),
            })) => {}
            other => panic!("only activity was expected, got {other:?}"),
        }
    }
    assert_eq!(
        seen.last().map(|(room, id, _)| (room.as_str(), *id)),
        Some(("dev", 5)),
        "{seen:?}"
    );
    assert!(
        seen.len() <= 2,
        "coalesced, at most once a second: {seen:?}"
    );
    for pair in seen.windows(2) {
        assert!(
            pair[1].2 - pair[0].2 >= std::time::Duration::from_millis(900),
            "at most once a second: {seen:?}"
        );
    }
    assert!(seen.iter().all(|(room, _, _)| room == "dev"), "{seen:?}");
}

#[tokio::test]
async fn presence_typing_and_online_counts_are_the_rooms_own() {
    let server = TestServer::start().await;
    create(&server, "dev", "").await.expect("created");
    let mut web = server.web();
    let join = |name: &str| chat_proto::JoinRequest {
        username: name.into(),
        token: String::new(),
        ..Default::default()
    };
    let ada = within(web.join(join("ada")))
        .await
        .expect("joined")
        .into_inner();
    let bob = within(web.join(join("bob")))
        .await
        .expect("joined")
        .into_inner();
    let open = |room: &str, token: &str| {
        authorized(
            SubscribeRequest {
                room: room.into(),
                ..SubscribeRequest::default()
            },
            token,
        )
    };
    let snapshot = |events: Vec<ChatEvent>| -> Vec<String> {
        match &events[1].event {
            Some(Event::Presence(p)) => p.online.clone(),
            other => panic!("expected who is here after Ready, got {other:?}"),
        }
    };
    let mut in_dev = within(web.subscribe(open("dev", &ada.token)))
        .await
        .expect("subscribed")
        .into_inner();
    let mut first = Vec::new();
    for _ in 0..2 {
        first.push(within(in_dev.message()).await.expect("ok").expect("event"));
    }
    assert_eq!(snapshot(first), ["ada"]);
    let mut in_general = within(web.subscribe(open("", &bob.token)))
        .await
        .expect("subscribed")
        .into_inner();
    let mut first = Vec::new();
    for _ in 0..2 {
        first.push(
            within(in_general.message())
                .await
                .expect("ok")
                .expect("event"),
        );
    }
    assert_eq!(snapshot(first), ["bob"], "ada is in dev, not here");

    let rooms = within(web.list_rooms(ListRoomsRequest {}))
        .await
        .expect("listed")
        .into_inner()
        .rooms;
    let online: Vec<_> = rooms.iter().map(|r| (r.name.as_str(), r.online)).collect();
    assert_eq!(online, [("dev", 1), ("general", 1)]);

    // Typing in dev is told in dev only.
    let typing = chat_proto::TypingRequest {
        typing: true,
        room: "dev".into(),
    };
    within(web.set_typing(authorized(typing, &ada.token)))
        .await
        .expect("typing");
    match within(in_dev.message())
        .await
        .expect("ok")
        .expect("event")
        .event
    {
        Some(Event::Typing(t)) => assert_eq!((t.username.as_str(), t.typing), ("ada", true)),
        other => panic!("expected typing, got {other:?}"),
    }
    within(web.send(authorized(in_room("", "", "plain hello"), &bob.token)))
        .await
        .expect("sent");
    match within(in_general.message())
        .await
        .expect("ok")
        .expect("event")
        .event
    {
        Some(Event::Message(m)) => assert_eq!(m.message, "plain hello", "no typing from dev"),
        other => panic!("expected bob's message, got {other:?}"),
    }
}

#[tokio::test]
async fn creating_rooms_is_rate_limited_per_client() {
    // The default limits: a burst of 20, then 5 per second.
    let server = TestServer::start().await;
    let mut made = 0;
    let refused = loop {
        match create(&server, &format!("room{made}"), "").await {
            Ok(_) => made += 1,
            Err(status) => break status,
        }
        assert!(made < 40, "40 rooms at once are too many");
    };
    assert!(made >= 20, "the burst: {made}");
    assert_eq!(refused.code(), Code::ResourceExhausted);
    assert!(
        refused.message().starts_with("creating rooms too fast"),
        "{refused:?}"
    );
}
