//! The client listener's HTTP/1.1, byte by byte on real sockets against the real binary:
//! pipelined requests, chunked bodies, `Expect: 100-continue`, HTTP/1.0 keep-alive,
//! HEAD, ambiguous framing, and connections closed after a body that was not read.

mod common;
use common::*;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A master that keeps every body it gets and answers 200.
async fn recording_master() -> (String, Arc<Mutex<Vec<Vec<u8>>>>) {
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let kept = bodies.clone();
    let url = raw_server(move |body| {
        kept.lock().unwrap().push(body);
        200
    })
    .await;
    (url, bodies)
}

fn start(master: &str) -> (Switchyard, String) {
    let sy = Switchyard::start(&format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\nmax_body_bytes = 1000\n\
         [[masters]]\nid = \"m\"\nsend_url = \"{master}/send\"\n"
    ));
    let addr = sy.url.trim_start_matches("http://").to_string();
    (sy, addr)
}

/// Reads whole answers (head and `content-length` body) until `n` are in, or the
/// connection closes; the text read, and whether it closed.
async fn answers(conn: &mut TcpStream, n: usize) -> (String, bool) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let mut rest = &buf[..];
        let mut whole = 0;
        while let Some((_, end)) = message_end(rest) {
            // A 100 Continue has no body and is not an answer.
            if !rest.starts_with(b"HTTP/1.1 100") {
                whole += 1;
            }
            rest = &rest[end..];
        }
        if whole >= n {
            return (String::from_utf8_lossy(&buf).into_owned(), false);
        }
        match tokio::time::timeout_at(deadline, conn.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (String::from_utf8_lossy(&buf).into_owned(), true),
            Ok(Ok(k)) => buf.extend_from_slice(&chunk[..k]),
            Err(_) => panic!(
                "no answer within 10 s; read so far: {}",
                String::from_utf8_lossy(&buf)
            ),
        }
    }
}

/// Whether the server closes the connection within 5 s.
async fn closes(conn: &mut TcpStream) -> bool {
    let mut chunk = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        match tokio::time::timeout_at(deadline, conn.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => {}
            Err(_) => return false,
        }
    }
}

fn post(body: &str, extra: &str) -> String {
    format!(
        "POST /v1/messages HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n{extra}content-length: {}\r\n\r\n{body}",
        body.len()
    )
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order() {
    let (url, bodies) = recording_master().await;
    let (_sy, addr) = start(&url);
    let mut conn = TcpStream::connect(&addr).await.unwrap();
    let three = format!(
        "{}{}GET /v1/nothing HTTP/1.1\r\nhost: x\r\n\r\n",
        post("{\"n\":1}", ""),
        post("{\"n\":2}", "")
    );
    conn.write_all(three.as_bytes()).await.unwrap();
    let (text, closed) = answers(&mut conn, 3).await;
    assert!(!closed, "{text}");
    let statuses: Vec<_> = text
        .match_indices("HTTP/1.1 ")
        .map(|(i, _)| &text[i + 9..i + 12])
        .collect();
    assert_eq!(statuses, ["200", "200", "404"], "{text}");
    assert_eq!(
        *bodies.lock().unwrap(),
        [b"{\"n\":1}".to_vec(), b"{\"n\":2}".to_vec()]
    );
}

#[tokio::test]
async fn a_chunked_body_is_forwarded_whole() {
    let (url, bodies) = recording_master().await;
    let (_sy, addr) = start(&url);
    let mut conn = TcpStream::connect(&addr).await.unwrap();
    let head = "POST /v1/messages HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n";
    conn.write_all(head.as_bytes()).await.unwrap();
    // Sizes, data and the end arrive in separate pieces.
    for piece in [
        "4\r\n{\"a\"",
        "\r\n",
        "3;ext=1\r\n:1}\r\n",
        "0\r\nx-trailer: t\r\n",
        "\r\n",
    ] {
        tokio::time::sleep(Duration::from_millis(20)).await;
        conn.write_all(piece.as_bytes()).await.unwrap();
    }
    let (text, _) = answers(&mut conn, 1).await;
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert_eq!(*bodies.lock().unwrap(), [b"{\"a\":1}".to_vec()]);
    // The connection is reused for the next one.
    conn.write_all(post("{}", "").as_bytes()).await.unwrap();
    let (text, _) = answers(&mut conn, 1).await;
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
}

#[tokio::test]
async fn expect_continue_gets_100_before_the_body_and_413_without_it() {
    let (url, bodies) = recording_master().await;
    let (_sy, addr) = start(&url);
    let mut conn = TcpStream::connect(&addr).await.unwrap();
    let body = "{\"to\":\"x\"}";
    let head = format!(
        "POST /v1/messages HTTP/1.1\r\nhost: x\r\nexpect: 100-continue\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    let mut got = vec![0u8; 25];
    tokio::time::timeout(Duration::from_secs(5), conn.read_exact(&mut got))
        .await
        .expect("a 100 Continue")
        .unwrap();
    assert_eq!(&got, b"HTTP/1.1 100 Continue\r\n\r\n");
    conn.write_all(body.as_bytes()).await.unwrap();
    let (text, _) = answers(&mut conn, 1).await;
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert_eq!(bodies.lock().unwrap().len(), 1);

    // Over max_body_bytes: refused at once, the body never asked for.
    let mut conn = TcpStream::connect(&addr).await.unwrap();
    let head = "POST /v1/messages HTTP/1.1\r\nhost: x\r\nexpect: 100-continue\r\ncontent-length: 5000\r\n\r\n";
    conn.write_all(head.as_bytes()).await.unwrap();
    let (text, _) = answers(&mut conn, 1).await;
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    assert!(!text.contains("100 Continue"), "{text}");
    assert!(
        text.contains("connection: close"),
        "the unread body ends the connection: {text}"
    );
    assert!(closes(&mut conn).await);
}

#[tokio::test]
async fn http_1_0_keeps_the_connection_only_when_asked() {
    let (url, _bodies) = recording_master().await;
    let (_sy, addr) = start(&url);
    let mut conn = TcpStream::connect(&addr).await.unwrap();
    let get = "GET /v1/nothing HTTP/1.0\r\nconnection: keep-alive\r\n\r\n";
    conn.write_all(get.as_bytes()).await.unwrap();
    let (text, closed) = answers(&mut conn, 1).await;
    assert!(!closed && text.contains("connection: keep-alive"), "{text}");
    conn.write_all(b"GET /v1/nothing HTTP/1.0\r\n\r\n")
        .await
        .unwrap();
    let (text, _) = answers(&mut conn, 1).await;
    assert!(
        text.starts_with("HTTP/1.1 404") && text.contains("connection: close"),
        "{text}"
    );
    assert!(closes(&mut conn).await);
}

#[tokio::test]
async fn head_gets_the_length_and_no_body() {
    let (url, _bodies) = recording_master().await;
    let (_sy, addr) = start(&url);
    let mut conn = TcpStream::connect(&addr).await.unwrap();
    conn.write_all(
        b"HEAD /v1/nothing HTTP/1.1\r\nhost: x\r\n\r\nGET /v1/nothing HTTP/1.1\r\nhost: x\r\n\r\n",
    )
    .await
    .unwrap();
    // The HEAD's answer announces a length but carries no body: the next answer follows
    // its head at once.
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while buf.windows(12).filter(|w| w == b"HTTP/1.1 404").count() < 2 || !buf.ends_with(b"}") {
        let k = tokio::time::timeout(Duration::from_secs(5), conn.read(&mut chunk))
            .await
            .expect("both answers")
            .unwrap();
        assert!(k > 0, "closed: {}", String::from_utf8_lossy(&buf));
        buf.extend_from_slice(&chunk[..k]);
    }
    let text = String::from_utf8_lossy(&buf);
    let second = text.rfind("HTTP/1.1 404").unwrap();
    assert!(text[..second].ends_with("\r\n\r\n"), "{text}");
    assert!(text[..second].contains("content-length: "), "{text}");
}

#[tokio::test]
async fn ambiguous_framing_is_refused_and_the_connection_closed() {
    let (url, bodies) = recording_master().await;
    let (_sy, addr) = start(&url);
    for request in [
        "POST /v1/messages HTTP/1.1\r\nhost: x\r\ncontent-length: 4\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n",
        "POST /v1/messages HTTP/1.1\r\nhost: x\r\ncontent-length: 4\r\ncontent-length: 5\r\n\r\nabcde",
        "POST /v1/messages HTTP/1.1\r\nhost: x\r\ntransfer-encoding: gzip\r\n\r\n",
    ] {
        let mut conn = TcpStream::connect(&addr).await.unwrap();
        conn.write_all(request.as_bytes()).await.unwrap();
        let (text, _) = answers(&mut conn, 1).await;
        assert!(
            text.starts_with("HTTP/1.1 400") || text.starts_with("HTTP/1.1 501"),
            "{request:?}: {text}"
        );
        let body = &text[text.find("\r\n\r\n").unwrap() + 4..];
        let error: serde_json::Value = serde_json::from_str(body).unwrap();
        assert!(error["error"]["code"].is_string(), "{error}");
        assert!(closes(&mut conn).await, "{request:?}");
    }
    assert!(bodies.lock().unwrap().is_empty());
}

#[tokio::test]
async fn an_answer_before_the_body_is_read_closes_the_connection() {
    let (url, bodies) = recording_master().await;
    let (_sy, addr) = start(&url);
    let mut conn = TcpStream::connect(&addr).await.unwrap();
    // A 404 never reads the body: what is left of it cannot be taken for a request.
    let request = "POST /v1/elsewhere HTTP/1.1\r\nhost: x\r\ncontent-length: 40\r\n\r\nGET /v1/messages/x HTTP/1.1\r\n\r\n";
    conn.write_all(request.as_bytes()).await.unwrap();
    let (text, _) = answers(&mut conn, 1).await;
    assert!(
        text.starts_with("HTTP/1.1 404") && text.contains("connection: close"),
        "{text}"
    );
    assert!(closes(&mut conn).await);
    assert!(bodies.lock().unwrap().is_empty());
}
