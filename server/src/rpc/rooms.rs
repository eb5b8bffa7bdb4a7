//! `CreateRoom` and `ListRooms`: rooms within `--max-rooms`, created on a
//! budget of their own per client address, and every room with its newest
//! id and how many people are in it.

use chat_proto::rules;
use chat_proto::{CreateRoomRequest, ListRoomsReply, ListRoomsRequest, Room as RoomReply};
use tonic::{Request, Response, Status};
use tracing::info;

use super::status::{invalid_argument, too_fast_at, unavailable};
use super::{ChatServer, client};
use crate::hub::Room;
use crate::log::LogError;
use crate::metrics::Limit;

impl ChatServer {
    pub(super) async fn create_room(
        &self,
        request: Request<CreateRoomRequest>,
    ) -> Result<Response<RoomReply>, Status> {
        self.ensure_running()?;
        let client = client(&request);
        // Someone muted everywhere opens no rooms either.
        if let Ok(Some(session)) = self.session(&request).await {
            self.not_muted(&session.name, "")?;
        }
        let CreateRoomRequest { name, topic } = request.into_inner();
        if name.is_empty() {
            return Err(Status::invalid_argument("a new room needs a name"));
        }
        let name = rules::room(&name).map_err(invalid_argument)?;
        let topic = rules::topic(&topic).map_err(invalid_argument)?;
        if self.hub.room(&name).is_some() {
            return Err(Status::already_exists(format!(
                "the room {name} exists already"
            )));
        }
        if self.hub.room_count() >= self.max_rooms {
            self.hub.metrics().limit_hit(Limit::Rooms);
            return Err(Status::resource_exhausted(format!(
                "this server has its {} rooms already (--max-rooms)",
                self.max_rooms
            )));
        }
        self.room_rates
            .check(None, &client.map_or_else(String::new, |c| c.to_string()))
            .map_err(|too_fast| {
                self.hub.metrics().limit_hit(Limit::RateRooms);
                too_fast_at("creating rooms", &too_fast)
            })?;
        let room = self
            .hub
            .create_room(&name, &topic)
            .await
            .map_err(|error| match error {
                LogError::RoomExists(_) => Status::already_exists(error.to_string()),
                error => unavailable(error),
            })?;
        info!(room = room.name(), "room created");
        Ok(Response::new(self.room_reply(&room)))
    }

    pub(super) async fn list_rooms(
        &self,
        _request: Request<ListRoomsRequest>,
    ) -> Result<Response<ListRoomsReply>, Status> {
        self.ensure_running()?;
        self.hub.refresh_rooms().await.map_err(unavailable)?;
        let rooms = self
            .hub
            .rooms()
            .iter()
            .map(|r| self.room_reply(r))
            .collect();
        Ok(Response::new(ListRoomsReply { rooms }))
    }

    /// What `CreateRoom` and `ListRooms` say of a room.
    pub(super) fn room_reply(&self, room: &Room) -> RoomReply {
        RoomReply {
            name: room.name().to_owned(),
            // A moderator's topic stands over the one the room was made with.
            topic: self
                .moderation
                .topic(room.name())
                .unwrap_or_else(|| room.topic().to_owned()),
            last_id: room.last_id(),
            online: u32::try_from(room.presence().count()).unwrap_or(u32::MAX),
            last_message_id: room.last_message_id(),
            slow_mode_seconds: self.moderation.slow_mode(room.name()),
        }
    }
}
