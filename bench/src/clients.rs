//! Real clients of both kinds, one connection each, as real users have.

use chat_proto::ChatServiceClient;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tonic::transport::{Channel, Endpoint};
use tonic_web::{GrpcWebCall, GrpcWebClientLayer, GrpcWebClientService};

pub type Native = ChatServiceClient<Channel>;
pub type Web =
    ChatServiceClient<GrpcWebClientService<Client<HttpConnector, GrpcWebCall<tonic::body::Body>>>>;

/// Which of the two a scenario uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Native gRPC over HTTP/2.
    Native,
    /// gRPC-Web over HTTP/1.1.
    Web,
}

/// A native gRPC client on its own HTTP/2 connection.
pub async fn native(url: &str) -> anyhow::Result<Native> {
    let channel = Endpoint::from_shared(url.to_owned())?
        .tcp_nodelay(true)
        .connect()
        .await?;
    Ok(ChatServiceClient::new(channel))
}

/// A gRPC-Web client over HTTP/1.1, the browser's path.
pub fn web(url: &str) -> anyhow::Result<Web> {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let http = Client::builder(TokioExecutor::new()).build(connector);
    let service = tower::ServiceBuilder::new()
        .layer(GrpcWebClientLayer::new())
        .service(http);
    Ok(ChatServiceClient::with_origin(service, url.parse()?))
}
