//! `Send`: one message (maybe a reply to an earlier one of its room),
//! validated, rate-limited, stored, then answered with its id and timestamp
//! once it is durable.

use std::sync::Arc;

use chat_proto::rules::{self, InputError};
use chat_proto::{ChatMessage, SendReply};
use tonic::{Request, Response, Status};

use super::status::{invalid_argument, too_fast_status, unavailable};
use super::{ChatServer, client};
use crate::http::connection::Conn;
use crate::metrics::Limit;

impl ChatServer {
    pub(super) async fn send(
        &self,
        request: Request<ChatMessage>,
    ) -> Result<Response<SendReply>, Status> {
        self.ensure_running()?;
        let conn = request.extensions().get::<Arc<Conn>>().cloned();
        let address = client(&request);
        let session = self.session(&request).await?;
        let mut message = request.into_inner();
        message.username = self
            .sender_name(session.as_ref(), &message.username)
            .await?;
        self.admit(address, Some(&message.username))?;
        let room = self.room(&message.room).await?;
        self.not_muted(&message.username, room.name())?;
        let reply_to = message.reply_to;
        let mut message = accept_message(message).map_err(invalid_argument)?;
        if reply_to != 0 {
            // An earlier message of this room (deleted or not).
            self.message(&room, reply_to).await?;
            message.reply_to = reply_to;
        }
        self.rates
            .check(conn.as_ref().map(|c| &c.rate), &message.username)
            .map_err(|too_fast| {
                self.hub.metrics().limit_hit(Limit::RateSend);
                too_fast_status(too_fast)
            })?;
        self.not_too_soon(&message.username, room.name())?;
        let name = message.username.clone();
        let stored = self
            .hub
            .publish(&room, message)
            .await
            .map_err(unavailable)?;
        // Their message is out: they are no longer typing it.
        room.presence().typing(&name, false);
        Ok(Response::new(SendReply {
            timestamp: stored.timestamp,
            id: stored.id,
        }))
    }
}

/// Validates what a client sent and keeps only what the server relays (the
/// timestamp is the server's to set).
pub(super) fn accept_message(message: ChatMessage) -> Result<ChatMessage, InputError> {
    Ok(ChatMessage {
        username: rules::username(&message.username)?,
        message: rules::message_text(&message.message)?,
        nonce: rules::nonce(&message.nonce)?,
        timestamp: 0,
        id: 0,
        // The hub writes the room's name as stored.
        room: String::new(),
        // Checked by `Send`; the paper's `ChatStream` has no replies.
        ..ChatMessage::default()
    })
}
