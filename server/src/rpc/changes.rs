//! `Edit`, `Delete` and `React`: changes to earlier messages. Who may make
//! one is judged here (the author edits and deletes, a moderator deletes
//! anyone's message, anyone with a session reacts); whether the message, as it stands, can take it is judged by
//! the log, in order with every other write (see `crate::log::RoomLog::change`).
//! Edits and reactions spend the sender's message budget; deletions never
//! wait for it.

use std::sync::Arc;
use std::time::Duration;

use chat_proto::rules;
use chat_proto::{ChangeKind, ChangeReply, ChatMessage, DeleteRequest, EditRequest, ReactRequest};
use tonic::{Request, Response, Status};

use super::ChatServer;
use super::status::{change_refused, invalid_argument, moderation_failed, too_fast_status};
use crate::http::connection::Conn;
use crate::hub::Room;
use crate::log::{ChangeRequest, Changed, Entry, now_millis};
use crate::metrics::Limit;
use crate::people::claims::Session;
use crate::people::name_key::NameKey;

impl ChatServer {
    pub(super) async fn edit(
        &self,
        request: Request<EditRequest>,
    ) -> Result<Response<ChangeReply>, Status> {
        self.ensure_running()?;
        let conn = request.extensions().get::<Arc<Conn>>().cloned();
        let session = self.acting(&request, "edit a message").await?;
        let EditRequest {
            room,
            id,
            message,
            nonce,
        } = request.into_inner();
        let room = self.room(&room).await?;
        self.not_muted(&session.name, room.name())?;
        let message = rules::message_text(&message).map_err(invalid_argument)?;
        let nonce = rules::nonce(&nonce).map_err(invalid_argument)?;
        let target = self.message(&room, id).await?;
        author_only(&session, &target, "edit")?;
        if let Some(window) = self.edit_window {
            let age = now_millis().saturating_sub(target.timestamp);
            if u128::try_from(age).unwrap_or(0) > window.as_millis() {
                return Err(Status::failed_precondition(format!(
                    "message {id} can no longer be edited: messages can be edited for {} after they are sent",
                    describe(window)
                )));
            }
        }
        self.spend(conn.as_ref(), &session.name)?;
        let changed = self
            .hub
            .change(
                &room,
                ChangeRequest {
                    message,
                    nonce,
                    ..change(id, &session, ChangeKind::ChangeEdit)
                },
            )
            .await
            .map_err(change_refused)?;
        Ok(Response::new(reply(changed)))
    }

    pub(super) async fn delete(
        &self,
        request: Request<DeleteRequest>,
    ) -> Result<Response<ChangeReply>, Status> {
        self.ensure_running()?;
        let session = self.acting(&request, "delete a message").await?;
        let DeleteRequest { room, id, reason } = request.into_inner();
        let room = self.room(&room).await?;
        let reason = rules::reason(&reason).map_err(invalid_argument)?;
        let target = self.message(&room, id).await?;
        // A moderator may delete anyone's message, and the change says so.
        let by_moderator = !is_author(&session, &target) && self.moderates(&session);
        if !by_moderator {
            author_only(&session, &target, "delete")?;
        }
        // Never refused for going too fast: taking a message back must
        // always be possible.
        let changed = self
            .hub
            .change(
                &room,
                ChangeRequest {
                    reason,
                    by_moderator,
                    ..change(id, &session, ChangeKind::ChangeDelete)
                },
            )
            .await
            .map_err(change_refused)?;
        if let Changed::Stored(_) = &changed {
            self.moderation
                .message_gone(room.name(), id)
                .await
                .map_err(moderation_failed)?;
        }
        if by_moderator && let Changed::Stored(change) = &changed {
            self.moderation
                .record_deletion(
                    &session.name,
                    room.name(),
                    &target.username,
                    id,
                    &change.reason,
                )
                .await
                .map_err(moderation_failed)?;
        }
        Ok(Response::new(reply(changed)))
    }

    pub(super) async fn react(
        &self,
        request: Request<ReactRequest>,
    ) -> Result<Response<ChangeReply>, Status> {
        self.ensure_running()?;
        let conn = request.extensions().get::<Arc<Conn>>().cloned();
        let session = self.acting(&request, "react to a message").await?;
        let ReactRequest {
            room,
            id,
            emoji,
            remove,
        } = request.into_inner();
        let room = self.room(&room).await?;
        self.not_muted(&session.name, room.name())?;
        let emoji = rules::emoji(&emoji).map_err(invalid_argument)?;
        // Whether `id` is a message is the log's to say, in the same step
        // that stores the reaction: no read of its own first.
        self.spend(conn.as_ref(), &session.name)?;
        let kind = if remove {
            ChangeKind::ChangeUnreact
        } else {
            ChangeKind::ChangeReact
        };
        let changed = self
            .hub
            .change(
                &room,
                ChangeRequest {
                    emoji,
                    ..change(id, &session, kind)
                },
            )
            .await
            .map_err(change_refused)?;
        Ok(Response::new(reply(changed)))
    }

    /// The session a change is made as (`UNAUTHENTICATED` without one).
    async fn acting<T>(&self, request: &Request<T>, doing: &str) -> Result<Session, Status> {
        self.session(request).await?.ok_or_else(|| {
            Status::unauthenticated(format!("only someone who joined can {doing}: Join first"))
        })
    }

    /// Message `id` of `room` as it stands: `NOT_FOUND` if there is none,
    /// `INVALID_ARGUMENT` if `id` is a change's.
    pub(super) async fn message(&self, room: &Room, id: u64) -> Result<ChatMessage, Status> {
        match self.hub.entry(room, id).await.map_err(change_refused)? {
            Some(Entry::Message(message)) => Ok(message),
            Some(Entry::Change(_)) => Err(Status::invalid_argument(format!(
                "{id} is the id of a change, not of a message"
            ))),
            None => Err(Status::not_found(format!(
                "there is no message {id} in #{}",
                room.name()
            ))),
        }
    }

    /// Takes a token from the sender's message budget.
    pub(super) fn spend(&self, conn: Option<&Arc<Conn>>, name: &str) -> Result<(), Status> {
        self.rates
            .check(conn.map(|c| &c.rate), name)
            .map_err(|too_fast| {
                self.hub.metrics().limit_hit(Limit::RateSend);
                too_fast_status(too_fast)
            })
    }
}

/// Whether `session` wrote `message` (by name key, as names are claimed).
fn is_author(session: &Session, message: &ChatMessage) -> bool {
    NameKey::of(&session.name) == NameKey::of(&message.username)
}

/// Only the author may do `what`.
fn author_only(session: &Session, message: &ChatMessage, what: &str) -> Result<(), Status> {
    if is_author(session, message) {
        Ok(())
    } else {
        Err(Status::permission_denied(format!(
            "only {} can {what} message {}: it is theirs",
            message.username, message.id
        )))
    }
}

/// A change of `kind` to message `target` by `session`, the rest empty.
fn change(target: u64, session: &Session, kind: ChangeKind) -> ChangeRequest {
    ChangeRequest {
        target,
        username: session.name.clone(),
        kind,
        message: String::new(),
        nonce: String::new(),
        emoji: String::new(),
        by_moderator: false,
        reason: String::new(),
    }
}

fn reply(changed: Changed) -> ChangeReply {
    match changed {
        Changed::Stored(change) => ChangeReply {
            id: change.id,
            timestamp: change.timestamp,
        },
        Changed::AlreadySo { id, timestamp } => ChangeReply { id, timestamp },
    }
}

/// `window` as people say it ("15 minutes", "24 hours").
fn describe(window: Duration) -> String {
    let secs = window.as_secs();
    let (n, unit) = match secs {
        s if s % 86_400 == 0 => (s / 86_400, "day"),
        s if s % 3_600 == 0 => (s / 3_600, "hour"),
        s if s % 60 == 0 => (s / 60, "minute"),
        s => (s, "second"),
    };
    format!("{n} {unit}{}", if n == 1 { "" } else { "s" })
}
