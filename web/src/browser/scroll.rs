//! Bringing a message's row into view: scrolled to the middle of the list
//! it scrolls in (its offset parent) and outlined, for a link to it or a
//! reply's quote; the row outlined before is no longer.

use leptos::prelude::document;
use wasm_bindgen::JsCast;

/// The class that outlines the row shown.
const SHOWN: &str = "flash";

/// Shows message `id`'s row, if the page has it.
pub fn show_message(id: u64) {
    let Some(row) = document()
        .get_element_by_id(&format!("msg-{id}"))
        .and_then(|row| row.dyn_into::<web_sys::HtmlElement>().ok())
    else {
        return;
    };
    if let Some(list) = row
        .offset_parent()
        .and_then(|list| list.dyn_into::<web_sys::HtmlElement>().ok())
    {
        // A live collection (it shrinks as each loses the class): taken
        // out first.
        let shown = list.get_elements_by_class_name(SHOWN);
        let shown: Vec<_> = (0..shown.length()).filter_map(|i| shown.item(i)).collect();
        for other in shown {
            let _ = other.class_list().remove_1(SHOWN);
        }
        list.set_scroll_top(row.offset_top() - (list.client_height() - row.offset_height()) / 2);
    }
    let _ = row.class_list().add_1(SHOWN);
}
