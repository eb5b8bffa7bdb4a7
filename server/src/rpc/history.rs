//! `History`: a page of a room's past messages, before an id (scrolling
//! back) or around one (a link to a message), read from the log in their
//! current state (see `hub::history`). Anyone who may subscribe may read.

use chat_proto::rules::{HISTORY_PAGE, MAX_HISTORY_PAGE};
use chat_proto::{HistoryReply, HistoryRequest};
use tonic::{Request, Response, Status};

use super::status::unavailable;
use super::{ChatServer, client};
use crate::hub::{Around, Page};

impl ChatServer {
    pub(super) async fn history(
        &self,
        request: Request<HistoryRequest>,
    ) -> Result<Response<HistoryReply>, Status> {
        self.ensure_running()?;
        // As for Subscribe: with --require-join a session, and never from a
        // banned address.
        self.session(&request).await?;
        self.admit(client(&request), None)?;
        let HistoryRequest {
            room,
            before_id,
            limit,
            around_id,
        } = request.into_inner();
        if before_id != 0 && around_id != 0 {
            return Err(Status::invalid_argument(
                "give before_id or around_id, not both",
            ));
        }
        let limit = match limit {
            0 => HISTORY_PAGE,
            n => n.min(MAX_HISTORY_PAGE),
        } as usize;
        let room = self.room(&room).await?;
        let page = if around_id == 0 {
            self.hub
                .page_before(&room, before_id, limit)
                .await
                .map_err(unavailable)?
        } else {
            match self
                .hub
                .page_around(&room, around_id, limit / 2)
                .await
                .map_err(unavailable)?
            {
                Around::Page(page) => page,
                Around::NotStored => {
                    return Err(Status::not_found(format!(
                        "there is no message {around_id} in #{} (never was, or too old to be kept)",
                        room.name()
                    )));
                }
                Around::NotAMessage => {
                    return Err(Status::invalid_argument(format!(
                        "{around_id} is the id of a change, not of a message"
                    )));
                }
            }
        };
        let Page {
            messages,
            more_before,
            more_after,
        } = page;
        Ok(Response::new(HistoryReply {
            messages,
            more_before,
            more_after,
        }))
    }
}
