//! The exchange with masters on the message path, against masters on bare sockets that
//! answer the way real servers may: keep-alive, a close after each answer (announced
//! or not), chunked bodies, an answer before the request was read, a stall mid-answer.

mod common;
use common::*;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What a scripted master does after writing its answer.
#[derive(Clone, Copy, PartialEq)]
enum After {
    KeepOpen,
    Close,
    /// Holds the connection without another byte.
    Stall,
}

struct Reply {
    /// Written one piece at a time, 20 ms apart.
    pieces: Vec<Vec<u8>>,
    after: After,
    /// Answer once the head is in, without reading the body.
    before_body: bool,
}

fn reply(text: &str, after: After) -> Reply {
    Reply {
        pieces: vec![text.as_bytes().to_vec()],
        after,
        before_body: false,
    }
}

struct Scripted {
    url: String,
    /// Connections accepted.
    connections: Arc<AtomicUsize>,
    /// Requests whose body was read in full.
    bodies: Arc<AtomicUsize>,
}

/// A master on a bare socket: `script(request number, from 1)` says how to answer.
async fn scripted(script: impl Fn(usize) -> Reply + Send + Sync + 'static) -> Scripted {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/send", listener.local_addr().unwrap());
    let connections = Arc::new(AtomicUsize::new(0));
    let bodies = Arc::new(AtomicUsize::new(0));
    let script = Arc::new(script);
    let heads = Arc::new(AtomicUsize::new(0));
    let (conns, reads) = (connections.clone(), bodies.clone());
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            conns.fetch_add(1, Ordering::SeqCst);
            let (script, reads, heads) = (script.clone(), reads.clone(), heads.clone());
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = vec![0u8; 64 * 1024];
                loop {
                    loop {
                        if buf.windows(4).any(|w| w == b"\r\n\r\n") {
                            break;
                        }
                        match conn.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(k) => buf.extend_from_slice(&chunk[..k]),
                        }
                    }
                    let r = script(heads.fetch_add(1, Ordering::SeqCst) + 1);
                    if !r.before_body {
                        let end = loop {
                            if let Some((_, end)) = message_end(&buf) {
                                break end;
                            }
                            match conn.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(k) => buf.extend_from_slice(&chunk[..k]),
                            }
                        };
                        buf.drain(..end);
                        reads.fetch_add(1, Ordering::SeqCst);
                    }
                    for (i, piece) in r.pieces.iter().enumerate() {
                        if i > 0 {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                        if conn.write_all(piece).await.is_err() {
                            return;
                        }
                    }
                    match r.after {
                        After::KeepOpen => {}
                        After::Close => return,
                        After::Stall => {
                            tokio::time::sleep(Duration::from_secs(600)).await;
                            return;
                        }
                    }
                }
            });
        }
    });
    Scripted {
        url,
        connections,
        bodies,
    }
}

fn one_master(master: &Scripted, extra: &str) -> Switchyard {
    Switchyard::start(&format!(
        "{extra}\n[[masters]]\nid = \"m\"\nsend_url = \"{}\"\n",
        master.url
    ))
}

const OK: &str =
    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 11\r\n\r\n{\"ok\":true}";

#[tokio::test]
async fn one_connection_carries_every_message() {
    let master = scripted(|_| reply(OK, After::KeepOpen)).await;
    let sy = one_master(&master, "");
    let http = Http::new();
    for _ in 0..20 {
        let (status, h, body) = http.post(&sy.messages(), MESSAGE).await;
        assert_eq!((status.as_u16(), &body[..]), (200, &b"{\"ok\":true}"[..]));
        assert_eq!(header(&h, "content-type"), "application/json");
    }
    assert_eq!(master.connections.load(Ordering::SeqCst), 1);
    assert_eq!(master.bodies.load(Ordering::SeqCst), 20);
}

#[tokio::test]
async fn a_masters_headers_pass_on_but_those_switchyard_sets_are_its_own() {
    let answer = "HTTP/1.1 200 OK\r\nX-Custom: One\r\nx-request-id: from-master\r\n\
                  X-Switchyard-Master: not-m\r\nx-switchyard-message-id: nope\r\n\
                  Date: Tue, 01 Dec 2026 10:00:00 GMT\r\nX-Custom: Two\r\n\
                  Keep-Alive: timeout=5\r\ncontent-length: 2\r\n\r\nok";
    let master = scripted(move |_| reply(answer, After::KeepOpen)).await;
    let sy = one_master(&master, "");
    let http = Http::new();
    let (status, h, body) = http.post(&sy.messages(), MESSAGE).await;
    assert_eq!((status.as_u16(), &body[..]), (200, &b"ok"[..]));
    let all = |name: &str| -> Vec<&str> {
        h.get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect()
    };
    assert_eq!(all("x-custom"), ["One", "Two"], "end-to-end, in order");
    assert_eq!(all("x-switchyard-master"), ["m"]);
    let id = header(&h, "x-switchyard-message-id");
    assert_eq!(id.len(), 36, "the message id, not the master's: {id}");
    assert_eq!(all("x-request-id"), [id], "generated: the message id");
    assert_eq!(
        all("date"),
        ["Tue, 01 Dec 2026 10:00:00 GMT"],
        "the master's, once"
    );
    assert!(h.get("keep-alive").is_none(), "hop-by-hop");
    assert_eq!(all("content-length"), ["2"]);
}

#[tokio::test]
async fn a_master_that_closes_after_each_answer_gets_each_message_once() {
    // Announced: `Connection: close`.
    let close = "HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok";
    let announced = scripted(move |_| reply(close, After::Close)).await;
    // Not announced: the next message finds the connection closed and goes on a new one.
    let silent = scripted(|_| reply(OK, After::Close)).await;
    for master in [&announced, &silent] {
        let sy = one_master(master, "");
        let http = Http::new();
        for _ in 0..10 {
            let (status, _, _) = http.post(&sy.messages(), MESSAGE).await;
            assert_eq!(status, 200);
        }
        assert_eq!(master.bodies.load(Ordering::SeqCst), 10);
        assert_eq!(master.connections.load(Ordering::SeqCst), 10);
    }
}

#[tokio::test]
async fn chunked_and_http_1_0_answers_are_read_whole() {
    let master = scripted(|n| match n {
        // HTTP/1.0 with no length: the body runs to the close.
        2 => reply(
            "HTTP/1.0 202 Accepted\r\nX-Old: yes\r\n\r\nqueued upstream",
            After::Close,
        ),
        // Chunked, in pieces that split sizes, data and trailers; kept open.
        _ => Reply {
            pieces: vec![
                b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\nX-Batch: 7\r\n\r\n4"
                    .to_vec(),
                b"\r\n{\"id\r\n".to_vec(),
                b"9;ext=1\r\n\": \"abc\"}\r\n0\r\nx-trailer: t\r\n".to_vec(),
                b"\r\n".to_vec(),
            ],
            after: After::KeepOpen,
            before_body: false,
        },
    })
    .await;
    let sy = one_master(&master, "");
    let http = Http::new();
    let (status, h, body) = http.post(&sy.messages(), MESSAGE).await;
    assert_eq!(status, 201);
    assert_eq!(&body[..], b"{\"id\": \"abc\"}");
    assert_eq!(header(&h, "x-batch"), "7");
    assert!(h.get("transfer-encoding").is_none() && h.get("x-trailer").is_none());
    // Kept open after the chunked answer: the second message goes on the same one.
    let (status, h, body) = http.post(&sy.messages(), MESSAGE).await;
    assert_eq!((status.as_u16(), &body[..]), (202, &b"queued upstream"[..]));
    assert_eq!(header(&h, "x-old"), "yes");
    assert_eq!(master.connections.load(Ordering::SeqCst), 1);
    // Closed after the HTTP/1.0 answer: the third goes on a new one.
    let (status, _, _) = http.post(&sy.messages(), MESSAGE).await;
    assert_eq!(status, 201);
    assert_eq!(master.connections.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn an_answer_before_the_body_is_read_is_passed_on_and_the_connection_dropped() {
    // 12 MiB: more than the sockets between switchyard and the master hold, so the
    // write waits on a master that reads no further.
    let big = format!("{{\"text\": \"{}\"}}", "x".repeat(12 << 20));
    let master = scripted(|n| match n {
        1 => Reply {
            pieces: vec![
                b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 8\r\n\r\ntoo big!".to_vec(),
            ],
            after: After::Stall,
            before_body: true,
        },
        _ => reply(OK, After::KeepOpen),
    })
    .await;
    let sy = one_master(&master, "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\nmax_body_bytes = 16777216\n");
    let http = Http::new();
    let (status, _, body) = http.post(&sy.messages(), &big).await;
    assert_eq!((status.as_u16(), &body[..]), (413, &b"too big!"[..]));
    let (status, _, _) = http.post(&sy.messages(), MESSAGE).await;
    assert_eq!(status, 200);
    assert_eq!(master.connections.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_stall_mid_answer_times_out_and_the_connection_is_not_reused() {
    let master = scripted(|n| match n {
        1 => Reply {
            pieces: vec![b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n{\"ok".to_vec()],
            after: After::Stall,
            before_body: false,
        },
        _ => reply(OK, After::KeepOpen),
    })
    .await;
    let sy = one_master(
        &master,
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\nrequest_timeout_ms = 300\n\
         [routing]\nretry_attempts = 0\n",
    );
    let http = Http::new();
    // No further try: the message is queued, then delivered on a new connection.
    let (status, h, _) = http.post(&sy.messages(), MESSAGE).await;
    assert_eq!(status, 202);
    let id = header(&h, "x-switchyard-message-id").to_string();
    until_status(&http, &sy, &id, "delivered", Duration::from_secs(20)).await;
    assert_eq!(master.connections.load(Ordering::SeqCst), 2);
    let (_, _, ha) = http.get(&format!("{}/ha/status", sy.admin)).await;
    let last_error = json(&ha)["masters"][0]["last_error"].to_string();
    assert!(last_error.contains("no answer within"), "{last_error}");
}

#[tokio::test]
async fn a_malformed_or_oversized_answer_is_a_failed_exchange() {
    let master = scripted(|n| match n {
        1 => reply(
            "HTTP/1.1 200 OK\r\ncontent-length: nope\r\n\r\n",
            After::KeepOpen,
        ),
        // A length past the bound (16 MiB) is refused before it is read.
        2 => reply(
            "HTTP/1.1 200 OK\r\ncontent-length: 20000000\r\n\r\n",
            After::Stall,
        ),
        _ => reply(OK, After::KeepOpen),
    })
    .await;
    let sy = one_master(
        &master,
        "[routing]\nretry_attempts = 0\n[queue]\nenabled = false\n",
    );
    let http = Http::new();
    for expected in ["bad content-length", "larger than 16777216 bytes"] {
        let (status, _, _) = http.post(&sy.messages(), MESSAGE).await;
        assert_eq!(status, 503, "no master accepted it");
        let (_, _, ha) = http.get(&format!("{}/ha/status", sy.admin)).await;
        let last_error = json(&ha)["masters"][0]["last_error"].to_string();
        assert!(last_error.contains(expected), "{last_error}");
    }
    let (status, _, _) = http.post(&sy.messages(), MESSAGE).await;
    assert_eq!(status, 200);
}
