//! Waiting on the browser: a timer and a window event as futures that clean
//! up after themselves when dropped. Network calls are raced against these
//! (a timeout, a watchdog, "the network is back"), and the loser of a race is
//! dropped, so a dropped wait must leave no timer or listener behind.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use js_sys::{Function, Promise};
use wasm_bindgen_futures::JsFuture;
use web_sys::Window;

/// Resolves after a delay on the browser's timer; see [`sleep_ms`].
pub struct Sleep {
    done: JsFuture,
    timer: Option<(Window, i32)>,
}

/// Resolves after `ms` milliseconds (rounded up). Dropping it early clears
/// the timer.
pub fn sleep_ms(ms: f64) -> Sleep {
    let window = web_sys::window();
    let mut timer = None;
    // The executor runs synchronously, so `timer` is set before `new` returns.
    let done = Promise::new(&mut |resolve, _reject| {
        if let Some(window) = &window
            && let Ok(id) = window
                .set_timeout_with_callback_and_timeout_and_arguments_0(&resolve, ms.ceil() as i32)
        {
            timer = Some((window.clone(), id));
        }
    });
    Sleep {
        done: JsFuture::from(done),
        timer,
    }
}

impl Future for Sleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        Pin::new(&mut self.done).poll(cx).map(|_| ())
    }
}

impl Drop for Sleep {
    fn drop(&mut self) {
        // Clearing a timer that has already fired is a no-op.
        if let Some((window, id)) = self.timer.take() {
            window.clear_timeout_with_handle(id);
        }
    }
}

/// Resolves the next time the window fires an event; see [`window_event`].
pub struct WindowEvent {
    fired: JsFuture,
    listener: Option<(Window, &'static str, Function)>,
}

/// Resolves the next time the window fires `name` (e.g. `"online"`).
/// Dropping it removes the listener. Never resolves where there is no window.
pub fn window_event(name: &'static str) -> WindowEvent {
    let window = web_sys::window();
    let mut listener = None;
    // The promise's own `resolve` is the listener: the event settles it.
    let fired = Promise::new(&mut |resolve, _reject| {
        if let Some(window) = &window
            && window
                .add_event_listener_with_callback(name, &resolve)
                .is_ok()
        {
            listener = Some((window.clone(), name, resolve));
        }
    });
    WindowEvent {
        fired: JsFuture::from(fired),
        listener,
    }
}

impl Future for WindowEvent {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        Pin::new(&mut self.fired).poll(cx).map(|_| ())
    }
}

impl Drop for WindowEvent {
    fn drop(&mut self) {
        if let Some((window, name, resolve)) = self.listener.take() {
            let _ = window.remove_event_listener_with_callback(name, &resolve);
        }
    }
}
