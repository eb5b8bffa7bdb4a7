//! The `Moderation` service: muting, banning and lifting, slow mode and
//! topics, and reading the audit log (reports are `super::reports`'), for moderators only (see `people::roles`); and
//! the checks the other RPCs make: that a sender is neither muted where it
//! posts nor banned nor posting again too soon in slow mode, and that a
//! client's address is not banned.

use std::time::Duration;

use chat_proto::ChangeKind;
use chat_proto::rules;
use chat_proto::{
    AuditReply, AuditRequest, BanRequest, DismissReportRequest, LiftRequest, ListReportsReply,
    ListReportsRequest, ModerationReply, MuteRequest, PurgeReply, PurgeRequest, ReportRequest,
    SlowModeRequest, TopicRequest,
};
use tonic::{Request, Response, Status};
use tracing::info;

use super::ChatServer;
use super::status::{change_refused, invalid_argument, moderation_failed, unavailable};
use crate::http::client_addr::ClientAddr;
use crate::log::{ChangeRequest, Changed, now_millis};
use crate::moderation::{Ban, MAX_SLOW_MODE, Mute, after};
use crate::people::claims::Session;
use crate::people::name_key::NameKey;

/// The generated `Moderation` server (see `build.rs`).
#[allow(clippy::all, clippy::pedantic)]
mod stubs {
    include!(concat!(env!("OUT_DIR"), "/.Moderation.rs"));
}
pub use stubs::moderation_server::{Moderation as ModerationService, ModerationServer};

impl ChatServer {
    async fn mute(
        &self,
        request: Request<MuteRequest>,
    ) -> Result<Response<ModerationReply>, Status> {
        let moderator = self.moderator(&request).await?;
        let MuteRequest {
            room,
            username,
            seconds,
            reason,
        } = request.into_inner();
        let username = rules::username(&username).map_err(invalid_argument)?;
        let room = self.sanction_room(&room).await?;
        let reason = rules::reason(&reason).map_err(invalid_argument)?;
        let until = after(now_millis(), seconds);
        let mute = Mute {
            username,
            room,
            until,
            reason,
        };
        info!(
            moderator = moderator.name,
            username = mute.username,
            room = mute.room,
            until,
            "muted"
        );
        let audit_id = self
            .moderation
            .mute(&moderator.name, mute)
            .await
            .map_err(moderation_failed)?;
        Ok(Response::new(ModerationReply { audit_id }))
    }

    async fn lift(
        &self,
        request: Request<LiftRequest>,
    ) -> Result<Response<ModerationReply>, Status> {
        let moderator = self.moderator(&request).await?;
        let LiftRequest { username, room } = request.into_inner();
        let username = rules::username(&username).map_err(invalid_argument)?;
        let room = self.sanction_room(&room).await?;
        info!(moderator = moderator.name, username, room, "lifted");
        let audit_id = self
            .moderation
            .lift(&moderator.name, &username, &room)
            .await
            .map_err(moderation_failed)?;
        Ok(Response::new(ModerationReply { audit_id }))
    }

    async fn ban(&self, request: Request<BanRequest>) -> Result<Response<ModerationReply>, Status> {
        let moderator = self.moderator(&request).await?;
        let BanRequest {
            username,
            seconds,
            reason,
            address,
        } = request.into_inner();
        let username = rules::username(&username).map_err(invalid_argument)?;
        let reason = rules::reason(&reason).map_err(invalid_argument)?;
        if self.roles.is_listed(&username) {
            return Err(Status::failed_precondition(format!(
                "{username} is a moderator: take them off --moderators instead"
            )));
        }
        info!(
            moderator = moderator.name,
            username, seconds, address, "banned"
        );
        let audit_id = self
            .moderation
            .ban(&moderator.name, username, seconds, reason, address)
            .await
            .map_err(moderation_failed)?;
        Ok(Response::new(ModerationReply { audit_id }))
    }

    async fn purge(&self, request: Request<PurgeRequest>) -> Result<Response<PurgeReply>, Status> {
        let moderator = self.moderator(&request).await?;
        let PurgeRequest {
            room,
            username,
            seconds,
        } = request.into_inner();
        let username = rules::username(&username).map_err(invalid_argument)?;
        let rooms = if room.trim().is_empty() {
            self.hub.rooms()
        } else {
            vec![self.room(&room).await?]
        };
        let since = match seconds {
            0 => i64::MIN,
            s => now_millis()
                .saturating_sub(i64::try_from(s.saturating_mul(1000)).unwrap_or(i64::MAX)),
        };
        let key = NameKey::of(&username);
        let mut deleted = 0;
        for room in &rooms {
            let theirs = self
                .hub
                .messages_where(room, |m| {
                    m.timestamp >= since && NameKey::of(&m.username) == key
                })
                .await
                .map_err(unavailable)?;
            for id in theirs {
                let change = ChangeRequest {
                    target: id,
                    username: moderator.name.clone(),
                    kind: ChangeKind::ChangeDelete,
                    message: String::new(),
                    nonce: String::new(),
                    emoji: String::new(),
                    by_moderator: true,
                    reason: "purged by a moderator".into(),
                };
                if let Changed::Stored(_) = self
                    .hub
                    .change(room, change)
                    .await
                    .map_err(change_refused)?
                {
                    deleted += 1;
                    self.moderation
                        .message_gone(room.name(), id)
                        .await
                        .map_err(moderation_failed)?;
                }
            }
        }
        let room = rooms
            .first()
            .filter(|_| rooms.len() == 1)
            .map(|r| r.name().to_owned())
            .unwrap_or_default();
        info!(
            moderator = moderator.name,
            username, room, seconds, deleted, "purged"
        );
        self.moderation
            .record_purge(&moderator.name, &room, &username, deleted)
            .await
            .map_err(moderation_failed)?;
        Ok(Response::new(PurgeReply { deleted }))
    }

    async fn set_slow_mode(
        &self,
        request: Request<SlowModeRequest>,
    ) -> Result<Response<ModerationReply>, Status> {
        let moderator = self.moderator(&request).await?;
        let SlowModeRequest { room, seconds } = request.into_inner();
        if seconds > MAX_SLOW_MODE {
            return Err(Status::invalid_argument(format!(
                "slow mode is 0 (off) to {MAX_SLOW_MODE} seconds, not {seconds}"
            )));
        }
        let room = self.room(&room).await?;
        info!(
            moderator = moderator.name,
            room = room.name(),
            seconds,
            "slow mode"
        );
        let audit_id = self
            .moderation
            .set_slow_mode(&moderator.name, room.name(), seconds)
            .await
            .map_err(moderation_failed)?;
        Ok(Response::new(ModerationReply { audit_id }))
    }

    async fn set_topic(
        &self,
        request: Request<TopicRequest>,
    ) -> Result<Response<ModerationReply>, Status> {
        let moderator = self.moderator(&request).await?;
        let TopicRequest { room, topic } = request.into_inner();
        let room = self.room(&room).await?;
        let topic = rules::topic(&topic).map_err(invalid_argument)?;
        info!(
            moderator = moderator.name,
            room = room.name(),
            topic,
            "topic"
        );
        let audit_id = self
            .moderation
            .set_topic(&moderator.name, room.name(), topic)
            .await
            .map_err(moderation_failed)?;
        Ok(Response::new(ModerationReply { audit_id }))
    }

    async fn audit_log(
        &self,
        request: Request<AuditRequest>,
    ) -> Result<Response<AuditReply>, Status> {
        self.moderator(&request).await?;
        let AuditRequest { after_id, limit } = request.into_inner();
        let entries = self
            .moderation
            .audit(after_id, limit)
            .await
            .map_err(moderation_failed)?;
        Ok(Response::new(AuditReply { entries }))
    }

    /// The caller's session, if it is a moderator's (`UNAUTHENTICATED`
    /// without a session, `PERMISSION_DENIED` for anyone else).
    pub(super) async fn moderator<T>(&self, request: &Request<T>) -> Result<Session, Status> {
        let session = self
            .session(request)
            .await?
            .ok_or_else(|| Status::unauthenticated("only a moderator can do this: Join first"))?;
        if self.moderates(&session) {
            Ok(session)
        } else {
            Err(Status::permission_denied(format!(
                "only a moderator can do this, and {} is not one",
                session.name
            )))
        }
    }

    /// A sanction's room: empty (every room) or one that exists, by its
    /// canonical name.
    async fn sanction_room(&self, raw: &str) -> Result<String, Status> {
        if raw.trim().is_empty() {
            Ok(String::new())
        } else {
            Ok(self.room(raw).await?.name().to_owned())
        }
    }

    /// Refuses `name` posting in `room` (`""`: anywhere, as creating a room)
    /// while a moderator has muted them there, or banned them.
    pub(super) fn not_muted(&self, name: &str, room: &str) -> Result<(), Status> {
        self.not_banned(name)?;
        match self.moderation.muted(name, room) {
            None => Ok(()),
            Some(mute) => Err(muted(&mute)),
        }
    }

    /// Slow mode: refuses `name` posting in `room` again too soon
    /// (moderators, whose names are only used with their proof, are exempt).
    pub(super) fn not_too_soon(&self, name: &str, room: &str) -> Result<(), Status> {
        // The room's slow mode first: one atomic load while no room is slow,
        // before a name key is worked out for the moderators' list.
        if self.moderation.slow_mode(room) == 0 || self.roles.is_listed(name) {
            return Ok(());
        }
        self.moderation
            .may_post(name, room)
            .map_err(|wait| too_soon(room, self.moderation.slow_mode(room), wait))
    }

    /// Refuses a banned name.
    pub(super) fn not_banned(&self, name: &str) -> Result<(), Status> {
        match self.moderation.banned(name) {
            None => Ok(()),
            Some(ban) => Err(banned(&ban)),
        }
    }

    /// Refuses a request from a banned address (`client`). A moderator's
    /// name (only ever used with its proof) is let through: a moderator may
    /// share an address with the person they banned.
    pub(super) fn admit(
        &self,
        client: Option<ClientAddr>,
        name: Option<&str>,
    ) -> Result<(), Status> {
        let Some(ClientAddr(address)) = client else {
            return Ok(());
        };
        // The ban first (one atomic load while nobody is banned); a name key
        // is only worked out for an address that is banned.
        if let Some(ban) = self.moderation.address_banned(address)
            && !name.is_some_and(|name| self.roles.is_listed(name))
        {
            let until = match ban.until {
                0 => ban.addresses_until,
                until => until.min(ban.addresses_until),
            };
            let mut status = Status::permission_denied(format!(
                "a moderator banned this address{}",
                until_and_why(until, &ban.reason)
            ));
            if let Ok(value) = until.to_string().parse() {
                status.metadata_mut().insert(BANNED_UNTIL, value);
            }
            return Err(status);
        }
        Ok(())
    }

    /// [`Self::admit`], and notes `name` as used from `client`, for a later
    /// address ban (on joining and opening streams; not on every post).
    pub(super) fn admit_noting(
        &self,
        client: Option<ClientAddr>,
        name: &str,
    ) -> Result<(), Status> {
        self.admit(client, Some(name))?;
        if let Some(ClientAddr(address)) = client {
            self.moderation.saw(name, address);
        }
        Ok(())
    }
}

/// The trailer that says a refusal is a ban, and until when (ms; 0: until
/// lifted): a client shows a page of its own for it.
const BANNED_UNTIL: &str = "chat-banned-until";

/// " until <when>: <why>" (no end: until lifted; no reason: none said).
fn until_and_why(until: i64, reason: &str) -> String {
    let until = match chrono::DateTime::from_timestamp_millis(until) {
        Some(end) if until > 0 => format!("until {}", end.format("%Y-%m-%d %H:%M UTC")),
        _ => "until a moderator lifts it".to_owned(),
    };
    if reason.is_empty() {
        format!(" {until}")
    } else {
        format!(" {until}: {reason}")
    }
}

/// What someone posting again too soon in slow mode is told.
fn too_soon(room: &str, every: u32, wait: Duration) -> Status {
    let mut status = Status::resource_exhausted(format!(
        "#{room} is in slow mode (one message every {every} s): wait {:.0} s",
        wait.as_secs_f64().ceil().max(1.0)
    ));
    // For a client to count down to when it may post again.
    if let Ok(value) = wait.as_millis().to_string().parse() {
        status.metadata_mut().insert(SLOW_WAIT, value);
    }
    status
}

/// The trailer that says how long a post refused by slow mode must wait (ms).
const SLOW_WAIT: &str = "chat-slow-wait-ms";

/// What a banned person is told: until when, and why.
pub(super) fn banned(ban: &Ban) -> Status {
    let mut status = Status::permission_denied(format!(
        "a moderator banned you{}",
        until_and_why(ban.until, &ban.reason)
    ));
    if let Ok(value) = ban.until.to_string().parse() {
        status.metadata_mut().insert(BANNED_UNTIL, value);
    }
    status
}

/// What a muted person is told: where, until when, and why.
pub(super) fn muted(mute: &Mute) -> Status {
    let place = if mute.room.is_empty() {
        "everywhere".to_owned()
    } else {
        format!("in #{}", mute.room)
    };
    let mut status = Status::permission_denied(format!(
        "a moderator muted you {place}{}",
        until_and_why(mute.until, &mute.reason)
    ));
    // For a client to show until when, and to offer posting again then.
    if let Ok(value) = mute.until.to_string().parse() {
        status.metadata_mut().insert("chat-muted-until", value);
    }
    status
}

#[tonic::async_trait]
impl ModerationService for ChatServer {
    async fn mute(
        &self,
        request: Request<MuteRequest>,
    ) -> Result<Response<ModerationReply>, Status> {
        self.ensure_running()?;
        ChatServer::mute(self, request).await
    }

    async fn lift(
        &self,
        request: Request<LiftRequest>,
    ) -> Result<Response<ModerationReply>, Status> {
        self.ensure_running()?;
        ChatServer::lift(self, request).await
    }

    async fn ban(&self, request: Request<BanRequest>) -> Result<Response<ModerationReply>, Status> {
        self.ensure_running()?;
        ChatServer::ban(self, request).await
    }

    async fn set_slow_mode(
        &self,
        request: Request<SlowModeRequest>,
    ) -> Result<Response<ModerationReply>, Status> {
        self.ensure_running()?;
        ChatServer::set_slow_mode(self, request).await
    }

    async fn purge(&self, request: Request<PurgeRequest>) -> Result<Response<PurgeReply>, Status> {
        self.ensure_running()?;
        ChatServer::purge(self, request).await
    }

    async fn audit_log(
        &self,
        request: Request<AuditRequest>,
    ) -> Result<Response<AuditReply>, Status> {
        self.ensure_running()?;
        ChatServer::audit_log(self, request).await
    }

    async fn set_topic(
        &self,
        request: Request<TopicRequest>,
    ) -> Result<Response<ModerationReply>, Status> {
        self.ensure_running()?;
        ChatServer::set_topic(self, request).await
    }

    async fn report(
        &self,
        request: Request<ReportRequest>,
    ) -> Result<Response<ModerationReply>, Status> {
        self.ensure_running()?;
        ChatServer::report(self, request).await
    }

    async fn list_reports(
        &self,
        request: Request<ListReportsRequest>,
    ) -> Result<Response<ListReportsReply>, Status> {
        self.ensure_running()?;
        ChatServer::list_reports(self, request).await
    }

    async fn dismiss_report(
        &self,
        request: Request<DismissReportRequest>,
    ) -> Result<Response<ModerationReply>, Status> {
        self.ensure_running()?;
        ChatServer::dismiss_report(self, request).await
    }
}
