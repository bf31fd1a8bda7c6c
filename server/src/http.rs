//! The HTTP side of the port (docs/protocol.md section 1): reading a request
//! head, the plain endpoints (`/healthz`, `/metrics`, the snapshot), and
//! the WebSocket upgrade with its checks and subprotocol negotiation.
//!
//! The handshake is ours rather than tungstenite's so that every refusal is
//! a proper HTTP response (400 with a body naming the problem, 429 and 503
//! with `Retry-After`) and plain GETs share the port.

use std::fmt::Write as _;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use gitmind_schema::{Codec, SUBPROTOCOL_BIN, SUBPROTOCOL_JSON};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

/// The largest request head we read.
const MAX_HEAD_BYTES: usize = 8 * 1024;

/// A parsed request head, and whatever bytes followed it.
#[derive(Debug)]
pub struct Request {
    /// `GET`, ...
    pub method: String,
    /// The path, without the query.
    pub path: String,
    /// Decoded query parameters, in order.
    pub query: Vec<(String, String)>,
    /// Headers, names lowercased.
    pub headers: Vec<(String, String)>,
    /// Bytes read past the head (a client's first WebSocket frames).
    pub rest: Vec<u8>,
}

impl Request {
    /// The first value of a header.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every comma-separated token of every occurrence of a header.
    pub fn header_tokens(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n == name)
            .flat_map(|(_, v)| v.split(','))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .collect()
    }

    /// The first value of a query parameter.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Whether the client asks for a WebSocket.
    pub fn is_upgrade(&self) -> bool {
        self.header("upgrade")
            .is_some_and(|u| u.eq_ignore_ascii_case("websocket"))
    }
}

/// Why a request head could not be read.
#[derive(Debug, thiserror::Error)]
pub enum HeadError {
    /// The connection closed or failed.
    #[error("connection closed before the request head was complete")]
    Closed,
    /// Not HTTP, or a head over the limit.
    #[error("{0}")]
    Bad(&'static str),
}

/// Reads one request head.
///
/// # Errors
/// [`HeadError::Closed`] when the connection ends first,
/// [`HeadError::Bad`] when it is not an HTTP/1.1 request head within 8 KiB.
///
/// # Cancel safety
/// Not cancel safe: bytes read so far are lost. The caller bounds it with a
/// timeout and drops the connection on expiry.
pub async fn read_head<S: AsyncRead + Unpin>(stream: &mut S) -> Result<Request, HeadError> {
    let mut buf = Vec::with_capacity(1024);
    loop {
        let mut chunk = [0u8; 1024];
        let n = stream
            .read(&mut chunk)
            .await
            .map_err(|_| HeadError::Closed)?;
        if n == 0 {
            return Err(HeadError::Closed);
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(request) = parse_head(&buf)? {
            return Ok(request);
        }
    }
}

/// Parses a request head from the bytes read so far: `Ok(None)` when more
/// are needed. What follows the head is kept in [`Request::rest`].
///
/// # Errors
/// [`HeadError::Bad`] when it is not an HTTP/1.1 request head within
/// 8 KiB and 32 headers.
pub fn parse_head(buf: &[u8]) -> Result<Option<Request>, HeadError> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut parsed = httparse::Request::new(&mut headers);
    match parsed.parse(buf) {
        Ok(httparse::Status::Complete(len)) => {
            let target = parsed.path.unwrap_or("/");
            let (path, query) = target.split_once('?').unwrap_or((target, ""));
            Ok(Some(Request {
                method: parsed.method.unwrap_or("").to_owned(),
                path: path.to_owned(),
                query: form_urlencoded::parse(query.as_bytes())
                    .into_owned()
                    .collect(),
                headers: parsed
                    .headers
                    .iter()
                    .map(|h| {
                        (
                            h.name.to_ascii_lowercase(),
                            String::from_utf8_lossy(h.value).into_owned(),
                        )
                    })
                    .collect(),
                rest: buf[len..].to_vec(),
            }))
        }
        Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD_BYTES => Ok(None),
        Ok(httparse::Status::Partial) => Err(HeadError::Bad("request head is over 8 KiB")),
        Err(httparse::Error::TooManyHeaders) => {
            Err(HeadError::Bad("request has more than 32 headers"))
        }
        Err(_) => Err(HeadError::Bad("not an HTTP request")),
    }
}

/// A plain HTTP response.
#[derive(Debug)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Extra headers.
    pub headers: Vec<(&'static str, String)>,
    /// `Content-Type`.
    pub content_type: &'static str,
    /// The body.
    pub body: Vec<u8>,
}

impl Response {
    /// A plain-text response.
    pub fn text(status: u16, body: impl Into<String>) -> Self {
        let mut body = body.into();
        if !body.ends_with('\n') {
            body.push('\n');
        }
        Response {
            status,
            headers: Vec::new(),
            content_type: "text/plain; charset=utf-8",
            body: body.into_bytes(),
        }
    }

    /// A JSON response.
    pub fn json(body: Vec<u8>) -> Self {
        Response {
            status: 200,
            headers: Vec::new(),
            content_type: "application/json",
            body,
        }
    }

    /// Adds a `Retry-After` (seconds).
    pub fn retry_after(mut self, seconds: u32) -> Self {
        self.headers.push(("Retry-After", seconds.to_string()));
        self
    }

    /// Writes the response and ends the exchange (`Connection: close`).
    pub async fn send<S: AsyncWrite + Unpin>(self, stream: &mut S) {
        let mut head = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n",
            self.status,
            reason(self.status),
            self.content_type,
            self.body.len()
        );
        for (name, value) in &self.headers {
            let _ = write!(head, "{name}: {value}\r\n");
        }
        head.push_str("\r\n");
        // One write: a client that reads the response once gets all of it.
        let mut response = head.into_bytes();
        response.extend_from_slice(&self.body);
        // A client that does not read cannot hold the connection.
        let limit = write_timeout(response.len());
        let _ = tokio::time::timeout(limit, async {
            stream.write_all(&response).await?;
            stream.shutdown().await
        })
        .await;
    }
}

/// How long a response of `len` bytes may take to write: 10 s, and 1 s
/// more per MiB (a whole graph's snapshot is tens of MiB).
pub fn write_timeout(len: usize) -> Duration {
    Duration::from_secs(10 + (len >> 20) as u64)
}

fn reason(status: u16) -> &'static str {
    match status {
        101 => "Switching Protocols",
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        503 => "Service Unavailable",
        _ => "Error",
    }
}

/// The graph named by a `/v1/graphs/{graph}` path, if the path is one.
/// `Some(Err)` is a graph path with an invalid name.
pub fn graph_of(path: &str) -> Option<Result<&str, Response>> {
    let name = path.strip_prefix("/v1/graphs/")?;
    if valid_graph_name(name) {
        Some(Ok(name))
    } else {
        Some(Err(Response::text(
            400,
            "graph names match ^[a-z0-9][a-z0-9._-]{0,63}$ (lowercase letters, digits, '.', '_', '-')",
        )))
    }
}

/// `^[a-z0-9][a-z0-9._-]{0,63}$`, and a name git can store as a ref (no
/// `..`, no trailing `.` or `.lock`): the pattern alone would let a graph be
/// created that could never be committed.
pub fn valid_graph_name(name: &str) -> bool {
    crate::persist::is_valid_graph_name(name)
}

/// `^[A-Za-z0-9_.-]{1,64}$`
pub fn valid_user(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// Picks the codec from the client's `Sec-WebSocket-Protocol` offer, in its
/// order of preference: `Ok(None)` when it offered none (JSON, and no
/// header in the answer), `Err` when it offered only unknown ones.
pub fn negotiate(request: &Request) -> Result<Option<Codec>, Response> {
    let offered = request.header_tokens("sec-websocket-protocol");
    if offered.is_empty() {
        return Ok(None);
    }
    if let Some(codec) = offered.iter().find_map(|p| Codec::from_subprotocol(p)) {
        return Ok(Some(codec));
    }
    Err(Response::text(
        400,
        format!(
            "none of the offered subprotocols ({}) is supported; this server speaks {SUBPROTOCOL_BIN} and {SUBPROTOCOL_JSON}",
            offered.join(", ")
        ),
    ))
}

/// Checks the WebSocket handshake headers (RFC 6455 4.2.1) and builds the
/// 101 response.
///
/// # Errors
/// A 400 (or 426 for a wrong version) response saying what is missing.
pub fn accept(request: &Request, codec: Option<Codec>) -> Result<Vec<u8>, Response> {
    if request.method != "GET" {
        return Err(Response::text(405, "the WebSocket handshake is a GET"));
    }
    let upgrade = request
        .header_tokens("connection")
        .iter()
        .any(|t| t.eq_ignore_ascii_case("upgrade"));
    if !upgrade {
        return Err(Response::text(400, "missing `Connection: Upgrade`"));
    }
    if request.header("sec-websocket-version") != Some("13") {
        let mut response = Response::text(426, "only WebSocket version 13 is supported");
        response
            .headers
            .push(("Sec-WebSocket-Version", "13".into()));
        return Err(response);
    }
    let Some(key) = request.header("sec-websocket-key") else {
        return Err(Response::text(400, "missing Sec-WebSocket-Key"));
    };
    let mut head = format!(
        "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Accept: {}\r\n",
        derive_accept_key(key.as_bytes())
    );
    if let Some(codec) = codec {
        head.push_str(&format!(
            "Sec-WebSocket-Protocol: {}\r\n",
            codec.subprotocol()
        ));
    }
    head.push_str("\r\n");
    Ok(head.into_bytes())
}

/// Names sessions and anonymous users.
#[derive(Debug, Default)]
pub struct Namer {
    anon: AtomicU64,
}

impl Namer {
    /// The next `anon-N`.
    pub fn anon(&self) -> String {
        format!("anon-{}", self.anon.fetch_add(1, Relaxed) + 1)
    }
}

/// The resume point from `since` and `epoch` query parameters.
///
/// # Errors
/// A 400 when `since` is not a whole number.
pub fn resume_point(request: &Request) -> Result<Option<(u64, String)>, Response> {
    let Some(since) = request.param("since") else {
        return Ok(None);
    };
    let Ok(since) = since.parse::<u64>() else {
        return Err(Response::text(
            400,
            "`since` must be a whole number (a seq)",
        ));
    };
    // Without an epoch the server cannot know the seq means its history:
    // the client gets a snapshot.
    Ok(request
        .param("epoch")
        .map(|epoch| (since, epoch.to_owned())))
}

/// A `GET /v1/graphs/g` with these headers, for tests.
#[cfg(test)]
pub(crate) fn test_request(headers: &[(&str, &str)]) -> Request {
    Request {
        method: "GET".into(),
        path: "/v1/graphs/g".into(),
        query: vec![],
        headers: headers
            .iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect(),
        rest: vec![],
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    use super::test_request as request;

    #[test]
    fn graph_names() {
        assert!(valid_graph_name("a"));
        assert!(valid_graph_name("team-1.notes_x"));
        assert!(!valid_graph_name(""));
        assert!(!valid_graph_name("-a"));
        assert!(!valid_graph_name("A"));
        assert!(!valid_graph_name("a/b"));
        assert!(!valid_graph_name(&"a".repeat(65)));
        assert!(valid_graph_name(&"a".repeat(64)));
        assert!(!valid_graph_name("a..b"), "git refuses it as a ref");
        assert!(!valid_graph_name("a.lock"));
        assert!(!valid_graph_name("a."));
    }

    #[test]
    fn negotiation_takes_the_first_supported_in_client_order() {
        let pick = |offer: &str| {
            negotiate(&request(&[("sec-websocket-protocol", offer)])).map_err(|r| r.status)
        };
        assert_eq!(
            pick("gitmind.v1.json, gitmind.v1.bin"),
            Ok(Some(Codec::Json))
        );
        assert_eq!(pick("x.v9, gitmind.v1.bin"), Ok(Some(Codec::Binary)));
        assert_eq!(pick("x.v9"), Err(400));
        assert_eq!(negotiate(&request(&[])).map_err(|r| r.status), Ok(None));
    }

    #[test]
    fn users() {
        assert!(valid_user("alice"));
        assert!(valid_user("a.b-c_9"));
        assert!(!valid_user(""));
        assert!(!valid_user("a b"));
        assert!(!valid_user(&"a".repeat(65)));
    }

    #[test]
    fn a_head_is_parsed_once_complete_and_what_follows_is_kept() {
        let head =
            b"GET /v1/graphs/g?user=al%20ice HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\r\n";
        assert!(matches!(parse_head(&head[..20]), Ok(None)), "partial");
        let mut bytes = head.to_vec();
        bytes.extend_from_slice(b"\x81\x00");
        let request = parse_head(&bytes).unwrap().unwrap();
        assert_eq!(
            (request.method.as_str(), request.path.as_str()),
            ("GET", "/v1/graphs/g")
        );
        assert_eq!(request.query, [("user".to_owned(), "al ice".to_owned())]);
        assert_eq!(request.header("upgrade"), Some("websocket"));
        assert_eq!(request.rest, b"\x81\x00");
        let many: String = (0..40).map(|i| format!("X-{i}: y\r\n")).collect();
        let too_many = format!("GET / HTTP/1.1\r\n{many}\r\n");
        assert!(matches!(
            parse_head(too_many.as_bytes()),
            Err(HeadError::Bad(_))
        ));
        let long = format!("GET / HTTP/1.1\r\nX: {}", "y".repeat(9000));
        assert!(matches!(
            parse_head(long.as_bytes()),
            Err(HeadError::Bad(_))
        ));
        assert!(matches!(
            parse_head(b"\x16\x03\x01 not http\r\n\r\n"),
            Err(HeadError::Bad(_))
        ));
    }
}
