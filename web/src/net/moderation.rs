//! The moderators' calls, on the server's `Moderation` service through
//! tonic's generated `ModerationClient` (the same gRPC-Web transport as
//! `api`), each made as the session and renewed once if it lapsed; and
//! `Report`, the one call there for everybody.

use std::future::Future;

use chat_proto::moderation_client::ModerationClient;
use chat_proto::{
    BanRequest, DismissReportRequest, LiftRequest, ListReportsRequest, MuteRequest, PurgeRequest,
    Report, ReportRequest, SlowModeRequest, TopicRequest,
};
use tonic::Status;
use tonic_web_wasm_client::Client;

use super::api::{Failure, as_session_on, server_url};
use super::{proxy, session};

fn client() -> ModerationClient<Client> {
    proxy::map_proxy_errors();
    ModerationClient::new(Client::new(server_url().to_owned()))
}

/// Makes `call` with `request` as the session.
async fn moderating<Q, R, Fut>(
    request: Q,
    call: impl Fn(ModerationClient<Client>, tonic::Request<Q>) -> Fut,
) -> Result<R, Failure>
where
    Q: Clone,
    Fut: Future<Output = Result<tonic::Response<R>, Status>>,
{
    as_session_on(client, move |client| {
        call(client, session::authorized(request.clone()))
    })
    .await
}

/// Mutes `name` in `room` for `seconds` (0: until lifted).
pub async fn mute(room: &str, name: &str, seconds: u64) -> Result<(), Failure> {
    let request = MuteRequest {
        room: room.to_owned(),
        username: name.to_owned(),
        seconds,
        reason: String::new(),
    };
    moderating(request, |mut c, r| async move { c.mute(r).await })
        .await
        .map(drop)
}

/// Bans `name` until lifted, and the addresses they used lately.
pub async fn ban(name: &str) -> Result<(), Failure> {
    let request = BanRequest {
        username: name.to_owned(),
        seconds: 0,
        reason: String::new(),
        address: true,
    };
    moderating(request, |mut c, r| async move { c.ban(r).await })
        .await
        .map(drop)
}

/// Deletes `name`'s messages of the last `seconds` in every room; how many.
pub async fn purge(name: &str, seconds: u64) -> Result<u64, Failure> {
    let request = PurgeRequest {
        room: String::new(),
        username: name.to_owned(),
        seconds,
    };
    moderating(request, |mut c, r| async move { c.purge(r).await })
        .await
        .map(|reply| reply.deleted)
}

/// Ends `name`'s mute in `room` (empty: every mute, and the ban).
pub async fn lift(room: &str, name: &str) -> Result<(), Failure> {
    let request = LiftRequest {
        username: name.to_owned(),
        room: room.to_owned(),
    };
    moderating(request, |mut c, r| async move { c.lift(r).await })
        .await
        .map(drop)
}

/// Sets `room`'s topic (empty: none).
pub async fn set_topic(room: &str, topic: &str) -> Result<(), Failure> {
    let request = TopicRequest {
        room: room.to_owned(),
        topic: topic.to_owned(),
    };
    moderating(request, |mut c, r| async move { c.set_topic(r).await })
        .await
        .map(drop)
}

/// Puts `room` in slow mode, `seconds` between one person's posts (0: off).
pub async fn set_slow_mode(room: &str, seconds: u32) -> Result<(), Failure> {
    let request = SlowModeRequest {
        room: room.to_owned(),
        seconds,
    };
    moderating(request, |mut c, r| async move { c.set_slow_mode(r).await })
        .await
        .map(drop)
}

/// Reports message `id` of `room` to the moderators (anyone may).
pub async fn report(room: &str, id: u64, reason: &str) -> Result<(), Failure> {
    let request = ReportRequest {
        room: room.to_owned(),
        id,
        reason: reason.to_owned(),
    };
    moderating(request, |mut c, r| async move { c.report(r).await })
        .await
        .map(drop)
}

/// The open reports, oldest first.
pub async fn reports() -> Result<Vec<Report>, Failure> {
    moderating(ListReportsRequest {}, |mut c, r| async move {
        c.list_reports(r).await
    })
    .await
    .map(|reply| reply.reports)
}

/// Closes report `id` without acting on its message.
pub async fn dismiss(id: u64) -> Result<(), Failure> {
    moderating(DismissReportRequest { id }, |mut c, r| async move {
        c.dismiss_report(r).await
    })
    .await
    .map(drop)
}
