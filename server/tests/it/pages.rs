//! `History` through a real server: a room's past by pages, before an id or
//! around one, messages only and in their current state (an edit's text,
//! reactions, a deletion's tombstone), with the flags that say whether more
//! is stored either side; what retention removed is not found; on three
//! replicas, any replica pages through what was written through another.

use chat_proto::{HistoryReply, HistoryRequest};
use chat_server::Config;
use chat_testkit::nats::NatsCluster;
use tonic::Code;

use crate::changes::{delete, edit, join, react, say};
use crate::common::{TestServer, WebClient, unthrottled, with_session, within};

fn before(before_id: u64, limit: u32) -> HistoryRequest {
    HistoryRequest {
        before_id,
        limit,
        ..Default::default()
    }
}

fn around(around_id: u64, limit: u32) -> HistoryRequest {
    HistoryRequest {
        around_id,
        limit,
        ..Default::default()
    }
}

async fn page(web: &mut WebClient, request: HistoryRequest) -> HistoryReply {
    within(web.history(request))
        .await
        .expect("a page")
        .into_inner()
}

fn ids(reply: &HistoryReply) -> Vec<u64> {
    reply.messages.iter().map(|m| m.id).collect()
}

/// 120 messages in general, each third one's id remembered, with changes
/// in between: message 2 edited, 3 reacted to, 4 deleted. The messages'
/// ids, oldest first.
async fn busy_room(web: &mut WebClient) -> Vec<u64> {
    let ada = join(web, "Ada").await;
    let mut messages = Vec::new();
    for i in 1..=120 {
        messages.push(say(web, &ada, &format!("message {i}")).await);
        match i {
            2 => {
                within(web.edit(with_session(edit(messages[1], "message 2, fixed"), &ada)))
                    .await
                    .expect("edited");
            }
            3 => {
                within(web.react(with_session(react(messages[2], "👍"), &ada)))
                    .await
                    .expect("reacted");
            }
            4 => {
                within(web.delete(with_session(delete(messages[3]), &ada)))
                    .await
                    .expect("deleted");
            }
            _ => {}
        }
    }
    messages
}

#[tokio::test]
async fn pages_go_back_to_the_start_in_current_state_and_around_a_message() {
    let server = TestServer::start_with(unthrottled(Config::with_addr("127.0.0.1:0"))).await;
    let mut web = server.web();
    let messages = busy_room(&mut web).await;

    // The newest 50, then the 50 before, then the first 20.
    let newest = page(&mut web, before(0, 0)).await;
    assert_eq!(ids(&newest), messages[70..].to_vec());
    assert!(newest.more_before && !newest.more_after);
    let middle = page(&mut web, before(newest.messages[0].id, 50)).await;
    assert_eq!(ids(&middle), messages[20..70].to_vec());
    assert!(middle.more_before && middle.more_after);
    let first = page(&mut web, before(middle.messages[0].id, 50)).await;
    assert_eq!(ids(&first), messages[..20].to_vec());
    assert!(!first.more_before, "this page has the room's first message");
    assert!(first.more_after);

    // Messages only, as they stand now.
    let texts: Vec<&str> = first.messages[..5]
        .iter()
        .map(|m| m.message.as_str())
        .collect();
    assert_eq!(
        texts,
        [
            "message 1",
            "message 2, fixed",
            "message 3",
            "",
            "message 5"
        ]
    );
    assert!(first.messages[1].edited_at > 0);
    assert_eq!(first.messages[2].reactions[0].emoji, "👍");
    assert!(first.messages[3].deleted, "a deletion's tombstone");

    // Limits: above 200 is 200.
    let all = page(&mut web, before(0, 500)).await;
    assert_eq!(all.messages.len(), 120);
    assert!(!all.more_before);

    // Around message 60: 5 either side; at the start, fewer, not made up.
    let at = messages[59];
    let near = page(&mut web, around(at, 10)).await;
    assert_eq!(ids(&near), messages[54..65].to_vec());
    assert!(near.more_before && near.more_after);
    let edge = page(&mut web, around(messages[1], 10)).await;
    assert_eq!(ids(&edge), messages[..7].to_vec());
    assert!(!edge.more_before && edge.more_after);

    // Refusals, each saying why.
    let change_id = messages[1] + 1;
    for (request, code, words) in [
        (
            HistoryRequest {
                before_id: 10,
                around_id: 5,
                ..Default::default()
            },
            Code::InvalidArgument,
            "not both",
        ),
        (around(change_id, 10), Code::InvalidArgument, "change"),
        (around(99_999, 10), Code::NotFound, "no message 99999"),
        (
            HistoryRequest {
                room: "nowhere".into(),
                ..Default::default()
            },
            Code::NotFound,
            "nowhere",
        ),
    ] {
        let refused = within(web.history(request)).await.expect_err("refused");
        assert_eq!(refused.code(), code, "{refused:?}");
        assert!(refused.message().contains(words), "{refused:?}");
    }
}

/// `tests/fixtures/pre-rooms.db` keeps ids 3 and 4; retention removed 1 and 2.
#[tokio::test]
async fn what_retention_removed_is_not_found_and_the_first_page_says_so() {
    let (_dir, config) = crate::rooms::pre_rooms_db();
    let server = TestServer::start_with(config).await;
    let mut web = server.web();
    let kept = page(&mut web, before(0, 0)).await;
    assert_eq!(ids(&kept), [3, 4]);
    assert!(!kept.more_before, "the first stored message is the start");
    let gone = within(web.history(around(1, 10)))
        .await
        .expect_err("removed by retention");
    assert_eq!(gone.code(), Code::NotFound, "{gone:?}");
    let near = page(&mut web, around(3, 10)).await;
    assert_eq!(ids(&near), [3, 4]);
}

#[tokio::test]
async fn any_replica_pages_through_what_another_stored() {
    let cluster = NatsCluster::start().await.expect("a ready NATS cluster");
    let mut servers = Vec::new();
    for _ in 0..3 {
        let config = Config {
            nats: Some(cluster.urls()),
            ..unthrottled(Config::with_addr("127.0.0.1:0"))
        };
        servers.push(TestServer::start_with(config).await);
    }
    let messages = busy_room(&mut servers[0].web()).await;
    let mut reader = servers[2].web();
    // The last one written through replica 0 is a page away on replica 2.
    let newest = within(async {
        loop {
            let newest = page(&mut reader, before(0, 50)).await;
            if newest.messages.last().map(|m| m.id) == messages.last().copied() {
                return newest;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await;
    assert_eq!(ids(&newest), messages[70..].to_vec());
    let middle = page(&mut reader, before(newest.messages[0].id, 50)).await;
    let first = page(&mut reader, before(middle.messages[0].id, 50)).await;
    assert_eq!(ids(&first), messages[..20].to_vec());
    assert!(!first.more_before);
    assert_eq!(first.messages[1].message, "message 2, fixed");
    assert_eq!(first.messages[2].reactions[0].emoji, "👍");
    assert!(first.messages[3].deleted && first.messages[3].message.is_empty());
    let near = page(&mut servers[1].web(), around(messages[59], 10)).await;
    assert_eq!(ids(&near), messages[54..65].to_vec());
}
