//! Entry point: mounts the app and nothing else, so every piece of behaviour
//! lives in a module that says what it is for.

mod api;
mod app;
mod composer;
mod connection;
mod focus;
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
    // A panic aborts the app (panic = "abort"): say why in the console first,
    // so a bug report, or a failing browser test, has more than
    // "unreachable".
    std::panic::set_hook(Box::new(|info| {
        web_sys::console::error_1(&info.to_string().into());
    }));
    leptos::mount::mount_to_body(app::App);
}
