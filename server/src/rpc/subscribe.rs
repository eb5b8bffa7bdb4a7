//! `Subscribe`: a room's recent history (or everything after an id), then
//! its live entries, with who is here and who is typing, the activity of
//! other rooms the client watches, and a heartbeat.

use std::sync::Arc;
use std::time::Duration;

use chat_proto::rules;
use chat_proto::{Event, Gap, Heartbeat, Ready, Report, SubscribeRequest};
use tokio::sync::broadcast;
use tonic::{Request, Response, Status};

use super::moderate::banned;
use super::status::{invalid_argument, unavailable};
use super::visit::Visit;
use super::{ChatServer, EncodedStream, client};
use crate::hub::wire::{self, Encoded};
use crate::hub::{Delivery, Hub, Room, Start};
use crate::log::now_millis;
use crate::people::presence::Folded;

/// Deliveries a stream sends in one go when they are ready, before it looks
/// at its client or its heartbeat again; tonic packs them into few frames.
pub(super) const BURST: usize = 256;
/// How often a stream looks at the rooms it watches: each one's activity
/// is told at most this often.
const ACTIVITY_EVERY: Duration = Duration::from_secs(1);

impl ChatServer {
    pub(super) async fn subscribe(
        &self,
        request: Request<SubscribeRequest>,
    ) -> Result<Response<EncodedStream>, Status> {
        self.ensure_running()?;
        let session = self.session(&request).await?;
        // With a session the stream holds its name; without one it listens.
        let (username, holding) = match &session {
            Some(session) => {
                let name = self
                    .sender_name(Some(session), &request.get_ref().username)
                    .await?;
                (name, self.names.hold(session))
            }
            None => (
                rules::username(&request.get_ref().username).map_err(invalid_argument)?,
                None,
            ),
        };
        match &session {
            Some(session) => self.admit_noting(client(&request), &session.name)?,
            None => self.admit(client(&request), None)?,
        }
        let room = self.room(&request.get_ref().room).await?;
        let start = match request.get_ref().after_id {
            0 => self.hub.recent(&room).await.map_err(unavailable)?,
            id => {
                // Read elsewhere up to `id`: wait until this replica has it too.
                self.hub.catch_up(&room, id).await.map_err(unavailable)?;
                Start::After(id)
            }
        };
        let mut watched = Watched::new(&self.hub, &room, &request.get_ref().watch);
        let visit = Visit::new("subscribe", Some(username), client(&request));
        // Present from here on (with a session), and told who else is.
        let here = session.as_ref().map(|s| room.presence().arrive(&s.name));
        let presence = Arc::clone(room.presence());
        let (online, mut changes) = presence.watch();
        let mut subscription = self.hub.subscribe(&room, start, None);
        // A ban of the session's name ends the stream.
        let mut bans = self.moderation.bans_changed();
        let moderation = Arc::clone(&self.moderation);
        let own_name = session.as_ref().map(|s| s.name.clone());
        // The room's topic or slow mode changing; reports, for a moderator.
        let mut settings = self.moderation.rooms_changed();
        let mut reports = session
            .as_ref()
            .filter(|s| self.moderates(s))
            .map(|_| self.moderation.reports().listen());
        let server = self.clone();
        let period = self.heartbeat;
        let ready = Ready {
            timestamp: now_millis(),
            heartbeat_interval_ms: u32::try_from(period.as_millis()).unwrap_or(u32::MAX),
            last_id: subscription.newest_at_start(),
        };

        let events = async_stream::stream! {
            let (_visit, _holding, _here) = (visit, holding, here);
            yield Ok(wire::event(Event::Ready(ready)));
            yield Ok(presence_event(online, Vec::new(), Vec::new()));
            for activity in watched.all() {
                yield Ok(activity);
            }
            let mut heartbeat = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
            heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut activity = tokio::time::interval_at(tokio::time::Instant::now() + ACTIVITY_EVERY, ACTIVITY_EVERY);
            activity.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let watching = !watched.is_empty();
            loop {
                let step = tokio::select! {
                    biased;
                    received = subscription.recv() => Some(received),
                    _ = activity.tick(), if watching => {
                        for activity in watched.changed() {
                            yield Ok(activity);
                        }
                        continue;
                    }
                    change = changes.recv() => {
                        match change.map_err(|_| ()).and_then(|first| Folded::gather(first, &mut changes).map_err(|_| ())) {
                            Ok(Folded { joined, left, typing }) => {
                                if !joined.is_empty() || !left.is_empty() {
                                    yield Ok(presence_event(Vec::new(), joined, left));
                                }
                                for (username, typing) in typing {
                                    yield Ok(wire::event(Event::Typing(chat_proto::Typing { username, typing })));
                                }
                            }
                            // Fell far behind the changes: start over from who is here.
                            Err(()) => {
                                let (online, fresh) = presence.watch();
                                changes = fresh;
                                yield Ok(presence_event(online, Vec::new(), Vec::new()));
                            }
                        }
                        continue;
                    }
                    changed = settings.recv() => {
                        match changed {
                            Ok(name) if name == room.name() => {
                                yield Ok(wire::event(Event::Room(server.room_reply(&room))));
                            }
                            // Missed some: say how the room stands now.
                            Err(broadcast::error::RecvError::Lagged(_)) => {
                                yield Ok(wire::event(Event::Room(server.room_reply(&room))));
                            }
                            _ => {}
                        }
                        continue;
                    }
                    Some(report) = next_report(&mut reports) => {
                        yield Ok(wire::event(Event::Report(server.in_context(report).await)));
                        continue;
                    }
                    Ok(()) = bans.changed(), if own_name.is_some() => {
                        if let Some(ban) = own_name.as_deref().and_then(|name| moderation.banned(name)) {
                            yield Err(banned(&ban));
                            break;
                        }
                        continue;
                    }
                    _ = heartbeat.tick() => None,
                };
                match step {
                    Some(Ok(first)) => {
                        for delivery in subscription.burst(first, BURST) {
                            yield Ok(as_event(delivery));
                        }
                    }
                    Some(Err(closed)) => {
                        yield Err(Status::from(closed));
                        break;
                    }
                    None => yield Ok(wire::event(Event::Heartbeat(Heartbeat { timestamp: now_millis() }))),
                }
            }
        };
        Ok(Response::new(Box::pin(events)))
    }
}

/// The next report a moderator's stream tells of (never, for anyone else's;
/// one that fell behind skips what it missed: `ListReports` has them).
async fn next_report(reports: &mut Option<broadcast::Receiver<Report>>) -> Option<Report> {
    let Some(told) = reports else {
        return std::future::pending().await;
    };
    loop {
        match told.recv().await {
            Ok(report) => return Some(report),
            Err(broadcast::error::RecvError::Lagged(_)) => continue,
            Err(broadcast::error::RecvError::Closed) => return std::future::pending().await,
        }
    }
}

/// The other rooms a Subscribe stream reports the activity of, and the
/// newest id it last told of each.
struct Watched {
    rooms: Vec<(Arc<Room>, u64)>,
}

impl Watched {
    /// `names` that are rooms, other than `own`, each once; the rest are
    /// ignored (a room the client remembers may have gone).
    fn new(hub: &Hub, own: &Room, names: &[String]) -> Self {
        let mut rooms: Vec<(Arc<Room>, u64)> = Vec::new();
        for name in names {
            let Some(room) = rules::room(name).ok().and_then(|n| hub.room(&n)) else {
                continue;
            };
            if room.name() != own.name() && !rooms.iter().any(|(r, _)| r.name() == room.name()) {
                rooms.push((room, 0));
            }
        }
        Self { rooms }
    }

    fn is_empty(&self) -> bool {
        self.rooms.is_empty()
    }

    /// Every watched room's newest id (right after `Ready`).
    fn all(&mut self) -> Vec<Encoded> {
        self.rooms
            .iter_mut()
            .map(|(room, told)| {
                *told = room.last_id();
                activity_event(room, *told)
            })
            .collect()
    }

    /// The rooms whose newest id moved since it was last told.
    fn changed(&mut self) -> Vec<Encoded> {
        self.rooms
            .iter_mut()
            .filter_map(|(room, told)| {
                let now = room.last_id();
                (now != *told).then(|| {
                    *told = now;
                    activity_event(room, now)
                })
            })
            .collect()
    }
}

fn activity_event(room: &Room, last_id: u64) -> Encoded {
    wire::event(Event::Activity(chat_proto::RoomActivity {
        room: room.name().to_owned(),
        last_id,
        last_message_id: room.last_message_id().min(last_id),
    }))
}

/// A `Presence` event.
fn presence_event(online: Vec<String>, joined: Vec<String>, left: Vec<String>) -> Encoded {
    wire::event(Event::Presence(chat_proto::Presence {
        online,
        joined,
        left,
    }))
}

/// A `Subscribe` event for `delivery`.
fn as_event(delivery: Delivery) -> Encoded {
    match delivery {
        Delivery::Entry(relayed) => Encoded::event(relayed),
        Delivery::Gap { after_id, next_id } => wire::event(Event::Gap(Gap { after_id, next_id })),
    }
}
