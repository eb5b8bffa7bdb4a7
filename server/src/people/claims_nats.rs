//! Names claimed cluster-wide, in a JetStream KV bucket read from the
//! bucket's leader only ([`SharedClaims`]): the cluster's half of the
//! names facade ([`super::names::Names`]).

use std::sync::Arc;
use std::time::Duration;

use async_nats::Client;
use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{debug, warn};

use super::claims::{ClaimError, Claims, Held, Hold, Session};
use super::name_key::NameKey;
use crate::log::nats::patience::patiently;

/// The KV bucket that holds every claimed name in the cluster.
pub const CLAIMS_BUCKET: &str = "chat_claims";
/// How long a claim lasts in the bucket unless its replica says it again:
/// a killed replica's names are free this long after their grace ends.
pub const CLAIM_TTL: Duration = Duration::from_secs(30);
/// How long a request to the bucket may take before this replica gives up
/// on it (and refuses what needed the answer).
const KV_WAIT: Duration = Duration::from_secs(2);
/// How long a starting replica waits for the bucket.
/// How long a request to the bucket that failed waits before it is tried
/// again (within [`KV_WAIT`]).
const RETRY_AFTER: Duration = Duration::from_millis(100);
/// How often a replica says again every name it holds.
const CLAIM_REFRESH: Duration = Duration::from_secs(10);

/// Names claimed anywhere in the cluster, in a JetStream KV bucket: a name
/// is created there if absent (a write the stream's leader refuses if
/// another replica has it), and each session token points at its name, so
/// a session made on one replica is good on every other.
///
/// Every read goes to the bucket's stream leader (`STREAM.MSG.GET`), never
/// to a follower (`DIRECT.GET`, which any copy may answer, including one
/// that has not applied the newest claim yet): a name claimed on one replica
/// is seen as held on every other from the moment the claim is
/// acknowledged. A read or claim the cluster cannot answer in [`KV_WAIT`]
/// is refused ([`ClaimError::Unavailable`]), never guessed.
#[derive(Clone)]
pub struct SharedClaims {
    client: Client,
    kv: async_nats::jetstream::kv::Store,
    local: Arc<Claims>,
}

impl std::fmt::Debug for SharedClaims {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SharedClaims")
    }
}

/// Why the bucket could not answer.
#[derive(Debug, thiserror::Error)]
#[error("the cluster's name registry is unavailable: {0}")]
pub struct Unreachable(String);

impl From<Unreachable> for ClaimError {
    fn from(error: Unreachable) -> Self {
        ClaimError::Unavailable(error.0)
    }
}

/// A key's newest entry in the bucket, as the leader has it.
struct Current {
    revision: u64,
    /// `None` for a deletion marker.
    value: Option<Bytes>,
}

impl SharedClaims {
    /// Opens (or creates) the bucket and keeps this replica's held names
    /// in it for as long as the process runs.
    pub async fn open(
        client: Client,
        replicas: usize,
        local: Arc<Claims>,
    ) -> Result<Self, Unreachable> {
        let js = async_nats::jetstream::new(client.clone());
        let config = async_nats::jetstream::kv::Config {
            bucket: CLAIMS_BUCKET.to_owned(),
            description: "chat: claimed names and their session tokens".to_owned(),
            history: 1,
            max_age: CLAIM_TTL,
            num_replicas: replicas,
            ..Default::default()
        };
        let kv = patiently("the name registry", || {
            js.create_or_update_key_value(config.clone())
        })
        .await
        .map_err(|error| Unreachable(error.to_string()))?;
        let (lapsed, lapses) = mpsc::unbounded_channel();
        local.on_lapse(lapsed);
        let shared = Self { client, kv, local };
        // A bucket just made has no leader for a moment: the replica starts
        // serving only once its reads are answered.
        patiently("the name registry's leader", || shared.read("probe")).await?;
        tokio::spawn(shared.clone().refresh());
        tokio::spawn(shared.clone().let_go(lapses));
        Ok(shared)
    }

    /// Claims `session`'s name (just claimed on this replica) for the
    /// cluster: `Taken` with the holder's name if another replica has it,
    /// `Unavailable` if the cluster cannot say; either way the claim here
    /// is undone.
    pub async fn claim(&self, session: &Session) -> Result<(), ClaimError> {
        let claimed = async {
            self.create(&name_key(&NameKey::of(&session.name)), session)
                .await?;
            self.put(&token_key(&session.token), session.name.clone().into())
                .await?;
            Ok(())
        }
        .await;
        if claimed.is_err() {
            self.local.release(session);
        }
        claimed
    }

    /// Holds `name` for a paper `ChatStream` (no session): here, then in
    /// the cluster, under a token of the hold's own that nobody is given.
    pub async fn hold_name(&self, name: &str) -> Result<Hold, ClaimError> {
        let hold = self.local.hold_name(name)?;
        self.create(&name_key(&NameKey::of(name)), hold.session())
            .await?;
        Ok(hold)
    }

    /// The session `token` stands for, made on another replica; taken on
    /// here too. `Ok(None)` if it is nobody's.
    pub async fn session(&self, token: &str) -> Result<Option<Session>, ClaimError> {
        if token.is_empty() || !token.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(None);
        }
        let Some(name) = self.read(&token_key(token)).await?.and_then(|c| c.value) else {
            return Ok(None);
        };
        let Ok(name) = std::str::from_utf8(&name) else {
            return Ok(None);
        };
        let held = self.holder(&name_key(&NameKey::of(name))).await?;
        Ok(held
            .filter(|held| held.token == token)
            .map(|held| self.local.adopt(&held.name, token)))
    }

    /// Who holds `name` in the cluster, if anyone.
    pub async fn holder_of(&self, name: &str) -> Result<Option<String>, ClaimError> {
        Ok(self
            .holder(&name_key(&NameKey::of(name)))
            .await?
            .map(|held| held.name))
    }

    async fn holder(&self, key: &str) -> Result<Option<Session>, Unreachable> {
        Ok(self
            .read(key)
            .await?
            .and_then(|current| current.value)
            .and_then(|value| said_holder(&value)))
    }

    /// Writes `session` as the holder of `key` unless somebody else is:
    /// a write conditional on the key's revision, which the stream's leader
    /// checks, so two replicas can never both succeed.
    ///
    /// A write the bucket's stream could not take (it has no leader for a
    /// moment: an election, a busy node) is tried again, after reading the
    /// key again, for up to [`KV_WAIT`]: read and write are conditional, so
    /// a write that went through after all is read back as this session's.
    async fn create(&self, key: &str, session: &Session) -> Result<(), ClaimError> {
        let deadline = Instant::now() + KV_WAIT;
        // Twice: the key may change between the read and the write.
        let mut races = 0;
        while races < 2 {
            let expected = match self.read(key).await? {
                Some(Current {
                    value: Some(value), ..
                }) => {
                    return match said_holder(&value) {
                        Some(held) if held.token == session.token => Ok(()),
                        Some(held) => Err(ClaimError::Taken(held.name)),
                        None => Err(ClaimError::Taken(session.name.clone())),
                    };
                }
                Some(Current {
                    revision,
                    value: None,
                }) => revision,
                None => 0,
            };
            let written =
                tokio::time::timeout(KV_WAIT, self.kv.update(key, said_claim(session), expected))
                    .await;
            match written {
                Ok(Ok(_)) => return Ok(()),
                Ok(Err(error))
                    if error.kind()
                        == async_nats::jetstream::kv::UpdateErrorKind::WrongLastRevision =>
                {
                    races += 1;
                }
                Ok(Err(error)) if Instant::now() + RETRY_AFTER < deadline => {
                    debug!(%error, "the name registry did not take a claim; trying again");
                    tokio::time::sleep(RETRY_AFTER).await;
                }
                // Maybe written after all: the caller lets go of the claim
                // here, which frees it in the cluster if it was.
                Ok(Err(error)) => return Err(Unreachable(error.to_string()).into()),
                Err(_) => return Err(Unreachable("no answer in time".into()).into()),
            }
        }
        Err(Unreachable("the name changed hands while it was being claimed".into()).into())
    }

    /// Writes `key`, trying again for up to [`KV_WAIT`] while the bucket's
    /// stream cannot take it (a put of the same value twice is harmless).
    async fn put(&self, key: &str, value: Bytes) -> Result<(), Unreachable> {
        let deadline = Instant::now() + KV_WAIT;
        loop {
            match tokio::time::timeout_at(deadline, self.kv.put(key, value.clone())).await {
                Ok(Ok(_)) => return Ok(()),
                Ok(Err(error)) if Instant::now() + RETRY_AFTER < deadline => {
                    debug!(%error, "the name registry did not take a write; trying again");
                    tokio::time::sleep(RETRY_AFTER).await;
                }
                Ok(Err(error)) => return Err(Unreachable(error.to_string())),
                Err(_) => return Err(Unreachable("no answer in time".into())),
            }
        }
    }

    /// The newest entry of `key`, from the bucket stream's leader; asked
    /// again for up to [`KV_WAIT`] while the bucket has no leader (an
    /// election takes a moment).
    async fn read(&self, key: &str) -> Result<Option<Current>, Unreachable> {
        let deadline = Instant::now() + KV_WAIT;
        loop {
            match self.read_once(key, deadline).await {
                Err(error) if Instant::now() + RETRY_AFTER < deadline => {
                    debug!(%error, "the name registry did not answer; asking again");
                    tokio::time::sleep(RETRY_AFTER).await;
                }
                read => return read,
            }
        }
    }

    async fn read_once(
        &self,
        key: &str,
        deadline: Instant,
    ) -> Result<Option<Current>, Unreachable> {
        if self.client.connection_state() != async_nats::connection::State::Connected {
            return Err(Unreachable(
                "this replica has lost its connection to NATS".into(),
            ));
        }
        let subject = format!("{}{key}", self.kv.prefix);
        let got = tokio::time::timeout_at(
            deadline,
            self.kv.stream.get_last_raw_message_by_subject(&subject),
        )
        .await
        .map_err(|_| Unreachable("no answer in time".into()))?;
        match got {
            Ok(message) => {
                let deleted = message
                    .headers
                    .get("KV-Operation")
                    .is_some_and(|op| matches!(op.as_str(), "DEL" | "PURGE"));
                Ok(Some(Current {
                    revision: message.sequence,
                    value: (!deleted).then_some(message.payload),
                }))
            }
            Err(error)
                if error.kind()
                    == async_nats::jetstream::stream::LastRawMessageErrorKind::NoMessageFound =>
            {
                Ok(None)
            }
            Err(error) => Err(Unreachable(error.to_string())),
        }
    }

    /// Says every name held here again, so it does not expire; a name that
    /// somebody else took meanwhile (this replica could not say it for
    /// longer than [`CLAIM_TTL`]) is let go here.
    async fn refresh(self) {
        let mut every = tokio::time::interval(CLAIM_REFRESH);
        loop {
            every.tick().await;
            self.local.sweep();
            for held in self.local.held() {
                if let Err(error) = self.refresh_one(&held).await {
                    debug!(%error, "cannot refresh a claim");
                }
            }
        }
    }

    async fn refresh_one(&self, held: &Held) -> Result<(), Unreachable> {
        let key = name_key(&held.key);
        let value = said_claim(&held.session);
        match self.read(&key).await? {
            Some(Current {
                revision,
                value: Some(current),
            }) => match said_holder(&current) {
                Some(holder) if holder.token == held.session.token => {
                    self.update(&key, value, revision).await?;
                }
                _ => {
                    warn!(
                        username = held.session.name,
                        "another replica holds this name now; letting it go here"
                    );
                    self.local.release(&held.session);
                    return Ok(());
                }
            },
            Some(Current {
                revision,
                value: None,
            }) => self.update(&key, value, revision).await?,
            None => self.update(&key, value, 0).await?,
        }
        if !held.paper {
            self.put(
                &token_key(&held.session.token),
                held.session.name.clone().into(),
            )
            .await?;
        }
        Ok(())
    }

    async fn update(&self, key: &str, value: Bytes, revision: u64) -> Result<(), Unreachable> {
        match tokio::time::timeout(KV_WAIT, self.kv.update(key, value, revision)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(error)) => Err(Unreachable(error.to_string())),
            Err(_) => Err(Unreachable("no answer in time".into())),
        }
    }

    /// Frees in the cluster each name that lapsed here, if it is still
    /// held with the lapsed token: the name is free everywhere at once,
    /// not [`CLAIM_TTL`] later.
    async fn let_go(self, mut lapses: mpsc::UnboundedReceiver<Session>) {
        while let Some(session) = lapses.recv().await {
            let key = name_key(&NameKey::of(&session.name));
            let Ok(Some(Current {
                revision,
                value: Some(value),
            })) = self.read(&key).await
            else {
                continue;
            };
            if said_holder(&value).is_some_and(|held| held.token == session.token) {
                let deleted = tokio::time::timeout(
                    KV_WAIT,
                    self.kv.delete_expect_revision(&key, Some(revision)),
                )
                .await;
                if !matches!(deleted, Ok(Ok(()))) {
                    debug!(
                        username = session.name,
                        "cannot free the name now; it expires"
                    );
                }
            }
        }
    }
}

/// A name's key in the bucket: its [`NameKey`] in hex (keys are ASCII).
fn name_key(key: &NameKey) -> String {
    let mut hex = String::from("name.");
    for byte in key.as_str().bytes() {
        hex.push(char::from_digit(u32::from(byte >> 4), 16).unwrap_or('0'));
        hex.push(char::from_digit(u32::from(byte & 15), 16).unwrap_or('0'));
    }
    hex
}

fn token_key(token: &str) -> String {
    format!("token.{token}")
}

fn said_claim(session: &Session) -> Bytes {
    Bytes::from(format!("{}\n{}", session.token, session.name))
}

fn said_holder(value: &[u8]) -> Option<Session> {
    let (token, name) = std::str::from_utf8(value).ok()?.split_once('\n')?;
    Some(Session {
        name: name.to_owned(),
        token: token.to_owned(),
    })
}
