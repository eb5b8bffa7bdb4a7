//! `Report`, `ListReports` and `DismissReport`: anyone with a session points
//! the moderators at a message, once per message; moderators list what is
//! open and dismiss what needs nothing done (deleting the message closes
//! its reports too: see `Delete` and `Purge`). A report is shown with its
//! message as it stands, read when it is shown.

use std::sync::Arc;

use chat_proto::rules;
use chat_proto::{
    DismissReportRequest, ListReportsReply, ListReportsRequest, ModerationReply, Report,
    ReportRequest,
};
use tonic::{Request, Response, Status};
use tracing::info;

use super::ChatServer;
use super::status::{invalid_argument, moderation_failed};
use crate::http::connection::Conn;
use crate::log::now_millis;
use crate::people::name_key::NameKey;

impl ChatServer {
    pub(super) async fn report(
        &self,
        request: Request<ReportRequest>,
    ) -> Result<Response<ModerationReply>, Status> {
        let conn = request.extensions().get::<Arc<Conn>>().cloned();
        let session = self.session(&request).await?.ok_or_else(|| {
            Status::unauthenticated("only someone who joined can report a message: Join first")
        })?;
        let ReportRequest { room, id, reason } = request.into_inner();
        let room = self.room(&room).await?;
        let reason = rules::reason(&reason).map_err(invalid_argument)?;
        let target = self.message(&room, id).await?;
        if target.deleted {
            return Err(Status::failed_precondition(format!(
                "message {id} is deleted already"
            )));
        }
        if NameKey::of(&target.username) == NameKey::of(&session.name) {
            return Err(Status::invalid_argument(
                "that message is yours: delete it instead of reporting it",
            ));
        }
        self.spend(conn.as_ref(), &session.name)?;
        let report = Report {
            id: 0,
            room: room.name().to_owned(),
            target: id,
            username: session.name.clone(),
            reason,
            timestamp: now_millis(),
            message: None,
        };
        let Some(report) = self
            .moderation
            .report(report)
            .await
            .map_err(moderation_failed)?
        else {
            return Err(Status::already_exists(format!(
                "you reported message {id} already: the moderators have it"
            )));
        };
        info!(
            reporter = report.username,
            room = report.room,
            target = report.target,
            "reported"
        );
        Ok(Response::new(ModerationReply {
            audit_id: report.id,
        }))
    }

    pub(super) async fn list_reports(
        &self,
        request: Request<ListReportsRequest>,
    ) -> Result<Response<ListReportsReply>, Status> {
        self.moderator(&request).await?;
        let mut reports = Vec::new();
        for report in self.moderation.reports().all() {
            reports.push(self.in_context(report).await);
        }
        Ok(Response::new(ListReportsReply { reports }))
    }

    /// `report` with its message as it stands (none if it cannot be read).
    pub(super) async fn in_context(&self, report: Report) -> Report {
        let message = match self.room(&report.room).await {
            Ok(room) => self.message(&room, report.target).await.ok(),
            Err(_) => None,
        };
        Report { message, ..report }
    }

    pub(super) async fn dismiss_report(
        &self,
        request: Request<DismissReportRequest>,
    ) -> Result<Response<ModerationReply>, Status> {
        let moderator = self.moderator(&request).await?;
        let id = request.into_inner().id;
        let audit_id = self
            .moderation
            .dismiss(&moderator.name, id)
            .await
            .map_err(moderation_failed)?
            .ok_or_else(|| Status::not_found(format!("there is no open report {id}")))?;
        info!(
            moderator = moderator.name,
            report = id,
            "dismissed a report"
        );
        Ok(Response::new(ModerationReply { audit_id }))
    }
}
