//! `chat-server admin COMMAND`: the operator's commands, sent over the
//! admin socket to the running server (see [`super::socket`]), and what
//! each prints.

use std::path::PathBuf;
use std::time::Duration;

use chat_proto::moderation_client::ModerationClient;
use chat_proto::{
    AuditRequest, BanRequest, ChatServiceClient, DeleteRequest, DismissReportRequest, LiftRequest,
    ListReportsRequest, ModerationReply, MuteRequest, PurgeRequest, SlowModeRequest, TopicRequest,
};
use hyper_util::rt::TokioIo;
use thiserror::Error;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint};

use crate::log::parse_age;

#[derive(Debug, Error)]
pub enum AdminError {
    #[error(
        "no admin socket: this server has none (--db :memory: without a state directory, or \
         --admin-socket off); give its path with --socket"
    )]
    NoSocket,
    #[error("cannot reach the server at {path}: {source} (is it running, and are you its user?)")]
    Connect {
        path: PathBuf,
        source: tonic::transport::Error,
    },
    #[error("the server refused: {}", .0.message())]
    Refused(#[from] tonic::Status),
}

#[derive(Debug, Clone, clap::Args)]
pub struct AdminArgs {
    /// The admin socket (by default where this configuration's server puts
    /// it: see --admin-socket).
    #[arg(long)]
    pub socket: Option<PathBuf>,

    #[command(subcommand)]
    pub command: AdminCommand,
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum AdminCommand {
    /// Silence a name in a room (or everywhere) for a while or until lifted.
    Mute {
        name: String,
        /// The room (default: every room).
        #[arg(long, default_value = "")]
        room: String,
        /// How long, like 10m or 24h (default: until lifted).
        #[arg(long = "for", value_parser = parse_age)]
        lasting: Option<Duration>,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Ban a name everywhere: its streams end, its sessions are revoked.
    Ban {
        name: String,
        /// How long, like 24h or 7d (default: until lifted).
        #[arg(long = "for", value_parser = parse_age)]
        lasting: Option<Duration>,
        #[arg(long, default_value = "")]
        reason: String,
        /// Ban the addresses the name used in the last hour too.
        #[arg(long)]
        address: bool,
    },
    /// End a name's mute in a room, or (no room) every mute and its ban.
    Lift {
        name: String,
        #[arg(long, default_value = "")]
        room: String,
    },
    /// Delete a name's messages in a room (or everywhere) from the last while.
    Purge {
        name: String,
        #[arg(long, default_value = "")]
        room: String,
        /// How far back, like 1h (default: all of them).
        #[arg(long = "last", value_parser = parse_age)]
        last: Option<Duration>,
    },
    /// Slow a room down: each name posts once per SECONDS (0: off).
    Slow { room: String, seconds: u32 },
    /// Set a room's topic (an empty one clears it).
    Topic { room: String, topic: String },
    /// The open reports, oldest first.
    Reports,
    /// Close a report without acting on its message.
    Dismiss { id: u64 },
    /// Delete a message (as a moderator).
    Delete {
        room: String,
        id: u64,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// What moderators did, oldest first.
    Audit {
        /// Entries after this id.
        #[arg(long, default_value_t = 0)]
        after: u64,
        /// At most this many (1-500).
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
}

/// Runs `command` against the server at `socket`; what to print.
pub async fn run(socket: Option<PathBuf>, command: AdminCommand) -> Result<String, AdminError> {
    let path = socket.ok_or(AdminError::NoSocket)?;
    let channel = connect(&path).await?;
    let mut moderation = ModerationClient::new(channel.clone());
    let done = |reply: tonic::Response<ModerationReply>| {
        format!("done (audit entry {})", reply.into_inner().audit_id)
    };
    Ok(match command {
        AdminCommand::Mute {
            name,
            room,
            lasting,
            reason,
        } => done(
            moderation
                .mute(MuteRequest {
                    room,
                    username: name,
                    seconds: seconds(lasting),
                    reason,
                })
                .await?,
        ),
        AdminCommand::Ban {
            name,
            lasting,
            reason,
            address,
        } => done(
            moderation
                .ban(BanRequest {
                    username: name,
                    seconds: seconds(lasting),
                    reason,
                    address,
                })
                .await?,
        ),
        AdminCommand::Lift { name, room } => done(
            moderation
                .lift(LiftRequest {
                    username: name,
                    room,
                })
                .await?,
        ),
        AdminCommand::Purge { name, room, last } => {
            let reply = moderation
                .purge(PurgeRequest {
                    room,
                    username: name,
                    seconds: seconds(last),
                })
                .await?
                .into_inner();
            format!("deleted {} messages", reply.deleted)
        }
        AdminCommand::Slow { room, seconds } => done(
            moderation
                .set_slow_mode(SlowModeRequest { room, seconds })
                .await?,
        ),
        AdminCommand::Topic { room, topic } => {
            done(moderation.set_topic(TopicRequest { room, topic }).await?)
        }
        AdminCommand::Reports => {
            let reports = moderation
                .list_reports(ListReportsRequest {})
                .await?
                .into_inner()
                .reports;
            if reports.is_empty() {
                "no open reports".to_owned()
            } else {
                reports
                    .iter()
                    .map(report_line)
                    .collect::<Vec<_>>()
                    .join("\n")
            }
        }
        AdminCommand::Dismiss { id } => done(
            moderation
                .dismiss_report(DismissReportRequest { id })
                .await?,
        ),
        AdminCommand::Delete { room, id, reason } => {
            let reply = ChatServiceClient::new(channel)
                .delete(DeleteRequest { room, id, reason })
                .await?
                .into_inner();
            format!("deleted (change {})", reply.id)
        }
        AdminCommand::Audit { after, limit } => {
            let entries = moderation
                .audit_log(AuditRequest {
                    after_id: after,
                    limit,
                })
                .await?
                .into_inner()
                .entries;
            entries.iter().map(line).collect::<Vec<_>>().join("\n")
        }
    })
}

fn seconds(lasting: Option<Duration>) -> u64 {
    lasting.map_or(0, |d| d.as_secs())
}

/// `ms` since the epoch as the lines say a time.
fn when(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_default()
}

/// One open report as a line: id, time, reporter, where, which message, why.
fn report_line(report: &chat_proto::Report) -> String {
    let mut line = format!(
        "{:>6}  {}  {} reported message {} in #{}",
        report.id,
        when(report.timestamp),
        report.username,
        report.target,
        report.room
    );
    if !report.reason.is_empty() {
        line.push_str(&format!("  \"{}\"", report.reason));
    }
    line
}

/// One audit entry as a line: id, time, who, what, whom, where, why.
fn line(entry: &chat_proto::AuditEntry) -> String {
    let when = when(entry.timestamp);
    let mut line = format!(
        "{:>6}  {when}  {}  {}",
        entry.id, entry.moderator, entry.action
    );
    if !entry.username.is_empty() {
        line.push_str(&format!("  {}", entry.username));
    }
    if !entry.room.is_empty() {
        line.push_str(&format!("  #{}", entry.room));
    }
    match entry.action.as_str() {
        "delete" => line.push_str(&format!("  message {}", entry.target)),
        "purge" => line.push_str(&format!("  {} messages", entry.target)),
        "slow_mode" => line.push_str(&format!("  {} s", entry.target)),
        "ban" if entry.target == 1 => line.push_str("  with the address"),
        "dismiss_report" => line.push_str(&format!("  report {}", entry.target)),
        _ => {}
    }
    if !entry.reason.is_empty() {
        line.push_str(&format!("  \"{}\"", entry.reason));
    }
    line
}

/// A gRPC channel over the Unix socket at `path`.
async fn connect(path: &std::path::Path) -> Result<Channel, AdminError> {
    let at = path.to_owned();
    // The URI is a placeholder: every connection goes to the socket.
    let endpoint = Endpoint::from_static("http://admin.socket");
    endpoint
        .connect_with_connector(tower::service_fn(move |_: http::Uri| {
            let at = at.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(at).await?)) }
        }))
        .await
        .map_err(|source| AdminError::Connect {
            path: path.to_owned(),
            source,
        })
}
