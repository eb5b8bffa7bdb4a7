//! Entry point: mounts the app and nothing else, so every piece of behaviour
//! lives in a module that says what it is for.
//!
//! The folders are the layers, each using only those listed before it:
//!
//! - `browser`: the browser's own services (timers, focus, notifications,
//!   dates), wrapped for the rest of the app.
//! - `net`: the RPCs (tonic's generated client over gRPC-Web) and the
//!   session they are made as.
//! - `state`: what the page knows (the timeline, who is here, the rooms) as
//!   signals, with the logic that keeps it right; no views.
//! - `feed`: the Subscribe stream that fills `state`, kept alive.
//! - `components`: the views, each reading and changing `state`.
//! - `app`: the page, putting it all together.

mod app;
mod browser;
mod components;
mod feed;
mod net;
mod state;

fn main() {
    // A panic aborts the app (panic = "abort"): say why in the console first,
    // so a bug report, or a failing browser test, has more than
    // "unreachable".
    std::panic::set_hook(Box::new(|info| {
        web_sys::console::error_1(&info.to_string().into());
    }));
    leptos::mount::mount_to_body(app::App);
}
