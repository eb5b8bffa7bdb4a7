//! The web app's files, read once at start and served from memory, each
//! compressed once (brotli and gzip) rather than per request. gzip is made
//! at start; brotli at its best takes about a second of CPU for the wasm,
//! so a thread of its own makes it after start, and until it is there
//! browsers get gzip.
//!
//! trunk names every asset after its content (`chat-web-<16 hex>.js`), so
//! those are cached for a year (`immutable`): a repeat visit fetches none of
//! them again. Everything else (`index.html`, which points at the current
//! names) is `no-cache` with an `ETag`, so a repeat visit revalidates it with
//! one small request answered `304`. Unknown paths get `index.html` (the
//! app routes on the client). A rebuilt app is picked up by a restart.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::{Arc, OnceLock};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use sha2::{Digest, Sha256};

/// For an asset whose name carries its content's hash.
const FOREVER: &str = "public, max-age=31536000, immutable";
/// For everything else: always revalidated (cheaply, by `ETag`).
const REVALIDATE: &str = "no-cache";
/// Smaller files are sent as they are: compressing saves less than a packet.
const COMPRESS_FROM: usize = 1024;
/// brotli's best; the files are compressed once, at start.
const BROTLI_QUALITY: u32 = 11;

/// One file, in every encoding worth sending.
#[derive(Debug)]
struct Asset {
    content_type: HeaderValue,
    cache_control: HeaderValue,
    /// The content's hash: the same on every replica and across restarts.
    tag: String,
    identity: Bytes,
    /// Whether compressing it is worth trying at all.
    compressible: bool,
    /// Set once the brotli thread got to it (`None`: no smaller).
    br: OnceLock<Option<Bytes>>,
    gzip: Option<Bytes>,
}

/// Every file of the built app, by path (`index.html` also for `/`).
#[derive(Debug, Clone)]
pub struct Assets {
    files: Arc<HashMap<String, Asset>>,
}

impl Assets {
    /// Reads and compresses every file in `dir` (not its subfolders: trunk
    /// writes none); `None` without an `index.html`.
    pub fn load(dir: &Path) -> io::Result<Option<Self>> {
        if !dir.join("index.html").is_file() {
            return Ok(None);
        }
        let mut files = HashMap::new();
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            if !entry.file_type()?.is_file() {
                continue;
            }
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            let content = std::fs::read(entry.path())?;
            files.insert(name.clone(), Asset::new(&name, content)?);
        }
        let assets = Self {
            files: Arc::new(files),
        };
        let files = Arc::clone(&assets.files);
        let packing = std::thread::Builder::new()
            .name("brotli".into())
            .spawn(move || {
                for asset in files.values() {
                    asset.pack_brotli();
                }
            });
        if let Err(error) = packing {
            tracing::warn!(%error, "cannot start compressing the web app with brotli; serving gzip");
        }
        Ok(Some(assets))
    }

    /// The response to a `GET` or `HEAD` of `path`.
    fn respond(&self, method: &Method, path: &str, headers: &HeaderMap) -> Response {
        if method != Method::GET && method != Method::HEAD {
            return (
                StatusCode::METHOD_NOT_ALLOWED,
                [(header::ALLOW, "GET, HEAD")],
            )
                .into_response();
        }
        let name = path.trim_start_matches('/');
        let asset = self
            .files
            .get(name)
            .or_else(|| self.files.get("index.html"));
        let Some(asset) = asset else {
            return StatusCode::NOT_FOUND.into_response();
        };
        asset.respond(method == Method::HEAD, headers)
    }
}

impl Asset {
    fn new(name: &str, content: Vec<u8>) -> io::Result<Self> {
        let content_type = mime_guess::from_path(name)
            .first_raw()
            .map_or("application/octet-stream", |mime| mime);
        let content_type = match content_type {
            text if text.starts_with("text/") || text == "application/javascript" => {
                format!("{text}; charset=utf-8")
            }
            other => other.to_owned(),
        };
        let compressible = content.len() >= COMPRESS_FROM
            && (content_type.starts_with("text/")
                || content_type.starts_with("application/javascript")
                || content_type.starts_with("application/wasm")
                || content_type.starts_with("application/json")
                || content_type.starts_with("image/svg"));
        let gzip = if compressible {
            Some(gzip(&content)?)
                .filter(|packed| packed.len() < content.len())
                .map(Bytes::from)
        } else {
            None
        };
        let hash = Sha256::digest(&content);
        Ok(Self {
            content_type: HeaderValue::from_str(&content_type)
                .unwrap_or(HeaderValue::from_static("application/octet-stream")),
            cache_control: HeaderValue::from_static(if is_hashed(name) {
                FOREVER
            } else {
                REVALIDATE
            }),
            tag: hash[..12].iter().map(|b| format!("{b:02x}")).collect(),
            identity: content.into(),
            compressible,
            br: OnceLock::new(),
            gzip,
        })
    }

    /// Makes the brotli encoding (once), if it is smaller.
    fn pack_brotli(&self) {
        if self.compressible && self.br.get().is_none() {
            let packed = brotli(&self.identity)
                .ok()
                .filter(|packed| packed.len() < self.identity.len())
                .map(Bytes::from);
            let _ = self.br.set(packed);
        }
    }

    fn respond(&self, head_only: bool, request: &HeaderMap) -> Response {
        let accepts = |coding: &str| accepts(request, coding);
        let br = self.br.get().and_then(Option::as_ref);
        let (body, encoding, suffix) = match (br, &self.gzip) {
            (Some(br), _) if accepts("br") => (br, Some("br"), "-br"),
            (_, Some(gzip)) if accepts("gzip") => (gzip, Some("gzip"), "-gz"),
            _ => (&self.identity, None, ""),
        };
        let etag = format!("\"{}{suffix}\"", self.tag);
        let unchanged = self.matches(request);
        let mut response = if unchanged {
            Response::builder().status(StatusCode::NOT_MODIFIED)
        } else {
            let builder = Response::builder()
                .header(header::CONTENT_TYPE, self.content_type.clone())
                .header(header::CONTENT_LENGTH, body.len());
            match encoding {
                Some(encoding) => builder.header(header::CONTENT_ENCODING, encoding),
                None => builder,
            }
        }
        .header(header::ETAG, etag)
        .header(header::CACHE_CONTROL, self.cache_control.clone());
        if self.compressible {
            response = response.header(header::VARY, "accept-encoding");
        }
        let body = if head_only || unchanged {
            Body::empty()
        } else {
            Body::from(body.clone())
        };
        response
            .body(body)
            .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
    }

    /// Whether the client's `If-None-Match` names this content, in any of
    /// its encodings (or is `*`).
    fn matches(&self, request: &HeaderMap) -> bool {
        let Some(tags) = request
            .get(header::IF_NONE_MATCH)
            .and_then(|v| v.to_str().ok())
        else {
            return false;
        };
        tags.split(',').map(str::trim).any(|tag| {
            tag == "*"
                || tag
                    .trim_start_matches("W/")
                    .trim_matches('"')
                    .trim_end_matches("-br")
                    .trim_end_matches("-gz")
                    == self.tag
        })
    }
}

/// The handler: the app's file for the request's path.
pub async fn serve(State(assets): State<Assets>, request: Request) -> Response {
    assets.respond(request.method(), request.uri().path(), request.headers())
}

/// trunk's content-hashed names: `-` then the hash in hex before the
/// extension or the `_bg` of a wasm file. trunk writes the 64-bit hash
/// without leading zeros, so it has up to 16 digits (15 one time in 16);
/// fewer than 8 would be a one in four billion hash, or no hash at all.
fn is_hashed(name: &str) -> bool {
    name.match_indices('-').any(|(at, _)| {
        let rest = &name.as_bytes()[at + 1..];
        let digits = rest.iter().take_while(|b| b.is_ascii_hexdigit()).count();
        (8..=16).contains(&digits) && matches!(rest.get(digits), Some(b'.' | b'_'))
    })
}

/// Whether `Accept-Encoding` takes `coding` (listed, and not with `q=0`).
fn accepts(request: &HeaderMap, coding: &str) -> bool {
    request
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|item| {
            let mut parts = item.split(';').map(str::trim);
            parts
                .next()
                .is_some_and(|name| name.eq_ignore_ascii_case(coding))
                && !parts.any(|param| {
                    param
                        .strip_prefix("q=")
                        .and_then(|q| q.parse::<f32>().ok())
                        .is_some_and(|q| q <= 0.0)
                })
        })
}

fn brotli(content: &[u8]) -> io::Result<Vec<u8>> {
    let mut packed = Vec::new();
    let mut writer = brotli::CompressorWriter::new(&mut packed, 64 * 1024, BROTLI_QUALITY, 22);
    writer.write_all(content)?;
    drop(writer);
    Ok(packed)
}

fn gzip(content: &[u8]) -> io::Result<Vec<u8>> {
    let mut packed = Vec::new();
    flate2::read::GzEncoder::new(content, flate2::Compression::best()).read_to_end(&mut packed)?;
    Ok(packed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trunks_hashed_names_are_told_apart() {
        assert!(is_hashed("chat-web-91332112fef445f1.js"));
        assert!(is_hashed("chat-web-91332112fef445f1_bg.wasm"));
        assert!(is_hashed("style-c358d29e74264adf.css"));
        // A hash with a leading zero is written one digit shorter.
        assert!(is_hashed("chat-web-42152294c8f0694.js"));
        assert!(is_hashed("chat-web-42152294c8f0694_bg.wasm"));
        assert!(!is_hashed("index.html"));
        assert!(!is_hashed("chat-web-abc.js"));
        assert!(!is_hashed("chat-web-91332112fef445f10.js"));
        assert!(!is_hashed("chat-web.js"));
        assert!(!is_hashed("style-c358d29e74264adg.css"));
    }

    #[test]
    fn accept_encoding_is_read_with_its_weights() {
        let with = |value: &'static str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::ACCEPT_ENCODING, HeaderValue::from_static(value));
            headers
        };
        assert!(accepts(&with("gzip, deflate, br, zstd"), "br"));
        assert!(accepts(&with("gzip;q=1.0, br;q=0.5"), "br"));
        assert!(!accepts(&with("gzip, br;q=0"), "br"));
        assert!(!accepts(&with("gzip"), "br"));
        assert!(!accepts(&HeaderMap::new(), "gzip"));
    }

    #[test]
    fn each_encoding_round_trips_and_is_smaller() {
        let text = "a chat message, again and again. ".repeat(200).into_bytes();
        let asset = Asset::new("chat-web-0123456789abcdef.js", text.clone()).expect("asset");
        assert!(asset.br.get().is_none(), "brotli is made later");
        asset.pack_brotli();
        let br = asset.br.get().and_then(Option::as_deref).expect("br");
        assert!(br.len() < text.len());
        let mut unpacked = Vec::new();
        brotli::Decompressor::new(br, 4096)
            .read_to_end(&mut unpacked)
            .expect("brotli");
        assert_eq!(unpacked, text);
        let mut unzipped = Vec::new();
        flate2::read::GzDecoder::new(asset.gzip.as_deref().expect("gzip"))
            .read_to_end(&mut unzipped)
            .expect("gzip");
        assert_eq!(unzipped, text);
        assert_eq!(asset.cache_control, FOREVER);
    }
}
