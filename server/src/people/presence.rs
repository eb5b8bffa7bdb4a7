//! Who is here, as events: everyone present when a stream starts, then only
//! who came and who went.
//!
//! A person is present while a session of theirs has an open `Subscribe`
//! stream or a `ChatStream` holds their name, however many streams that is.
//! Coming is told at once. Going is told only after [`LEAVE_DELAY`] without
//! a stream, so a reload or a brief reconnect shows nothing at all.
//!
//! Typing is told the same way: when it starts, and when it stops (said so,
//! not refreshed within [`TYPING_FOR`], a message sent, or gone).
//!
//! With several replicas, people whose streams are on another replica are
//! here too: that replica says so ([`Presence::here_elsewhere`]), and says it
//! again at least every [`ELSEWHERE_FOR`], or they go as if their stream
//! closed (a replica killed outright takes its people with it). What
//! happens here is handed to a [`Announce`] hook for the other replicas.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use tokio::sync::broadcast;
use tokio::time::Instant;

use super::name_key::NameKey;

/// How long a person without a stream still counts as present.
pub const LEAVE_DELAY: Duration = Duration::from_secs(5);
/// How often departures are looked for (so `left` comes within
/// `LEAVE_DELAY` plus this).
const SWEEP: Duration = Duration::from_secs(1);
/// How long "typing" lasts unless it is said again.
pub const TYPING_FOR: Duration = Duration::from_secs(6);
/// Changes a slow subscriber may fall behind before it is sent who is here
/// instead (a full list: kept rare, since each change is a few bytes).
const EVENTS: usize = 65_536;
/// Waiting changes folded into one event at most.
const FOLD: usize = 4096;
/// How long another replica's word that someone is there lasts.
pub const ELSEWHERE_FOR: Duration = Duration::from_secs(15);

/// What happened to someone's streams or typing on this replica, for the
/// other replicas (cluster mode).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Local {
    /// Their first stream here opened.
    Here(Arc<str>),
    /// Their last stream here closed.
    Gone(Arc<str>),
    Typing(Arc<str>, bool),
}

/// Where a presence registry tells of [`Local`] changes.
pub type Announce = Box<dyn Fn(Local) + Send + Sync>;

/// A change in who is here. Every stream reads every change (folding them
/// when behind), so a change is cheap to copy: names are shared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Joined(Arc<str>),
    Left(Arc<str>),
    Typing(Arc<str>, bool),
}

/// Changes that were waiting, folded: for each person only their last word
/// counts, so a stream that fell behind gets one short event, not a replay.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Folded {
    pub joined: Vec<String>,
    pub left: Vec<String>,
    pub typing: Vec<(String, bool)>,
}

impl Folded {
    /// `first` and whatever else is waiting on `more`; `Err` if `more` fell
    /// behind (then only a fresh [`Presence::watch`] tells the truth).
    pub fn gather(
        first: Change,
        more: &mut broadcast::Receiver<Change>,
    ) -> Result<Self, broadcast::error::TryRecvError> {
        // Each person's last word on being here, and on typing.
        let mut here = Words::default();
        let mut typing = Words::default();
        let mut note = |change: Change| match change {
            Change::Joined(name) => here.say(name, true),
            Change::Left(name) => here.say(name, false),
            Change::Typing(name, on) => typing.say(name, on),
        };
        note(first);
        for _ in 1..FOLD {
            match more.try_recv() {
                Ok(change) => note(change),
                Err(broadcast::error::TryRecvError::Empty) => break,
                Err(error) => return Err(error),
            }
        }
        let (joined, left) = here
            .said
            .into_iter()
            .partition::<Vec<_>, _>(|(_, here)| *here);
        let names =
            |said: Vec<(Arc<str>, bool)>| said.into_iter().map(|(n, _)| n.to_string()).collect();
        Ok(Self {
            joined: names(joined),
            left: names(left),
            typing: typing
                .said
                .into_iter()
                .map(|(n, on)| (n.to_string(), on))
                .collect(),
        })
    }
}

/// Yes-or-no words from people, only the last one of each kept, in the
/// order people first spoke.
#[derive(Default)]
struct Words {
    said: Vec<(Arc<str>, bool)>,
    at: HashMap<Arc<str>, usize>,
}

impl Words {
    fn say(&mut self, name: Arc<str>, word: bool) {
        match self.at.get(&name) {
            Some(&at) => self.said[at].1 = word,
            None => {
                self.at.insert(Arc::clone(&name), self.said.len());
                self.said.push((name, word));
            }
        }
    }
}

pub struct Presence {
    people: Mutex<People>,
    announce: std::sync::OnceLock<Announce>,
    changes: broadcast::Sender<Change>,
    /// How many people are typing: every relayed message says its author
    /// stopped, and while nobody types that costs no name key and no lock.
    typists: AtomicUsize,
}

/// Everyone present, by name key, and their names in order: every new
/// stream is sent the whole list, and sorting it for each (under the lock)
/// was most of what 10,000 arrivals cost.
#[derive(Debug, Default)]
struct People {
    by_key: HashMap<NameKey, Person>,
    sorted: BTreeSet<Arc<str>>,
}

#[derive(Debug)]
struct Person {
    name: Arc<str>,
    /// Streams on this replica.
    streams: usize,
    /// Replicas with a stream of theirs, and when each last said so.
    elsewhere: HashMap<u64, Instant>,
    /// When the last stream closed, while none is open.
    since: Option<Instant>,
    /// Until when they are typing, if they are.
    typing_until: Option<Instant>,
}

impl Presence {
    /// A presence registry whose departures are swept by a task on the
    /// current runtime for as long as the registry lives.
    pub fn new() -> Arc<Self> {
        let presence = Arc::new(Self {
            people: Mutex::new(People::default()),
            announce: std::sync::OnceLock::new(),
            changes: broadcast::channel(EVENTS).0,
            typists: AtomicUsize::new(0),
        });
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(sweep(Arc::downgrade(&presence)));
        }
        presence
    }

    /// Sends every later [`Local`] change to `announce` (set once).
    pub fn announce_to(&self, announce: Announce) {
        let _ = self.announce.set(announce);
    }

    fn tell(&self, local: Local) {
        if let Some(announce) = self.announce.get() {
            announce(local);
        }
    }

    /// `name` has a stream open until the returned guard is dropped.
    pub fn arrive(self: &Arc<Self>, name: &str) -> Here {
        let key = NameKey::of(name);
        let mut people = self.lock();
        let person = self.person(&mut people, &key, name);
        person.streams += 1;
        let first_here = person.streams == 1;
        let name = Arc::clone(&person.name);
        drop(people);
        if first_here {
            self.tell(Local::Here(name));
        }
        Here {
            presence: Arc::clone(self),
            key,
        }
    }

    /// Another replica (`replica`) has a stream of `name`'s, as of `now`.
    pub fn here_elsewhere(&self, replica: u64, name: &str, now: Instant) {
        let mut people = self.lock();
        let person = self.person(&mut people, &NameKey::of(name), name);
        person.elsewhere.insert(replica, now);
    }

    /// `replica` no longer has a stream of `name`'s.
    pub fn gone_elsewhere(&self, replica: u64, name: &str) {
        let mut people = self.lock();
        if let Some(person) = people.by_key.get_mut(&NameKey::of(name))
            && person.elsewhere.remove(&replica).is_some()
        {
            person.start_leaving(Instant::now());
        }
    }

    /// Everyone `replica` has streams of, as it says every so often: who is
    /// in the list is (still) there, who is not has gone from it.
    pub fn all_elsewhere(&self, replica: u64, names: &[String], now: Instant) {
        let keys: std::collections::HashSet<NameKey> =
            names.iter().map(|name| NameKey::of(name)).collect();
        for name in names {
            self.here_elsewhere(replica, name, now);
        }
        let mut people = self.lock();
        for (key, person) in &mut people.by_key {
            if !keys.contains(key) && person.elsewhere.remove(&replica).is_some() {
                person.start_leaving(now);
            }
        }
    }

    /// Who has a stream on this replica (what it tells the others).
    pub fn here_locally(&self) -> Vec<String> {
        self.lock()
            .by_key
            .values()
            .filter(|p| p.streams > 0)
            .map(|p| p.name.to_string())
            .collect()
    }

    /// The person `key` (`name`), made present if they were not.
    fn person<'a>(&self, people: &'a mut People, key: &NameKey, name: &str) -> &'a mut Person {
        let People { by_key, sorted } = people;
        let person = by_key.entry(key.clone()).or_insert_with(|| {
            let name: Arc<str> = name.trim().into();
            sorted.insert(Arc::clone(&name));
            let _ = self.changes.send(Change::Joined(Arc::clone(&name)));
            Person {
                name,
                streams: 0,
                elsewhere: HashMap::new(),
                since: None,
                typing_until: None,
            }
        });
        person.since = None;
        person
    }

    /// Everyone present now, sorted, and the changes from this moment on.
    pub fn watch(&self) -> (Vec<String>, broadcast::Receiver<Change>) {
        let people = self.lock();
        // Subscribed under the lock: no change falls between the two.
        let changes = self.changes.subscribe();
        let online = people.sorted.iter().map(|name| name.to_string()).collect();
        (online, changes)
    }

    /// How many people are here (counting those in their leave delay).
    pub fn count(&self) -> usize {
        self.lock().by_key.len()
    }

    /// `name` is typing (for [`TYPING_FOR`] unless said again) or stopped.
    /// Only someone present can type.
    pub fn typing(&self, name: &str, typing: bool) {
        // Saying it again keeps it going elsewhere too.
        if let Some(changed) = self.note_typing(name, typing)
            && (typing || changed)
        {
            self.tell(Local::Typing(name.trim().into(), typing));
        }
    }

    /// `name`, on another replica, is typing or stopped.
    pub fn typing_elsewhere(&self, name: &str, typing: bool) {
        self.note_typing(name, typing);
    }

    /// Whether that changed anything (`None`: nobody here by that name).
    fn note_typing(&self, name: &str, typing: bool) -> Option<bool> {
        if !typing && self.typists.load(Ordering::Relaxed) == 0 {
            return Some(false);
        }
        let now = Instant::now();
        let mut people = self.lock();
        let person = people.by_key.get_mut(&NameKey::of(name))?;
        let was = person.typing_until.is_some();
        person.typing_until = typing.then_some(now + TYPING_FOR);
        if was != typing {
            // Counted under the lock, so never below what is typing.
            if typing {
                self.typists.fetch_add(1, Ordering::Relaxed);
            } else {
                self.typists.fetch_sub(1, Ordering::Relaxed);
            }
            let _ = self
                .changes
                .send(Change::Typing(person.name.clone(), typing));
        }
        Some(was != typing)
    }

    fn depart(&self, key: &NameKey) {
        let mut people = self.lock();
        let Some(person) = people.by_key.get_mut(key) else {
            return;
        };
        person.streams = person.streams.saturating_sub(1);
        if person.streams == 0 {
            person.start_leaving(Instant::now());
            let name = Arc::clone(&person.name);
            drop(people);
            self.tell(Local::Gone(name));
        }
    }

    /// Tells who stopped typing without saying so, and who has been without
    /// a stream for [`LEAVE_DELAY`].
    fn sweep_once(&self, now: Instant) {
        let mut guard = self.lock();
        let People { by_key, sorted } = &mut *guard;
        by_key.retain(|_, person| {
            let before = person.elsewhere.len();
            person
                .elsewhere
                .retain(|_, said| now < *said + ELSEWHERE_FOR);
            if person.elsewhere.len() < before {
                // That replica went quiet: as if their stream there closed.
                person.start_leaving(now);
            }
            let gone = person.since.is_some_and(|since| now >= since + LEAVE_DELAY);
            if person
                .typing_until
                .is_some_and(|until| gone || now >= until)
            {
                person.typing_until = None;
                self.typists.fetch_sub(1, Ordering::Relaxed);
                let _ = self
                    .changes
                    .send(Change::Typing(person.name.clone(), false));
            }
            if gone {
                sorted.remove(&person.name);
                let _ = self.changes.send(Change::Left(person.name.clone()));
            }
            !gone
        });
    }

    fn lock(&self) -> MutexGuard<'_, People> {
        self.people.lock().unwrap_or_else(|e| e.into_inner())
    }
}

async fn sweep(presence: Weak<Presence>) {
    let mut every = tokio::time::interval(SWEEP);
    loop {
        every.tick().await;
        let Some(presence) = presence.upgrade() else {
            return;
        };
        presence.sweep_once(Instant::now());
    }
}

impl Person {
    /// Starts the leave delay once no replica has a stream of theirs.
    fn start_leaving(&mut self, now: Instant) {
        if self.streams == 0 && self.elsewhere.is_empty() && self.since.is_none() {
            self.since = Some(now);
        }
    }
}

impl std::fmt::Debug for Presence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Presence")
            .field("people", &self.lock().by_key.len())
            .finish_non_exhaustive()
    }
}

/// A stream that makes its person present; dropping it starts their leave.
#[derive(Debug)]
pub struct Here {
    presence: Arc<Presence>,
    key: NameKey,
}

impl Drop for Here {
    fn drop(&mut self) {
        self.presence.depart(&self.key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn joins_at_once_leaves_after_the_delay_and_a_quick_return_shows_nothing() {
        let presence = Presence::new();
        let (online, mut changes) = presence.watch();
        assert!(online.is_empty());
        let tab = presence.arrive("Ada");
        let second_tab = presence.arrive("ada");
        assert_eq!(
            changes.recv().await.ok(),
            Some(Change::Joined("Ada".into()))
        );
        assert_eq!(presence.watch().0, ["Ada"], "once, however many streams");

        drop((tab, second_tab));
        tokio::time::sleep(Duration::from_secs(2)).await;
        let reloaded = presence.arrive("Ada");
        tokio::time::sleep(LEAVE_DELAY * 2).await;
        assert!(changes.try_recv().is_err(), "a reload is no leave and join");

        presence.typing("ada", true);
        drop(reloaded);
        tokio::time::sleep(LEAVE_DELAY + SWEEP * 2).await;
        assert_eq!(
            changes.recv().await.ok(),
            Some(Change::Typing("Ada".into(), true))
        );
        assert_eq!(
            changes.recv().await.ok(),
            Some(Change::Typing("Ada".into(), false)),
            "stops typing when gone"
        );
        assert_eq!(changes.recv().await.ok(), Some(Change::Left("Ada".into())));
        assert!(presence.watch().0.is_empty());
    }

    #[tokio::test]
    async fn a_stream_behind_gets_each_persons_last_word_in_one_event() {
        let (tx, mut rx) = broadcast::channel(16);
        for change in [
            Change::Joined("ada".into()),
            Change::Typing("ada".into(), true),
            Change::Joined("bob".into()),
            Change::Left("ada".into()),
            Change::Typing("ada".into(), false),
            Change::Left("carol".into()),
        ] {
            tx.send(change).expect("sent");
        }
        let first = rx.recv().await.expect("a change");
        let folded = Folded::gather(first, &mut rx).expect("not behind");
        assert_eq!(folded.joined, ["bob"]);
        assert_eq!(folded.left, ["ada", "carol"]);
        assert_eq!(folded.typing, [("ada".to_owned(), false)]);
    }

    #[tokio::test(start_paused = true)]
    async fn typing_is_told_when_it_starts_and_stops_however_often_it_is_said() {
        let presence = Presence::new();
        let _here = presence.arrive("bob");
        let (_, mut changes) = presence.watch();
        presence.typing("nobody", true);
        presence.typing("bob", true);
        tokio::time::sleep(Duration::from_secs(3)).await;
        presence.typing("bob", true);
        tokio::time::sleep(Duration::from_secs(5)).await;
        presence.typing("bob", false);
        presence.typing("bob", false);
        presence.typing("bob", true);
        tokio::time::sleep(TYPING_FOR + SWEEP * 2).await;
        let mut told = Vec::new();
        while let Ok(change) = changes.try_recv() {
            told.push(change);
        }
        let typing = |on| Change::Typing("bob".into(), on);
        assert_eq!(
            told,
            [typing(true), typing(false), typing(true), typing(false)]
        );
    }
}
