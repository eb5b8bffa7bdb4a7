//! Moderators through a real server: a listed name is reserved to its
//! proof (the moderator key, or the authenticating proxy's word), in every
//! spelling and through every door, and its holder may delete anyone's
//! message, with the change saying so.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use chat_proto::{ChangeKind, DeleteRequest, Event, JoinReply, JoinRequest};
use chat_server::{Config, Server};
use tonic::{Code, Status};

use crate::changes::{delete, join, say};
use crate::common::{
    TestServer, WebClient, chat, next_chat_event, next_event_message, open_chat_stream,
    subscribe_after, unthrottled, with_session, within,
};
use crate::proxy_auth::{logged_in, nginx};

const KEY: &str = "correct horse battery staple";

/// A key file holding `contents`, with `mode`, in a folder of its own.
fn key_file(contents: &str, mode: u32) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("moderator.key");
    std::fs::write(&path, contents).expect("write the key");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
    (dir, path)
}

/// A server where "Mod" moderates, proven with [`KEY`].
async fn moderated() -> (TestServer, tempfile::TempDir) {
    let (dir, path) = key_file(&format!("{KEY}\n"), 0o600);
    let mut config = unthrottled(Config::with_addr("127.0.0.1:0"));
    config.moderators = vec!["Mod".into(), "Other Mod".into()];
    config.moderator_key_file = Some(path);
    (TestServer::start_with(config).await, dir)
}

async fn join_with_key(client: &mut WebClient, name: &str, key: &str) -> Result<JoinReply, Status> {
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
