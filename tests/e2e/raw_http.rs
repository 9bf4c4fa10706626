//! HTTP/1.1 by hand over a TCP socket, for requests no client library would send: partial
//! heads, bodies that lie about their length, bytes trickled one at a time.

use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// `host:port` of a `http://host:port` URL.
pub fn authority(url: &str) -> &str {
    url.strip_prefix("http://").expect("an http:// URL")
}

pub async fn connect(url: &str) -> TcpStream {
    let tcp = TcpStream::connect(authority(url)).await.expect("connect");
    tcp.set_nodelay(true).unwrap();
    tcp
}

/// A response as it came over the wire.
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// Asserts the documented error shape: the status, `application/json`, and
    /// `{"error": {"code", "message"}}` with this code and a non-empty message.
    pub fn assert_error(&self, status: u16, code: &str) -> Value {
        let text = String::from_utf8_lossy(&self.body);
        assert_eq!(self.status, status, "{text}");
        assert_eq!(self.header("content-type"), Some("application/json"), "{self:?}");
        let body: Value = serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("{e}: {text}"));
        assert_eq!(body["error"]["code"], code, "{body}");
        assert!(body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
        body
    }
}

/// Reads one response (head, then a `Content-Length` body); `None` if the connection closed
/// before a complete head.
pub async fn read_response(tcp: &mut (impl AsyncRead + Unpin)) -> Option<RawResponse> {
    let mut buf = Vec::new();
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let mut chunk = [0u8; 4096];
        match tcp.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let length: usize = headers.iter().find(|(n, _)| n == "content-length").map_or(0, |(_, v)| v.parse().unwrap());
    let mut body = buf[head_end..].to_vec();
    while body.len() < length {
        let mut chunk = [0u8; 4096];
        match tcp.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => body.extend_from_slice(&chunk[..n]),
        }
    }
    body.truncate(length);
    Some(RawResponse { status, headers, body })
}

/// Sends `bytes` on a new connection and reads the answer, within `within`.
pub async fn exchange(url: &str, bytes: &[u8], within: Duration) -> RawResponse {
    let mut tcp = connect(url).await;
    // A server refusing a huge head may close before reading it all: its answer still counts.
    let _ = tcp.write_all(bytes).await;
    tokio::time::timeout(within, read_response(&mut tcp))
        .await
        .unwrap_or_else(|_| panic!("no answer within {within:?}"))
        .expect("connection closed without an answer")
}

/// Waits until the server closes `tcp` (end of stream or reset), discarding what it sends;
/// returns when, or `None` if it is still open after `within`.
pub async fn closed_within(tcp: &mut (impl AsyncRead + Unpin), within: Duration) -> Option<Instant> {
    let wait = async {
        let mut sink = [0u8; 4096];
        loop {
            match tcp.read(&mut sink).await {
                Ok(0) | Err(_) => return Instant::now(),
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(within, wait).await.ok()
}

/// The host's log (`HostProcess` writes it next to the data directory): every ERROR line.
pub fn error_lines(data_dir: &std::path::Path) -> Vec<String> {
    let log = std::fs::read_to_string(data_dir.with_extension("log")).unwrap_or_default();
    log.lines().filter(|l| l.contains(" ERROR ")).map(str::to_owned).collect()
}
