//! `chat-client`: the paper's terminal client, in Rust, over native gRPC.
//!
//! Lines typed on stdin are sent on one `ChatStream`; everyone else's
//! messages are printed as they arrive. Lines the server would refuse are
//! caught here first, so a typo does not end the session.

use std::time::Duration;

use anyhow::Context;
use chat_proto::rules;
use chat_proto::{ChatMessage, ChatServiceClient};
use chrono::{Local, TimeZone};
use clap::Parser;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Endpoint;

/// Chat from a terminal: type a line and press Enter to send it; Ctrl-D quits.
#[derive(Debug, Parser)]
#[command(name = "chat-client", version, about)]
struct Args {
    /// The server's URL.
    #[arg(long, env = "CHAT_SERVER", default_value = "http://127.0.0.1:50051")]
    server: String,
    /// Your name in the chat.
    #[arg(long, env = "CHAT_NAME", default_value = "terminal")]
    name: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let name = rules::username(&args.name).context("--name")?;
    let channel = Endpoint::from_shared(args.server.clone())
        .context("--server must be a URL like http://127.0.0.1:50051")?
        .connect()
        .await
        .with_context(|| format!("cannot connect to {}", args.server))?;
    let mut client = ChatServiceClient::new(channel);

    let (outgoing, to_send) = mpsc::channel(16);
    let mut incoming = client
        .chat_stream(ReceiverStream::new(to_send))
        .await
        .context("opening the chat stream")?
        .into_inner();
    eprintln!(
        "connected to {} as {name}; type a message and press Enter",
        args.server
    );

    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    loop {
        tokio::select! {
            line = lines.next_line() => match line.context("reading stdin")? {
                Some(line) if line.trim().is_empty() => {}
                Some(line) => match rules::message_text(&line) {
                    Ok(text) => {
                        let message = ChatMessage { username: name.clone(), message: text, ..Default::default() };
                        outgoing.send(message).await.context("the chat stream closed")?;
                    }
                    Err(error) => eprintln!("not sent: {error}"),
                },
                None => break,
            },
            received = incoming.message() => match received {
                Ok(Some(message)) => println!("{}", render(&message)),
                Ok(None) => anyhow::bail!("the server ended the chat"),
                Err(status) => anyhow::bail!("the server ended the chat: {}", status.message()),
            },
        }
    }
    // End of input: close our side, give the last lines a moment to leave.
    drop(outgoing);
    tokio::time::sleep(Duration::from_millis(300)).await;
    Ok(())
}

/// `[14:05] ada: hello`, in local time.
fn render(message: &ChatMessage) -> String {
    let time = Local
        .timestamp_millis_opt(message.timestamp)
        .single()
        .map_or_else(|| "--:--".to_owned(), |t| t.format("%H:%M").to_string());
    format!("[{time}] {}: {}", message.username, message.message)
}
