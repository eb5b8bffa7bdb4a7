//! A proxy's own answer to a gRPC-Web call, made a gRPC status.
//!
//! A proxy in front of the server may answer a call itself, in plain HTTP
//! without a `grpc-status`: nginx's 502/503/504 while the server restarts,
//! 401/403 from an authenticating proxy, 404 under a wrong path prefix. The
//! page needs a status for those (UNAVAILABLE is retried, UNAUTHENTICATED
//! makes it join again, UNIMPLEMENTED is a refusal retrying won't fix).
//! tonic would map the HTTP status itself (gRPC's HTTP-to-status table), but
//! tonic-web-wasm-client (0.9) never hands it such a response: it fails any
//! response that is not gRPC-Web with `InvalidContentType` or
//! `MissingContentTypeHeader`, which carry no HTTP status, so every proxy
//! error would come out as UNKNOWN ("couldn't reach the server").
//!
//! The library calls the page's global `fetch`, so this wraps it: the answer
//! to a gRPC-Web request that failed in HTTP and carries no `grpc-status` is
//! replaced by an empty gRPC-Web answer with the mapped status in its
//! headers (a "trailers-only" response), which the library and tonic read
//! like a status from the server. Every other answer, and every request that
//! is not gRPC-Web, passes through untouched. The better home for this is
//! upstream: the library could hand tonic the response with its HTTP status
//! and an empty body, and tonic would map it.

use std::cell::Cell;

use js_sys::{Function, Promise, Reflect};
use tonic::Code;
use wasm_bindgen::closure::Closure;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::{JsFuture, future_to_promise};
use web_sys::{Headers, Request, Response, ResponseInit};

thread_local! {
    static INSTALLED: Cell<bool> = const { Cell::new(false) };
}

/// Wraps the page's `fetch` (once; later calls do nothing). Where there is
/// no window or no `fetch` to wrap, calls still work, with a proxy's errors
/// as UNKNOWN.
pub fn map_proxy_errors() {
    if INSTALLED.with(|installed| installed.replace(true)) {
        return;
    }
    let Some(window) = web_sys::window() else {
        return;
    };
    let key = JsValue::from_str("fetch");
    let Some(fetch) = Reflect::get(&window, &key)
        .ok()
        .and_then(|fetch| fetch.dyn_into::<Function>().ok())
    else {
        return;
    };
    let this = JsValue::from(window.clone());
    let wrapped = Closure::<dyn Fn(JsValue, JsValue) -> Promise>::new(
        move |input: JsValue, init: JsValue| {
            let answer = match fetch.call2(&this, &input, &init) {
                // `fetch` returns a promise; anything else is taken as its value.
                Ok(answer) => answer
                    .dyn_into::<Promise>()
                    .unwrap_or_else(|value| Promise::resolve(&value)),
                Err(error) => return Promise::reject(&error),
            };
            if !is_grpc_web(&input) {
                return answer;
            }
            future_to_promise(async move { JsFuture::from(answer).await.map(with_status) })
        },
    );
    if Reflect::set(&window, &key, wrapped.as_ref()).is_ok() {
        // It serves every call for the life of the page.
        wrapped.forget();
    }
}

/// Whether `input` is a gRPC-Web call (the library fetches a `Request`
/// carrying its content type).
fn is_grpc_web(input: &JsValue) -> bool {
    input
        .dyn_ref::<Request>()
        .and_then(|request| request.headers().get("content-type").ok().flatten())
        .is_some_and(|kind| kind.starts_with("application/grpc-web"))
}

/// `answer` as it is, or, for an HTTP error without a gRPC status, an
/// empty gRPC-Web answer whose headers carry the status.
fn with_status(answer: JsValue) -> JsValue {
    let Some(response) = answer.dyn_ref::<Response>() else {
        return answer;
    };
    if response.ok() || response.headers().has("grpc-status").unwrap_or(true) {
        return answer;
    }
    let http = response.status();
    let (code, message) = status_of_http(http);
    let Ok(headers) = Headers::new() else {
        return answer;
    };
    let _ = headers.set("content-type", "application/grpc-web+proto");
    let _ = headers.set("grpc-status", &(code as i32).to_string());
    // `grpc-message` is percent-encoded; this one has only a space to encode.
    let _ = headers.set("grpc-message", &message.replace(' ', "%20"));
    let init = ResponseInit::new();
    init.set_status(http);
    init.set_headers(&headers);
    // An empty body, not none: the library wants a body to read.
    match Response::new_with_opt_str_and_init(Some(""), &init) {
        Ok(status) => status.into(),
        Err(_) => answer,
    }
}

/// The status for a proxy's HTTP error, as gRPC's HTTP mapping has it, and
/// the words the page shows for it.
fn status_of_http(http: u16) -> (Code, String) {
    let code = match http {
        400 => Code::Internal,
        401 => Code::Unauthenticated,
        403 => Code::PermissionDenied,
        404 => Code::Unimplemented,
        429 | 502 | 503 | 504 => Code::Unavailable,
        _ => Code::Unknown,
    };
    (code, format!("HTTP {http}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_proxys_http_errors_map_as_grpc_says() {
        assert_eq!(
            status_of_http(502),
            (Code::Unavailable, "HTTP 502".to_owned())
        );
        assert_eq!(status_of_http(504).0, Code::Unavailable);
        assert_eq!(status_of_http(401).0, Code::Unauthenticated);
        assert_eq!(status_of_http(403).0, Code::PermissionDenied);
        assert_eq!(status_of_http(404).0, Code::Unimplemented);
        assert_eq!(status_of_http(500).0, Code::Unknown);
    }
}
