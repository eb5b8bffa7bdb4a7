//! Every internal error as a `tonic::Status` a client can act on, with a
//! sentence it can show: the one place refusals are worded.

use chat_proto::rules::{InputError, MAX_DECODED_BYTES};
use tonic::{Code, Status};

use crate::hub::Closed;
use crate::limits::TooFast;
use crate::log::{LogError, Refusal};
use crate::moderation::ModerationError;
use crate::people::claims::ClaimError;

pub(super) fn invalid_argument(error: InputError) -> Status {
    Status::invalid_argument(error.to_string())
}

/// Over a rate limit: how long to wait.
pub(super) fn too_fast_status(too_fast: TooFast) -> Status {
    Status::resource_exhausted(too_fast.to_string())
}

/// Over one of the budgets of its own (`doing`: "claiming names").
pub(super) fn too_fast_at(doing: &str, too_fast: &TooFast) -> Status {
    Status::resource_exhausted(format!(
        "{doing} too fast: wait {:.1} s and try again",
        too_fast.retry_after.as_secs_f64().max(0.1)
    ))
}

/// Why a name could not be claimed or looked up, as a status.
pub(super) fn claim_refused(error: ClaimError) -> Status {
    match error {
        ClaimError::Taken(_) => Status::already_exists(error.to_string()),
        ClaimError::Unavailable(_) => Status::unavailable(error.to_string()),
        ClaimError::Random(_) => Status::internal(error.to_string()),
    }
}

/// A moderator's name, used without the proof it needs.
pub(super) fn reserved(name: &str) -> Status {
    Status::permission_denied(format!(
        "the name \"{}\" is reserved for a moderator: join with the moderator key \
         (or through the proxy that signs moderators in)",
        name.trim()
    ))
}

/// Moderation could not be done or recorded.
pub(super) fn moderation_failed(error: ModerationError) -> Status {
    tracing::warn!(%error, "moderation failed");
    Status::unavailable(error.to_string())
}

/// The log could not store or read; nothing was relayed, so trying again
/// is safe.
pub(super) fn unavailable(error: LogError) -> Status {
    tracing::warn!(%error, "store refused a message");
    Status::unavailable(error.to_string())
}

/// A change the message cannot take, or the log could not read or store.
pub(super) fn change_refused(error: LogError) -> Status {
    match error {
        LogError::Refused(refusal) => {
            let text = refusal.to_string();
            match refusal {
                Refusal::NotFound(_) => Status::not_found(text),
                Refusal::NotAMessage(_) => Status::invalid_argument(text),
                Refusal::Deleted(_) => Status::failed_precondition(text),
                Refusal::TooManyReactions(_) => Status::resource_exhausted(text),
            }
        }
        other => unavailable(other),
    }
}

impl From<Closed> for Status {
    fn from(closed: Closed) -> Self {
        Status::unavailable(closed.to_string())
    }
}

/// tonic refuses a message over the decoding limit with `OUT_OF_RANGE` and a
/// technical text; clients of this chat get `RESOURCE_EXHAUSTED` and a
/// sentence instead. Any other status passes through unchanged.
pub fn refusal(status: Status) -> Status {
    if status.code() == Code::OutOfRange && status.message().contains("message length too large") {
        Status::resource_exhausted(format!(
            "message is too large: the limit is {MAX_DECODED_BYTES} bytes encoded"
        ))
    } else {
        status
    }
}
