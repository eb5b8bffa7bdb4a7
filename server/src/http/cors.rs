//! Which other web origins may call the API, for browsers.
//!
//! The web app is served from the same origin as the API and needs no CORS.
//! Cross-origin use is development (`trunk serve` on a localhost port) or an
//! operator's explicit list. gRPC-Web needs its own request headers allowed
//! and its status headers exposed, or a browser hides every error.

use std::time::Duration;

use http::{HeaderName, HeaderValue, Method};
use thiserror::Error;
use tower_http::cors::{AllowHeaders, AllowOrigin, CorsLayer};

#[derive(Debug, Error)]
#[error("invalid --allowed-origin {0:?}: expected `*` or an origin like https://chat.example.org")]
pub struct InvalidOrigin(String);

/// The CORS layer for the given `--allowed-origin` values.
pub fn layer(allowed: &[String]) -> Result<CorsLayer, InvalidOrigin> {
    let origins = if allowed.iter().any(|o| o.trim() == "*") {
        AllowOrigin::any()
    } else {
        let listed = allowed
            .iter()
            .map(|o| parse_origin(o))
            .collect::<Result<Vec<_>, _>>()?;
        AllowOrigin::predicate(move |origin, _| is_local_dev(origin) || listed.contains(origin))
    };
    Ok(CorsLayer::new()
        .allow_origin(origins)
        .allow_methods([Method::POST, Method::GET, Method::OPTIONS])
        // Whatever a gRPC-Web client library or proxy adds (authorization,
        // x-request-id, ...): the origin check is what guards the API.
        .allow_headers(AllowHeaders::mirror_request())
        .expose_headers([
            HeaderName::from_static("grpc-status"),
            HeaderName::from_static("grpc-message"),
            HeaderName::from_static("grpc-status-details-bin"),
        ])
        .max_age(Duration::from_secs(24 * 60 * 60)))
}

fn parse_origin(raw: &str) -> Result<HeaderValue, InvalidOrigin> {
    let origin = raw.trim().trim_end_matches('/');
    let well_formed = ["http://", "https://"].iter().any(|scheme| {
        origin
            .strip_prefix(scheme)
            .is_some_and(|host| !host.is_empty() && !host.contains('/'))
    });
    match HeaderValue::from_str(origin) {
        Ok(value) if well_formed => Ok(value),
        _ => Err(InvalidOrigin(raw.to_owned())),
    }
}

/// `http://localhost`, `http://127.0.0.1` or `http://[::1]`, on any port.
fn is_local_dev(origin: &HeaderValue) -> bool {
    let Ok(origin) = origin.to_str() else {
        return false;
    };
    ["http://localhost", "http://127.0.0.1", "http://[::1]"]
        .iter()
        .any(|host| match origin.strip_prefix(host) {
            Some("") => true,
            Some(rest) => rest
                .strip_prefix(':')
                .is_some_and(|port| !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit())),
            None => false,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_development_origins_on_any_port() {
        for ok in [
            "http://localhost:8080",
            "http://127.0.0.1:1",
            "http://[::1]:3000",
            "http://localhost",
        ] {
            assert!(is_local_dev(&HeaderValue::from_static(ok)), "{ok}");
        }
        for bad in [
            "https://localhost:8080",
            "http://localhost.evil.example",
            "http://127.0.0.1:80x",
            "http://localhost:",
        ] {
            assert!(!is_local_dev(&HeaderValue::from_static(bad)), "{bad}");
        }
    }

    #[test]
    fn listed_origins_are_checked() {
        assert!(parse_origin("https://chat.example.org/").is_ok());
        assert!(parse_origin("chat.example.org").is_err());
        assert!(parse_origin("https://chat.example.org/path").is_err());
        assert!(layer(&["*".into()]).is_ok());
    }
}
