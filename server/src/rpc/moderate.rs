//! The `Moderation` service: muting and lifting, and reading the audit
//! log, for moderators only (see `people::roles`); and the check every
//! posting RPC makes that its sender is not muted where it posts.

use chat_proto::rules;
use chat_proto::{AuditReply, AuditRequest, LiftRequest, ModerationReply, MuteRequest};
use tonic::{Request, Response, Status};
use tracing::info;

use super::ChatServer;
use super::status::{invalid_argument, moderation_failed};
use crate::log::now_millis;
use crate::moderation::Mute;
use crate::people::claims::Session;

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
        let until = match seconds {
            0 => 0,
            s => now_millis()
                .saturating_add(i64::try_from(s.saturating_mul(1000)).unwrap_or(i64::MAX)),
        };
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
    /// while a moderator has muted them there.
    pub(super) fn not_muted(&self, name: &str, room: &str) -> Result<(), Status> {
        match self.moderation.muted(name, room) {
            None => Ok(()),
            Some(mute) => Err(muted(&mute)),
        }
    }

    /// Records a moderator's deletion in the audit log.
    pub(super) async fn audit_deletion(
        &self,
        moderator: &str,
        room: &str,
        author: &str,
        target: u64,
        reason: &str,
    ) -> Result<(), Status> {
        self.moderation
            .record_deletion(moderator, room, author, target, reason)
            .await
            .map(drop)
            .map_err(moderation_failed)
    }
}

/// What a muted person is told: where, until when, and why.
pub(super) fn muted(mute: &Mute) -> Status {
    let place = if mute.room.is_empty() {
        "everywhere".to_owned()
    } else {
        format!("in #{}", mute.room)
    };
    let until = match chrono::DateTime::from_timestamp_millis(mute.until) {
        Some(end) if mute.until > 0 => format!("until {}", end.format("%Y-%m-%d %H:%M UTC")),
        _ => "until a moderator lifts it".to_owned(),
    };
    let why = if mute.reason.is_empty() {
        String::new()
    } else {
        format!(": {}", mute.reason)
    };
    let mut status =
        Status::permission_denied(format!("a moderator muted you {place} {until}{why}"));
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

    async fn audit_log(
        &self,
        request: Request<AuditRequest>,
    ) -> Result<Response<AuditReply>, Status> {
        self.ensure_running()?;
        ChatServer::audit_log(self, request).await
    }
}
