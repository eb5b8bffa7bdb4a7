//! Moderation in cluster mode: three replicas on one three-node NATS
//! cluster, every one with the same moderators and key. A moderator's
//! session made on one replica moderates on every other; a mute made
//! through one replica holds on all of them, and a lift through another
//! ends it everywhere; a ban ends the banned person's streams on every
//! replica; the audit log reads the same from any replica; reports and
//! topics reach the streams of every replica.

use chat_proto::moderation_client::ModerationClient;
use chat_proto::{AuditRequest, BanRequest, DeleteRequest, Event, LiftRequest, MuteRequest};
use chat_server::Config;
use chat_testkit::nats::NatsCluster;
use tonic::Code;

use crate::changes::{delete, join, say};
use crate::common::{
    TestServer, channel, chat, next_chat_event, subscribe_after, unthrottled, with_session, within,
};
use crate::moderation::{KEY, join_with_key, key_file};

/// Three replicas on `cluster` where "Mod" moderates with [`KEY`].
async fn moderated_replicas(cluster: &NatsCluster) -> (Vec<TestServer>, tempfile::TempDir) {
    let (dir, path) = key_file(KEY, 0o600);
    let mut servers = Vec::new();
    for _ in 0..3 {
        let config = Config {
            nats: Some(cluster.urls()),
            moderators: vec!["Mod".into()],
            moderator_key_file: Some(path.clone()),
            ..unthrottled(Config::with_addr("127.0.0.1:0"))
        };
        servers.push(TestServer::start_with(config).await);
    }
    (servers, dir)
}

/// Sends as `token` through `server` until the answer is `refused` or not
/// (each try a real call; the cluster's watch makes it so in milliseconds).
async fn until_muted(server: &TestServer, token: &str, refused: bool) {
    let mut web = server.web();
    within(async {
        loop {
            match web.send(with_session(chat("", "anyone?"), token)).await {
                Err(status) if refused => {
                    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
                    assert!(
                        status.message().contains("muted you in #general"),
                        "{status:?}"
                    );
                    return;
                }
                Ok(_) if !refused => return,
                Ok(_) => {}
                Err(status) => assert_eq!(status.code(), Code::PermissionDenied, "{status:?}"),
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await;
}

#[tokio::test]
async fn mutes_and_bans_through_one_replica_hold_on_all_and_a_lift_through_another_ends_them() {
    let cluster = NatsCluster::start().await.expect("a ready NATS cluster");
    let (servers, _dir) = moderated_replicas(&cluster).await;
    let mut first = servers[0].web();
    let moderator = join_with_key(&mut first, "Mod", KEY)
        .await
        .expect("joined")
        .token;
    let ada = join(&mut servers[1].web(), "Ada").await;

    // The moderator's session, made on replica 0, moderates on replica 2.
    let spam = say(&mut servers[1].web(), &ada, "spam").await;
    let (_, mut live) = subscribe_after(&mut servers[1].web(), spam).await;
    within(servers[2].web().delete(with_session(
        DeleteRequest {
            reason: "spam".into(),
            ..delete(spam)
        },
        &moderator,
    )))
    .await
    .expect("deleted through another replica");
    let Event::Change(change) = next_chat_event(&mut live).await else {
        panic!("expected the deletion");
    };
    assert!(change.by_moderator);

    // Muted through replica 0: refused on every replica.
    let mut moderation = ModerationClient::new(channel(&servers[0].url()).await);
    let muted_at = within(moderation.mute(with_session(
        MuteRequest {
            room: "general".into(),
            username: "Ada".into(),
            seconds: 0,
            reason: "cool down".into(),
        },
        &moderator,
    )))
    .await
    .expect("muted")
    .into_inner()
    .audit_id;
    for server in &servers {
        until_muted(server, &ada, true).await;
    }

    // Lifted through replica 2: Ada posts through every replica again.
    let mut elsewhere = ModerationClient::new(channel(&servers[2].url()).await);
    within(elsewhere.lift(with_session(
        LiftRequest {
            username: "ada".into(),
            room: String::new(),
        },
        &moderator,
    )))
    .await
    .expect("lifted");
    for server in &servers {
        until_muted(server, &ada, false).await;
    }

    // A ban through replica 0 ends Bob's streams on replicas 1 and 2.
    let bob = join(&mut servers[2].web(), "Bob").await;
    let mut streams = Vec::new();
    for server in &servers[1..] {
        let mut stream = within(
            server
                .web()
                .subscribe(with_session(chat_proto::SubscribeRequest::default(), &bob)),
        )
        .await
        .expect("subscribed")
        .into_inner();
        within(stream.message()).await.expect("ready");
        streams.push(stream);
    }
    within(moderation.ban(with_session(
        BanRequest {
            username: "Bob".into(),
            seconds: 60,
            reason: "spam".into(),
            address: false,
        },
        &moderator,
    )))
    .await
    .expect("banned");
    for mut stream in streams {
        let ended = loop {
            match within(stream.message()).await {
                Ok(Some(_)) => {}
                Ok(None) => panic!("ended without a status"),
                Err(status) => break status,
            }
        };
        assert_eq!(ended.code(), Code::PermissionDenied, "{ended:?}");
        assert!(ended.message().contains("banned you"), "{ended:?}");
    }

    // One audit log, read through any replica.
    let mut reader = ModerationClient::new(channel(&servers[1].url()).await);
    let entries = within(reader.audit_log(with_session(AuditRequest::default(), &moderator)))
        .await
        .expect("audit log")
        .into_inner()
        .entries;
    let actions: Vec<_> = entries
        .iter()
        .map(|e| (e.action.as_str(), e.username.as_str(), e.moderator.as_str()))
        .collect();
    assert_eq!(
        actions,
        [
            ("delete", "Ada", "Mod"),
            ("mute", "Ada", "Mod"),
            ("lift", "ada", "Mod"),
            ("ban", "Bob", "Mod")
        ]
    );
    assert_eq!(entries[1].id, muted_at);
    assert_eq!(entries[0].target, spam);
}

#[tokio::test]
async fn reports_and_topics_made_through_one_replica_reach_the_streams_of_the_others() {
    let cluster = NatsCluster::start().await.expect("a ready NATS cluster");
    let (servers, _dir) = moderated_replicas(&cluster).await;
    let moderator = join_with_key(&mut servers[0].web(), "Mod", KEY)
        .await
        .expect("joined")
        .token;
    let ada = join(&mut servers[0].web(), "Ada").await;
    let bob = join(&mut servers[1].web(), "Bob").await;
    let rude = say(&mut servers[0].web(), &ada, "rude").await;
    let subscribed = |server: &TestServer, token: &str| {
        let mut web = server.web();
        let request = with_session(
            chat_proto::SubscribeRequest {
                after_id: rude,
                ..Default::default()
            },
            token,
        );
        async move {
            let mut stream = within(web.subscribe(request))
                .await
                .expect("subscribed")
                .into_inner();
            within(stream.message()).await.expect("ready");
            stream
        }
    };
    let mut moderators = subscribed(&servers[2], &moderator).await;
    let mut adas = subscribed(&servers[0], &ada).await;

    // Reported through replica 1: the moderator's stream on replica 2 hears.
    let report = |token: &str| {
        with_session(
            chat_proto::ReportRequest {
                room: "general".into(),
                id: rude,
                reason: "rude".into(),
            },
            token,
        )
    };
    let id = within(ModerationClient::new(channel(&servers[1].url()).await).report(report(&bob)))
        .await
        .expect("reported")
        .into_inner()
        .audit_id;
    let Event::Report(told) = next_chat_event(&mut moderators).await else {
        panic!("expected the report on the moderator's stream");
    };
    assert_eq!(
        (told.id, told.target, told.username.as_str()),
        (id, rude, "Bob")
    );
    // Once per message per person, whichever replica is asked.
    let again =
        within(ModerationClient::new(channel(&servers[2].url()).await).report(report(&bob)))
            .await
            .expect_err("reported already");
    assert_eq!(again.code(), Code::AlreadyExists, "{again:?}");

    // A topic set through replica 1 reaches Ada's stream on replica 0.
    within(
        ModerationClient::new(channel(&servers[1].url()).await).set_topic(with_session(
            chat_proto::TopicRequest {
                room: "general".into(),
                topic: "be kind".into(),
            },
            &moderator,
        )),
    )
    .await
    .expect("topic set");
    let Event::Room(room) = next_chat_event(&mut adas).await else {
        panic!("expected the room's new topic");
    };
    assert_eq!(room.topic, "be kind");

    // Deleted through replica 0: the report is closed on every replica.
    within(
        servers[0]
            .web()
            .delete(with_session(delete(rude), &moderator)),
    )
    .await
    .expect("deleted");
    for server in &servers {
        let mut moderation = ModerationClient::new(channel(&server.url()).await);
        within(async {
            loop {
                let open = moderation
                    .list_reports(with_session(chat_proto::ListReportsRequest {}, &moderator))
                    .await
                    .expect("reports")
                    .into_inner()
                    .reports;
                if open.is_empty() {
                    return;
                }
                assert_eq!(open[0].id, id);
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        })
        .await;
    }
}
