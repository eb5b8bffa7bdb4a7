//! Whether a change may be made to a message: the rules of the message
//! actions, judged the same way by every log against what it knows of the
//! message ([`Standing`]): the embedded log from its rows, inside the
//! writer's transaction; the cluster log from its index of the room's
//! changes, before it publishes on the condition that nothing changed since.

use chat_proto::rules::MAX_REACTIONS;
use chat_proto::{ChangeKind, ChatMessage};

use super::{ChangeRequest, LogError, Refusal};

/// What a log knows of a message beyond its current state, asked only when
/// a rule needs it.
pub trait Standing {
    /// The id and time of the message's first deletion (it is deleted).
    fn deletion(&mut self) -> Result<(u64, i64), LogError>;

    /// The id and time of the edit stored with `nonce`, if there is one.
    fn edit_with_nonce(&mut self, nonce: &str) -> Result<Option<(u64, i64)>, LogError>;

    /// Whether `username` has reacted with `emoji`.
    fn has_reacted(&mut self, emoji: &str, username: &str) -> Result<bool, LogError>;
}

/// What to do with a change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Store it.
    Store,
    /// Store nothing: it is so already (see [`super::Changed::AlreadySo`]).
    AlreadySo {
        id: u64,
        timestamp: i64,
    },
    Refused(Refusal),
}

/// Judges `request` against `message`, as it stands now, and what else the
/// log knows of it.
pub fn judge(
    request: &ChangeRequest,
    message: &ChatMessage,
    standing: &mut impl Standing,
) -> Result<Verdict, LogError> {
    let kind = request.kind;
    let target = request.target;
    if message.deleted {
        return Ok(if kind == ChangeKind::ChangeDelete {
            let (id, timestamp) = standing.deletion()?;
            Verdict::AlreadySo { id, timestamp }
        } else {
            Verdict::Refused(Refusal::Deleted(target))
        });
    }
    match kind {
        ChangeKind::ChangeEdit if !request.nonce.is_empty() => {
            if let Some((id, timestamp)) = standing.edit_with_nonce(&request.nonce)? {
                return Ok(Verdict::AlreadySo { id, timestamp });
            }
        }
        ChangeKind::ChangeReact | ChangeKind::ChangeUnreact => {
            let adding = kind == ChangeKind::ChangeReact;
            if standing.has_reacted(&request.emoji, &request.username)? == adding {
                return Ok(Verdict::AlreadySo {
                    id: 0,
                    timestamp: 0,
                });
            }
            if adding
                && message.reactions.len() >= MAX_REACTIONS
                && !message.reactions.iter().any(|r| r.emoji == request.emoji)
            {
                return Ok(Verdict::Refused(Refusal::TooManyReactions(target)));
            }
        }
        _ => {}
    }
    Ok(Verdict::Store)
}
