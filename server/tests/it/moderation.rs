//! Moderators through a real server: a listed name is reserved to its
//! proof (the moderator key, or the authenticating proxy's word), in every
//! spelling and through every door; its holder may delete anyone's
//! message, with the change saying so, mute and lift, and read what
//! moderators did; mutes and the audit log survive a restart.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use chat_proto::moderation_client::ModerationClient;
use chat_proto::{
    AuditRequest, ChangeKind, CreateRoomRequest, DeleteRequest, Event, JoinReply, JoinRequest,
    LiftRequest, MuteRequest, TypingRequest,
};
use chat_server::log::sqlite::Location;
use chat_server::{Config, Server};
use tonic::{Code, Status};

use crate::changes::{delete, join, say};
use crate::common::{
    TestServer, WebClient, channel, chat, next_chat_event, next_event_message, open_chat_stream,
    subscribe_after, unthrottled, with_session, within,
};
use crate::proxy_auth::{logged_in, nginx};

pub(crate) const KEY: &str = "correct horse battery staple";

/// A key file holding `contents`, with `mode`, in a folder of its own.
pub(crate) fn key_file(contents: &str, mode: u32) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("moderator.key");
    std::fs::write(&path, contents).expect("write the key");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
    (dir, path)
}

/// The configuration of a server where "Mod" moderates, proven with
/// [`KEY`] (kept in the returned folder, with the database).
pub(crate) fn moderated_config() -> (Config, tempfile::TempDir) {
    let (dir, path) = key_file(&format!("{KEY}\n"), 0o600);
    let mut config = unthrottled(Config::with_addr("127.0.0.1:0"));
    config.moderators = vec!["Mod".into(), "Other Mod".into()];
    config.moderator_key_file = Some(path);
    config.db = Location::File(dir.path().join("chat.db"));
    (config, dir)
}

async fn moderated() -> (TestServer, tempfile::TempDir) {
    let (config, dir) = moderated_config();
    (TestServer::start_with(config).await, dir)
}

pub(crate) async fn join_with_key(
    client: &mut WebClient,
    name: &str,
    key: &str,
) -> Result<JoinReply, Status> {
    within(client.join(JoinRequest {
        username: name.into(),
        key: key.into(),
        ..Default::default()
    }))
    .await
    .map(tonic::Response::into_inner)
}

fn reserved(status: &Status) {
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert!(status.message().contains("reserved"), "{status:?}");
}

#[tokio::test]
async fn a_moderators_name_needs_the_key_through_every_door() {
    let (server, _dir) = moderated().await;
    let mut web = server.web();

    // Join without the key, or with a wrong one, in any spelling.
    for (name, key) in [
        ("Mod", ""),
        ("mod", "wrong"),
        ("MOD", KEY.trim_end_matches('e')),
    ] {
        let refused = join_with_key(&mut web, name, key)
            .await
            .expect_err("a moderator's name without its key");
        reserved(&refused);
    }
    // A tokenless Send, and the paper's ChatStream, cannot speak as it.
    let refused = within(web.send(chat("mod", "I am in charge")))
        .await
        .expect_err("a tokenless send as a moderator");
    reserved(&refused);
    let mut native = server.native().await;
    let (tx, mut paper) = open_chat_stream(&mut native).await;
    tx.send(chat("Mod", "I am in charge"))
        .await
        .expect("stream open");
    let ended = within(paper.message())
        .await
        .expect_err("the stream ends refused");
    reserved(&ended);

    // With the key: a moderator, and the session stays one when taken back.
    let joined = join_with_key(&mut web, "Mod", KEY)
        .await
        .expect("joined with the key");
    assert!(joined.moderator);
    let again = within(web.join(JoinRequest {
        username: "Mod".into(),
        token: joined.token.clone(),
        ..Default::default()
    }))
    .await
    .expect("rejoined")
    .into_inner();
    assert!(again.moderator, "a session made with the key moderates");
    // The key opens only listed names.
    let ada = join_with_key(&mut web, "Ada", KEY).await.expect("joined");
    assert!(!ada.moderator);
    let bob = join_with_key(&mut web, "Bob", "").await.expect("joined");
    assert!(!bob.moderator);
    // Nothing was stored under the moderator's name by anyone else.
    let (ready, _) = subscribe_after(&mut server.web(), 0).await;
    assert_eq!(ready.last_id, 0);
}

#[tokio::test]
async fn a_moderator_deletes_anyones_message_and_the_change_says_so() {
    let (server, _dir) = moderated().await;
    let mut web = server.web();
    let ada = join(&mut web, "Ada").await;
    let bob = join(&mut web, "Bob").await;
    let moderator = join_with_key(&mut web, "Mod", KEY)
        .await
        .expect("joined")
        .token;
    let (_, mut live) = subscribe_after(&mut server.web(), 0).await;
    let spam = say(&mut web, &ada, "buy cheap watches").await;
    let own = say(&mut web, &moderator, "welcome").await;
    for _ in 0..2 {
        next_event_message(&mut live).await;
    }

    let refused = within(web.delete(with_session(delete(spam), &bob)))
        .await
        .expect_err("bob is no moderator");
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");

    // Over native gRPC too.
    let mut native = server.native().await;
    let deleted = within(native.delete(with_session(
        DeleteRequest {
            reason: "spam".into(),
            ..delete(spam)
        },
        &moderator,
    )))
    .await
    .expect("a moderator deletes ada's message")
    .into_inner();
    within(web.delete(with_session(delete(own), &moderator)))
        .await
        .expect("and their own");

    let Event::Change(change) = next_chat_event(&mut live).await else {
        panic!("expected the deletion");
    };
    assert_eq!(
        (
            change.id,
            change.target,
            change.kind(),
            change.username.as_str(),
            change.by_moderator,
            change.reason.as_str()
        ),
        (
            deleted.id,
            spam,
            ChangeKind::ChangeDelete,
            "Mod",
            true,
            "spam"
        )
    );
    let Event::Change(change) = next_chat_event(&mut live).await else {
        panic!("expected the deletion");
    };
    assert_eq!(change.target, own);
    assert!(!change.by_moderator, "the author deleting is no moderation");

    // Ada's message is a tombstone for everyone who comes later.
    let (_, mut fresh) = subscribe_after(&mut server.web(), 0).await;
    let tombstone = next_event_message(&mut fresh).await;
    assert_eq!((tombstone.id, tombstone.deleted), (spam, true));
    assert_eq!(tombstone.message, "");
}

#[tokio::test]
async fn the_server_will_not_start_with_a_key_file_others_can_read_or_an_empty_one() {
    for (contents, mode, says) in [
        (KEY, 0o644, "chmod 600"),
        (KEY, 0o660, "chmod 600"),
        ("  \n", 0o600, "is empty"),
    ] {
        let (_dir, path) = key_file(contents, mode);
        let mut config = Config::with_addr("127.0.0.1:0");
        config.moderators = vec!["Mod".into()];
        config.moderator_key_file = Some(path);
        let error = Server::bind(&config)
            .await
            .expect_err("refused to start")
            .to_string();
        assert!(error.contains(says), "{error}");
    }
}

#[tokio::test]
async fn behind_nginx_a_listed_login_moderates() {
    let mut config = Config::with_addr("127.0.0.1:0");
    config.trust_proxy = true;
    config.auth_header = Some("X-Remote-User".into());
    config.moderators = vec!["ada".into()];
    let server = TestServer::start_with(config).await;
    let nginx = nginx(server.addr.port()).await;
    let mut web = crate::common::web_client(&format!("http://127.0.0.1:{}", nginx.port));
    let join_as = |user: &str, password: &str| logged_in(JoinRequest::default(), user, password);
    let ada = within(web.join(join_as("ada", "secret")))
        .await
        .expect("joined")
        .into_inner();
    assert!(ada.moderator, "the proxy's word proves a listed name");
    let bob = within(web.join(join_as("bob", "hunter2")))
        .await
        .expect("joined")
        .into_inner();
    assert!(!bob.moderator);

    let sent = within(web.send(logged_in(chat("", "spam"), "bob", "hunter2")))
        .await
        .expect("sent")
        .into_inner();
    let deleted = within(web.delete(logged_in(
        DeleteRequest {
            reason: "spam".into(),
            ..delete(sent.id)
        },
        "ada",
        "secret",
    )))
    .await
    .expect("ada moderates")
    .into_inner();
    assert_eq!(deleted.id, sent.id + 1);
}

/// Who most tests here need: the moderator, Ada and Bob joined, and a
/// room "other" beside general.
struct Cast {
    web: WebClient,
    moderation: ModerationClient<tonic::transport::Channel>,
    moderator: String,
    ada: String,
    bob: String,
}

async fn cast(server: &TestServer) -> Cast {
    let mut web = server.web();
    let moderation = ModerationClient::new(channel(&server.url()).await);
    let moderator = join_with_key(&mut web, "Mod", KEY)
        .await
        .expect("joined")
        .token;
    let ada = join(&mut web, "Ada").await;
    let bob = join(&mut web, "Bob").await;
    within(web.create_room(CreateRoomRequest {
        name: "other".into(),
        topic: String::new(),
    }))
    .await
    .expect("room made");
    Cast {
        web,
        moderation,
        moderator,
        ada,
        bob,
    }
}

fn mute(username: &str, room: &str, seconds: u64, reason: &str) -> MuteRequest {
    MuteRequest {
        room: room.into(),
        username: username.into(),
        seconds,
        reason: reason.into(),
    }
}

fn lift(username: &str, room: &str) -> LiftRequest {
    LiftRequest {
        username: username.into(),
        room: room.into(),
    }
}

fn muted_status(status: &Status, words: &[&str]) {
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    for word in words {
        assert!(status.message().contains(word), "{word:?} in {status:?}");
    }
}

#[tokio::test]
async fn a_muted_person_reads_but_cannot_post_where_muted_until_lifted_even_after_a_restart() {
    let (config, _dir) = moderated_config();
    let server = TestServer::start_with(config.clone()).await;
    let Cast {
        mut web,
        mut moderation,
        moderator,
        ada,
        bob,
    } = cast(&server).await;
    let hello = say(&mut web, &ada, "hello").await;

    // Only a moderator mutes.
    let refused = within(moderation.mute(with_session(mute("Ada", "", 0, ""), &bob)))
        .await
        .expect_err("bob is no moderator");
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    let refused = within(moderation.mute(mute("Ada", "", 0, "")))
        .await
        .expect_err("no session");
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
    let refused = within(moderation.mute(with_session(mute("Ada", "nowhere", 0, ""), &moderator)))
        .await
        .expect_err("no such room");
    assert_eq!(refused.code(), Code::NotFound, "{refused:?}");

    let muted_at = within(moderation.mute(with_session(
        mute("ada", "general", 0, "cool down"),
        &moderator,
    )))
    .await
    .expect("muted")
    .into_inner()
    .audit_id;
    assert!(muted_at > 0);

    // Ada cannot send, edit, react or type in #general; she still reads,
    // and posts in #other.
    let words = ["#general", "until a moderator lifts it", "cool down"];
    let refused = within(web.send(with_session(chat("", "let me talk"), &ada)))
        .await
        .expect_err("muted");
    muted_status(&refused, &words);
    let refused = within(web.edit(with_session(crate::changes::edit(hello, "hi"), &ada)))
        .await
        .expect_err("muted");
    muted_status(&refused, &words);
    let refused = within(web.react(with_session(crate::changes::react(hello, "👍"), &ada)))
        .await
        .expect_err("muted");
    muted_status(&refused, &words);
    let refused = within(web.set_typing(with_session(
        TypingRequest {
            typing: true,
            room: String::new(),
        },
        &ada,
    )))
    .await
    .expect_err("muted");
    muted_status(&refused, &words);
    let (ready, _) = subscribe_after(&mut server.web(), 0).await;
    assert_eq!(ready.last_id, hello, "nothing of hers got through");
    within(web.send(with_session(chat_in("other", "over here"), &ada)))
        .await
        .expect("not muted in #other");
    // Bob is not muted.
    say(&mut web, &bob, "still here").await;

    // A paper client muted everywhere for an hour: its stream ends saying so.
    within(moderation.mute(with_session(mute("Paul", "", 3600, ""), &moderator)))
        .await
        .expect("muted");
    let mut native = server.native().await;
    let (tx, mut paper) = open_chat_stream(&mut native).await;
    tx.send(chat("Paul", "hi all")).await.expect("stream open");
    let ended = within(paper.message()).await.expect_err("muted");
    muted_status(&ended, &["everywhere", "until 20"]);

    // Mutes survive a restart (sessions do not: Ada joins again).
    server.stop().await;
    let server = TestServer::start_with(config).await;
    let mut web = server.web();
    let mut moderation = ModerationClient::new(channel(&server.url()).await);
    let ada = join(&mut web, "Ada").await;
    let refused = within(web.send(with_session(chat("", "am I back?"), &ada)))
        .await
        .expect_err("still muted");
    muted_status(&refused, &words);
    let moderator = join_with_key(&mut web, "Mod", KEY)
        .await
        .expect("joined")
        .token;
    let lifted_at = within(moderation.lift(with_session(lift("ADA", ""), &moderator)))
        .await
        .expect("lifted")
        .into_inner()
        .audit_id;
    say(&mut web, &ada, "thanks").await;

    // The audit log says who did what, oldest first, across the restart.
    let entries = within(moderation.audit_log(with_session(AuditRequest::default(), &moderator)))
        .await
        .expect("audit log")
        .into_inner()
        .entries;
    let seen: Vec<_> = entries
        .iter()
        .map(|e| {
            (
                e.id,
                e.moderator.as_str(),
                e.action.as_str(),
                e.username.as_str(),
                e.room.as_str(),
                e.reason.as_str(),
            )
        })
        .collect();
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert_eq!(
        seen[0],
        (muted_at, "Mod", "mute", "ada", "general", "cool down")
    );
    assert_eq!((seen[1].2, seen[1].3), ("mute", "Paul"));
    assert_eq!(seen[2], (lifted_at, "Mod", "lift", "ADA", "", ""));
    assert!(entries.iter().all(|e| e.timestamp > 0));
    let after = within(moderation.audit_log(with_session(
        AuditRequest {
            after_id: muted_at,
            limit: 1,
        },
        &moderator,
    )))
    .await
    .expect("audit log")
    .into_inner()
    .entries;
    assert_eq!(after.len(), 1);
    assert_eq!(after[0].id, seen[1].0);
}

#[tokio::test]
async fn a_mute_for_a_while_ends_by_itself_and_a_moderators_deletion_is_audited() {
    let (server, _dir) = moderated().await;
    let mut web = server.web();
    let mut moderation = ModerationClient::new(channel(&server.url()).await);
    let moderator = join_with_key(&mut web, "Mod", KEY)
        .await
        .expect("joined")
        .token;
    let ada = join(&mut web, "Ada").await;
    let spam = say(&mut web, &ada, "spam").await;
    within(web.delete(with_session(
        DeleteRequest {
            reason: "spam".into(),
            ..delete(spam)
        },
        &moderator,
    )))
    .await
    .expect("deleted");
    within(moderation.mute(with_session(mute("Ada", "", 1, "a second"), &moderator)))
        .await
        .expect("muted");
    let refused = within(web.send(with_session(chat("", "now?"), &ada)))
        .await
        .expect_err("muted for a second");
    muted_status(&refused, &["everywhere", "a second"]);
    // Once the second has passed she posts again (waited for, not slept).
    within(async {
        loop {
            match web.send(with_session(chat("", "now?"), &ada)).await {
                Ok(_) => break,
                Err(status) => {
                    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            }
        }
    })
    .await;

    let entries = within(moderation.audit_log(with_session(AuditRequest::default(), &moderator)))
        .await
        .expect("audit log")
        .into_inner()
        .entries;
    let deletion = &entries[0];
    assert_eq!(
        (
            deletion.action.as_str(),
            deletion.moderator.as_str(),
            deletion.username.as_str(),
            deletion.room.as_str(),
            deletion.target,
            deletion.reason.as_str()
        ),
        ("delete", "Mod", "Ada", "general", spam, "spam")
    );
    assert_eq!(entries[1].action, "mute");
}

fn chat_in(room: &str, text: &str) -> chat_proto::ChatMessage {
    chat_proto::ChatMessage {
        room: room.into(),
        ..chat("", text)
    }
}

/// `message` as a request from `address` (the server trusts the proxy's
/// X-Forwarded-For in these tests), with `token`'s session if not empty.
fn from<T>(address: &str, token: &str, message: T) -> tonic::Request<T> {
    let mut request = if token.is_empty() {
        tonic::Request::new(message)
    } else {
        with_session(message, token)
    };
    request
        .metadata_mut()
        .insert("x-forwarded-for", address.parse().expect("ascii"));
    request
}

fn named(username: &str) -> JoinRequest {
    JoinRequest {
        username: username.into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn a_ban_ends_streams_revokes_sessions_keeps_the_name_and_with_address_the_address() {
    const ADA_AT: &str = "203.0.113.7";
    let (mut config, _dir) = moderated_config();
    config.trust_proxy = true;
    let server = TestServer::start_with(config.clone()).await;
    let mut web = server.web();
    let moderator = join_with_key(&mut web, "Mod", KEY)
        .await
        .expect("joined")
        .token;
    let ada = within(web.join(from(ADA_AT, "", named("Ada"))))
        .await
        .expect("joined")
        .into_inner()
        .token;
    let bob = join(&mut web, "Bob").await;
    let mut ada_stream =
        within(web.subscribe(from(ADA_AT, &ada, chat_proto::SubscribeRequest::default())))
            .await
            .expect("subscribed")
            .into_inner();
    within(ada_stream.message()).await.expect("ready");
    // A paper client, named by its first message.
    let mut native = server.native().await;
    let (paul, mut paper) = open_chat_stream(&mut native).await;
    paul.send(chat("Paul", "hi")).await.expect("stream open");
    let (_, mut live) = subscribe_after(&mut server.web(), 0).await;
    next_event_message(&mut live).await;

    let mut moderation = ModerationClient::new(channel(&server.url()).await);
    let ban = |username: &str, address: bool| chat_proto::BanRequest {
        username: username.into(),
        seconds: 0,
        reason: "spam".into(),
        address,
    };
    let refused = within(moderation.ban(with_session(ban("Ada", false), &bob)))
        .await
        .expect_err("bob is no moderator");
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    let refused = within(moderation.ban(with_session(ban("mod", false), &moderator)))
        .await
        .expect_err("a moderator");
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");

    within(moderation.ban(with_session(ban("ada", true), &moderator)))
        .await
        .expect("banned");
    within(moderation.ban(with_session(ban("Paul", false), &moderator)))
        .await
        .expect("banned");

    // Her open stream ends, and so does the paper client's.
    let ended = loop {
        match within(ada_stream.message()).await {
            Ok(Some(_)) => {}
            Ok(None) => panic!("the stream ended without a status"),
            Err(status) => break status,
        }
    };
    assert_eq!(ended.code(), Code::PermissionDenied, "{ended:?}");
    assert!(ended.message().contains("banned you"), "{ended:?}");
    let ended = within(paper.message()).await.expect_err("banned");
    assert!(ended.message().contains("banned you"), "{ended:?}");
    // Her session is revoked (from any address).
    let revoked = within(web.send(from("198.51.100.9", &ada, chat("", "still here?"))))
        .await
        .expect_err("revoked");
    assert_eq!(revoked.code(), Code::Unauthenticated, "{revoked:?}");
    // The name cannot be claimed, from anywhere; her address claims nothing.
    let refused = within(web.join(named("ADA")))
        .await
        .expect_err("banned name");
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    let refused = within(web.join(from(ADA_AT, "", named("Ada2"))))
        .await
        .expect_err("banned address");
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    assert!(refused.message().contains("this address"), "{refused:?}");
    let refused = within(web.send(from(ADA_AT, "", chat("Zed", "hi"))))
        .await
        .expect_err("banned address");
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    within(web.join(from("198.51.100.1", "", named("Cy"))))
        .await
        .expect("another address is fine");
    // A moderator at that address is let through.
    within(web.join(from(
        ADA_AT,
        "",
        JoinRequest {
            token: moderator.clone(),
            ..named("Mod")
        },
    )))
    .await
    .expect("a moderator shares the address");

    // The ban survives a restart; lifting ends it, address and all.
    server.stop().await;
    let server = TestServer::start_with(config).await;
    let mut web = server.web();
    let refused = within(web.join(named("Ada")))
        .await
        .expect_err("still banned");
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    let moderator = join_with_key(&mut web, "Mod", KEY)
        .await
        .expect("joined")
        .token;
    let mut moderation = ModerationClient::new(channel(&server.url()).await);
    within(moderation.lift(with_session(lift("Ada", ""), &moderator)))
        .await
        .expect("lifted");
    within(web.join(from(ADA_AT, "", named("Ada"))))
        .await
        .expect("Ada again, from her address");
    let entries = within(moderation.audit_log(with_session(AuditRequest::default(), &moderator)))
        .await
        .expect("audit log")
        .into_inner()
        .entries;
    let bans: Vec<_> = entries
        .iter()
        .filter(|e| e.action == "ban")
        .map(|e| (e.username.as_str(), e.target, e.reason.as_str()))
        .collect();
    assert_eq!(bans, [("ada", 1, "spam"), ("Paul", 0, "spam")]);
}

#[tokio::test]
async fn slow_mode_lets_each_name_post_once_per_period_moderators_exempt() {
    let (server, _dir) = moderated().await;
    let mut web = server.web();
    let mut moderation = ModerationClient::new(channel(&server.url()).await);
    let moderator = join_with_key(&mut web, "Mod", KEY)
        .await
        .expect("joined")
        .token;
    let ada = join(&mut web, "Ada").await;
    let slow = |seconds: u32| chat_proto::SlowModeRequest {
        room: "general".into(),
        seconds,
    };
    let refused = within(moderation.set_slow_mode(with_session(slow(60), &ada)))
        .await
        .expect_err("ada is no moderator");
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    let refused = within(moderation.set_slow_mode(with_session(slow(21_601), &moderator)))
        .await
        .expect_err("over six hours");
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");

    within(moderation.set_slow_mode(with_session(slow(3_600), &moderator)))
        .await
        .expect("slow");
    let rooms = within(web.list_rooms(chat_proto::ListRoomsRequest {}))
        .await
        .expect("rooms")
        .into_inner()
        .rooms;
    assert_eq!(rooms[0].slow_mode_seconds, 3_600);
    say(&mut web, &ada, "first").await;
    let refused = within(web.send(with_session(chat("", "second"), &ada)))
        .await
        .expect_err("too soon");
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(
        refused
            .message()
            .contains("slow mode (one message every 3600 s): wait"),
        "{refused:?}"
    );
    let wait_ms: u64 = refused
        .metadata()
        .get("chat-slow-wait-ms")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("how long to wait, for a countdown");
    assert!((3_500_000..=3_600_000).contains(&wait_ms), "{wait_ms}");
    say(&mut web, &moderator, "one").await;
    say(&mut web, &moderator, "two").await;

    within(moderation.set_slow_mode(with_session(slow(0), &moderator)))
        .await
        .expect("off");
    say(&mut web, &ada, "second, now").await;
    let rooms = within(web.list_rooms(chat_proto::ListRoomsRequest {}))
        .await
        .expect("rooms")
        .into_inner()
        .rooms;
    assert_eq!(rooms[0].slow_mode_seconds, 0);
}

#[tokio::test]
async fn a_purge_deletes_a_persons_messages_in_a_room_or_everywhere() {
    let (server, _dir) = moderated().await;
    let Cast {
        mut web,
        mut moderation,
        moderator,
        ada,
        bob,
    } = cast(&server).await;
    let mut theirs = Vec::new();
    for text in ["spam 1", "spam 2", "spam 3"] {
        theirs.push(say(&mut web, &ada, text).await);
    }
    let kept = say(&mut web, &bob, "not spam").await;
    within(web.send(with_session(chat_in("other", "spam elsewhere"), &ada)))
        .await
        .expect("sent");
    let (_, mut live) = subscribe_after(&mut server.web(), kept).await;

    let purge = |room: &str, seconds: u64| chat_proto::PurgeRequest {
        room: room.into(),
        username: "ADA".into(),
        seconds,
    };
    let refused = within(moderation.purge(with_session(purge("general", 0), &bob)))
        .await
        .expect_err("bob is no moderator");
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    let deleted = within(moderation.purge(with_session(purge("general", 0), &moderator)))
        .await
        .expect("purged")
        .into_inner()
        .deleted;
    assert_eq!(deleted, 3);
    let mut targets = Vec::new();
    for _ in 0..3 {
        let Event::Change(change) = next_chat_event(&mut live).await else {
            panic!("expected a deletion");
        };
        assert_eq!(change.kind(), ChangeKind::ChangeDelete);
        assert!(change.by_moderator);
        targets.push(change.target);
    }
    assert_eq!(targets, theirs);
    // Bob's stays; then everywhere, the last hour: only #other's is left.
    let (_, mut fresh) = subscribe_after(&mut server.web(), 0).await;
    let mut seen = Vec::new();
    for _ in 0..4 {
        let message = next_event_message(&mut fresh).await;
        seen.push((message.id, message.deleted));
    }
    assert!(seen.contains(&(kept, false)), "{seen:?}");
    let deleted = within(moderation.purge(with_session(purge("", 3600), &moderator)))
        .await
        .expect("purged")
        .into_inner()
        .deleted;
    assert_eq!(deleted, 1, "the one in #other; general's are gone already");
    let entries = within(moderation.audit_log(with_session(AuditRequest::default(), &moderator)))
        .await
        .expect("audit")
        .into_inner()
        .entries;
    let purges: Vec<_> = entries
        .iter()
        .map(|e| (e.action.as_str(), e.room.as_str(), e.target))
        .collect();
    assert_eq!(purges, [("purge", "general", 3), ("purge", "", 1)]);
}
