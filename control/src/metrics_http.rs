//! `vswitchd --metrics ADDR`: a small HTTP/1.1 server answering `GET /metrics` with the
//! Prometheus text of [`crate::metrics_text`], on a thread of its own.
//!
//! It speaks only what a scraper needs: `GET` (and `HEAD`) of `/metrics` gets 200, any other
//! path 404, any other method 405, a request head that is malformed 400, too long 431. One
//! reply per connection (`Connection: close`). Clients cannot hurt the daemon: each is served on
//! a thread of its own, at most [`MAX_CONNECTIONS`] at once (one more gets 503 and is closed);
//! a request head must arrive within [`READ_TIMEOUT`] and fit in [`MAX_REQUEST_HEAD`] bytes, and
//! a reply not taken within [`WRITE_TIMEOUT`] is abandoned. Parsing the request is the pure
//! [`route`].

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use tracing::{debug, warn};
use vswitchd_dataplane::switch::SwitchHandle;

use crate::metrics_text::CONTENT_TYPE;

/// Longest request head (request line and headers) accepted.
pub const MAX_REQUEST_HEAD: usize = 8 * 1024;
/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 4;
/// How long a client has to send its whole request head.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a client has to take its reply.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// What a request head asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// `GET /metrics`: the text (`head`: without a body, for `HEAD`).
    Metrics {
        /// A `HEAD` request.
        head: bool,
    },
    /// 400: not an HTTP request line.
    BadRequest,
    /// 404: another path.
    NotFound,
    /// 405: another method.
    MethodNotAllowed,
}

/// Reads the request line of a complete request head (`head` ends with an empty line).
pub fn route(head: &[u8]) -> Route {
    let Ok(text) = std::str::from_utf8(head) else { return Route::BadRequest };
    let line = text.split("\r\n").next().unwrap_or_default();
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Route::BadRequest;
    };
    if !version.starts_with("HTTP/1.") || method.is_empty() || !target.starts_with('/') {
        return Route::BadRequest;
    }
    let path = target.split('?').next().unwrap_or_default();
    let head = match method {
        "GET" => false,
        "HEAD" => true,
        _ => return Route::MethodNotAllowed,
    };
    if path == "/metrics" { Route::Metrics { head } } else { Route::NotFound }
}

/// Parses `--metrics ADDR` (`127.0.0.1:9477`, `[::1]:9477`).
pub fn parse_addr(text: &str) -> Result<SocketAddr, String> {
    text.parse().map_err(|_| format!("--metrics {text:?}: not an address and port (like 127.0.0.1:9477 or [::1]:9477)"))
}

/// Binds `addr` for [`serve`].
pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    TcpListener::bind(addr)
}

/// Where the server listens.
#[derive(Debug)]
pub enum Listen {
    /// On a socket bound already (a fresh start binds before creating anything, so a bad
    /// address fails the start).
    Bound(TcpListener),
    /// On this address once it is free: a `--takeover` binds it when the vswitchd it takes
    /// over from has let go of it (retrying for [`TAKEOVER_BIND_WAIT`]).
    Later(SocketAddr),
}

/// How long a process taking over waits for the metrics address to be free.
pub const TAKEOVER_BIND_WAIT: Duration = Duration::from_secs(120);

fn bind_when_free(addr: SocketAddr) -> Option<TcpListener> {
    let deadline = Instant::now() + TAKEOVER_BIND_WAIT;
    loop {
        match TcpListener::bind(addr) {
            Ok(l) => return Some(l),
            Err(e) if e.kind() == io::ErrorKind::AddrInUse && Instant::now() < deadline => {
                thread::sleep(Duration::from_millis(100));
            }
            Err(e) => {
                warn!(%addr, error = %e, "metrics: cannot listen; metrics are not served");
                return None;
            }
        }
    }
}

/// Serves metrics on a thread of its own, for as long as the process runs.
pub fn serve(listen: Listen, switch: SwitchHandle) -> io::Result<thread::JoinHandle<()>> {
    let busy = Arc::new(AtomicUsize::new(0));
    thread::Builder::new().name("metrics".into()).spawn(move || {
        let listener = match listen {
            Listen::Bound(l) => l,
            Listen::Later(addr) => match bind_when_free(addr) {
                Some(l) => l,
                None => return,
            },
        };
        if let Ok(addr) = listener.local_addr() {
            tracing::info!(%addr, "serving metrics at /metrics");
        }
        for stream in listener.incoming() {
            let stream = match stream {
                Ok(s) => s,
                Err(e) => {
                    warn!(error = %e, "metrics: accept failed");
                    thread::sleep(Duration::from_millis(100));
                    continue;
                }
            };
            if busy.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
                busy.fetch_sub(1, Ordering::SeqCst);
                let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
                let _ = respond(&stream, 503, "Service Unavailable", "text/plain", b"busy\n", false);
                continue;
            }
            let (busy, switch) = (Arc::clone(&busy), switch.clone());
            let spawned = thread::Builder::new().name("metrics-client".into()).spawn(move || {
                if let Err(e) = serve_one(&stream, &switch) {
                    debug!(error = %e, "metrics: client dropped");
                }
                busy.fetch_sub(1, Ordering::SeqCst);
            });
            if let Err(e) = spawned {
                warn!(error = %e, "metrics: cannot start a client thread");
            }
        }
    })
}

/// Reads a request head: bytes up to and including the empty line that ends it.
fn read_head(mut stream: &TcpStream) -> Result<Vec<u8>, u16> {
    let deadline = Instant::now() + READ_TIMEOUT;
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(408);
        }
        let _ = stream.set_read_timeout(Some(left));
        let n = match stream.read(&mut buf) {
            Ok(0) => return Err(400),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return Err(408),
        };
        head.extend_from_slice(&buf[..n]);
        if let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            head.truncate(end + 4);
            return Ok(head);
        }
        if head.len() > MAX_REQUEST_HEAD {
            return Err(431);
        }
    }
}

fn serve_one(stream: &TcpStream, switch: &SwitchHandle) -> io::Result<()> {
    stream.set_write_timeout(Some(WRITE_TIMEOUT))?;
    let head = match read_head(stream) {
        Ok(h) => h,
        Err(408) => return respond(stream, 408, "Request Timeout", "text/plain", b"request timeout\n", false),
        Err(431) => {
            return respond(stream, 431, "Request Header Fields Too Large", "text/plain", b"too large\n", false);
        }
        Err(_) => return respond(stream, 400, "Bad Request", "text/plain", b"bad request\n", false),
    };
    match route(&head) {
        Route::Metrics { head } => match crate::ctl::metrics_text(switch) {
            Ok(text) => respond(stream, 200, "OK", CONTENT_TYPE, text.as_bytes(), head),
            Err(e) => respond(stream, 503, "Service Unavailable", "text/plain", format!("{e}\n").as_bytes(), head),
        },
        Route::NotFound => respond(stream, 404, "Not Found", "text/plain", b"not found: try /metrics\n", false),
        Route::MethodNotAllowed => {
            respond(stream, 405, "Method Not Allowed", "text/plain", b"only GET and HEAD\n", false)
        }
        Route::BadRequest => respond(stream, 400, "Bad Request", "text/plain", b"bad request\n", false),
    }
}

fn respond(
    mut stream: &TcpStream,
    status: u16,
    reason: &str,
    content_type: &str,
    body: &[u8],
    head_only: bool,
) -> io::Result<()> {
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    if status == 405 {
        out.push_str("Allow: GET, HEAD\r\n");
    }
    out.push_str("\r\n");
    let mut bytes = out.into_bytes();
    if !head_only {
        bytes.extend_from_slice(body);
    }
    stream.write_all(&bytes)?;
    stream.flush()?;
    let _ = stream.shutdown(std::net::Shutdown::Write);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_requests() {
        assert_eq!(route(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"), Route::Metrics { head: false });
        assert_eq!(route(b"GET /metrics?name[]=a HTTP/1.0\r\n\r\n"), Route::Metrics { head: false });
        assert_eq!(route(b"HEAD /metrics HTTP/1.1\r\n\r\n"), Route::Metrics { head: true });
        assert_eq!(route(b"GET / HTTP/1.1\r\n\r\n"), Route::NotFound);
        assert_eq!(route(b"GET /metricsx HTTP/1.1\r\n\r\n"), Route::NotFound);
        assert_eq!(route(b"POST /metrics HTTP/1.1\r\n\r\n"), Route::MethodNotAllowed);
        assert_eq!(route(b"GET /metrics\r\n\r\n"), Route::BadRequest);
        assert_eq!(route(b"GET /metrics HTTP/1.1 extra\r\n\r\n"), Route::BadRequest);
        assert_eq!(route(b"GET metrics HTTP/1.1\r\n\r\n"), Route::BadRequest);
        assert_eq!(route(b"GET /metrics SPDY/3\r\n\r\n"), Route::BadRequest);
        assert_eq!(route(b"\xff\xfe\r\n\r\n"), Route::BadRequest);
        assert_eq!(route(b""), Route::BadRequest);
    }

    #[test]
    fn addresses_parse_or_name_the_option() {
        assert_eq!(parse_addr("127.0.0.1:9477").unwrap(), "127.0.0.1:9477".parse().unwrap());
        assert_eq!(parse_addr("[::1]:9477").unwrap(), "[::1]:9477".parse().unwrap());
        for bad in ["", "127.0.0.1", "localhost:9477", "127.0.0.1:99999", ":9477"] {
            assert!(parse_addr(bad).unwrap_err().starts_with("--metrics"), "{bad:?}");
        }
    }
}
