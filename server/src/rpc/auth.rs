//! Who a call is from, resolved in one place for every RPC: the name an
//! authenticating proxy vouches for (`--auth-header`), or the session a
//! bearer token stands for, made here or on any replica; and the name a
//! message from that caller (or from nobody) goes out under.

use chat_proto::rules;
use tonic::{Request, Status};

use super::ChatServer;
use super::status::{claim_refused, invalid_argument, reserved};
use crate::people::claims::Session;
use crate::people::name_key::NameKey;

/// Who the admin socket's calls are from, in the audit log.
const OPERATOR: &str = "operator";

impl ChatServer {
    /// The name the authenticating proxy vouches for, if there is one.
    pub(super) fn proxy_name<T>(&self, request: &Request<T>) -> Result<Option<String>, Status> {
        let Some(header) = &self.auth_header else {
            return Ok(None);
        };
        let name = request
            .metadata()
            .get(header.as_str())
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| {
                Status::unauthenticated(format!(
                    "the proxy in front did not say who you are (no {header} header)"
                ))
            })?;
        rules::username(name).map(Some).map_err(invalid_argument)
    }

    /// The session of the user the proxy vouches for, if there is a proxy.
    pub(super) fn proxy_session<T>(&self, request: &Request<T>) -> Result<Option<Session>, Status> {
        match self.proxy_name(request)? {
            Some(name) => self
                .names
                .vouch(&name)
                .map(Some)
                .map_err(|error| Status::internal(error.to_string())),
            None => Ok(None),
        }
    }

    /// The caller's session: the proxy's user, or the one the request's
    /// `authorization: Bearer` token stands for, if it carries one.
    pub(super) async fn session<T>(&self, request: &Request<T>) -> Result<Option<Session>, Status> {
        if self.operator {
            return Ok(Some(Session {
                name: OPERATOR.to_owned(),
                token: String::new(),
            }));
        }
        if let Some(session) = self.proxy_session(request)? {
            self.not_banned(&session.name)?;
            return Ok(Some(session));
        }
        let Some(value) = request.metadata().get("authorization") else {
            return if self.require_join {
                Err(Status::unauthenticated(
                    "join first: this server needs a name claimed with Join \
                     (send its token as `authorization: Bearer <token>`)",
                ))
            } else {
                Ok(None)
            };
        };
        let token = value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                Status::unauthenticated("the authorization header must be `Bearer <token>`")
            })?;
        let session = self.find_session(token).await?.ok_or_else(|| {
            Status::unauthenticated("this session has ended: join again to claim a name")
        })?;
        // A ban revokes every session of the name.
        if let Err(banned) = self.not_banned(&session.name) {
            return Err(Status::unauthenticated(format!(
                "this session has ended: {}",
                banned.message()
            )));
        }
        Ok(Some(session))
    }

    /// Whether `session` is a moderator's: its name is listed, and a session
    /// of a listed name is only ever made with the proof (see `people::roles`).
    pub(super) fn moderates(&self, session: &Session) -> bool {
        self.operator || self.roles.is_listed(&session.name)
    }

    /// The session of `token`, made here or (cluster mode) on any replica.
    pub(super) async fn find_session(&self, token: &str) -> Result<Option<Session>, Status> {
        self.names.session(token).await.map_err(claim_refused)
    }

    /// The name a message from `session` (or from nobody) goes out under.
    pub(super) async fn sender_name(
        &self,
        session: Option<&Session>,
        asked: &str,
    ) -> Result<String, Status> {
        match session {
            // Behind an authenticating proxy, names clients choose are ignored.
            Some(session) if self.auth_header.is_some() => Ok(session.name.clone()),
            Some(session)
                if asked.trim().is_empty() || NameKey::of(asked) == NameKey::of(&session.name) =>
            {
                Ok(session.name.clone())
            }
            Some(session) => Err(Status::permission_denied(format!(
                "this session holds the name \"{}\", not \"{}\"",
                session.name,
                asked.trim()
            ))),
            None if self.roles.is_listed(asked) => Err(reserved(asked)),
            None => match self.names.holder_of(asked).await.map_err(claim_refused)? {
                Some(holder) => Err(Status::permission_denied(format!(
                    "the name \"{holder}\" is held by someone else: join to claim a name of your own"
                ))),
                None => Ok(asked.to_owned()),
            },
        }
    }
}
