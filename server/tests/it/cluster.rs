//! Cluster mode: chat servers sharing a three-node NATS JetStream cluster
//! (`--nats`), which keeps the chat going when a node dies. The cluster is
//! real `nats-server` processes on loopback ports (`chat_testkit::nats`, one
//! cluster at a time; `scripts/install --tests` installs the binary).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::{
    self, NativeClient, TestServer, chat, http1_request, next_chat_event, next_event_message,
    next_message, open_chat_stream, subscribe, unthrottled, with_session, within,
};
use chat_proto::{
    ChatEvent, ChatMessage, CreateRoomRequest, Event, JoinReply, JoinRequest, ListRoomsRequest,
    SubscribeRequest, TypingRequest,
};
use chat_server::Config;
use chat_testkit::nats::{NODES, NatsCluster, READY_TIMEOUT};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpStream;
use tonic::{Code, Streaming};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

/// The harness itself: three nodes that clients reach, a stream with three
/// replicas that keeps a leader when a node is killed, and the node back in
/// the cluster after a restart.
#[tokio::test]
async fn nats_cluster_harness_survives_a_killed_node() {
    let mut cluster = NatsCluster::start().await.expect("a ready NATS cluster");

    let urls = cluster.urls();
    assert_eq!(urls.split(',').count(), NODES, "{urls}");
    for (i, url) in urls.split(',').enumerate() {
        assert_eq!(url, cluster.url(i));
        // A NATS server greets every client with INFO, naming itself.
        let addr = url.strip_prefix("nats://").expect("a nats:// URL");
        let stream = TcpStream::connect(addr).await.expect("connect to a node");
        let mut info = String::new();
        BufReader::new(stream)
            .read_line(&mut info)
            .await
            .expect("INFO from the node");
        assert!(info.starts_with("INFO {"), "{info}");
        assert!(
            info.contains(&format!("\"server_name\":\"{}\"", cluster.name(i))),
            "{info}"
        );
    }

    let created = cluster
        .jetstream_api(
            1,
            "STREAM.CREATE.harness",
            &json!({"name": "harness", "subjects": ["harness.>"], "num_replicas": 3}),
        )
        .await
        .expect("a reply from JetStream");
    assert!(created.get("error").is_none(), "{created}");
    eventually(async || cluster.stream_leader("harness").await.is_some()).await;

    cluster.kill(0).expect("kill -9 a NATS node");
    assert!(!cluster.is_running(0));
    assert!(
        cluster.get(0, "/healthz").await.is_none(),
        "node 0 still answers"
    );
    // The survivors agree on a meta leader, and the stream has a leader
    // among them.
    cluster.ready().await.expect("the NATS cluster ready");
    eventually(
        async || matches!(cluster.stream_leader("harness").await, Some(leader) if leader != 0),
    )
    .await;

    cluster.restart(0).await.expect("a NATS node back");
    let (status, body) = cluster.get(0, "/healthz").await.expect("node 0 answers");
    assert_eq!(status, 200, "{body}");
    let leader = cluster.meta_leader().await.expect("a meta leader");
    let jsz = cluster.monitoring(leader, "/jsz").await.expect("/jsz");
    assert_eq!(jsz["meta_cluster"]["cluster_size"], 3, "{jsz}");
    let peers = jsz["meta_cluster"]["replicas"]
        .as_array()
        .expect("the meta leader lists its peers");
    assert_eq!(peers.len(), NODES - 1, "{jsz}");
    assert!(peers.iter().all(|p| p["current"] == true), "{jsz}");
    // Node 0 has its copy of the stream back from its store.
    let jsz = cluster
        .monitoring(0, "/jsz?accounts=true&streams=true")
        .await
        .expect("/jsz");
    assert_eq!(jsz["streams"], 1, "{jsz}");
}

/// Polls `condition` until it holds, failing the test after [`READY_TIMEOUT`].
async fn eventually(mut condition: impl AsyncFnMut() -> bool) {
    tokio::time::timeout(READY_TIMEOUT, async {
        while !condition().await {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("timed out waiting for the NATS cluster");
}

/// A chat server in cluster mode on `cluster` (posting rate limit off: these
/// tests send quickly from few names).
pub(crate) async fn replica(cluster: &NatsCluster) -> TestServer {
    replica_reaching(cluster.urls()).await
}

/// A chat server in cluster mode that reaches NATS through `urls`.
async fn replica_reaching(urls: String) -> TestServer {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("chat_server=debug")
        .with_test_writer()
        .try_init();
    let config = Config {
        nats: Some(urls),
        ..unthrottled(Config::with_addr("127.0.0.1:0"))
    };
    TestServer::start_with(config).await
}

pub(crate) async fn replicas(cluster: &NatsCluster) -> Vec<TestServer> {
    let mut servers = Vec::new();
    for _ in 0..3 {
        servers.push(replica(cluster).await);
    }
    servers
}

fn with_nonce(username: &str, message: &str, nonce: &str) -> ChatMessage {
    ChatMessage {
        nonce: nonce.into(),
        ..chat(username, message)
    }
}

/// Subscribes after `after_id` (0: recent history), past `Ready`.
async fn subscribe_after(client: &mut NativeClient, after_id: u64) -> Streaming<ChatEvent> {
    common::subscribe_after(client, after_id).await.1
}

/// Sends `message` through `server`.
async fn sent(server: &TestServer, message: ChatMessage) -> chat_proto::SendReply {
    within(server.native().await.send(message))
        .await
        .expect("sent")
        .into_inner()
}

#[tokio::test]
async fn a_message_sent_through_any_replica_reaches_every_replica_once_with_one_id() {
    let cluster = NatsCluster::start().await.expect("a ready NATS cluster");
    let servers = replicas(&cluster).await;
    let mut streams = Vec::new();
    for server in &servers {
        streams.push(subscribe(&mut server.native().await, "reader").await);
    }
    let mut sent = Vec::new();
    for (i, server) in servers.iter().enumerate() {
        let reply = within(server.native().await.send(chat("ada", &format!("via {i}"))))
            .await
            .expect("sent")
            .into_inner();
        sent.push(reply.id);
    }
    assert_eq!(sent, [1, 2, 3], "ids come from the room's one stream");
    for stream in &mut streams {
        for (i, id) in sent.iter().enumerate() {
            let message = next_event_message(stream).await;
            assert_eq!(
                (message.id, message.message.as_str()),
                (*id, format!("via {i}").as_str())
            );
        }
    }
    // Once: nothing more arrives.
    for stream in &mut streams {
        let more = tokio::time::timeout(Duration::from_millis(300), stream.message()).await;
        assert!(
            !matches!(
                more,
                Ok(Ok(Some(ChatEvent {
                    event: Some(Event::Message(_))
                })))
            ),
            "{more:?}"
        );
    }
}

#[tokio::test]
async fn a_send_retried_on_another_replica_is_stored_once() {
    let cluster = NatsCluster::start().await.expect("a ready NATS cluster");
    let servers = replicas(&cluster).await;
    let mut stream = subscribe(&mut servers[2].native().await, "reader").await;
    let first = sent(&servers[0], with_nonce("ada", "once", "n-1")).await;
    // The reply was lost, say: the client sends the same message elsewhere.
    let again = sent(&servers[1], with_nonce("ada", "once", "n-1")).await;
    assert_eq!(
        (again.id, again.timestamp),
        (first.id, first.timestamp),
        "the retry is told the first copy's id and time"
    );
    // Someone else's nonce is their own.
    let other = sent(&servers[1], with_nonce("bob", "once", "n-1")).await;
    assert_eq!(other.id, first.id + 1);

    assert_eq!(next_event_message(&mut stream).await.id, first.id);
    assert_eq!(next_event_message(&mut stream).await.id, other.id);
    let history = subscribe_after(&mut servers[1].native().await, 0).await;
    let ids = ids_until(history, other.id).await;
    assert_eq!(ids, [first.id, other.id], "stored once");
}

#[tokio::test]
async fn paper_chat_stream_clients_on_different_replicas_talk() {
    let cluster = NatsCluster::start().await.expect("a ready NATS cluster");
    let servers = replicas(&cluster).await;
    let (ada_out, mut ada_in) = open_chat_stream(&mut servers[0].native().await).await;
    let (bob_out, mut bob_in) = open_chat_stream(&mut servers[1].native().await).await;
    servers[0].wait_for_subscribers(1).await;
    servers[1].wait_for_subscribers(1).await;

    ada_out
        .send(chat("ada", "hello bob"))
        .await
        .expect("queued");
    let heard = next_message(&mut bob_in).await;
    assert_eq!(
        (heard.username.as_str(), heard.message.as_str()),
        ("ada", "hello bob")
    );
    bob_out.send(chat("bob", "hi ada")).await.expect("queued");
    let heard = next_message(&mut ada_in).await;
    assert_eq!(
        (heard.username.as_str(), heard.message.as_str()),
        ("bob", "hi ada")
    );
    // Neither hears their own words back.
    let echo = tokio::time::timeout(Duration::from_millis(300), ada_in.message()).await;
    assert!(echo.is_err(), "ada heard {echo:?}");
}

#[tokio::test]
async fn a_client_resumes_on_another_replica_without_gap_or_duplicate() {
    let cluster = NatsCluster::start().await.expect("a ready NATS cluster");
    let servers = replicas(&cluster).await;
    let mut sender = servers[0].native().await;
    let mut first = subscribe_after(&mut servers[1].native().await, 0).await;
    for i in 1..=20 {
        within(sender.send(chat("ada", &format!("m{i}"))))
            .await
            .expect("sent");
    }
    let read = ids_until_count(&mut first, 10).await;
    drop(first);
    // On another replica, from the last id read; more keep coming.
    let mut resumed = subscribe_after(&mut servers[2].native().await, read[9]).await;
    for i in 21..=30 {
        within(sender.send(chat("ada", &format!("m{i}"))))
            .await
            .expect("sent");
    }
    let rest = ids_until_count(&mut resumed, 20).await;
    let all: Vec<u64> = read.into_iter().chain(rest).collect();
    assert_eq!(all, (1..=30).collect::<Vec<u64>>());
}

#[tokio::test]
async fn killing_a_rooms_stream_leader_pauses_writes_and_loses_nothing() {
    let mut cluster = NatsCluster::start().await.expect("a ready NATS cluster");
    let servers = replicas(&cluster).await;
    let mut stream = subscribe_after(&mut servers[2].native().await, 0).await;
    let mut acked = Vec::new();
    let mut sender = servers[0].native().await;
    for i in 0..5 {
        let reply = within(sender.send(with_nonce("ada", "before", &format!("b{i}"))))
            .await
            .expect("sent");
        acked.push(reply.into_inner().id);
    }
    let leader = cluster
        .stream_leader("CHAT_general")
        .await
        .expect("the room's stream has a leader");
    cluster.kill(leader).expect("kill -9 a NATS node");
    // Writes pause while a new leader is elected; a client retries with the
    // same nonce, and none is stored twice.
    let started = std::time::Instant::now();
    for i in 0..5 {
        let message = with_nonce("ada", "after", &format!("a{i}"));
        let id = loop {
            match tokio::time::timeout(Duration::from_secs(30), sender.send(message.clone())).await
            {
                Ok(Ok(reply)) => break reply.into_inner().id,
                Ok(Err(status)) => {
                    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
                    assert!(started.elapsed() < Duration::from_secs(60), "{status:?}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(_) => panic!("a Send hung through the election"),
            }
        };
        acked.push(id);
    }
    eprintln!(
        "writes paused for {:?} after the leader was killed",
        started.elapsed()
    );
    assert_eq!(acked, (1..=10).collect::<Vec<u64>>(), "no hole, no copy");
    // The stream opened before the kill stayed open and has every message.
    let ids = ids_until_count(&mut stream, 10).await;
    assert_eq!(ids, acked);
}

#[tokio::test]
async fn a_replica_without_nats_says_unavailable_and_catches_up_when_it_is_back() {
    let mut cluster = NatsCluster::start().await.expect("a ready NATS cluster");
    let server = replica(&cluster).await;
    let mut stream = subscribe_after(&mut server.native().await, 0).await;
    let mut client = server.native().await;
    within(client.send(chat("ada", "before")))
        .await
        .expect("sent");
    for i in 0..NODES {
        cluster.kill(i).expect("kill -9 a NATS node");
    }
    wait_for_health(&server, 503).await;
    // gRPC health says so too, for the service and for the server.
    wait_for_grpc_health(&server, ServingStatus::NotServing).await;
    // Operators see it too (the gauge follows within a quarter second).
    tokio::time::timeout(READY_TIMEOUT, async {
        loop {
            let metrics = http1_request(server.addr, "GET", "/metrics", &[], Vec::new()).await;
            if String::from_utf8_lossy(&metrics.body).contains("chat_log_available 0") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("chat_log_available says 0");
    let refused = within(client.send(chat("ada", "while down")))
        .await
        .expect_err("no NATS, no write");
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");

    cluster.restart_all().await.expect("the NATS nodes back");
    wait_for_health(&server, 200).await;
    wait_for_grpc_health(&server, ServingStatus::Serving).await;
    // Writes go through again (after the stream has a leader), and the
    // stream opened before the outage delivers them.
    let reply = loop {
        match within(client.send(with_nonce("ada", "after", "after-1"))).await {
            Ok(reply) => break reply.into_inner(),
            Err(status) => {
                assert_eq!(status.code(), Code::Unavailable, "{status:?}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    assert_eq!(reply.id, 2);
    assert_eq!(ids_until_count(&mut stream, 2).await, [1, 2]);
}

#[tokio::test]
async fn history_survives_restarting_everything() {
    let mut cluster = NatsCluster::start().await.expect("a ready NATS cluster");
    let server = replica(&cluster).await;
    let mut client = server.native().await;
    for i in 1..=5 {
        within(client.send(chat("ada", &format!("m{i}"))))
            .await
            .expect("sent");
    }
    server.stop().await;
    for i in 0..NODES {
        cluster.kill(i).expect("kill -9 a NATS node");
    }
    cluster.restart_all().await.expect("the NATS nodes back");
    let server = replica(&cluster).await;
    let history = subscribe_after(&mut server.native().await, 0).await;
    assert_eq!(ids_until(history, 5).await, [1, 2, 3, 4, 5]);
}

/// Waits until the replica's `/healthz` answers `status`.
async fn wait_for_health(server: &TestServer, status: u16) {
    let deadline = std::time::Instant::now() + READY_TIMEOUT;
    loop {
        let answer = http1_request(server.addr, "GET", "/healthz", &[], Vec::new()).await;
        if answer.status == status {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "/healthz stayed {}",
            answer.status
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until gRPC health reports `wanted` for the server and for
/// `ChatService`.
async fn wait_for_grpc_health(server: &TestServer, wanted: ServingStatus) {
    let mut health = HealthClient::new(common::channel(&server.url()).await);
    for service in ["", "ChatService"] {
        tokio::time::timeout(READY_TIMEOUT, async {
            loop {
                let status = health
                    .check(HealthCheckRequest {
                        service: service.into(),
                    })
                    .await
                    .expect("health answers")
                    .into_inner()
                    .status();
                if status == wanted {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("gRPC health never said {wanted:?} for {service:?}"));
    }
}

/// The ids of messages on `stream` until (and with) `last`.
async fn ids_until(mut stream: Streaming<ChatEvent>, last: u64) -> Vec<u64> {
    let mut ids = Vec::new();
    while ids.last() != Some(&last) {
        ids.push(next_event_message(&mut stream).await.id);
    }
    ids
}

/// The ids of the next `count` messages on `stream`. A stream may pause
/// while its room's stream elects a leader (heartbeats and people events
/// are skipped), but it must not end.
async fn ids_until_count(stream: &mut Streaming<ChatEvent>, count: usize) -> Vec<u64> {
    let mut ids = Vec::new();
    while ids.len() < count {
        let next = tokio::time::timeout(READY_TIMEOUT, stream.message())
            .await
            .expect("the stream paused for longer than a leader election");
        match next {
            Ok(Some(ChatEvent {
                event: Some(Event::Message(message)),
            })) => ids.push(message.id),
            Ok(Some(ChatEvent {
                event: Some(Event::Heartbeat(_) | Event::Presence(_) | Event::Typing(_)),
            })) => {}
            other => panic!("expected a chat message, got {other:?}"),
        }
    }
    ids
}

async fn join(server: &TestServer, name: &str) -> Result<JoinReply, tonic::Status> {
    within(server.native().await.join(JoinRequest {
        username: name.into(),
        token: String::new(),
        ..Default::default()
    }))
    .await
    .map(tonic::Response::into_inner)
}

/// A Subscribe stream of `token`'s session on `url`, past its `Ready`.
async fn subscribe_as(url: &str, token: &str) -> Streaming<ChatEvent> {
    let mut client = chat_proto::ChatServiceClient::new(common::channel(url).await);
    let mut stream = within(client.subscribe(with_session(SubscribeRequest::default(), token)))
        .await
        .expect("subscribe accepted")
        .into_inner();
    match within(stream.message()).await {
        Ok(Some(ChatEvent {
            event: Some(Event::Ready(_)),
        })) => stream,
        other => panic!("expected Ready first, got {other:?}"),
    }
}

/// Waits (up to `patience`) for a people event on `stream` that `wanted`
/// accepts.
async fn people_event(
    stream: &mut Streaming<ChatEvent>,
    patience: Duration,
    wanted: impl Fn(&Event) -> bool,
) -> Event {
    tokio::time::timeout(patience, async {
        loop {
            match stream.message().await {
                Ok(Some(ChatEvent { event: Some(event) })) if wanted(&event) => return event,
                Ok(Some(_)) => {}
                other => panic!("the stream ended: {other:?}"),
            }
        }
    })
    .await
    .expect("the people event never came")
}

fn shows(event: &Event, name: &str) -> bool {
    matches!(event, Event::Presence(p)
        if p.online.iter().chain(&p.joined).any(|n| n == name))
}

#[tokio::test]
async fn a_name_claimed_on_one_replica_is_refused_on_another_and_its_session_works_everywhere() {
    let cluster = NatsCluster::start().await.expect("a ready NATS cluster");
    let servers = replicas(&cluster).await;
    let ada = join(&servers[0], "Ada").await.expect("free");
    for (server, clash) in [(&servers[1], "ada"), (&servers[2], " ADA ")] {
        let refused = join(server, clash).await.expect_err("taken elsewhere");
        assert_eq!(refused.code(), Code::AlreadyExists, "{refused:?}");
        assert!(refused.message().contains("Ada"), "{refused:?}");
    }
    // The session is good on every replica: a reconnect through the load
    // balancer may land anywhere.
    let mut elsewhere = servers[2].native().await;
    let sent = within(elsewhere.send(with_session(chat("", "from replica 2"), &ada.token)))
        .await
        .expect("the session is known here too")
        .into_inner();
    assert_eq!(sent.id, 1);
    let again = within(servers[1].native().await.join(JoinRequest {
        username: "Ada".into(),
        token: ada.token.clone(),
        ..Default::default()
    }))
    .await
    .expect("taking the name back with its token")
    .into_inner();
    assert_eq!(
        (again.username.as_str(), again.token.as_str()),
        ("Ada", ada.token.as_str())
    );
}

#[tokio::test]
async fn presence_and_typing_are_seen_across_replicas() {
    let cluster = NatsCluster::start().await.expect("a ready NATS cluster");
    let servers = replicas(&cluster).await;
    let ada = join(&servers[0], "Ada").await.expect("free");
    let bob = join(&servers[1], "Bob").await.expect("free");
    let _ada_stream = subscribe_as(&servers[0].url(), &ada.token).await;
    let mut bob_stream = subscribe_as(&servers[1].url(), &bob.token).await;
    people_event(&mut bob_stream, Duration::from_secs(15), |e| {
        shows(e, "Ada")
    })
    .await;

    within(servers[0].native().await.set_typing(with_session(
        TypingRequest {
            typing: true,
            ..Default::default()
        },
        &ada.token,
    )))
    .await
    .expect("typing");
    let typing = people_event(&mut bob_stream, Duration::from_secs(10), |e| {
        matches!(e, Event::Typing(_))
    })
    .await;
    assert!(
        matches!(&typing, Event::Typing(t) if t.username == "Ada" && t.typing),
        "{typing:?}"
    );
    // Ada's message, sent on her replica, ends her typing on Bob's too.
    within(
        servers[0]
            .native()
            .await
            .send(with_session(chat("", "hi"), &ada.token)),
    )
    .await
    .expect("sent");
    let stopped = people_event(&mut bob_stream, Duration::from_secs(10), |e| {
        matches!(e, Event::Typing(_))
    })
    .await;
    assert!(
        matches!(&stopped, Event::Typing(t) if t.username == "Ada" && !t.typing),
        "{stopped:?}"
    );
}

#[tokio::test]
async fn a_killed_replicas_people_leave_the_others_within_30_seconds() {
    let cluster = NatsCluster::start().await.expect("a ready NATS cluster");
    let survivor = replica(&cluster).await;
    let doomed = Process::start(&cluster).await;
    let ada = within(
        chat_proto::ChatServiceClient::new(common::channel(&doomed.url()).await).join(
            JoinRequest {
                username: "Ada".into(),
                token: String::new(),
                ..Default::default()
            },
        ),
    )
    .await
    .expect("free")
    .into_inner();
    let _ada_stream = subscribe_as(&doomed.url(), &ada.token).await;
    let bob = join(&survivor, "Bob").await.expect("free");
    let mut bob_stream = subscribe_as(&survivor.url(), &bob.token).await;
    people_event(&mut bob_stream, Duration::from_secs(15), |e| {
        shows(e, "Ada")
    })
    .await;

    let killed = std::time::Instant::now();
    drop(doomed); // kill -9
    people_event(
        &mut bob_stream,
        Duration::from_secs(30),
        |e| matches!(e, Event::Presence(p) if p.left.iter().any(|n| n == "Ada")),
    )
    .await;
    eprintln!(
        "Ada left {:?} after her replica was killed",
        killed.elapsed()
    );
}

/// A `chat-server` process in cluster mode, posting rate limit off (as for
/// [`replica`]); killed with SIGKILL when dropped, as a crash would.
struct Process {
    child: std::process::Child,
    addr: std::net::SocketAddr,
}

impl Process {
    async fn start(cluster: &NatsCluster) -> Self {
        let port = {
            let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
            probe.local_addr().expect("addr").port()
        };
        let addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_chat-server"))
            .env_clear()
            .env("CHAT_ADDR", addr.to_string())
            .env("CHAT_NATS", cluster.urls())
            .env("CHAT_RATE_LIMIT", "0")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start chat-server");
        let process = Self { child, addr };
        let deadline = std::time::Instant::now() + READY_TIMEOUT;
        loop {
            let up = tokio::net::TcpStream::connect(addr).await.is_ok()
                && http1_request(addr, "GET", "/healthz", &[], Vec::new())
                    .await
                    .status
                    == 200;
            if up {
                return process;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "chat-server did not start"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn a_room_created_on_one_replica_is_there_on_every_other() {
    let cluster = NatsCluster::start().await.expect("a ready NATS cluster");
    let servers = replicas(&cluster).await;
    within(servers[0].native().await.create_room(CreateRoomRequest {
        name: "ops".into(),
        topic: "the pager".into(),
    }))
    .await
    .expect("created");
    let again = within(servers[1].native().await.create_room(CreateRoomRequest {
        name: "ops".into(),
        topic: String::new(),
    }))
    .await
    .expect_err("one room of that name in the cluster");
    assert_eq!(again.code(), Code::AlreadyExists, "{again:?}");

    let rooms = within(servers[2].native().await.list_rooms(ListRoomsRequest {}))
        .await
        .expect("listed")
        .into_inner()
        .rooms;
    let names: Vec<(&str, &str)> = rooms
        .iter()
        .map(|r| (r.name.as_str(), r.topic.as_str()))
        .collect();
    assert_eq!(names, [("general", ""), ("ops", "the pager")]);

    let mut stream = within(servers[2].native().await.subscribe(SubscribeRequest {
        username: "reader".into(),
        room: "ops".into(),
        ..Default::default()
    }))
    .await
    .expect("the room is known here")
    .into_inner();
    let sent = within(servers[1].native().await.send(ChatMessage {
        room: "ops".into(),
        ..chat("ada", "paged")
    }))
    .await
    .expect("sent")
    .into_inner();
    assert_eq!(sent.id, 1, "the room's own ids");
    let message = loop {
        match next_chat_event(&mut stream).await {
            Event::Message(message) => break message,
            Event::Ready(_) | Event::Heartbeat(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!(
        (message.room.as_str(), message.message.as_str()),
        ("ops", "paged")
    );
}

#[tokio::test]
async fn a_paper_client_cannot_speak_as_a_name_joined_on_another_replica() {
    let cluster = NatsCluster::start().await.expect("a ready NATS cluster");
    let servers = replicas(&cluster).await;
    join(&servers[0], "Ada").await.expect("free");
    let (out, mut incoming) = open_chat_stream(&mut servers[1].native().await).await;
    out.send(chat("ada", "it's me")).await.expect("queued");
    let refused = within(incoming.message())
        .await
        .expect_err("the name is Ada's");
    assert_eq!(refused.code(), Code::AlreadyExists, "{refused:?}");
    let anonymous = within(servers[2].native().await.send(chat("ADA", "me too")))
        .await
        .expect_err("nor can an anonymous Send");
    assert_eq!(anonymous.code(), Code::PermissionDenied, "{anonymous:?}");
}

/// The failover the cluster is for, through the shipped nginx site
/// (`deploy/cluster/nginx.conf`) in front of three `chat-server` processes:
/// a reader subscribed through nginx (gRPC-Web, as a browser) while three
/// senders keep sending, two straight to the other replicas and one
/// through nginx. Its replica is killed with `kill -9`; the reader sees its
/// stream end, subscribes again through nginx with `after_id` = the last id
/// it has, lands on a survivor, and ends with every acknowledged message
/// exactly once, in id order, with no hole. New requests through nginx
/// (`/healthz`, gRPC-Web, native gRPC) keep succeeding after the kill.
#[tokio::test]
async fn a_reader_behind_nginx_resumes_on_a_survivor_when_its_replica_is_killed() {
    let cluster = NatsCluster::start().await.expect("a ready NATS cluster");
    let mut replicas = Vec::new();
    for _ in 0..3 {
        replicas.push(Some(Process::start(&cluster).await));
    }
    let addrs: Vec<SocketAddr> = replicas.iter().flatten().map(|r| r.addr).collect();
    let nginx = ClusterNginx::start(&addrs).await;

    let reading = Arc::new(Mutex::new(Reading::default()));
    let reader = tokio::spawn(read_through(nginx.web_url(), Arc::clone(&reading)));
    eventually_within(common::PATIENCE, "the reader's first stream", || {
        lock(&reading).streams == 1
    })
    .await;
    // Round robin decides which replica serves the reader: the one whose
    // /metrics counts an open Subscribe stream (nobody else subscribes).
    let doomed = serving_the_reader(&addrs).await;
    let survivors: Vec<usize> = (0..addrs.len()).filter(|&i| i != doomed).collect();

    let stop = Arc::new(AtomicBool::new(false));
    let senders = [
        Poster::Native(common::NativeClient::new(
            common::channel(&format!("http://{}", addrs[survivors[0]])).await,
        )),
        Poster::Native(common::NativeClient::new(
            common::channel(&format!("http://{}", addrs[survivors[1]])).await,
        )),
        // Through nginx: some of its calls go to the doomed replica, and one
        // may be cut short by the kill.
        Poster::Web(Box::new(common::web_client(&nginx.web_url()))),
    ]
    .into_iter()
    .zip(["ann", "ben", "cat"])
    .map(|(client, name)| tokio::spawn(send_until(client, name, Arc::clone(&stop))))
    .collect::<Vec<_>>();
    eventually_within(common::PATIENCE, "30 messages before the kill", || {
        lock(&reading).messages.len() >= 30
    })
    .await;

    let before_kill = lock(&reading).messages.len();
    let killed = Instant::now();
    drop(replicas[doomed].take()); // kill -9
    // New requests through nginx go to the survivors: plain HTTP, native
    // gRPC (the @grpc location) and gRPC-Web.
    for _ in 0..6 {
        let health = http1_request(nginx.web, "GET", "/healthz", &[], Vec::new()).await;
        assert_eq!(health.status, 200, "{}", nginx.error_log());
    }
    let mut native = chat_proto::ChatServiceClient::new(common::channel(&nginx.grpc_url()).await);
    let mut web = common::web_client(&nginx.web_url());
    for _ in 0..6 {
        let rooms = within(native.list_rooms(ListRoomsRequest::default())).await;
        assert!(rooms.is_ok(), "{rooms:?}\n{}", nginx.error_log());
        let rooms = within(web.list_rooms(ListRoomsRequest::default())).await;
        assert!(rooms.is_ok(), "{rooms:?}\n{}", nginx.error_log());
    }

    eventually_within(READY_TIMEOUT, "the reader's stream back", || {
        lock(&reading).streams >= 2
    })
    .await;
    // On a survivor, through nginx.
    let survivor_addrs: Vec<SocketAddr> = survivors.iter().map(|&i| addrs[i]).collect();
    serving_the_reader(&survivor_addrs).await;
    // More messages after the resume, then the senders stop.
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::SeqCst);
    let mut acked = Vec::new();
    let mut failed_calls = 0;
    for sender in senders {
        let sent = sender.await.expect("a sender panicked");
        acked.extend(sent.acked);
        failed_calls += sent.failed_calls;
    }
    let newest = acked
        .iter()
        .map(|m| m.id)
        .max()
        .expect("messages were sent");
    eventually_within(common::PATIENCE, "every acknowledged message read", || {
        lock(&reading).messages.last().map(|m| m.id) >= Some(newest)
    })
    .await;
    reader.abort();

    let reading = lock(&reading);
    let ids: Vec<u64> = reading.messages.iter().map(|m| m.id).collect();
    assert_eq!(
        ids,
        (1..=newest).collect::<Vec<u64>>(),
        "in id order, no hole, no copy"
    );
    for sent in &acked {
        let read = &reading.messages[usize::try_from(sent.id - 1).expect("small")];
        assert_eq!(
            (&read.username, &read.nonce, &read.message),
            (&sent.username, &sent.nonce, &sent.message),
            "message {} is what was acknowledged with its id",
            sent.id
        );
    }
    // Every call was retried until acknowledged (a retry with the same
    // nonce is told the first copy's id), so nothing was stored unacknowledged.
    assert_eq!(acked.len(), ids.len(), "every message stored once");
    assert!(
        reading.messages.len() > before_kill + 10,
        "messages after the kill"
    );
    // One outage, the kill's.
    assert_eq!(reading.streams, 2, "{:?}", reading.outages);
    let (why, ended, ready) = &reading.outages[0];
    assert!(*ended >= killed, "the stream ended before the kill: {why}");
    eprintln!(
        "{} messages ({failed_calls} calls failed and were retried); the reader's stream \
         ended {:?} after the kill ({why}) and was Ready again on a survivor {:?} after the kill",
        acked.len(),
        *ended - killed,
        *ready - killed,
    );
}

/// What a reader that resumes has read.
#[derive(Default)]
struct Reading {
    messages: Vec<ChatMessage>,
    /// Streams that said Ready.
    streams: usize,
    /// Why each stream ended, when, and when the next one was Ready.
    outages: Vec<(String, Instant, Instant)>,
}

/// Reads general through gRPC-Web at `url` forever, as the web app does:
/// when the stream ends it subscribes again with `after_id` = the last id
/// it has.
async fn read_through(url: String, reading: Arc<Mutex<Reading>>) {
    let mut client = common::web_client(&url);
    let mut down: Option<(Instant, String)> = None;
    loop {
        let after_id = lock(&reading).messages.last().map_or(0, |m| m.id);
        let request = SubscribeRequest {
            username: "reader".into(),
            after_id,
            ..Default::default()
        };
        let opened = tokio::time::timeout(common::PATIENCE, async {
            let mut stream = client.subscribe(request).await?.into_inner();
            match stream.message().await? {
                Some(ChatEvent {
                    event: Some(Event::Ready(_)),
                }) => Ok(stream),
                other => Err(tonic::Status::internal(format!(
                    "expected Ready first, got {other:?}"
                ))),
            }
        })
        .await;
        let mut stream = match opened {
            Ok(Ok(stream)) => stream,
            failed => {
                eprintln!("reader: no stream (retrying): {failed:?}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        {
            let mut reading = lock(&reading);
            reading.streams += 1;
            if let Some((ended, why)) = down.take() {
                reading.outages.push((why, ended, Instant::now()));
            }
        }
        let why = loop {
            match stream.message().await {
                Ok(Some(ChatEvent {
                    event: Some(Event::Message(message)),
                })) => lock(&reading).messages.push(message),
                Ok(Some(_)) => {}
                Ok(None) => break "the stream ended".to_owned(),
                Err(status) => break format!("{:?}: {}", status.code(), status.message()),
            }
        };
        down = Some((Instant::now(), why));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One sender's acknowledged messages (with their ids), and how many of its
/// calls failed.
struct Sent {
    acked: Vec<ChatMessage>,
    failed_calls: usize,
}

/// A client that posts: native gRPC, or gRPC-Web as a browser.
enum Poster {
    Native(NativeClient),
    Web(Box<common::WebClient>),
}

impl Poster {
    async fn send(&mut self, message: ChatMessage) -> Result<u64, tonic::Status> {
        match self {
            Self::Native(client) => client.send(message).await,
            Self::Web(client) => client.send(message).await,
        }
        .map(|reply| reply.into_inner().id)
    }
}

/// Sends as `name` until `stop`, one message at a time; a failed call is
/// retried with the same nonce until it is acknowledged, as clients do.
async fn send_until(mut client: Poster, name: &str, stop: Arc<AtomicBool>) -> Sent {
    let mut sent = Sent {
        acked: Vec::new(),
        failed_calls: 0,
    };
    let mut n = 0;
    while !stop.load(Ordering::SeqCst) {
        let message = with_nonce(name, &format!("{name} #{n}"), &format!("{name}-{n}"));
        let started = Instant::now();
        let id = loop {
            match tokio::time::timeout(common::PATIENCE, client.send(message.clone())).await {
                Ok(Ok(id)) => break id,
                failed => {
                    sent.failed_calls += 1;
                    assert!(
                        started.elapsed() < READY_TIMEOUT,
                        "{} never acknowledged: {failed:?}",
                        message.nonce
                    );
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        };
        sent.acked.push(ChatMessage { id, ..message });
        n += 1;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    sent
}

/// Which of `addrs` serves the one Subscribe stream, by their `/metrics`
/// (waits until exactly one of them counts one, and the others none).
async fn serving_the_reader(addrs: &[SocketAddr]) -> usize {
    let deadline = Instant::now() + common::PATIENCE;
    loop {
        let mut counts = Vec::new();
        for &addr in addrs {
            counts.push(subscribe_streams(addr).await);
        }
        if counts.iter().sum::<u64>() == 1
            && let Some(i) = counts.iter().position(|&c| c == 1)
        {
            return i;
        }
        assert!(
            Instant::now() < deadline,
            "Subscribe streams open on {addrs:?}: {counts:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The Subscribe streams open on the replica at `addr`, from its /metrics.
async fn subscribe_streams(addr: SocketAddr) -> u64 {
    let metrics = http1_request(addr, "GET", "/metrics", &[], Vec::new()).await;
    let text = String::from_utf8_lossy(&metrics.body);
    text.lines()
        .find_map(|line| line.strip_prefix(r#"chat_streams_open{kind="subscribe"} "#))
        .map_or(0, |n| n.trim().parse().expect("a count"))
}

/// Polls `condition` every 20 ms until it holds, failing after `patience`.
async fn eventually_within(patience: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + patience;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// nginx with the shipped `deploy/cluster/nginx.conf` in front of the
/// replicas at `addrs`, on free loopback ports; stopped when dropped.
///
/// The site is rendered, not copied by hand: the replicas' addresses in
/// both upstreams, loopback ports instead of 80 and 443, the proxy snippet
/// from `deploy/nginx/`, and no TLS (these clients speak plain HTTP; the
/// browser test, `e2e/cluster.test.mjs`, keeps it). The 443 listener
/// becomes two: HTTP/1.1 for gRPC-Web and the rest (`web`), and cleartext
/// HTTP/2 for native gRPC (`grpc`), which nginx 1.22 cannot serve on one
/// cleartext port. Each change must match the shipped file exactly, so an
/// edit to it cannot quietly make this test test nothing.
struct ClusterNginx {
    child: std::process::Child,
    web: SocketAddr,
    grpc: SocketAddr,
    dir: tempfile::TempDir,
}

impl ClusterNginx {
    async fn start(addrs: &[SocketAddr]) -> Self {
        let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let shipped = std::fs::read_to_string(repo.join("deploy/cluster/nginx.conf"))
            .expect("deploy/cluster/nginx.conf");
        let dir = tempfile::Builder::new()
            .prefix("chat-nginx-cluster-")
            .tempdir()
            .expect("a temp dir for nginx");
        let ports: Vec<u16> = {
            let listeners: Vec<std::net::TcpListener> = (0..3)
                .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("a free port"))
                .collect();
            listeners
                .iter()
                .map(|l| l.local_addr().expect("addr").port())
                .collect()
        };
        let (redirect, web, grpc) = (ports[0], ports[1], ports[2]);

        let mut site = shipped;
        let mut substitute = |from: &str, to: &str, count: usize| {
            let found = site.matches(from).count();
            assert_eq!(
                found, count,
                "deploy/cluster/nginx.conf: expected {count} of {from:?}, found {found}; \
                 did it change? update this test"
            );
            site = site.replace(from, to);
        };
        assert_eq!(addrs.len(), 3, "the shipped site has three replicas");
        for (i, addr) in addrs.iter().enumerate() {
            substitute(
                &format!("server 127.0.0.1:{} ", 50051 + i),
                &format!("server {addr} "),
                2,
            );
        }
        substitute("    listen [::]:80;\n", "", 1);
        substitute("    listen [::]:443 ssl http2;\n", "", 1);
        substitute("listen 80;", &format!("listen 127.0.0.1:{redirect};"), 1);
        substitute(
            "listen 443 ssl http2;",
            &format!("listen 127.0.0.1:{web};\n    listen 127.0.0.1:{grpc} http2;"),
            1,
        );
        substitute(
            "    ssl_certificate /etc/letsencrypt/live/chat.example.org/fullchain.pem;\n",
            "",
            1,
        );
        substitute(
            "    ssl_certificate_key /etc/letsencrypt/live/chat.example.org/privkey.pem;\n",
            "",
            1,
        );
        substitute("    ssl_protocols TLSv1.2 TLSv1.3;\n", "", 1);
        substitute(
            "include /etc/nginx/snippets/chat-proxy.conf;",
            &format!(
                "include {};",
                repo.join("deploy/nginx/chat-proxy.conf").display()
            ),
            1,
        );
        for line in site.lines() {
            let directive = line.split('#').next().unwrap_or("").trim();
            assert!(
                !directive.contains("/etc/") && !directive.contains("ssl"),
                "rendered site still has {line:?}"
            );
            assert!(
                !directive.starts_with("listen ") || directive.starts_with("listen 127.0.0.1:"),
                "rendered site listens on {line:?}"
            );
        }
        let d = dir.path().display();
        std::fs::write(dir.path().join("chat-cluster.conf"), site).expect("write the site");
        let conf = format!(
            "daemon off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log info;
events {{
    worker_connections 1024;
}}
http {{
    access_log {d}/access.log;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    default_type application/octet-stream;
    include {d}/chat-cluster.conf;
}}
"
        );
        let conf_path = dir.path().join("nginx.conf");
        std::fs::write(&conf_path, conf).expect("write nginx.conf");
        let bin = std::env::var("NGINX").unwrap_or_else(|_| "/usr/sbin/nginx".into());
        let child = std::process::Command::new(&bin)
            .arg("-p")
            .arg(dir.path())
            .arg("-e")
            .arg(dir.path().join("error.log"))
            .arg("-c")
            .arg(&conf_path)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("starting {bin} (scripts/install --tests installs it): {e}")
            });
        // Made at once, so that nginx is stopped however this ends.
        let nginx = Self {
            child,
            web: ([127, 0, 0, 1], web).into(),
            grpc: ([127, 0, 0, 1], grpc).into(),
            dir,
        };
        let deadline = Instant::now() + common::PATIENCE;
        for addr in [nginx.web, nginx.grpc] {
            while TcpStream::connect(addr).await.is_err() {
                assert!(
                    Instant::now() < deadline,
                    "nginx did not listen on {addr}: {}",
                    nginx.error_log()
                );
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        }
        nginx
    }

    fn web_url(&self) -> String {
        format!("http://{}", self.web)
    }

    fn grpc_url(&self) -> String {
        format!("http://{}", self.grpc)
    }

    fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }
}

impl Drop for ClusterNginx {
    fn drop(&mut self) {
        // SIGTERM, not SIGKILL: the master then stops its workers too.
        if let Ok(pid) = i32::try_from(self.child.id()) {
            // SAFETY: kill(2) on our own child's pid; no memory is involved.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        let _ = self.child.wait();
    }
}

/// A chat server in cluster mode that reaches the cluster through node
/// `node` only (as a replica configured with one URL does).
async fn replica_on(cluster: &NatsCluster, node: usize) -> TestServer {
    replica_reaching(cluster.url(node)).await
}

/// The node that leads `stream`, once it has a leader.
async fn leader_of(cluster: &NatsCluster, stream: &str) -> usize {
    let mut leader = None;
    eventually(async || {
        leader = cluster.stream_leader(stream).await;
        leader.is_some()
    })
    .await;
    leader.expect("a leader")
}

/// Read-your-writes for names across replicas: a name claimed through one
/// replica is looked up through another at once, hundreds of times, from
/// many clients at a time so that the nodes are busy and a follower of the
/// name registry is a little behind. A lookup answered from a follower's
/// copy said "free" a few milliseconds after the claim (the first failure
/// of the cluster issue); from the leader, every one is refused. Then the
/// registry's node is frozen: lookups that cannot be answered are refused
/// too, never guessed.
#[tokio::test]
async fn a_name_claimed_on_one_replica_is_held_on_every_other_from_that_moment() {
    const WORKERS: usize = 12;
    const EACH: usize = 30;
    let mut cluster = NatsCluster::start().await.expect("a ready NATS cluster");
    let first = replica(&cluster).await;
    let leader = leader_of(&cluster, "KV_chat_claims").await;
    let followers: Vec<usize> = (0..NODES).filter(|&i| i != leader).collect();
    let claimer = replica_on(&cluster, followers[0]).await;
    let looker = replica_on(&cluster, followers[1]).await;
    drop(first);
    let (claimer_url, looker_url) = (claimer.url(), looker.url());
    let workers = (0..WORKERS).map(|w| {
        let (claimer_url, looker_url) = (claimer_url.clone(), looker_url.clone());
        tokio::spawn(async move {
            let mut claims = NativeClient::new(common::channel(&claimer_url).await);
            let mut looks = NativeClient::new(common::channel(&looker_url).await);
            let mut allowed = Vec::new();
            for i in 0..EACH {
                let name = format!("held{w}x{i}");
                within(claims.join(JoinRequest {
                    username: name.clone(),
                    token: String::new(),
                    ..Default::default()
                }))
                .await
                .expect("a free name is claimed");
                match within(looks.send(chat(&name, "it's me"))).await {
                    Ok(_) => allowed.push(name),
                    Err(refused) => assert!(
                        matches!(refused.code(), Code::PermissionDenied | Code::Unavailable),
                        "{name}: {refused:?}"
                    ),
                }
            }
            allowed
        })
    });
    let mut allowed = Vec::new();
    for worker in futures_util::future::join_all(workers).await {
        allowed.extend(worker.expect("a worker"));
    }
    assert!(
        allowed.is_empty(),
        "spoke as names claimed on another replica: {allowed:?}"
    );
    // The registry's leader frozen: a lookup cannot be answered, and is
    // refused.
    join(&claimer, "frozen").await.expect("free");
    cluster.pause(leader).expect("SIGSTOP a NATS node");
    let said = tokio::time::timeout(
        Duration::from_secs(60),
        looker.native().await.send(chat("frozen", "it's me")),
    )
    .await
    .expect("a lookup gives up");
    cluster.resume(leader).expect("SIGCONT a NATS node");
    let refused = said.expect_err("not guessed free");
    assert!(
        matches!(refused.code(), Code::PermissionDenied | Code::Unavailable),
        "{refused:?}"
    );
    // Paper clients: refused as taken, never let in.
    for w in 0..3 {
        let (out, mut incoming) = open_chat_stream(&mut looker.native().await).await;
        out.send(chat(&format!("held{w}x0"), "it's me"))
            .await
            .expect("queued");
        let refused = within(incoming.message()).await.expect_err("held");
        assert_eq!(refused.code(), Code::AlreadyExists, "{refused:?}");
    }
}

/// A paper client's name is claimed in the cluster while its stream is
/// open, and free everywhere as soon as it closes.
#[tokio::test]
async fn a_paper_clients_name_is_held_cluster_wide_while_its_stream_is_open() {
    let cluster = NatsCluster::start().await.expect("a ready NATS cluster");
    let servers = replicas(&cluster).await;
    let (out, incoming) = open_chat_stream(&mut servers[0].native().await).await;
    out.send(chat("grace", "hello")).await.expect("queued");
    // Heard through another replica: the stream is named by now.
    let mut reader = subscribe_after(&mut servers[1].native().await, 0).await;
    let heard = next_event_message(&mut reader).await;
    assert_eq!(heard.username, "grace");
    let taken = join(&servers[1], "Grace")
        .await
        .expect_err("held by the stream");
    assert_eq!(taken.code(), Code::AlreadyExists, "{taken:?}");
    // The client goes away (the HTTP/2 stream is reset).
    drop(out);
    drop(incoming);
    // Freed at once, not when the registry's entry expires.
    let started = Instant::now();
    let mut joined = None;
    eventually(async || {
        joined = join(&servers[2], "grace").await.ok();
        joined.is_some()
    })
    .await;
    assert!(
        started.elapsed() < nats_claim_ttl(),
        "freed only after {:?}",
        started.elapsed()
    );
}

/// How long an unrefreshed claim lives in the registry (the server's
/// `CLAIM_TTL`).
fn nats_claim_ttl() -> Duration {
    Duration::from_secs(30)
}

/// The paper's stream keeps its messages through a leader election: its
/// writes are pipelined, and one that JetStream did not acknowledge is
/// stored again, in order. Before, the stream ended with UNAVAILABLE and
/// every message after it was lost (the 3-replica bench round).
#[tokio::test]
async fn a_chat_stream_keeps_every_message_through_a_leader_election() {
    const MESSAGES: usize = 400;
    let mut cluster = NatsCluster::start().await.expect("a ready NATS cluster");
    let first = replica(&cluster).await;
    let leader = leader_of(&cluster, "CHAT_general").await;
    let others: Vec<usize> = (0..NODES).filter(|&i| i != leader).collect();
    let writer = replica_on(&cluster, others[0]).await;
    let reader = replica_on(&cluster, others[1]).await;
    drop(first);
    let mut stream = subscribe_after(&mut reader.native().await, 0).await;
    let (out, mut incoming) = open_chat_stream(&mut writer.native().await).await;
    let watch_end = tokio::spawn(async move { incoming.message().await });
    for i in 0..MESSAGES {
        if i == MESSAGES / 4 {
            cluster.kill(leader).expect("kill -9 a NATS node");
        }
        if out.send(chat("ada", &format!("m{i}"))).await.is_err() {
            panic!("the paper stream ended: {:?}", watch_end.await);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut texts = Vec::new();
    while texts.len() < MESSAGES {
        let next = tokio::time::timeout(Duration::from_secs(60), stream.message())
            .await
            .expect("the reader paused for longer than an election");
        match next {
            Ok(Some(ChatEvent {
                event: Some(Event::Message(message)),
            })) => texts.push(message.message),
            Ok(Some(_)) => {}
            other => panic!("the reader's stream ended: {other:?}"),
        }
    }
    let expected: Vec<String> = (0..MESSAGES).map(|i| format!("m{i}")).collect();
    assert_eq!(texts, expected, "every message once, in order");
    assert!(!watch_end.is_finished(), "the paper stream is still open");
}

/// The third failure: a full restart of NATS and the replicas, with a
/// replay on every replica at once. One node is frozen while the rooms
/// fill, so after the restart its copies are far behind; replicas start
/// while the nodes are still coming back, and every replica must replay
/// every acknowledged message of every room (a read served by the lagging
/// node came back with holes before), then hear a new one.
#[tokio::test]
async fn after_a_full_restart_every_replica_replays_every_acknowledged_message() {
    const PER_ROOM: u64 = 300;
    const ROOMS: [&str; 3] = ["general", "second", "third"];
    let mut cluster = NatsCluster::start().await.expect("a ready NATS cluster");
    let writers = [replica_on(&cluster, 0).await, replica_on(&cluster, 1).await];
    for room in &ROOMS[1..] {
        within(writers[0].native().await.create_room(CreateRoomRequest {
            name: (*room).into(),
            topic: String::new(),
        }))
        .await
        .expect("room made");
    }
    cluster.pause(2).expect("SIGSTOP a NATS node");
    let sends = ROOMS.iter().enumerate().map(|(r, room)| {
        let url = writers[r % 2].url();
        async move {
            let mut client = NativeClient::new(common::channel(&url).await);
            let mut ids = Vec::new();
            for i in 0..PER_ROOM {
                let message = ChatMessage {
                    room: (*room).into(),
                    ..with_nonce("ada", "x", &format!("{room}{i}"))
                };
                // The frozen node may have led a stream: writes and name
                // lookups are refused while another is elected.
                let deadline = Instant::now() + Duration::from_secs(60);
                let reply = loop {
                    let send = client.send(message.clone());
                    match tokio::time::timeout(Duration::from_secs(60), send)
                        .await
                        .expect("a Send hung")
                    {
                        Ok(reply) => break reply.into_inner(),
                        Err(status) if status.code() == Code::Unavailable => {
                            assert!(Instant::now() < deadline, "{status:?}");
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                        Err(status) => panic!("{status:?}"),
                    }
                };
                ids.push(reply.id);
            }
            ids
        }
    });
    let acked = futures_util::future::join_all(sends).await;
    for ids in &acked {
        assert_eq!(*ids, (1..=PER_ROOM).collect::<Vec<_>>());
    }
    let [a, b] = writers;
    a.stop().await;
    b.stop().await;
    cluster.stop_all().await.expect("the NATS nodes stopped");
    cluster.start_stopped().expect("the NATS nodes started");
    cluster.listening().await.expect("the NATS nodes listening");
    let servers = futures_util::future::join_all((0..NODES).map(|i| replica_on(&cluster, i))).await;
    let replays = servers.iter().flat_map(|server| {
        ROOMS.iter().map(move |room| {
            let url = server.url();
            async move {
                let mut client = NativeClient::new(common::channel(&url).await);
                (url, *room, replay_ids(&mut client, room, PER_ROOM).await)
            }
        })
    });
    for (url, room, ids) in futures_util::future::join_all(replays).await {
        // From after id 1 (after_id 0 asks for recent history only).
        assert_eq!(
            ids,
            (2..=PER_ROOM).collect::<Vec<_>>(),
            "{room} replayed on {url}"
        );
    }
    // And the cluster goes on: a new message reaches every replica.
    let mut streams = Vec::new();
    for server in &servers {
        streams.push(subscribe_after(&mut server.native().await, PER_ROOM).await);
    }
    let id = sent(&servers[0], with_nonce("ada", "after", "after"))
        .await
        .id;
    assert_eq!(id, PER_ROOM + 1);
    for stream in &mut streams {
        assert_eq!(ids_until_count(stream, 1).await, [id]);
    }
}

/// The ids a `Subscribe` of `room` replays after id 1, until `last`; a
/// stream that ends early (UNAVAILABLE while the replica cannot read a
/// complete copy yet) is opened again after the last id it gave, as a
/// client does.
async fn replay_ids(client: &mut NativeClient, room: &str, last: u64) -> Vec<u64> {
    let mut ids: Vec<u64> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while ids.last() != Some(&last) {
        assert!(
            Instant::now() < deadline,
            "replay stuck after {:?}",
            ids.last()
        );
        let request = SubscribeRequest {
            username: "reader".into(),
            after_id: ids.last().copied().unwrap_or(1),
            room: room.into(),
            ..Default::default()
        };
        let mut stream = match client.subscribe(request).await {
            Ok(stream) => stream.into_inner(),
            Err(status) => {
                assert_eq!(status.code(), Code::Unavailable, "{status:?}");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        loop {
            match tokio::time::timeout(READY_TIMEOUT, stream.message()).await {
                Ok(Ok(Some(ChatEvent {
                    event: Some(Event::Message(message)),
                }))) => {
                    ids.push(message.id);
                    if message.id == last {
                        break;
                    }
                }
                Ok(Ok(Some(_))) => {}
                Ok(Err(status)) => {
                    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
                    break;
                }
                Ok(Ok(None)) | Err(_) => break,
            }
        }
    }
    ids
}

/// A replay never serves a hole: a message missing from the middle of a
/// room's stream (here deleted behind the chat's back, as a node that lost
/// data or is behind would show it) makes the replay stop before it and
/// end with UNAVAILABLE, rather than skip it; before, the replay went on
/// past the hole as if retention had removed it.
#[tokio::test]
async fn a_replay_stops_at_a_hole_instead_of_skipping_it() {
    let cluster = NatsCluster::start().await.expect("a ready NATS cluster");
    let server = replica(&cluster).await;
    for i in 1..=8 {
        sent(
            &server,
            with_nonce("ada", &format!("m{i}"), &format!("n{i}")),
        )
        .await;
    }
    let deleted = cluster
        .jetstream_api(0, "STREAM.MSG.DELETE.CHAT_general", &json!({ "seq": 5 }))
        .await
        .expect("a reply from JetStream");
    assert_eq!(deleted["success"], true, "{deleted}");
    // A replica started now holds nothing in memory: its replay is read
    // from the stream.
    let fresh = replica(&cluster).await;
    let mut stream = subscribe_after(&mut fresh.native().await, 1).await;
    let mut ids = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let ended = loop {
        match tokio::time::timeout_at(deadline, stream.message())
            .await
            .expect("the replay neither went on nor ended")
        {
            Ok(Some(ChatEvent {
                event: Some(Event::Message(message)),
            })) => ids.push(message.id),
            Ok(Some(ChatEvent {
                event: Some(Event::Gap(gap)),
            })) => panic!("served a hole: {gap:?} after {ids:?}"),
            Ok(Some(_)) => {}
            Ok(None) => panic!("ended without a status after {ids:?}"),
            Err(status) => break status,
        }
    };
    assert!(ids.iter().all(|&id| id < 5), "skipped 5: {ids:?}");
    assert_eq!(ended.code(), Code::Unavailable, "{ended:?}");
}

/// Many paper clients sending as fast as they can through one replica
/// while their room's leader is frozen, so that every connection has its
/// full window of writes waiting for an acknowledgement: every message is
/// stored and relayed once the leader wakes. Each connection keeps up to
/// 512 writes unacknowledged and the JetStream context allows 5,000 in
/// flight in all: acknowledgements held until their turn stalled every
/// publisher for good once ten connections were full (seen in `bench
/// --cluster`; fixed by awaiting each acknowledgement as it comes).
#[tokio::test]
async fn many_paper_clients_at_full_speed_all_get_through() {
    const SENDERS: usize = 12;
    const EACH: usize = 600;
    let mut cluster = NatsCluster::start().await.expect("a ready NATS cluster");
    let first = replica(&cluster).await;
    let leader = leader_of(&cluster, "CHAT_general").await;
    let server = replica_on(&cluster, (leader + 1) % NODES).await;
    drop(first);
    let mut reader = subscribe_after(&mut server.native().await, 0).await;
    let mut streams = Vec::new();
    for s in 0..SENDERS {
        let (out, incoming) = open_chat_stream(&mut server.native().await).await;
        streams.push((out, incoming, format!("fast{s}")));
    }
    // Named (and their names claimed) before the leader freezes.
    for (out, _, name) in &streams {
        out.send(chat(name, "hello")).await.expect("open");
    }
    assert_eq!(ids_until_count(&mut reader, SENDERS).await.len(), SENDERS);
    cluster.pause(leader).expect("SIGSTOP a NATS node");
    let senders = streams.iter().map(|(out, _, name)| async move {
        for i in 0..EACH {
            out.send(chat(name, &format!("{i}")))
                .await
                .expect("the stream is open");
        }
    });
    futures_util::future::join_all(senders).await;
    cluster.resume(leader).expect("SIGCONT a NATS node");
    let ids = tokio::time::timeout(
        Duration::from_secs(120),
        ids_until_count(&mut reader, SENDERS * EACH),
    )
    .await
    .expect("the publishers stalled");
    let first_id = SENDERS as u64 + 1;
    assert_eq!(
        ids,
        (first_id..first_id + (SENDERS * EACH) as u64).collect::<Vec<_>>()
    );
}
