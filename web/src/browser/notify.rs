//! Desktop notifications for messages that mention the user while the tab
//! is hidden. Off until the user turns them on with the bell in the header
//! (`components::notify_toggle`): the browser's permission prompt comes only
//! from that click, never on its own. The choice is remembered in local
//! storage.

use wasm_bindgen_futures::JsFuture;
use web_sys::{Notification, NotificationOptions, NotificationPermission};

const STORE_KEY: &str = "chat.notify";

fn storage() -> Option<web_sys::Storage> {
    web_sys::window()?.local_storage().ok().flatten()
}

fn granted() -> bool {
    Notification::permission() == NotificationPermission::Granted
}

/// Whether the user turned notifications on (and the browser still allows
/// them).
pub fn enabled() -> bool {
    granted()
        && storage()
            .and_then(|s| s.get_item(STORE_KEY).ok().flatten())
            .is_some_and(|v| v == "on")
}

fn remember(on: bool) {
    if let Some(store) = storage() {
        let _ = store.set_item(STORE_KEY, if on { "on" } else { "off" });
    }
}

/// The user turned notifications off.
pub fn turn_off() {
    remember(false);
}

/// The user asked for notifications: asks the browser's permission (only
/// if not given already), remembers the outcome and says whether they are
/// on now.
pub async fn turn_on() -> bool {
    if !granted()
        && let Ok(asked) = Notification::request_permission()
    {
        let _ = JsFuture::from(asked).await;
    }
    let allowed = granted();
    remember(allowed);
    allowed
}

/// Shows a notification for a message by `author` that mentions the user
/// (the caller checks that, see `state::rich::mentions`), just arrived in
/// `room`, if the tab is hidden and the user wants them.
pub fn mention(author: &str, text: &str, room: &str) {
    let hidden = web_sys::window()
        .and_then(|w| w.document())
        .is_some_and(|d| d.hidden());
    if !hidden || !enabled() {
        return;
    }
    let options = NotificationOptions::new();
    options.set_body(text);
    // One per room: a newer mention replaces the older one.
    options.set_tag(room);
    let _ = Notification::new_with_options(&format!("{author} in #{room}"), &options);
}
