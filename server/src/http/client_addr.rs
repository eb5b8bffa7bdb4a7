//! Who is on the other end of a request, for logs and per-client limits.
//!
//! Directly connected, that is the TCP peer. Behind a reverse proxy the peer
//! is the proxy, so with `--trust-proxy` the address comes from the header
//! the proxy adds: the last `X-Forwarded-For` entry or the last `for=` of
//! `Forwarded` (one trusted hop: anything earlier in those headers was
//! written by the client and could be forged). Without `--trust-proxy` the
//! headers are ignored, since any client could send them.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::Request;
use http::HeaderMap;

use crate::http::connection::Conn;

/// The client's address as far as this server can tell; put into every
/// request's extensions by the routes (`app/routes.rs`), before any RPC
/// sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub IpAddr);

impl std::fmt::Display for ClientAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// The client address of `request`, if known.
pub fn resolve(request: &Request, trust_proxy: bool) -> Option<ClientAddr> {
    let peer = request
        .extensions()
        .get::<Arc<Conn>>()
        .map(|conn| conn.peer.ip());
    let forwarded = trust_proxy
        .then(|| from_headers(request.headers()))
        .flatten();
    forwarded.or(peer).map(ClientAddr)
}

fn from_headers(headers: &HeaderMap) -> Option<IpAddr> {
    // Only the last element was written by our proxy. If it does not parse,
    // earlier ones must not stand in for it: a client could have sent those.
    let last_element = |name: &str| {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .next_back()
    };
    if let Some(element) = last_element("forwarded") {
        return element
            .split(';')
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(key, _)| key.eq_ignore_ascii_case("for"))
            .and_then(|(_, node)| parse_node(node));
    }
    last_element("x-forwarded-for").and_then(parse_node)
}

/// `203.0.113.7`, `"[2001:db8::1]:4711"`, `198.51.100.1:80`, ...
fn parse_node(raw: &str) -> Option<IpAddr> {
    let node = raw.trim().trim_matches('"');
    if let Ok(ip) = node.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(addr) = node.parse::<SocketAddr>() {
        return Some(addr.ip());
    }
    node.strip_prefix('[')
        .and_then(|rest| rest.split_once(']'))
        .and_then(|(ip, _)| ip.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, value.parse().expect("header value"));
        }
        map
    }

    #[test]
    fn the_last_hop_is_the_one_our_proxy_wrote() {
        let h = headers(&[("x-forwarded-for", "10.9.9.9, 203.0.113.7")]);
        assert_eq!(from_headers(&h), Some("203.0.113.7".parse().expect("ip")));
        let h = headers(&[
            ("x-forwarded-for", "1.1.1.1"),
            ("x-forwarded-for", "203.0.113.8"),
        ]);
        assert_eq!(from_headers(&h), Some("203.0.113.8".parse().expect("ip")));
    }

    #[test]
    fn forwarded_is_understood_and_preferred() {
        let h = headers(&[
            (
                "forwarded",
                "for=192.0.2.60;proto=http, for=\"[2001:db8::1]:4711\"",
            ),
            ("x-forwarded-for", "203.0.113.7"),
        ]);
        assert_eq!(from_headers(&h), Some("2001:db8::1".parse().expect("ip")));
        let h = headers(&[("forwarded", "for=203.0.113.1, for=unknown")]);
        assert_eq!(
            from_headers(&h),
            None,
            "no falling back to client-written hops"
        );
    }
}
