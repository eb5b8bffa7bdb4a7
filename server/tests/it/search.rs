//! `Search` through a real server: words, phrases, prefixes, `from:` and
//! `in:`, case and diacritics ignored, newest first across rooms, by pages;
//! messages in their current state (an edit found by its new words only, a
//! deletion never); what retention removed is not found; the history a
//! database had before search is indexed at start while the server serves;
//! searches have a budget of their own; on three replicas, each finds what
//! was written through another, and a replica rebuilds its index at start.

use std::path::{Path, PathBuf};
use std::time::Duration;

use chat_proto::{ChatMessage, CreateRoomRequest, SearchReply, SearchRequest};
use chat_server::Config;
use chat_server::log::sqlite::Location;
use chat_testkit::nats::NatsCluster;
use tonic::Code;

use crate::changes::{delete, edit, join};
use crate::common::{TestServer, WebClient, unthrottled, with_session, within};

fn query(text: &str) -> SearchRequest {
    SearchRequest {
        query: text.into(),
        ..Default::default()
    }
}

async fn search(web: &mut WebClient, request: SearchRequest) -> SearchReply {
    within(web.search(request))
        .await
        .expect("a search")
        .into_inner()
}

/// The hits' texts, newest first.
async fn texts(web: &mut WebClient, text: &str) -> Vec<String> {
    search(web, query(text))
        .await
        .hits
        .into_iter()
        .map(|hit| hit.message.unwrap_or_default().message)
        .collect()
}

/// Sends `text` to `room` as `token`'s session; returns its id.
async fn say_in(web: &mut WebClient, token: &str, room: &str, text: &str) -> u64 {
    let message = ChatMessage {
        room: room.into(),
        message: text.into(),
        ..Default::default()
    };
    within(web.send(with_session(message, token)))
        .await
        .expect("sent")
        .into_inner()
        .id
}

async fn create_room(web: &mut WebClient, name: &str) {
    within(web.create_room(CreateRoomRequest {
        name: name.into(),
        topic: String::new(),
    }))
    .await
    .expect("room created");
}

/// Asks `text` again until the hits' texts are `expected` (a replica's
/// index, or the history indexed at start, catches up in its own time).
async fn eventually(web: &mut WebClient, text: &str, expected: &[&str]) {
    tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            if texts(web, text).await == expected {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("searching {text:?} never found {expected:?}"));
}

#[tokio::test]
async fn words_phrases_prefixes_and_people_are_found_newest_first_in_current_state() {
    let server = TestServer::start_with(unthrottled(Config::with_addr("127.0.0.1:0"))).await;
    let mut web = server.web();
    let ada = join(&mut web, "Ada").await;
    let bob = join(&mut web, "Bob").await;
    create_room(&mut web, "food").await;
    say_in(&mut web, &ada, "general", "Saša is bringing ćevapi tonight").await;
    say_in(&mut web, &bob, "food", "the best ćevapčići are grilled").await;
    let typo = say_in(&mut web, &bob, "general", "who wants grilled cevapi?").await;
    let gone = say_in(&mut web, &ada, "food", "secret ćevapi recipe").await;
    say_in(&mut web, &ada, "general", "我爱北京 and 東京").await;

    // Case and diacritics do not count; newest first across rooms; the
    // terms are the words as written.
    let found = search(&mut web, query("CEVAPI")).await;
    let hits: Vec<(&str, &str)> = found
        .hits
        .iter()
        .map(|hit| {
            let m = hit.message.as_ref().expect("a message");
            (m.room.as_str(), m.message.as_str())
        })
        .collect();
    assert_eq!(
        hits,
        [
            ("food", "secret ćevapi recipe"),
            ("general", "who wants grilled cevapi?"),
            ("general", "Saša is bringing ćevapi tonight"),
        ]
    );
    assert_eq!(found.hits[2].terms, ["ćevapi"]);
    assert!(found.next_page.is_empty());
    let sasa = search(&mut web, query("sasa")).await;
    assert_eq!(sasa.hits[0].terms, ["Saša"]);
    assert_eq!(
        texts(&mut web, "cevap*").await.len(),
        4,
        "a prefix finds ćevapčići too"
    );
    assert_eq!(
        texts(&mut web, "\"grilled cevapi\"").await,
        ["who wants grilled cevapi?"]
    );
    assert_eq!(texts(&mut web, "grilled cevapi").await.len(), 1);
    assert_eq!(texts(&mut web, "北京").await, ["我爱北京 and 東京"]);

    // from: (any spelling of the name) and in: (or the room field).
    assert_eq!(
        texts(&mut web, "cevapi from:ada").await,
        ["secret ćevapi recipe", "Saša is bringing ćevapi tonight"]
    );
    assert_eq!(texts(&mut web, "from:BOB").await.len(), 2, "filters alone");
    assert_eq!(
        texts(&mut web, "cevap* in:#food").await,
        ["secret ćevapi recipe", "the best ćevapčići are grilled"]
    );
    let in_general = search(
        &mut web,
        SearchRequest {
            room: "general".into(),
            ..query("grilled")
        },
    )
    .await;
    assert_eq!(in_general.hits.len(), 1);

    // An edit is found by its new words only; a deletion never.
    within(web.edit(with_session(edit(typo, "who wants pljeskavica?"), &bob)))
        .await
        .expect("edited");
    let in_food = chat_proto::DeleteRequest {
        room: "food".into(),
        ..delete(gone)
    };
    within(web.delete(with_session(in_food, &ada)))
        .await
        .expect("deleted");
    assert_eq!(
        texts(&mut web, "cevapi").await,
        ["Saša is bringing ćevapi tonight"]
    );
    let edited = search(&mut web, query("pljeskavica")).await;
    assert_eq!(edited.hits.len(), 1);
    assert!(
        edited.hits[0]
            .message
            .as_ref()
            .expect("a message")
            .edited_at
            > 0
    );
    assert!(texts(&mut web, "secret").await.is_empty());

    // Pages: 2 at a time, each one older than the last, until no more.
    for i in 0..5 {
        say_in(&mut web, &ada, "general", &format!("page test {i}")).await;
    }
    let mut seen = Vec::new();
    let mut page = String::new();
    loop {
        let reply = search(
            &mut web,
            SearchRequest {
                limit: 2,
                page: page.clone(),
                ..query("page test")
            },
        )
        .await;
        assert!(reply.hits.len() <= 2);
        seen.extend(
            reply
                .hits
                .into_iter()
                .map(|hit| hit.message.unwrap_or_default().message),
        );
        if reply.next_page.is_empty() {
            break;
        }
        page = reply.next_page;
    }
    assert_eq!(
        seen,
        (0..5)
            .rev()
            .map(|i| format!("page test {i}"))
            .collect::<Vec<_>>()
    );

    // Refusals, each saying why.
    for (request, code, words) in [
        (query("   "), Code::InvalidArgument, "empty"),
        (query("\"open"), Code::InvalidArgument, "quote"),
        (query("from:"), Code::InvalidArgument, "from:"),
        (query("in:nowhere cevapi"), Code::NotFound, "nowhere"),
        (
            SearchRequest {
                room: "nowhere".into(),
                ..query("cevapi")
            },
            Code::NotFound,
            "nowhere",
        ),
        (
            SearchRequest {
                room: "general".into(),
                ..query("cevapi in:food")
            },
            Code::InvalidArgument,
            "one room",
        ),
        (
            SearchRequest {
                page: "not-a-page".into(),
                ..query("cevapi")
            },
            Code::InvalidArgument,
            "next_page",
        ),
    ] {
        let refused = within(web.search(request)).await.expect_err("refused");
        assert_eq!(refused.code(), code, "{refused:?}");
        assert!(refused.message().contains(words), "{refused:?}");
    }
}

#[tokio::test]
async fn searches_have_a_budget_per_address_of_their_own() {
    let mut config = Config::with_addr("127.0.0.1:0");
    config.limits.search_rate = 0.1;
    config.limits.search_burst = 2;
    let server = TestServer::start_with(config).await;
    let mut web = server.web();
    let ada = join(&mut web, "Ada").await;
    say_in(&mut web, &ada, "general", "hello").await;
    assert_eq!(texts(&mut web, "hello").await.len(), 1);
    assert_eq!(texts(&mut web, "hello").await.len(), 1);
    let refused = within(web.search(query("hello")))
        .await
        .expect_err("over the budget");
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(
        refused.message().contains("searching too fast"),
        "{refused:?}"
    );
    // Searching did not spend the sender's budget.
    say_in(&mut web, &ada, "general", "still here").await;
}

/// What retention removes leaves the index in the same transaction.
#[tokio::test]
async fn what_retention_removed_is_never_found() {
    let mut config = unthrottled(Config::with_addr("127.0.0.1:0"));
    config.retain = chat_server::log::Retention::Count(3);
    let server = TestServer::start_with(config).await;
    let mut web = server.web();
    let ada = join(&mut web, "Ada").await;
    for i in 1..=6 {
        say_in(&mut web, &ada, "general", &format!("zebra {i}")).await;
    }
    // Retention runs at most once a second, with a write: write until it
    // has run after the zebras.
    tokio::time::timeout(Duration::from_secs(60), async {
        while texts(&mut web, "zebra").await.len() > 3 {
            say_in(&mut web, &ada, "general", "tick").await;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await
    .expect("retention ran");
    assert!(
        texts(&mut web, "zebra")
            .await
            .iter()
            .all(|t| t != "zebra 1" && t != "zebra 2" && t != "zebra 3")
    );
}

/// An unthrottled server's config on a database file in `dir`, and the file.
fn on_file(dir: &tempfile::TempDir) -> (Config, PathBuf) {
    let db = dir.path().join("chat.db");
    let mut config = unthrottled(Config::with_addr("127.0.0.1:0"));
    config.db = Location::File(db.clone());
    (config, db)
}

/// Takes a stopped server's database back to an older schema with `sql`.
fn set_back(db: &Path, sql: &str) {
    rusqlite::Connection::open(db)
        .expect("the database")
        .execute_batch(sql)
        .expect("back to the older schema");
}

/// A database written before search (its tables dropped, its schema
/// version set back) gets its history indexed at start, newest first,
/// while the server takes messages.
#[tokio::test]
async fn the_history_from_before_search_is_indexed_while_the_server_serves() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (config, db) = on_file(&dir);
    let server = TestServer::start_with(config.clone()).await;
    let mut web = server.web();
    let ada = join(&mut web, "Ada").await;
    say_in(&mut web, &ada, "general", "the oldest needle").await;
    for i in 0..1_500 {
        say_in(&mut web, &ada, "general", &format!("hay {i}")).await;
    }
    server.stop().await;
    set_back(
        &db,
        "DROP TABLE search_text; DROP TABLE search_rows; DROP TABLE search_backfill;
         ALTER TABLE messages DROP COLUMN search_seq;
         PRAGMA user_version = 3;",
    );

    let server = TestServer::start_with(config).await;
    let mut web = server.web();
    let ada = join(&mut web, "Ada").await;
    say_in(&mut web, &ada, "general", "a new needle").await;
    eventually(&mut web, "needle", &["a new needle", "the oldest needle"]).await;
    assert_eq!(texts(&mut web, "hay").await.len(), 20);
    // The fixture from before rooms: its two kept messages are found.
    let (_old_dir, config) = crate::rooms::pre_rooms_db();
    let fixture = TestServer::start_with(config).await;
    eventually(&mut fixture.web(), "fourth", &["fourth"]).await;
}

/// A database from search's first schema (each message's place kept in an
/// index of its own, not in its row) moves its places into the rows at
/// start, and edits and deletions still reach the index.
#[tokio::test]
async fn a_database_from_the_first_search_schema_keeps_its_index_working() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (config, db) = on_file(&dir);
    let server = TestServer::start_with(config.clone()).await;
    let mut web = server.web();
    let ada = join(&mut web, "Ada").await;
    say_in(&mut web, &ada, "general", "first marker").await;
    let edited = say_in(&mut web, &ada, "general", "second marker, to be edited").await;
    let deleted = say_in(&mut web, &ada, "general", "third marker, to be deleted").await;
    say_in(&mut web, &ada, "general", "fourth marker, kept").await;
    server.stop().await;
    set_back(
        &db,
        "CREATE UNIQUE INDEX search_rows_by_message ON search_rows (room, id);
         ALTER TABLE messages DROP COLUMN search_seq;
         PRAGMA user_version = 4;",
    );

    let server = TestServer::start_with(config).await;
    let mut web = server.web();
    let ada = join(&mut web, "Ada").await;
    within(web.edit(with_session(
        edit(edited, "second marker, now pljeskavica"),
        &ada,
    )))
    .await
    .expect("edited");
    within(web.delete(with_session(delete(deleted), &ada)))
        .await
        .expect("deleted");
    say_in(&mut web, &ada, "general", "fifth marker, new").await;
    assert_eq!(
        texts(&mut web, "marker").await,
        [
            "fifth marker, new",
            "fourth marker, kept",
            "second marker, now pljeskavica",
            "first marker",
        ]
    );
    assert!(texts(&mut web, "edited").await.is_empty());
    assert!(texts(&mut web, "deleted").await.is_empty());
}

#[tokio::test]
async fn every_replica_finds_what_another_stored_and_rebuilds_its_index_at_start() {
    let cluster = NatsCluster::start().await.expect("a ready NATS cluster");
    let dir = tempfile::tempdir().expect("temp dir");
    let replica = |file: Option<&str>| Config {
        nats: Some(cluster.urls()),
        search_db: file.map(|f| dir.path().join(f)),
        ..unthrottled(Config::with_addr("127.0.0.1:0"))
    };
    let mut servers = Vec::new();
    for file in [None, Some("one.db"), Some("two.db")] {
        servers.push(TestServer::start_with(replica(file)).await);
    }
    let mut writer = servers[0].web();
    let ada = join(&mut writer, "Ada").await;
    say_in(&mut writer, &ada, "general", "Saša says hello").await;
    let typo = say_in(&mut writer, &ada, "general", "grilled cevapi at noon").await;
    let gone = say_in(&mut writer, &ada, "general", "a secret cevapi place").await;
    // A room made after the replicas started.
    create_room(&mut writer, "food").await;
    say_in(&mut writer, &ada, "food", "ćevapi in the new room").await;
    for server in &servers[1..] {
        let mut reader = server.web();
        eventually(&mut reader, "sasa", &["Saša says hello"]).await;
        eventually(
            &mut reader,
            "cevapi",
            &[
                "ćevapi in the new room",
                "a secret cevapi place",
                "grilled cevapi at noon",
            ],
        )
        .await;
    }

    // Changes through replica 1 reach replica 2's index.
    // (A session made on one replica holds on every other.)
    let mut other = servers[1].web();
    let ada_there = ada.clone();
    within(other.edit(with_session(
        edit(typo, "grilled pljeskavica at noon"),
        &ada_there,
    )))
    .await
    .expect("edited");
    within(other.delete(with_session(delete(gone), &ada_there)))
        .await
        .expect("deleted");
    let mut third = servers[2].web();
    eventually(&mut third, "cevapi", &["ćevapi in the new room"]).await;
    eventually(&mut third, "pljeskavica", &["grilled pljeskavica at noon"]).await;

    // Replica 2 again, from nothing: its file is rebuilt from the streams.
    servers.pop().expect("replica 2").stop().await;
    let again = TestServer::start_with(replica(Some("two.db"))).await;
    let mut web = again.web();
    eventually(&mut web, "cevapi", &["ćevapi in the new room"]).await;
    eventually(&mut web, "grilled", &["grilled pljeskavica at noon"]).await;
    assert!(texts(&mut web, "secret").await.is_empty());
}
