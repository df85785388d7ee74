//! The client against hyper's on the same answers, over real loopback sockets.

use super::Conn;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use proptest::prelude::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Debug, Clone)]
enum Framing {
    Length,
    /// Chunk sizes, cycled over the body.
    Chunked(Vec<usize>),
    Close,
}

#[derive(Debug, Clone)]
struct Spec {
    interim: bool,
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    framing: Framing,
    /// Where the answer's bytes are cut into separate writes.
    cuts: Vec<usize>,
}

impl Spec {
    fn wire(&self) -> Vec<u8> {
        let mut w = Vec::new();
        if self.interim {
            w.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
        }
        w.extend_from_slice(format!("HTTP/1.1 {} Whatever\r\n", self.status).as_bytes());
        for (n, v) in &self.headers {
            w.extend_from_slice(format!("{n}: {v}\r\n").as_bytes());
        }
        let no_body = self.status == 204 || self.status == 304;
        match &self.framing {
            _ if no_body => w.extend_from_slice(b"\r\n"),
            Framing::Length => {
                w.extend_from_slice(
                    format!("Content-Length: {}\r\n\r\n", self.body.len()).as_bytes(),
                );
                w.extend_from_slice(&self.body);
            }
            Framing::Chunked(sizes) => {
                w.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
                let mut rest = &self.body[..];
                for size in sizes.iter().cycle() {
                    if rest.is_empty() {
                        break;
                    }
                    let (chunk, tail) = rest.split_at((*size).min(rest.len()));
                    w.extend_from_slice(format!("{:X}\r\n", chunk.len()).as_bytes());
                    w.extend_from_slice(chunk);
                    w.extend_from_slice(b"\r\n");
                    rest = tail;
                }
                w.extend_from_slice(b"0\r\n\r\n");
            }
            Framing::Close => {
                w.extend_from_slice(b"Connection: close\r\n\r\n");
                w.extend_from_slice(&self.body);
            }
        }
        w
    }
}

fn spec() -> impl Strategy<Value = Spec> {
    let header = (
        prop::sample::select(vec![
            "content-type",
            "date",
            "server",
            "x-id",
            "x-a",
            "cache-control",
            "location",
        ]),
        "[!-~]([ -~]{0,18}[!-~])?",
    )
        .prop_map(|(n, v)| (n.to_string(), v));
    let framing = prop_oneof![
        Just(Framing::Length),
        prop::collection::vec(1usize..300, 1..5).prop_map(Framing::Chunked),
        Just(Framing::Close),
    ];
    (
        any::<bool>(),
        prop_oneof![200u16..=204, Just(304u16), 400u16..=599],
        prop::collection::vec(header, 0..6),
        prop::collection::vec(any::<u8>(), 0..3000),
        framing,
        prop::collection::vec(0usize..4000, 0..4),
    )
        .prop_map(|(interim, status, headers, body, framing, cuts)| Spec {
            interim,
            status,
            headers,
            body,
            framing,
            cuts,
        })
}

/// Accepts one connection, reads one request (head and its Content-Length body) and
/// writes `wire` in the pieces `cuts` make, then closes.
async fn serve_once(listener: TcpListener, wire: Vec<u8>, mut cuts: Vec<usize>) {
    let (mut s, _) = listener.accept().await.unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..p]).to_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .map_or(0, |v| v.trim().parse().unwrap());
            if buf.len() >= p + 4 + len {
                break;
            }
        }
        let n = s.read(&mut chunk).await.unwrap();
        assert!(n > 0, "request cut short");
        buf.extend_from_slice(&chunk[..n]);
    }
    cuts.retain(|c| *c < wire.len());
    cuts.sort_unstable();
    let mut at = 0;
    for cut in cuts.into_iter().chain([wire.len()]) {
        s.write_all(&wire[at..cut]).await.unwrap();
        s.flush().await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        at = cut;
    }
}

type Seen = (u16, Vec<(String, Vec<u8>)>, Vec<u8>);

fn end_to_end(headers: &http::HeaderMap) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<_> = headers
        .iter()
        .filter(|(n, _)| {
            *n != http::header::CONTENT_LENGTH && !crate::util::HOP_BY_HOP.contains(&n.as_str())
        })
        .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
        .collect();
    out.sort();
    out
}

async fn ours(spec: &Spec) -> (Seen, bool) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(serve_once(listener, spec.wire(), spec.cuts.clone()));
    let mut conn = Conn::new(TcpStream::connect(addr).await.unwrap());
    let answer = conn
        .exchange(|out| {
            out.extend_from_slice(
                b"POST /send HTTP/1.1\r\nhost: m\r\ncontent-length: 5\r\n\r\nhello",
            )
        })
        .await
        .unwrap();
    server.await.unwrap();
    let seen = (
        answer.status.as_u16(),
        end_to_end(&answer.headers.to_map()),
        answer.body.to_vec(),
    );
    (seen, conn.reusable())
}

async fn hypers(spec: &Spec) -> Seen {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(serve_once(listener, spec.wire(), spec.cuts.clone()));
    let io = TokioIo::new(TcpStream::connect(addr).await.unwrap());
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
    tokio::spawn(conn);
    let req = http::Request::post("/send")
        .header("host", "m")
        .body(Full::new(Bytes::from_static(b"hello")))
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    server.await.unwrap();
    (
        parts.status.as_u16(),
        end_to_end(&parts.headers),
        body.to_vec(),
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn reads_every_valid_answer_as_hyper_does(spec in spec()) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let ((seen, reusable), expected) = rt.block_on(async { (ours(&spec).await, hypers(&spec).await) });
        prop_assert_eq!(&seen, &expected);
        let closes = matches!(spec.framing, Framing::Close) && spec.status != 204 && spec.status != 304;
        prop_assert_eq!(reusable, !closes);
    }
}

#[test]
fn lengths_are_written_in_decimal() {
    for n in [0, 7, 10, 99, 12_345, usize::MAX] {
        let mut out = b"x".to_vec();
        super::write_decimal(&mut out, n);
        assert_eq!(out, format!("x{n}").as_bytes());
    }
}
