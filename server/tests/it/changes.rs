//! Reply, edit, delete and react, through a real server over both doors:
//! who may do what, what each refusal says, what streams see live and on
//! resume, and that a deleted message's text is gone from the database
//! file.

use chat_proto::state;
use chat_proto::{
    ChangeKind, ChatMessage, DeleteRequest, EditRequest, Event, JoinRequest, ReactRequest,
    SubscribeRequest,
};
use chat_server::Config;
use tonic::Code;

use crate::common::{
    NativeClient, TestServer, WebClient, chat, next_chat_event, next_event_message, next_message,
    open_chat_stream, subscribe_after, unthrottled, with_session, within,
};

/// Claims `name`; returns its token.
pub(crate) async fn join(client: &mut WebClient, name: &str) -> String {
    within(client.join(JoinRequest {
        username: name.into(),
        token: String::new(),
        ..Default::default()
    }))
    .await
    .expect("joined")
    .into_inner()
    .token
}

/// Sends `text` as `token`'s session; returns the message's id.
pub(crate) async fn say(client: &mut WebClient, token: &str, text: &str) -> u64 {
    within(client.send(with_session(chat("", text), token)))
        .await
        .expect("sent")
        .into_inner()
        .id
}

pub(crate) fn edit(id: u64, text: &str) -> EditRequest {
    EditRequest {
        room: String::new(),
        id,
        message: text.into(),
        nonce: String::new(),
    }
}

pub(crate) fn react(id: u64, emoji: &str) -> ReactRequest {
    ReactRequest {
        room: String::new(),
        id,
        emoji: emoji.into(),
        remove: false,
    }
}

pub(crate) fn delete(id: u64) -> DeleteRequest {
    DeleteRequest {
        room: String::new(),
        id,
        reason: String::new(),
    }
}

/// Every message a new subscriber replays from `after_id`, each with the
/// later changes applied as a client applies them.
pub(crate) async fn replayed(client: &mut WebClient, after_id: u64) -> Vec<ChatMessage> {
    let (ready, mut events) = subscribe_after(client, after_id).await;
    let mut messages: Vec<ChatMessage> = Vec::new();
    let mut last = after_id;
    while last < ready.last_id {
        match next_chat_event(&mut events).await {
            Event::Message(message) => {
                last = message.id;
                messages.push(message);
            }
            Event::Change(change) => {
                last = change.id;
                for message in &mut messages {
                    state::apply(message, &change);
                }
            }
            other => panic!("expected history, got {other:?}"),
        }
    }
    messages
}

#[tokio::test]
async fn edits_reactions_and_a_deletion_reach_streams_in_order_and_replay_in_current_state() {
    let server = TestServer::unthrottled().await;
    let mut ada = server.web();
    let mut bob = server.web();
    let ada_token = join(&mut ada, "Ada").await;
    let bob_token = join(&mut bob, "Bob").await;
    let (_, mut live) = subscribe_after(&mut server.web(), 0).await;

    let id = say(&mut ada, &ada_token, "helo wrld").await;
    assert_eq!(next_event_message(&mut live).await.message, "helo wrld");
    let reacted = within(bob.react(with_session(react(id, "👍"), &bob_token)))
        .await
        .expect("reacted")
        .into_inner();
    let edited = within(ada.edit(with_session(edit(id, "hello world"), &ada_token)))
        .await
        .expect("edited")
        .into_inner();
    assert_eq!(
        (reacted.id, edited.id),
        (id + 1, id + 2),
        "one sequence of ids"
    );
    assert!(edited.timestamp >= reacted.timestamp);

    // Live: the changes, in id order, saying what and who.
    for (want_id, kind, who) in [
        (reacted.id, ChangeKind::ChangeReact, "Bob"),
        (edited.id, ChangeKind::ChangeEdit, "Ada"),
    ] {
        let Event::Change(change) = next_chat_event(&mut live).await else {
            panic!("expected a change");
        };
        assert_eq!(
            (
                change.id,
                change.target,
                change.kind(),
                change.username.as_str()
            ),
            (want_id, id, kind, who)
        );
        assert_eq!(change.room, "general");
    }

    // A new subscriber gets the message as it stands now.
    let (ready, mut fresh) = subscribe_after(&mut server.web(), 0).await;
    assert_eq!(ready.last_id, edited.id);
    let now = next_event_message(&mut fresh).await;
    assert_eq!(now.message, "hello world");
    assert_eq!(now.edited_at, edited.timestamp);
    assert_eq!(now.state_id, edited.id);
    assert_eq!(now.reactions.len(), 1);
    assert_eq!(
        (
            now.reactions[0].emoji.as_str(),
            now.reactions[0].count,
            now.reactions[0].usernames.clone()
        ),
        ("👍", 1, vec!["Bob".to_owned()])
    );

    // Deleted: a tombstone, with the id, name and time kept.
    let deleted = within(ada.delete(with_session(delete(id), &ada_token)))
        .await
        .expect("deleted")
        .into_inner();
    let again = within(ada.delete(with_session(delete(id), &ada_token)))
        .await
        .expect("deleting twice is fine")
        .into_inner();
    assert_eq!(again, deleted, "nothing new stored");
    let messages = replayed(&mut server.web(), 0).await;
    assert_eq!(messages.len(), 1);
    let tombstone = &messages[0];
    assert!(tombstone.deleted);
    assert_eq!(tombstone.message, "");
    assert!(tombstone.reactions.is_empty());
    assert_eq!((tombstone.id, tombstone.username.as_str()), (id, "Ada"));
    assert_eq!(tombstone.state_id, deleted.id);

    // A client that saw the message before any change and resumes after
    // it replays the changes and ends where the server is.
    let mut held = ChatMessage {
        message: "helo wrld".into(),
        edited_at: 0,
        reactions: Vec::new(),
        state_id: 0,
        ..now.clone()
    };
    let (_, mut resumed) = subscribe_after(&mut server.web(), id).await;
    for _ in 0..3 {
        let Event::Change(change) = next_chat_event(&mut resumed).await else {
            panic!("expected the changes");
        };
        if change.kind() == ChangeKind::ChangeEdit {
            assert_eq!(
                change.message, "",
                "an erased edit keeps its id, not its text"
            );
        }
        state::apply(&mut held, &change);
    }
    assert_eq!(
        held,
        ChatMessage {
            room: "general".into(),
            ..tombstone.clone()
        }
    );
}

#[tokio::test]
async fn who_may_change_what_and_what_each_refusal_says() {
    let server = TestServer::unthrottled().await;
    let mut web = server.web();
    let ada = join(&mut web, "Ada").await;
    let bob = join(&mut web, "Bob").await;
    let id = say(&mut web, &ada, "mine").await;
    let code = |result: Result<tonic::Response<chat_proto::ChangeReply>, tonic::Status>| {
        result.expect_err("refused").code()
    };

    // No session, someone else's message.
    assert_eq!(
        code(within(web.edit(edit(id, "x"))).await),
        Code::Unauthenticated
    );
    assert_eq!(
        code(within(web.react(react(id, "👍"))).await),
        Code::Unauthenticated
    );
    assert_eq!(
        code(within(web.edit(with_session(edit(id, "x"), &bob))).await),
        Code::PermissionDenied
    );
    let refused = within(web.delete(with_session(delete(id), &bob)))
        .await
        .expect_err("not Bob's");
    assert_eq!(refused.code(), Code::PermissionDenied);
    assert!(refused.message().contains("Ada"), "{}", refused.message());
    // The author by name key: another spelling of the same name is Ada.
    // (Names are claimed by key, so only Ada's session can hold it.)

    // Unknown ids and rooms, a change's id, bad text and emoji.
    assert_eq!(
        code(within(web.edit(with_session(edit(999, "x"), &ada))).await),
        Code::NotFound
    );
    let nowhere = EditRequest {
        room: "nowhere".into(),
        ..edit(id, "x")
    };
    assert_eq!(
        code(within(web.edit(with_session(nowhere, &ada))).await),
        Code::NotFound
    );
    let change = within(web.react(with_session(react(id, "🎉"), &bob)))
        .await
        .expect("reacted")
        .into_inner();
    assert_eq!(
        code(within(web.edit(with_session(edit(change.id, "x"), &ada))).await),
        Code::InvalidArgument
    );
    assert_eq!(
        code(within(web.react(with_session(react(change.id, "👍"), &ada))).await),
        Code::InvalidArgument
    );
    assert_eq!(
        code(within(web.edit(with_session(edit(id, "   "), &ada))).await),
        Code::InvalidArgument
    );
    for bad in ["", "ab", "👍👍", "🇭"] {
        let refused = within(web.react(with_session(react(id, bad), &bob)))
            .await
            .expect_err(bad);
        assert_eq!(refused.code(), Code::InvalidArgument, "{bad:?}");
    }

    // Reacting is idempotent; so is taking back what one never gave.
    let twice = within(web.react(with_session(react(id, "🎉"), &bob)))
        .await
        .expect("ok")
        .into_inner();
    assert_eq!(twice.id, 0, "nothing stored");
    let remove = |emoji: &str| ReactRequest {
        remove: true,
        ..react(id, emoji)
    };
    let never = within(web.react(with_session(remove("🚀"), &ada)))
        .await
        .expect("ok")
        .into_inner();
    assert_eq!(never.id, 0);
    let taken = within(web.react(with_session(remove("🎉"), &bob)))
        .await
        .expect("ok")
        .into_inner();
    assert!(taken.id > change.id);

    // A retried edit (same nonce) is stored once.
    let retried = EditRequest {
        nonce: "e-1".into(),
        ..edit(id, "mine, edited")
    };
    let first = within(web.edit(with_session(retried.clone(), &ada)))
        .await
        .expect("edited")
        .into_inner();
    let second = within(web.edit(with_session(retried, &ada)))
        .await
        .expect("edited")
        .into_inner();
    assert_eq!(first, second);

    // Twenty different emoji, and no more.
    let emoji = [
        "😀", "😁", "😂", "🤣", "😃", "😄", "😅", "😆", "😉", "😊", "😋", "😎", "😍", "😘", "🥰",
        "😗", "😙", "🥲", "😚", "🙂", "🤗",
    ];
    for e in &emoji[..20] {
        within(web.react(with_session(react(id, e), &bob)))
            .await
            .expect("under the cap");
    }
    let full = within(web.react(with_session(react(id, emoji[20]), &ada)))
        .await
        .expect_err("21st");
    assert_eq!(full.code(), Code::ResourceExhausted);
    // An emoji already there is no new one.
    within(web.react(with_session(react(id, emoji[0]), &ada)))
        .await
        .expect("joins 😀");

    // Deleted: no more edits or reactions; deletion again is fine.
    within(web.delete(with_session(delete(id), &ada)))
        .await
        .expect("deleted");
    let refused = within(web.edit(with_session(edit(id, "back"), &ada)))
        .await
        .expect_err("deleted");
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert_eq!(
        code(within(web.react(with_session(react(id, "👍"), &bob))).await),
        Code::FailedPrecondition
    );
}

#[tokio::test]
async fn a_reply_names_an_earlier_message_of_its_room() {
    let server = TestServer::unthrottled().await;
    let mut web = server.web();
    let ada = join(&mut web, "Ada").await;
    let first = say(&mut web, &ada, "question?").await;
    let reply = ChatMessage {
        reply_to: first,
        ..chat("", "answer")
    };
    let id = within(web.send(with_session(reply.clone(), &ada)))
        .await
        .expect("sent")
        .into_inner()
        .id;
    let messages = replayed(&mut server.web(), 0).await;
    assert_eq!(
        messages.iter().find(|m| m.id == id).map(|m| m.reply_to),
        Some(first)
    );

    let nowhere = ChatMessage {
        reply_to: 999,
        ..reply.clone()
    };
    let refused = within(web.send(with_session(nowhere, &ada)))
        .await
        .expect_err("no such message");
    assert_eq!(refused.code(), Code::NotFound);
    let change = within(web.react(with_session(react(first, "👍"), &ada)))
        .await
        .expect("ok")
        .into_inner();
    let to_change = ChatMessage {
        reply_to: change.id,
        ..reply.clone()
    };
    let refused = within(web.send(with_session(to_change, &ada)))
        .await
        .expect_err("a change");
    assert_eq!(refused.code(), Code::InvalidArgument);
    // A deleted message can still be answered.
    within(web.delete(with_session(delete(first), &ada)))
        .await
        .expect("deleted");
    within(web.send(with_session(reply, &ada)))
        .await
        .expect("a reply to a tombstone");
}

#[tokio::test]
async fn recent_history_counts_messages_not_changes_and_changes_never_make_a_room_unread() {
    let mut config = unthrottled(Config::with_addr("127.0.0.1:0"));
    config.history = 3;
    let server = TestServer::start_with(config).await;
    let mut web = server.web();
    let ada = join(&mut web, "Ada").await;
    let mut ids = Vec::new();
    for text in ["one", "two", "three", "four"] {
        let id = say(&mut web, &ada, text).await;
        ids.push(id);
        for emoji in ["👍", "🎉"] {
            within(web.react(with_session(react(id, emoji), &ada)))
                .await
                .expect("reacted");
        }
    }
    let texts: Vec<String> = replayed(&mut server.web(), 0)
        .await
        .into_iter()
        .map(|m| m.message)
        .collect();
    assert_eq!(texts, ["two", "three", "four"]);

    let rooms = within(web.list_rooms(chat_proto::ListRoomsRequest {}))
        .await
        .expect("listed")
        .into_inner();
    let general = &rooms.rooms[0];
    assert_eq!(general.last_message_id, ids[3]);
    assert_eq!(general.last_id, ids[3] + 2);

    // A stream watching general from another room hears of its newest
    // message, which a reaction does not move.
    let mut watcher = server.web();
    within(watcher.create_room(with_session(
        chat_proto::CreateRoomRequest {
            name: "other".into(),
            topic: String::new(),
        },
        &ada,
    )))
    .await
    .expect("created");
    let mut events = within(watcher.subscribe(SubscribeRequest {
        username: "watcher".into(),
        room: "other".into(),
        watch: vec!["general".into()],
        after_id: 0,
    }))
    .await
    .expect("subscribed")
    .into_inner();
    let activity = loop {
        if let Event::Activity(activity) = next_chat_event(&mut events).await {
            break activity;
        }
    };
    assert_eq!(
        (activity.last_id, activity.last_message_id),
        (ids[3] + 2, ids[3])
    );
}

#[tokio::test]
async fn the_papers_chat_stream_never_sees_a_change() {
    let server = TestServer::unthrottled().await;
    let mut native: NativeClient = server.native().await;
    let (_tx, mut paper) = open_chat_stream(&mut native).await;
    let mut web = server.web();
    let ada = join(&mut web, "Ada").await;
    let id = say(&mut web, &ada, "first").await;
    assert_eq!(next_message(&mut paper).await.message, "first");
    within(web.react(with_session(react(id, "👍"), &ada)))
        .await
        .expect("reacted");
    within(web.edit(with_session(edit(id, "first!"), &ada)))
        .await
        .expect("edited");
    within(web.delete(with_session(delete(id), &ada)))
        .await
        .expect("deleted");
    say(&mut web, &ada, "second").await;
    let next = next_message(&mut paper).await;
    assert_eq!((next.message.as_str(), next.id), ("second", id + 4));
}

/// Whether `marker` is in any file under `dir` (a database's, or a NATS
/// node's store).
pub(crate) fn on_disk(dir: &std::path::Path, marker: &str) -> bool {
    std::fs::read_dir(dir)
        .expect("a readable dir")
        .filter_map(Result::ok)
        .any(|file| {
            let path = file.path();
            if path.is_dir() {
                return on_disk(&path, marker);
            }
            std::fs::read(path)
                .map(|bytes| bytes.windows(marker.len()).any(|w| w == marker.as_bytes()))
                .unwrap_or(false)
        })
}

/// Moves everything in the write-ahead log into the database file and
/// empties the log, as a later checkpoint would.
fn checkpoint(db: &std::path::Path) {
    let connection = rusqlite::Connection::open(db).expect("open the database");
    connection
        .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        .expect("checkpoint");
}

#[tokio::test]
async fn a_deleted_messages_text_and_its_edits_are_gone_from_the_database_files() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("chat.db");
    let mut config = unthrottled(Config::with_addr("127.0.0.1:0"));
    config.db = chat_server::log::sqlite::Location::File(db.clone());
    let server = TestServer::start_with(config).await;
    let mut web = server.web();
    let ada = join(&mut web, "Ada").await;
    let (original, edited) = ("marker-original-9f1c2e", "marker-edited-7b3a55");
    let id = say(&mut web, &ada, original).await;
    checkpoint(&db);
    assert!(on_disk(dir.path(), original), "stored before");
    // An edit replaces the message's text (and zeroes the old one).
    within(web.edit(with_session(edit(id, edited), &ada)))
        .await
        .expect("edited");
    say(&mut web, &ada, "a message that stays").await;
    checkpoint(&db);
    assert!(on_disk(dir.path(), edited), "stored before");

    within(web.delete(with_session(delete(id), &ada)))
        .await
        .expect("deleted");
    checkpoint(&db);
    assert!(!on_disk(dir.path(), original), "the original text is gone");
    assert!(!on_disk(dir.path(), edited), "the edited text is gone");
    assert!(on_disk(dir.path(), "a message that stays"));
    // Nor through any RPC.
    for message in replayed(&mut server.web(), 0).await {
        assert!(!message.message.contains("marker"), "{message:?}");
    }
}

#[tokio::test]
async fn an_edit_after_the_edit_window_is_refused() {
    let mut config = unthrottled(Config::with_addr("127.0.0.1:0"));
    config.edit_window = "1s".parse().expect("an age");
    let server = TestServer::start_with(config).await;
    let mut web = server.web();
    let ada = join(&mut web, "Ada").await;
    let id = say(&mut web, &ada, "quick").await;
    within(web.edit(with_session(edit(id, "quick!"), &ada)))
        .await
        .expect("within the window");
    // The window closes a second after the message was sent.
    let refused = within(async {
        loop {
            match web.edit(with_session(edit(id, "too late?"), &ada)).await {
                Ok(_) => tokio::time::sleep(std::time::Duration::from_millis(100)).await,
                Err(status) => break status,
            }
        }
    })
    .await;
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert!(
        refused.message().contains("1 second"),
        "{}",
        refused.message()
    );
}
