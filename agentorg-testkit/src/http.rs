//! A loopback-only test helper: a tiny blocking HTTP/1.1 client.
//!
//! It speaks just enough HTTP to ask the servers the kit starts on 127.0.0.1
//! whether they are ready and to call the Firestore emulator's REST API: one
//! request per connection (`Connection: close`), the response read to EOF,
//! `Content-Length` or chunked bodies. No TLS, no redirects, no proxies; not
//! for use against anything but local test servers.

use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

/// A response from [`FirestoreEmulator::request`](crate::FirestoreEmulator::request).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    /// The status code, e.g. `200`.
    pub status: u16,
    /// The body as text (lossy UTF-8).
    pub body: String,
}

/// Sends one request to `host_port` (e.g. `127.0.0.1:8686`) and reads the
/// whole response. `timeout` bounds the connect and each read or write.
pub(crate) fn request(
    host_port: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
    timeout: Duration,
) -> io::Result<HttpResponse> {
    let addr = host_port
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no address"))?;
    let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let body = body.unwrap_or("");
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host_port}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    stream.write_all(body.as_bytes())?;
    // Read until the body is complete: some servers (the Firestore
    // emulator) keep the connection open despite `Connection: close`.
    let mut raw = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        if let Some(response) = parse(&raw, false) {
            return response;
        }
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return parse(&raw, true).unwrap_or_else(|| Err(bad("truncated response")));
        }
        raw.extend_from_slice(&buf[..n]);
    }
}

fn bad(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

/// `None` while `raw` is not yet a complete response (a body without length
/// or chunking is complete only at EOF).
fn parse(raw: &[u8], at_eof: bool) -> Option<io::Result<HttpResponse>> {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
    let Some(status) = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()) else {
        return Some(Err(bad("no status code")));
    };
    let payload = &raw[split + 4..];
    let length = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:")?.trim().parse().ok());
    let body = if head.contains("transfer-encoding: chunked") {
        dechunk(payload)?
    } else if let Some(length) = length {
        payload.get(..length)?.to_vec()
    } else if at_eof {
        payload.to_vec()
    } else {
        return None;
    };
    Some(Ok(HttpResponse {
        status,
        body: String::from_utf8_lossy(&body).into_owned(),
    }))
}

/// Decodes a chunked body: `<hex size>[;ext]\r\n<data>\r\n` … `0\r\n\r\n`.
fn dechunk(mut rest: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = rest.windows(2).position(|w| w == b"\r\n")?;
        let line = std::str::from_utf8(&rest[..eol]).ok()?;
        let size = usize::from_str_radix(line.split(';').next()?.trim(), 16).ok()?;
        rest = &rest[eol + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(rest.get(..size)?);
        rest = rest.get(size + 2..)?;
    }
}

#[cfg(test)]
mod tests {
    use super::dechunk;

    #[test]
    fn dechunks() {
        assert_eq!(
            dechunk(b"3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n").unwrap(),
            b"abcde"
        );
        assert!(dechunk(b"5\r\nab").is_none());
    }
}
