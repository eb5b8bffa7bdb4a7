//! `Join` (claiming a name, on a budget of its own per client address)
//! and `SetTyping` (saying one is typing, on a budget of its own per name).

use chat_proto::rules;
use chat_proto::{JoinReply, JoinRequest, TypingReply, TypingRequest};
use tonic::{Request, Response, Status};
use tracing::info;

use super::status::{claim_refused, invalid_argument, reserved, too_fast_at, too_fast_status};
use super::{ChatServer, client};
use crate::metrics::Limit;

impl ChatServer {
    pub(super) async fn join(
        &self,
        request: Request<JoinRequest>,
    ) -> Result<Response<JoinReply>, Status> {
        self.ensure_running()?;
        let client = client(&request);
        if self.auth_header.is_some()
            && let Some(session) = self.session(&request).await?
        {
            self.admit_noting(client, &session.name)?;
            // Behind an authenticating proxy, the proxy's name is the name.
            return Ok(Response::new(JoinReply {
                moderator: self.moderates(&session),
                username: session.name,
                token: session.token,
                proxied: true,
            }));
        }
        let JoinRequest {
            username,
            token,
            key,
        } = request.into_inner();
        let known = if token.is_empty() {
            None
        } else {
            self.find_session(&token).await?
        };
        if let Some(session) = known {
            self.not_banned(&session.name)?;
            self.admit_noting(client, &session.name)?;
            return Ok(Response::new(JoinReply {
                moderator: self.moderates(&session),
                username: session.name,
                token: session.token,
                proxied: false,
            }));
        }
        let name = rules::username(&username).map_err(invalid_argument)?;
        // A moderator's name is claimed with the key, or not at all.
        let moderator = self.roles.is_listed(&name);
        if moderator && !self.roles.key_opens(&key) {
            return Err(reserved(&name));
        }
        self.not_banned(&name)?;
        self.admit_noting(client, &name)?;
        // Nobody squats on a thousand names a second.
        self.claim_rates
            .check(None, &client.map_or_else(String::new, |c| c.to_string()))
            .map_err(|too_fast| {
                self.hub.metrics().limit_hit(Limit::RateJoin);
                too_fast_at("claiming names", &too_fast)
            })?;
        let session = self.names.join(&name).await.map_err(claim_refused)?;
        info!(username = session.name, moderator, "name claimed");
        Ok(Response::new(JoinReply {
            moderator,
            username: session.name,
            token: session.token,
            proxied: false,
        }))
    }

    pub(super) async fn set_typing(
        &self,
        request: Request<TypingRequest>,
    ) -> Result<Response<TypingReply>, Status> {
        self.ensure_running()?;
        let session = self.session(&request).await?.ok_or_else(|| {
            Status::unauthenticated("only someone who joined can be typing: Join first")
        })?;
        let TypingRequest { typing, room } = request.into_inner();
        let room = self.room(&room).await?;
        // Saying so costs like a message; stopping is always allowed.
        if typing {
            self.not_muted(&session.name, room.name())?;
            self.typing_rates
                .check(None, &session.name)
                .map_err(|too_fast| {
                    self.hub.metrics().limit_hit(Limit::RateTyping);
                    too_fast_status(too_fast)
                })?;
        }
        room.presence().typing(&session.name, typing);
        Ok(Response::new(TypingReply {}))
    }
}
