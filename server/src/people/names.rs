//! The one door for names, whatever the mode: claiming one with `Join`,
//! finding a session by its token, holding a name for a stream, and asking
//! who holds a name.
//!
//! On one machine every answer comes from this process's [`Claims`]; in
//! cluster mode a name is also claimed, and looked up, in the cluster's
//! bucket ([`SharedClaims`]), so a name held on one replica is held on every
//! other. The RPCs never branch on the mode: like the hub for messages,
//! [`Names`] hides it.

use std::sync::Arc;

use super::claims::{ClaimError, Claims, Hold, Session};
use super::claims_nats::SharedClaims;

/// Every name held here, and in cluster mode anywhere; cheap to clone.
#[derive(Debug, Clone)]
pub struct Names {
    local: Arc<Claims>,
    /// Cluster mode: the names claimed on every replica.
    shared: Option<SharedClaims>,
}

impl Names {
    /// Names held in this process only.
    pub fn local(claims: Arc<Claims>) -> Self {
        Self {
            local: claims,
            shared: None,
        }
    }

    /// Names held in this process and claimed for the whole cluster.
    pub fn shared(claims: Arc<Claims>, shared: SharedClaims) -> Self {
        Self {
            local: claims,
            shared: Some(shared),
        }
    }

    /// Claims `name` for a new session (`Join`), here and in the cluster.
    pub async fn join(&self, name: &str) -> Result<Session, ClaimError> {
        let session = self.local.join(name, None)?;
        if let Some(shared) = &self.shared {
            shared.claim(&session).await?;
        }
        Ok(session)
    }

    /// The session of the user an authenticating proxy vouches for.
    pub fn vouch(&self, name: &str) -> Result<Session, ClaimError> {
        self.local.vouch(name)
    }

    /// The session `token` stands for, made here or on any replica.
    pub async fn session(&self, token: &str) -> Result<Option<Session>, ClaimError> {
        if let Some(session) = self.local.session(token) {
            return Ok(Some(session));
        }
        match &self.shared {
            Some(shared) => shared.session(token).await,
            None => Ok(None),
        }
    }

    /// Keeps `session`'s name held while the returned hold lives (a stream
    /// open under it); `None` if the session has ended.
    pub fn hold(&self, session: &Session) -> Option<Hold> {
        self.local.hold(session)
    }

    /// Holds `name` for a stream without a session (the paper's
    /// `ChatStream`), unless somebody holds it here or in the cluster.
    pub async fn hold_name(&self, name: &str) -> Result<Hold, ClaimError> {
        match &self.shared {
            Some(shared) => shared.hold_name(name).await,
            None => self.local.hold_name(name),
        }
    }

    /// Who holds `name`, here or on any replica.
    pub async fn holder_of(&self, name: &str) -> Result<Option<String>, ClaimError> {
        if let Some(holder) = self.local.holder_of(name) {
            return Ok(Some(holder));
        }
        match &self.shared {
            Some(shared) => shared.holder_of(name).await,
            None => Ok(None),
        }
    }
}
