//! Where keyboard focus goes: into a dialog or drawer when it opens, round
//! inside a dialog (Tab), back to what opened it when it closes, and to the
//! composer after joining or changing rooms. The page behind an open dialog
//! is inert, so nothing here has to fight for focus with it.

use leptos::prelude::{Effect, Get, RwSignal, Set, document, request_animation_frame};
use wasm_bindgen::JsCast;

/// Focuses `to` on the next frame (once a closed dialog or drawer is gone),
/// or the composer if `to` is gone, hidden or inert. Nothing is focused
/// while a dialog is still open.
pub fn restore(to: Option<web_sys::Element>) {
    request_animation_frame(move || {
        if modal_open() {
            return;
        }
        if let Some(element) = to
            && element.is_connected()
            && element.closest("[inert]").ok().flatten().is_none()
            && let Ok(element) = element.dyn_into::<web_sys::HtmlElement>()
        {
            let _ = element.focus();
            if document().active_element().as_ref() == Some(element.as_ref()) {
                return;
            }
        }
        focus_composer_within(3);
    });
}

/// While a drawer lives: each time `open` turns true, focus moves to what
/// `first` (a selector) finds in it, on the next frame (once it is shown).
pub fn into_drawer(open: RwSignal<bool>, first: &'static str) {
    Effect::new(move |was_open: Option<bool>| {
        let is_open = open.get();
        if is_open && was_open != Some(true) {
            request_animation_frame(move || {
                let target = document()
                    .query_selector(first)
                    .ok()
                    .flatten()
                    .and_then(|e| e.dyn_into::<web_sys::HtmlElement>().ok());
                if let Some(target) = target {
                    let _ = target.focus();
                }
            });
        }
        is_open
    });
}

/// Closes a drawer (`open`) and gives focus back to the button that opens
/// it (found by `toggle`, a selector).
pub fn close_drawer(open: RwSignal<bool>, toggle: &str) {
    open.set(false);
    restore(document().query_selector(toggle).ok().flatten());
}

/// Focuses the composer on the next frame (after a room change has built
/// the new room's), unless a dialog is open.
pub fn composer() {
    restore(None);
}

/// What can take focus in a dialog.
const FOCUSABLE: &str = "input:not([disabled]), button:not([disabled]), \
    textarea:not([disabled]), select:not([disabled]), a[href], \
    [tabindex]:not([tabindex='-1'])";

/// For a dialog's keydown: Tab from its last field goes round to its first,
/// Shift+Tab from the first to the last (the page behind is inert, and
/// focus would otherwise leave the page for the browser's own controls).
pub fn keep_tab_inside(ev: &web_sys::KeyboardEvent) {
    if ev.key() != "Tab" {
        return;
    }
    let Some(dialog) = ev
        .current_target()
        .and_then(|target| target.dyn_into::<web_sys::Element>().ok())
    else {
        return;
    };
    let all = dialog.get_elements_by_tag_name("*");
    let fields: Vec<web_sys::HtmlElement> = (0..all.length())
        .filter_map(|i| all.item(i))
        .filter(|element| element.matches(FOCUSABLE).unwrap_or(false))
        .filter_map(|element| element.dyn_into().ok())
        .collect();
    let (Some(first), Some(last)) = (fields.first(), fields.last()) else {
        ev.prevent_default();
        return;
    };
    let active = document().active_element();
    let inside = active
        .as_ref()
        .is_some_and(|active| dialog.contains(Some(active)));
    let at = |field: &web_sys::HtmlElement| active.as_ref() == Some(field.as_ref());
    if ev.shift_key() {
        if !inside || at(first) {
            ev.prevent_default();
            let _ = last.focus();
        }
    } else if !inside || at(last) {
        ev.prevent_default();
        let _ = first.focus();
    }
}

fn modal_open() -> bool {
    document()
        .query_selector("[role=dialog][aria-modal=true]")
        .ok()
        .flatten()
        .is_some()
}

/// The composer (built by the open room), focused now or within `frames`.
fn focus_composer_within(frames: u32) {
    let composer = document()
        .query_selector("[data-testid=composer-input]")
        .ok()
        .flatten()
        .and_then(|element| element.dyn_into::<web_sys::HtmlElement>().ok());
    match composer {
        Some(composer) => {
            let _ = composer.focus();
        }
        None if frames > 0 => request_animation_frame(move || focus_composer_within(frames - 1)),
        None => {}
    }
}
