//! `Search`: messages whose text matches a query (the language is
//! `crate::search::query`'s), newest first, in their current state, with
//! the words that matched. Anyone who may read may search, on a budget
//! per client address of its own (`--search-rate`).

use chat_proto::rules::{self, MAX_SEARCH_PAGE, SEARCH_PAGE};
use chat_proto::{SearchHit, SearchReply, SearchRequest};
use tonic::{Request, Response, Status};

use super::status::{too_fast_at, unavailable};
use super::{ChatServer, client};
use crate::metrics::Limit;
use crate::search::{Find, Query};

impl ChatServer {
    pub(super) async fn search(
        &self,
        request: Request<SearchRequest>,
    ) -> Result<Response<SearchReply>, Status> {
        self.ensure_running()?;
        // As for History: with --require-join a session, and never from a
        // banned address.
        self.session(&request).await?;
        let client = client(&request);
        self.admit(client, None)?;
        self.search_rates
            .check(None, &client.map_or_else(String::new, |c| c.to_string()))
            .map_err(|too_fast| {
                self.hub.metrics().limit_hit(Limit::RateSearch);
                too_fast_at("searching", &too_fast)
            })?;
        let SearchRequest {
            query,
            room,
            limit,
            page,
        } = request.into_inner();
        let query = Query::parse(&query).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let room = match (room.trim(), query.room.as_deref()) {
            ("", None) => None,
            ("", Some(named)) | (named, None) => Some(named),
            (field, Some(named)) => {
                if rules::room(field).ok() != rules::room(named).ok() {
                    return Err(Status::invalid_argument(format!(
                        "room is {field} but the query says in:{named}: give one room"
                    )));
                }
                Some(field)
            }
        };
        // An unknown room is NOT_FOUND, as everywhere.
        let room = match room {
            Some(raw) => Some(self.room(raw).await?.name().to_owned()),
            None => None,
        };
        let before = match page.as_str() {
            "" => None,
            page => Some(page.parse::<i64>().map_err(|_| {
                Status::invalid_argument(
                    "page is not one this server gave: pass SearchReply.next_page as it came",
                )
            })?),
        };
        let limit = match limit {
            0 => SEARCH_PAGE,
            n => n.min(MAX_SEARCH_PAGE),
        } as usize;
        let hits = self
            .hub
            .search(Find {
                expression: query.expression(),
                room,
                from: query.from.clone(),
                before,
                limit,
            })
            .await
            .map_err(unavailable)?;
        Ok(Response::new(SearchReply {
            hits: hits
                .messages
                .into_iter()
                .map(|message| SearchHit {
                    terms: query.terms_in(&message.message),
                    message: Some(message),
                })
                .collect(),
            next_page: hits.next.map(|seq| seq.to_string()).unwrap_or_default(),
        }))
    }
}
