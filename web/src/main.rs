//! Entry point: mounts the app and nothing else, so every piece of behaviour
//! lives in a module that says what it is for.

mod api;
mod app;
mod composer;
mod connection;
mod grpc;
mod messages;
mod name_prompt;
mod notify;
mod people;
mod rich;
mod rooms;
mod session;
mod time;
mod wait;

fn main() {
    leptos::mount::mount_to_body(app::App);
}
