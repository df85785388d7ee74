//! A yardstick for `benches/peer_load.py --floor`: the least an HTTP/1.1 forwarder on
//! tokio can do per message. Each client connection gets its own connection to one
//! upstream (round robin); each request (`Content-Length` bodies only) is sent on as
//! `POST /send` and the answer's status and body are passed back. No routing table, no
//! retries, no queue, no timeouts, no metrics: not a product, only the floor of the
//! design (same runtime, same four system calls per message) against which
//! switchyard's own cost per message is measured.
//!
//! `cargo build --release --example bare_forwarder`, then
//! `bare_forwarder LISTEN UPSTREAM...`, e.g. `bare_forwarder 127.0.0.1:9000 127.0.0.1:9001`.

use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (listen, upstreams) = match args.split_first() {
        Some((l, u)) if !u.is_empty() => (l.clone(), u.to_vec()),
        _ => {
            eprintln!("usage: bare_forwarder LISTEN UPSTREAM...");
            std::process::exit(2);
        }
    };
    let listener = TcpListener::bind(&listen).await.expect("bind");
    let next = AtomicUsize::new(0);
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        let upstream = upstreams[next.fetch_add(1, Ordering::Relaxed) % upstreams.len()].clone();
        tokio::spawn(async move {
            let _ = client.set_nodelay(true);
            let Ok(up) = TcpStream::connect(&upstream).await else {
                return;
            };
            let _ = up.set_nodelay(true);
            forward(client, up).await;
        });
    }
}

/// A connection's buffer: bytes read and not yet used.
struct Buf {
    data: Vec<u8>,
    len: usize,
}

impl Buf {
    /// Reads until a whole message (head and `Content-Length` body) is in; the head's
    /// length, the body's length and the status (answers only).
    async fn message(&mut self, s: &mut TcpStream, answer: bool) -> Option<(usize, usize, u16)> {
        loop {
            if let Some((head, body, status)) = parse(&self.data[..self.len], answer)? {
                while self.len < head + body {
                    self.fill(s).await?;
                }
                return Some((head, body, status));
            }
            self.fill(s).await?;
        }
    }

    async fn fill(&mut self, s: &mut TcpStream) -> Option<()> {
        if self.len == self.data.len() {
            self.data.resize(self.data.len() * 2, 0);
        }
        match s.read(&mut self.data[self.len..]).await {
            Ok(0) | Err(_) => None,
            Ok(n) => {
                self.len += n;
                Some(())
            }
        }
    }

    fn consume(&mut self, n: usize) {
        self.data.copy_within(n..self.len, 0);
        self.len -= n;
    }
}

/// `None` on a malformed message, `Some(None)` while incomplete.
fn parse(buf: &[u8], answer: bool) -> Option<Option<(usize, usize, u16)>> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let (status, head, headers) = if answer {
        let mut r = httparse::Response::new(&mut headers);
        match r.parse(buf).ok()? {
            httparse::Status::Partial => return Some(None),
            httparse::Status::Complete(n) => (r.code?, n, r.headers),
        }
    } else {
        let mut r = httparse::Request::new(&mut headers);
        match r.parse(buf).ok()? {
            httparse::Status::Partial => return Some(None),
            httparse::Status::Complete(n) => (0, n, r.headers),
        }
    };
    let length = headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
        .map_or(Some(0), |h| {
            std::str::from_utf8(h.value).ok()?.trim().parse().ok()
        })?;
    Some(Some((head, length, status)))
}

async fn forward(mut client: TcpStream, mut up: TcpStream) {
    let mut from_client = Buf {
        data: vec![0; 16384],
        len: 0,
    };
    let mut from_up = Buf {
        data: vec![0; 16384],
        len: 0,
    };
    let mut out = Vec::with_capacity(1024);
    loop {
        let Some((head, body, _)) = from_client.message(&mut client, false).await else {
            return;
        };
        out.clear();
        out.extend_from_slice(b"POST /send HTTP/1.1\r\nhost: upstream\r\ncontent-type: application/json\r\ncontent-length: ");
        out.extend_from_slice(body.to_string().as_bytes());
        out.extend_from_slice(b"\r\n\r\n");
        out.extend_from_slice(&from_client.data[head..head + body]);
        from_client.consume(head + body);
        if up.write_all(&out).await.is_err() {
            return;
        }
        let Some((head, body, status)) = from_up.message(&mut up, true).await else {
            return;
        };
        out.clear();
        out.extend_from_slice(format!("HTTP/1.1 {status} -\r\ncontent-type: application/json\r\ncontent-length: {body}\r\n\r\n").as_bytes());
        out.extend_from_slice(&from_up.data[head..head + body]);
        from_up.consume(head + body);
        if client.write_all(&out).await.is_err() {
            return;
        }
    }
}
