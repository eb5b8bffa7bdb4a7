//! Reports and room settings through a real server: anyone with a session
//! reports a message once, moderators' streams hear of it, `ListReports`
//! has the open ones, and dismissing or deleting the message closes them;
//! a moderator's topic and slow mode reach every stream of the room.
//! Reports and topics survive a restart.

use chat_proto::moderation_client::ModerationClient;
use chat_proto::{
    ChatEvent, DismissReportRequest, Event, ListReportsRequest, Report, ReportRequest,
    SlowModeRequest, SubscribeRequest, TopicRequest,
};
use tonic::Code;
use tonic::codec::Streaming;

use crate::changes::{delete, join, say};
use crate::common::{TestServer, WebClient, channel, next_chat_event, with_session, within};
use crate::moderation::{KEY, join_with_key, moderated_config};

fn report(id: u64, reason: &str) -> ReportRequest {
    ReportRequest {
        room: "general".into(),
        id,
        reason: reason.into(),
    }
}

/// `token`'s stream of general, from after `after_id`, past its `Ready`.
async fn stream_as(web: &mut WebClient, token: &str, after_id: u64) -> Streaming<ChatEvent> {
    let mut stream = within(web.subscribe(with_session(
        SubscribeRequest {
            after_id,
            ..Default::default()
        },
        token,
    )))
    .await
    .expect("subscribed")
    .into_inner();
    let first = next_chat_event(&mut stream).await;
    assert!(matches!(first, Event::Ready(_)), "{first:?}");
    stream
}

async fn open_reports(
    moderation: &mut ModerationClient<tonic::transport::Channel>,
    token: &str,
) -> Vec<Report> {
    within(moderation.list_reports(with_session(ListReportsRequest {}, token)))
        .await
        .expect("reports")
        .into_inner()
        .reports
}

#[tokio::test]
async fn a_report_reaches_the_moderators_once_and_closes_when_dismissed_or_deleted() {
    let (config, _dir) = moderated_config();
    let server = TestServer::start_with(config.clone()).await;
    let mut web = server.web();
    let mut moderation = ModerationClient::new(channel(&server.url()).await);
    let moderator = join_with_key(&mut web, "Mod", KEY)
        .await
        .expect("joined")
        .token;
    let ada = join(&mut web, "Ada").await;
    let bob = join(&mut web, "Bob").await;
    let rude = say(&mut web, &ada, "something rude").await;
    let dull = say(&mut web, &ada, "something dull").await;
    let mut moderators = stream_as(&mut web, &moderator, dull).await;
    let mut bobs = stream_as(&mut web, &bob, dull).await;

    // Without a session, or of a message that is not there: refused.
    let refused = within(moderation.report(report(rude, "")))
        .await
        .expect_err("no session");
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
    let refused = within(moderation.report(with_session(report(999, ""), &bob)))
        .await
        .expect_err("no such message");
    assert_eq!(refused.code(), Code::NotFound, "{refused:?}");
    let refused = within(moderation.report(with_session(report(rude, ""), &ada)))
        .await
        .expect_err("her own");
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");

    // Bob reports it: the moderator's stream hears of it, Bob's does not.
    let id = within(moderation.report(with_session(report(rude, "rude"), &bob)))
        .await
        .expect("reported")
        .into_inner()
        .audit_id;
    let Event::Report(told) = next_chat_event(&mut moderators).await else {
        panic!("expected the report on the moderator's stream");
    };
    assert_eq!(
        (
            told.id,
            told.room.as_str(),
            told.target,
            told.username.as_str(),
            told.reason.as_str()
        ),
        (id, "general", rude, "Bob", "rude")
    );
    assert!(told.timestamp > 0);
    let context = told.message.as_ref().expect("the message, for context");
    assert_eq!(
        (context.id, context.message.as_str()),
        (rude, "something rude")
    );
    let marker = say(&mut web, &ada, "after the report").await;
    match next_chat_event(&mut bobs).await {
        Event::Message(message) => assert_eq!(message.id, marker),
        other => panic!("Bob is no moderator and hears of no report: {other:?}"),
    }
    // Once per message per person.
    let again = within(moderation.report(with_session(report(rude, "really"), &bob)))
        .await
        .expect_err("reported already");
    assert_eq!(again.code(), Code::AlreadyExists, "{again:?}");
    // Only moderators list and dismiss.
    let refused = within(moderation.list_reports(with_session(ListReportsRequest {}, &bob)))
        .await
        .expect_err("bob is no moderator");
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    assert_eq!(
        open_reports(&mut moderation, &moderator).await,
        vec![told.clone()]
    );

    // A second report, of the other message; a restart keeps both.
    let other = within(moderation.report(with_session(report(dull, ""), &bob)))
        .await
        .expect("reported")
        .into_inner()
        .audit_id;
    assert!(other > id);
    server.stop().await;
    let server = TestServer::start_with(config).await;
    let mut web = server.web();
    let mut moderation = ModerationClient::new(channel(&server.url()).await);
    let moderator = join_with_key(&mut web, "Mod", KEY)
        .await
        .expect("joined")
        .token;
    let bob = join(&mut web, "Bob").await;
    let open = open_reports(&mut moderation, &moderator).await;
    assert_eq!(
        open.iter().map(|r| (r.id, r.target)).collect::<Vec<_>>(),
        vec![(id, rude), (other, dull)]
    );
    let again = within(moderation.report(with_session(report(rude, ""), &bob)))
        .await
        .expect_err("still reported once");
    assert_eq!(again.code(), Code::AlreadyExists, "{again:?}");

    // Deleting the message closes its report; dismissing closes the other.
    within(web.delete(with_session(delete(rude), &moderator)))
        .await
        .expect("deleted");
    assert_eq!(
        open_reports(&mut moderation, &moderator)
            .await
            .iter()
            .map(|r| r.id)
            .collect::<Vec<_>>(),
        vec![other]
    );
    let refused =
        within(moderation.dismiss_report(with_session(DismissReportRequest { id: other }, &bob)))
            .await
            .expect_err("bob is no moderator");
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    let audit_id = within(
        moderation.dismiss_report(with_session(DismissReportRequest { id: other }, &moderator)),
    )
    .await
    .expect("dismissed")
    .into_inner()
    .audit_id;
    assert!(open_reports(&mut moderation, &moderator).await.is_empty());
    let twice = within(
        moderation.dismiss_report(with_session(DismissReportRequest { id: other }, &moderator)),
    )
    .await
    .expect_err("closed already");
    assert_eq!(twice.code(), Code::NotFound, "{twice:?}");
    let entries = within(moderation.audit_log(with_session(
        chat_proto::AuditRequest::default(),
        &moderator,
    )))
    .await
    .expect("audit")
    .into_inner()
    .entries;
    let last = entries.last().expect("an entry");
    assert_eq!(
        (
            last.id,
            last.action.as_str(),
            last.target,
            last.moderator.as_str()
        ),
        (audit_id, "dismiss_report", other, "Mod")
    );
}

#[tokio::test]
async fn a_topic_and_slow_mode_reach_every_stream_of_the_room_and_outlive_a_restart() {
    let (config, _dir) = moderated_config();
    let server = TestServer::start_with(config.clone()).await;
    let mut web = server.web();
    let mut moderation = ModerationClient::new(channel(&server.url()).await);
    let moderator = join_with_key(&mut web, "Mod", KEY)
        .await
        .expect("joined")
        .token;
    let ada = join(&mut web, "Ada").await;
    let mut adas = stream_as(&mut web, &ada, 0).await;
    let topic = |topic: &str| TopicRequest {
        room: "general".into(),
        topic: topic.into(),
    };

    let refused = within(moderation.set_topic(with_session(topic("mine now"), &ada)))
        .await
        .expect_err("ada is no moderator");
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    let refused = within(moderation.set_topic(with_session(topic(&"x".repeat(201)), &moderator)))
        .await
        .expect_err("too long");
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    let refused = within(moderation.set_topic(with_session(
        TopicRequest {
            room: "nowhere".into(),
            topic: "hi".into(),
        },
        &moderator,
    )))
    .await
    .expect_err("no such room");
    assert_eq!(refused.code(), Code::NotFound, "{refused:?}");

    within(moderation.set_topic(with_session(topic("  Be kind  "), &moderator)))
        .await
        .expect("topic set");
    let Event::Room(room) = next_chat_event(&mut adas).await else {
        panic!("expected the room's new settings");
    };
    assert_eq!(
        (room.name.as_str(), room.topic.as_str()),
        ("general", "Be kind")
    );
    within(moderation.set_slow_mode(with_session(
        SlowModeRequest {
            room: "general".into(),
            seconds: 30,
        },
        &moderator,
    )))
    .await
    .expect("slow");
    let Event::Room(room) = next_chat_event(&mut adas).await else {
        panic!("expected the room's new settings");
    };
    assert_eq!(
        (room.topic.as_str(), room.slow_mode_seconds),
        ("Be kind", 30)
    );

    server.stop().await;
    let server = TestServer::start_with(config).await;
    let mut web = server.web();
    let rooms = within(web.list_rooms(chat_proto::ListRoomsRequest {}))
        .await
        .expect("rooms")
        .into_inner()
        .rooms;
    assert_eq!(
        (rooms[0].topic.as_str(), rooms[0].slow_mode_seconds),
        ("Be kind", 30)
    );
}
