//! Copying text for the user (a link to a message) with the asynchronous
//! Clipboard API, reached through `Reflect` so web-sys needs no more
//! features for one call.

use js_sys::{Function, Promise, Reflect};
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;

/// Puts `text` on the clipboard; whether the browser took it (it may refuse
/// outside a user's gesture, or on an insecure origin).
pub async fn copy(text: &str) -> bool {
    let Some(window) = web_sys::window() else {
        return false;
    };
    let written = (|| -> Result<Promise, JsValue> {
        let clipboard = Reflect::get(&window.navigator(), &"clipboard".into())?;
        let write = Reflect::get(&clipboard, &"writeText".into())?.dyn_into::<Function>()?;
        write.call1(&clipboard, &text.into())?.dyn_into::<Promise>()
    })();
    match written {
        Ok(promise) => JsFuture::from(promise).await.is_ok(),
        Err(_) => false,
    }
}
