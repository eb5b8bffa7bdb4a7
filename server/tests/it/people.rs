//! Names nobody else can take: `Join`, sessions, and what happens to a
//! client that uses a name somebody holds.

use std::time::Duration;

use crate::common::{
    TestServer, chat, next_event_message, next_message, open_chat_stream, with_session, within,
};
use chat_proto::{ChatEvent, Event, JoinReply, JoinRequest, SubscribeRequest, TypingRequest};
use chat_server::config::Config;
use tonic::{Code, Request, Streaming};

async fn join(server: &TestServer, name: &str, token: &str) -> Result<JoinReply, tonic::Status> {
    within(server.web().join(JoinRequest {
        username: name.into(),
        token: token.into(),
        ..Default::default()
    }))
    .await
    .map(tonic::Response::into_inner)
}

#[tokio::test]
async fn a_name_is_claimed_once_whatever_its_case_form_or_look_alikes() {
    let server = TestServer::start().await;
    let ada = join(&server, "Ada", "").await.expect("free");
    assert_eq!(ada.username, "Ada");
    assert_eq!(ada.token.len(), 32, "128 bits, hex");
    assert!(!ada.proxied);
    for clash in ["ada", " ADA ", "\u{430}da"] {
        let refused = join(&server, clash, "").await.expect_err("taken");
        assert_eq!(refused.code(), Code::AlreadyExists, "{clash:?}");
        assert!(
            refused.message().contains("\"Ada\""),
            "{}",
            refused.message()
        );
    }
    let again = join(&server, "", &ada.token).await.expect("by token");
    assert_eq!((again.username, again.token), ("Ada".into(), ada.token));
}

#[tokio::test]
async fn a_name_nobody_streams_under_is_free_again_after_the_grace() {
    let mut config = Config::with_addr("127.0.0.1:0");
    config.name_grace = 1;
    let server = TestServer::start_with(config).await;
    let ada = join(&server, "ada", "").await.expect("free");
    assert_eq!(
        join(&server, "ada", "").await.expect_err("held").code(),
        Code::AlreadyExists
    );
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let bob_as_ada = join(&server, "ada", "").await.expect("free again");
    assert_ne!(bob_as_ada.token, ada.token);
    let old = within(server.web().send(with_session(chat("", "hi"), &ada.token)))
        .await
        .expect_err("a lapsed session");
    assert_eq!(old.code(), Code::Unauthenticated);
}

#[tokio::test]
async fn sends_go_out_under_the_session_name_and_nobody_else_may_use_it() {
    let server = TestServer::start().await;
    let ada = join(&server, "Ada", "").await.expect("free");
    let mut web = server.web();
    let mut events = within(web.subscribe(with_session(
        SubscribeRequest {
            username: String::new(),
            after_id: 0,
            ..Default::default()
        },
        &ada.token,
    )))
    .await
    .expect("subscribed")
    .into_inner();
    within(events.message()).await.expect("ready");

    within(web.send(with_session(chat("", "hello"), &ada.token)))
        .await
        .expect("sent");
    assert_eq!(next_event_message(&mut events).await.username, "Ada");

    let forged = within(web.send(chat("ada", "I am ada too")))
        .await
        .expect_err("held by someone else");
    assert_eq!(forged.code(), Code::PermissionDenied);
    let other = within(web.send(with_session(chat("bob", "as bob"), &ada.token)))
        .await
        .expect_err("not the session's name");
    assert_eq!(other.code(), Code::PermissionDenied);
}

#[tokio::test]
async fn a_chat_stream_keeps_its_first_name_and_may_not_take_a_held_one() {
    let server = TestServer::start().await;
    join(&server, "ada", "").await.expect("free");
    let mut native = server.native().await;

    let (tx, mut incoming) = open_chat_stream(&mut native).await;
    tx.send(chat("ADA", "hi")).await.expect("sent");
    let status = within(incoming.message()).await.expect_err("taken");
    assert_eq!(status.code(), Code::AlreadyExists);

    let (tx, mut incoming) = open_chat_stream(&mut native).await;
    tx.send(chat("bob", "first")).await.expect("sent");
    tx.send(chat("carol", "second")).await.expect("sent");
    let status = within(incoming.message())
        .await
        .expect_err("one name per stream");
    assert_eq!(status.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn a_paper_client_holds_its_name_while_connected_and_not_a_moment_longer() {
    let server = TestServer::start().await;
    let mut native = server.native().await;
    let (_erin, mut erin_in) = open_chat_stream(&mut native).await;
    let (dave, dave_in) = open_chat_stream(&mut native).await;
    server.wait_for_subscribers(2).await;
    dave.send(chat("dave", "here")).await.expect("sent");
    // Relayed means named: the hold comes before the publishing.
    assert_eq!(next_message(&mut erin_in).await.message, "here");
    let refused = join(&server, "Dave", "").await.expect_err("held");
    assert_eq!(refused.code(), Code::AlreadyExists);

    drop((dave, dave_in));
    server.wait_for_subscribers(1).await;
    let mut free = false;
    for _ in 0..50 {
        if join(&server, "dave", "").await.is_ok() {
            free = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        free,
        "no grace for a paper client: free once its stream closed"
    );
}

#[tokio::test]
async fn with_require_join_only_sessions_listen_and_post() {
    let mut config = Config::with_addr("127.0.0.1:0");
    config.require_join = true;
    let server = TestServer::start_with(config).await;
    let mut web = server.web();
    let listen = within(web.subscribe(SubscribeRequest {
        username: "ada".into(),
        after_id: 0,
        ..Default::default()
    }))
    .await
    .expect_err("no session");
    assert_eq!(listen.code(), Code::Unauthenticated);
    let post = within(web.send(chat("ada", "hi")))
        .await
        .expect_err("no session");
    assert_eq!(post.code(), Code::Unauthenticated);

    let ada = join(&server, "ada", "")
        .await
        .expect("Join needs no session");
    within(web.send(with_session(chat("", "hi"), &ada.token)))
        .await
        .expect("with a session");
    // The paper's clients still work, under a name nobody holds.
    let mut native = server.native().await;
    let (_carol, mut carol_in) = open_chat_stream(&mut native).await;
    let (bob, _bob_in) = open_chat_stream(&mut native).await;
    server.wait_for_subscribers(2).await;
    bob.send(chat("bob", "from the paper")).await.expect("sent");
    assert_eq!(next_message(&mut carol_in).await.message, "from the paper");
}

/// A `Subscribe` stream with a session, past its `Ready`: the first event
/// after it says who is here.
async fn subscribe_as(server: &TestServer, token: &str) -> (Vec<String>, Streaming<ChatEvent>) {
    let mut events = within(server.web().subscribe(with_session(
        SubscribeRequest {
            username: String::new(),
            after_id: 0,
            ..Default::default()
        },
        token,
    )))
    .await
    .expect("subscribed")
    .into_inner();
    within(events.message()).await.expect("ready");
    match within(events.message()).await {
        Ok(Some(ChatEvent {
            event: Some(Event::Presence(presence)),
        })) => (presence.online, events),
        other => panic!("expected who is here, got {other:?}"),
    }
}

/// The next `Presence` change on `events` (joined, left), skipping the rest.
async fn next_change(events: &mut Streaming<ChatEvent>) -> (Vec<String>, Vec<String>) {
    loop {
        if let Some(ChatEvent {
            event: Some(Event::Presence(p)),
        }) = within(events.message()).await.expect("no error")
        {
            assert!(
                p.online.is_empty(),
                "a change is one small event, never the full list"
            );
            return (p.joined, p.left);
        }
    }
}

#[tokio::test]
async fn who_is_here_then_who_comes_and_goes_without_flicker_on_a_reload() {
    let server = TestServer::start().await;
    let ada = join(&server, "ada", "").await.expect("free");
    let bob = join(&server, "bob", "").await.expect("free");
    let (online, mut ada_events) = subscribe_as(&server, &ada.token).await;
    assert_eq!(online, ["ada"]);

    let (online, bob_events) = subscribe_as(&server, &bob.token).await;
    assert_eq!(online, ["ada", "bob"], "sorted, everyone once");
    assert_eq!(
        next_change(&mut ada_events).await,
        (vec!["bob".into()], vec![])
    );

    // A reload: the stream goes and comes back at once. Nothing to tell.
    drop(bob_events);
    let (_, bob_events) = subscribe_as(&server, &bob.token).await;
    let quiet = tokio::time::timeout(Duration::from_secs(7), next_change(&mut ada_events)).await;
    assert!(quiet.is_err(), "no leave and join for a reload: {quiet:?}");

    drop(bob_events);
    let went = tokio::time::timeout(Duration::from_secs(15), next_change(&mut ada_events))
        .await
        .expect("left within 15 s");
    assert_eq!(went, (vec![], vec!["bob".into()]));
}

#[tokio::test]
async fn typing_reaches_the_others_and_stops_when_the_message_is_sent() {
    let server = TestServer::start().await;
    let ada = join(&server, "ada", "").await.expect("free");
    let bob = join(&server, "bob", "").await.expect("free");
    let (_, mut ada_events) = subscribe_as(&server, &ada.token).await;
    let (_, _bob_events) = subscribe_as(&server, &bob.token).await;
    let mut web = server.web();

    let anonymous = within(web.set_typing(TypingRequest {
        typing: true,
        ..Default::default()
    }))
    .await
    .expect_err("no session");
    assert_eq!(anonymous.code(), Code::Unauthenticated);

    within(web.set_typing(with_session(
        TypingRequest {
            typing: true,
            ..Default::default()
        },
        &bob.token,
    )))
    .await
    .expect("typing");
    assert_eq!(next_typing(&mut ada_events).await, ("bob".into(), true));
    within(web.send(with_session(chat("", "done"), &bob.token)))
        .await
        .expect("sent");
    assert_eq!(next_typing(&mut ada_events).await, ("bob".into(), false));
}

#[tokio::test]
async fn typing_stops_by_itself_without_a_refresh_and_when_the_typist_leaves() {
    let server = TestServer::start().await;
    let ada = join(&server, "ada", "").await.expect("free");
    let bob = join(&server, "bob", "").await.expect("free");
    let (_, mut ada_events) = subscribe_as(&server, &ada.token).await;
    let (_, bob_events) = subscribe_as(&server, &bob.token).await;
    let mut web = server.web();

    let typing = |on| {
        with_session(
            TypingRequest {
                typing: on,
                ..Default::default()
            },
            &bob.token,
        )
    };
    within(web.set_typing(typing(true))).await.expect("typing");
    let started = std::time::Instant::now();
    assert_eq!(next_typing(&mut ada_events).await, ("bob".into(), true));
    // No refresh: over after 6 s (and not long after).
    assert_eq!(next_typing(&mut ada_events).await, ("bob".into(), false));
    let lasted = started.elapsed();
    assert!(
        lasted >= Duration::from_secs(5) && lasted < Duration::from_secs(9),
        "{lasted:?}"
    );

    // Typing, then gone: the others are told typing stopped, with the leave.
    within(web.set_typing(typing(true))).await.expect("typing");
    assert_eq!(next_typing(&mut ada_events).await, ("bob".into(), true));
    drop(bob_events);
    assert_eq!(next_typing(&mut ada_events).await, ("bob".into(), false));
}

#[tokio::test]
async fn typing_and_name_claims_are_rate_limited_on_budgets_of_their_own() {
    // The default limits: a burst of 20, then 5 per second.
    let server = TestServer::start().await;
    let ada = join(&server, "ada", "").await.expect("free");
    let mut web = server.web();
    let mut refused = None;
    for _ in 0..40 {
        let typing = with_session(
            TypingRequest {
                typing: true,
                ..Default::default()
            },
            &ada.token,
        );
        if let Err(status) = within(web.set_typing(typing)).await {
            refused = Some(status);
            break;
        }
    }
    let refused = refused.expect("40 typing notices at once are too many");
    assert_eq!(refused.code(), Code::ResourceExhausted);
    assert!(refused.message().contains("too fast"), "{refused:?}");
    // Saying typing stopped is always allowed, and messages have their own budget.
    let stop = with_session(
        TypingRequest {
            typing: false,
            ..Default::default()
        },
        &ada.token,
    );
    within(web.set_typing(stop)).await.expect("stopping");
    within(web.send(with_session(chat("", "still here"), &ada.token)))
        .await
        .expect("a message is not held back by typing notices");

    // One client claiming name after name is stopped too.
    let mut claimed = 1;
    let refused = loop {
        match join(&server, &format!("squat{claimed}"), "").await {
            Ok(_) => claimed += 1,
            Err(status) => break status,
        }
        assert!(claimed < 40, "40 claims at once are too many");
    };
    assert_eq!(refused.code(), Code::ResourceExhausted);
    assert!(
        refused.message().starts_with("claiming names too fast"),
        "{refused:?}"
    );
    // Taking a name back with its token is not a new claim.
    let again = join(&server, "", &ada.token).await.expect("reclaimed");
    assert_eq!(again.username, "ada");
}

/// The next `Typing` event on `events`, skipping the rest.
async fn next_typing(events: &mut Streaming<ChatEvent>) -> (String, bool) {
    loop {
        if let Some(ChatEvent {
            event: Some(Event::Typing(t)),
        }) = within(events.message()).await.expect("no error")
        {
            return (t.username, t.typing);
        }
    }
}

#[tokio::test]
async fn behind_an_authenticating_proxy_its_header_is_the_name() {
    let mut untrusted = Config::with_addr("127.0.0.1:0");
    untrusted.auth_header = Some("X-Remote-User".into());
    let refused = chat_server::app::Server::bind(&untrusted)
        .await
        .expect_err("an auth header needs --trust-proxy");
    assert!(refused.to_string().contains("--trust-proxy"), "{refused}");

    let mut config = untrusted.clone();
    config.trust_proxy = true;
    let server = TestServer::start_with(config).await;
    let mut web = server.web();
    let joined = within(web.join(as_user(
        JoinRequest {
            username: "mallory".into(),
            token: String::new(),
            ..Default::default()
        },
        "ada",
    )))
    .await
    .expect("joined")
    .into_inner();
    assert_eq!(
        joined.username, "ada",
        "the proxy's name, not the asked one"
    );

    let mut events = within(web.subscribe(as_user(
        SubscribeRequest {
            username: "mallory".into(),
            after_id: 0,
            ..Default::default()
        },
        "ada",
    )))
    .await
    .expect("subscribed")
    .into_inner();
    within(events.message()).await.expect("ready");
    within(web.send(as_user(chat("mallory", "hi"), "ada")))
        .await
        .expect("sent");
    assert_eq!(next_event_message(&mut events).await.username, "ada");

    let nobody = within(web.send(chat("ada", "no header")))
        .await
        .expect_err("the proxy always says");
    assert_eq!(nobody.code(), Code::Unauthenticated);
}

/// A request as the authenticating proxy passes it on.
fn as_user<T>(message: T, user: &str) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("x-remote-user", user.parse().expect("ascii"));
    request
}
