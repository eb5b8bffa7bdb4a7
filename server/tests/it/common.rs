//! Shared helpers: a real server on a free loopback port, and real clients
//! for both of its protocols.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use chat_proto::{ChatEvent, ChatMessage, ChatServiceClient, Event};
use chat_server::{Config, Hub, Server};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;
use tonic::transport::Channel;
use tonic_web::{GrpcWebCall, GrpcWebClientLayer, GrpcWebClientService};

/// Long enough for a loaded CI machine; only reached when something hangs.
pub const PATIENCE: Duration = Duration::from_secs(10);

pub type NativeClient = ChatServiceClient<Channel>;
pub type WebClient =
    ChatServiceClient<GrpcWebClientService<Client<HttpConnector, GrpcWebCall<tonic::body::Body>>>>;

/// A running server; stopped when dropped.
pub struct TestServer {
    pub addr: SocketAddr,
    pub hub: Hub,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), chat_server::ServeError>>,
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(Config::with_addr("127.0.0.1:0")).await
    }

    pub async fn start_with(config: Config) -> Self {
        let server = Server::bind(&config).await.expect("bind a loopback port");
        let addr = server.local_addr().expect("bound address");
        let hub = server.hub();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server.serve(async move {
            let _ = stopped.await;
        }));
        Self {
            addr,
            hub,
            stop: Some(stop),
            task,
        }
    }

    /// A server with the posting rate limit off, for tests that send many
    /// messages from one name to test something else (the limits' own
    /// tests use the defaults).
    pub async fn unthrottled() -> Self {
        Self::start_with(unthrottled(Config::with_addr("127.0.0.1:0"))).await
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A native gRPC client (HTTP/2), as the paper's clients are.
    pub async fn native(&self) -> NativeClient {
        ChatServiceClient::new(channel(&self.url()).await)
    }

    /// A gRPC-Web client over HTTP/1.1, as a browser is.
    pub fn web(&self) -> WebClient {
        web_client(&self.url())
    }

    /// Stops the server and waits for it to finish.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let task = &mut self.task;
        within(task)
            .await
            .expect("server task")
            .expect("server ran cleanly");
    }

    /// Waits until the hub has exactly `n` subscribers.
    pub async fn wait_for_subscribers(&self, n: usize) {
        let hub = self.hub.clone();
        within(async move {
            while hub.subscriber_count() != n {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// `config` with the posting and searching rate limits off (see
/// [`TestServer::unthrottled`]).
pub fn unthrottled(mut config: Config) -> Config {
    config.limits.rate_limit = 0.0;
    config.limits.search_rate = 0.0;
    config
}

/// A native gRPC (HTTP/2) connection to the server at `url`, for any service.
pub async fn channel(url: &str) -> Channel {
    within(
        Channel::from_shared(url.to_owned())
            .expect("valid url")
            .connect(),
    )
    .await
    .expect("connect over HTTP/2")
}

/// A gRPC-Web client over HTTP/1.1 for the server at `url`.
pub fn web_client(url: &str) -> WebClient {
    let http = Client::builder(TokioExecutor::new()).build_http();
    let service = tower::ServiceBuilder::new()
        .layer(GrpcWebClientLayer::new())
        .service(http);
    ChatServiceClient::with_origin(service, url.parse().expect("valid uri"))
}

/// Awaits `future`, failing the test if it takes longer than [`PATIENCE`].
pub async fn within<F: Future>(future: F) -> F::Output {
    tokio::time::timeout(PATIENCE, future)
        .await
        .expect("timed out: the server hung or a message never arrived")
}

pub fn chat(username: &str, message: &str) -> ChatMessage {
    ChatMessage {
        username: username.into(),
        message: message.into(),
        ..ChatMessage::default()
    }
}

/// The next message on a Subscribe stream (skipping nothing: anything other
/// than a message fails the test).
pub async fn next_event_message(stream: &mut Streaming<ChatEvent>) -> ChatMessage {
    match next_chat_event(stream).await {
        Event::Message(message) => message,
        other => panic!("expected a chat message, got {other:?}"),
    }
}

/// The next event on a `Subscribe` stream that is not about people
/// (`Presence` and `Typing` come whenever somebody arrives, leaves or types).
pub async fn next_chat_event(stream: &mut Streaming<ChatEvent>) -> Event {
    loop {
        match within(stream.message()).await {
            Ok(Some(ChatEvent {
                event: Some(Event::Presence(_) | Event::Typing(_)),
            })) => {}
            Ok(Some(ChatEvent { event: Some(event) })) => return event,
            other => panic!("expected an event, got {other:?}"),
        }
    }
}

/// `message` sent with `token`'s session (`authorization: Bearer`).
pub fn with_session<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    let value = format!("Bearer {token}").parse().expect("ascii");
    request.metadata_mut().insert("authorization", value);
    request
}

/// Subscribes as "reader" to every message after `after_id` (0: recent
/// history); returns the stream's `Ready` and the stream past it.
pub async fn subscribe_after<T>(
    client: &mut ChatServiceClient<T>,
    after_id: u64,
) -> (chat_proto::Ready, Streaming<ChatEvent>)
where
    T: tonic::client::GrpcService<tonic::body::Body>,
    T::Error: Into<tonic::codegen::StdError>,
    T::ResponseBody: tonic::codegen::Body<Data = bytes::Bytes> + Send + 'static,
    <T::ResponseBody as tonic::codegen::Body>::Error: Into<tonic::codegen::StdError> + Send,
{
    let mut events = within(client.subscribe(chat_proto::SubscribeRequest {
        username: "reader".into(),
        after_id,
        ..Default::default()
    }))
    .await
    .expect("subscribed")
    .into_inner();
    match within(events.message()).await {
        Ok(Some(ChatEvent {
            event: Some(Event::Ready(ready)),
        })) => (ready, events),
        other => panic!("expected Ready first, got {other:?}"),
    }
}

/// Opens a Subscribe stream and waits for its `Ready` event.
pub async fn subscribe<T>(client: &mut ChatServiceClient<T>, username: &str) -> Streaming<ChatEvent>
where
    T: tonic::client::GrpcService<tonic::body::Body>,
    T::Error: Into<tonic::codegen::StdError>,
    T::ResponseBody: tonic::codegen::Body<Data = bytes::Bytes> + Send + 'static,
    <T::ResponseBody as tonic::codegen::Body>::Error: Into<tonic::codegen::StdError> + Send,
{
    let mut stream = within(client.subscribe(chat_proto::SubscribeRequest {
        username: username.into(),
        after_id: 0,
        ..Default::default()
    }))
    .await
    .expect("subscribe accepted")
    .into_inner();
    match within(stream.message()).await {
        Ok(Some(ChatEvent {
            event: Some(Event::Ready(_)),
        })) => {}
        other => panic!("expected Ready first, got {other:?}"),
    }
    match within(stream.message()).await {
        Ok(Some(ChatEvent {
            event: Some(Event::Presence(_)),
        })) => stream,
        other => panic!("expected who is here right after Ready, got {other:?}"),
    }
}

/// A plain HTTP/1.1 response, body collected.
pub struct HttpResponse {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Vec<u8>,
}

/// One plain HTTP/1.1 request, for what the gRPC clients cannot send:
/// preflights, static files, hand-made frames.
pub async fn http1_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> HttpResponse {
    use http_body_util::{BodyExt, Full};
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<bytes::Bytes>>();
    let mut request = http::Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request
        .body(Full::new(bytes::Bytes::from(body)))
        .expect("valid request");
    let response = within(client.request(request))
        .await
        .expect("an HTTP response");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = within(response.into_body().collect())
        .await
        .expect("a complete body")
        .to_bytes()
        .to_vec();
    HttpResponse {
        status,
        headers,
        body,
    }
}

/// Opens the paper's `ChatStream`: a sender for what to say, and the stream
/// of what others say.
pub async fn open_chat_stream(
    client: &mut NativeClient,
) -> (mpsc::Sender<ChatMessage>, Streaming<ChatMessage>) {
    let (tx, outgoing) = mpsc::channel(8);
    let incoming = within(client.chat_stream(ReceiverStream::new(outgoing)))
        .await
        .expect("ChatStream opened")
        .into_inner();
    (tx, incoming)
}

/// The next message on a `ChatStream`.
pub async fn next_message(stream: &mut Streaming<ChatMessage>) -> ChatMessage {
    within(stream.message())
        .await
        .expect("no error status")
        .expect("a message, not the end of the stream")
}

/// A raw HTTP/2 connection (prior knowledge, like gRPC), for what tonic's
/// client will not do: hold its window shut, reset streams in bulk, send
/// odd content types. `window` is the client's receive window per stream.
pub struct RawH2 {
    pub send: h2::client::SendRequest<bytes::Bytes>,
    /// Finishes when the server closes the connection (or GOAWAY ends it).
    pub closed: JoinHandle<Result<(), h2::Error>>,
    pub max_concurrent_streams: Option<usize>,
}

pub async fn raw_h2(addr: SocketAddr, window: u32) -> RawH2 {
    let tcp = within(tokio::net::TcpStream::connect(addr))
        .await
        .expect("connect");
    let (send, mut connection) = within(
        h2::client::Builder::new()
            .initial_window_size(window)
            .initial_connection_window_size(window.max(65_535))
            .handshake::<_, bytes::Bytes>(tcp),
    )
    .await
    .expect("HTTP/2 handshake");
    // The server's SETTINGS arrive with the first frames it sends.
    let max = within(std::future::poll_fn(|cx| {
        let _ = std::pin::Pin::new(&mut connection).poll(cx);
        match connection.max_concurrent_send_streams() {
            usize::MAX => std::task::Poll::Pending,
            n => std::task::Poll::Ready(n),
        }
    }))
    .await;
    let closed = tokio::spawn(connection);
    RawH2 {
        send,
        closed,
        max_concurrent_streams: Some(max),
    }
}

/// A gRPC request head for `path` over HTTP/2.
pub fn grpc_head(addr: SocketAddr, path: &str, content_type: &str) -> http::Request<()> {
    http::Request::builder()
        .method("POST")
        .uri(format!("http://{addr}{path}"))
        .header("content-type", content_type)
        .header("te", "trailers")
        .body(())
        .expect("valid request")
}

/// `message` as one gRPC frame (no compression).
pub fn grpc_frame(message: &impl prost::Message) -> bytes::Bytes {
    let body = message.encode_to_vec();
    let mut frame = Vec::with_capacity(body.len() + 5);
    frame.push(0);
    frame.extend_from_slice(&u32::try_from(body.len()).expect("small").to_be_bytes());
    frame.extend_from_slice(&body);
    frame.into()
}

/// This process's resident memory, or another's, in bytes (Linux).
pub fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|kb| kb.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .expect("VmRSS")
        * 1024
}

/// A whole HTTP/2 exchange: the response head, its body and its trailers.
pub struct H2Answer {
    pub head: http::response::Parts,
    pub body: Vec<u8>,
    pub trailers: Option<http::HeaderMap>,
}

impl H2Answer {
    /// `grpc-status` from the trailers, or from the head (trailers-only).
    pub fn grpc_status(&self) -> Option<String> {
        self.trailers
            .as_ref()
            .and_then(|t| t.get("grpc-status"))
            .or_else(|| self.head.headers.get("grpc-status"))
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    }

    pub fn grpc_message(&self) -> String {
        self.trailers
            .as_ref()
            .and_then(|t| t.get("grpc-message"))
            .or_else(|| self.head.headers.get("grpc-message"))
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    }
}

/// Sends `request` with `body` over a fresh raw HTTP/2 connection and reads
/// the whole answer.
pub async fn h2_call(addr: SocketAddr, request: http::Request<()>, body: bytes::Bytes) -> H2Answer {
    let mut h2 = raw_h2(addr, 65_535).await;
    let (response, mut sending) = h2.send.send_request(request, false).expect("request");
    sending.send_data(body, true).expect("body");
    let response = within(response).await.expect("a response");
    let (head, mut recv) = response.into_parts();
    let mut body = Vec::new();
    while let Some(chunk) = within(recv.data()).await {
        let chunk = chunk.expect("body data");
        let _ = recv.flow_control().release_capacity(chunk.len());
        body.extend_from_slice(&chunk);
    }
    let trailers = within(recv.trailers()).await.expect("trailers");
    H2Answer {
        head,
        body,
        trailers,
    }
}
