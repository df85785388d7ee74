//! Connection limits of SPEC section 8 against the real binary, over raw sockets:
//! read timeout (head and body), idle timeout, max_connections, max_body_bytes.

mod common;
use common::*;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// How late past a configured timeout a close may come on a busy test machine.
const MARGIN: Duration = Duration::from_secs(3);

/// switchyard with one mock master and `server` lines added to `[server]`.
fn start(mock: &Mock, server: &str) -> Switchyard {
    Switchyard::start(&format!(
        "{SERVER}{server}\n{}",
        masters_toml(&[(mock, "")])
    ))
}

async fn connect(sy: &Switchyard) -> TcpStream {
    let addr = sy.url.trim_start_matches("http://");
    TcpStream::connect(addr).await.expect("connect")
}

/// Reads until the peer closes (EOF or reset) or `deadline`; `Err` with what was read
/// so far when the deadline came first.
async fn read_to_close(
    stream: &mut (impl tokio::io::AsyncRead + Unpin),
    deadline: Instant,
) -> Result<String, String> {
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
            Err(_) => return Err(String::from_utf8_lossy(&got).into_owned()),
            Ok(Ok(0)) | Ok(Err(_)) => return Ok(String::from_utf8_lossy(&got).into_owned()),
            Ok(Ok(n)) => got.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Reads one whole answer (head and a Content-Length body) by `deadline`; `None` if
/// it did not come, or the connection closed first.
async fn read_answer(
    stream: &mut (impl tokio::io::AsyncRead + Unpin),
    deadline: Instant,
) -> Option<String> {
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if message_end(&got).is_some() {
            return Some(String::from_utf8_lossy(&got).into_owned());
        }
        match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => got.extend_from_slice(&chunk[..n]),
            _ => return None,
        }
    }
}

const QUICK_GET: &[u8] = b"GET /v1/messages/unknown HTTP/1.1\r\nhost: test\r\n\r\n";

/// Writes `bytes` one at a time, `every` apart, until the peer stops taking them.
fn trickle(mut writer: tokio::net::tcp::OwnedWriteHalf, bytes: Vec<u8>, every: Duration) {
    tokio::spawn(async move {
        for b in bytes {
            if writer.write_all(&[b]).await.is_err() {
                return;
            }
            tokio::time::sleep(every).await;
        }
    });
}

/// Connects to `addr`, writes `head`, trickles `rest` a byte per 100 ms, and reads
/// until the server closes the connection, which must come within a read timeout of
/// 1 s plus [`MARGIN`]: what the server answered, and when the connection opened.
async fn trickled(addr: &str, head: &[u8], rest: Vec<u8>) -> (String, Instant) {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let started = Instant::now();
    let (mut reader, mut writer) = stream.into_split();
    writer.write_all(head).await.unwrap();
    trickle(writer, rest, Duration::from_millis(100));
    let deadline = started + Duration::from_secs(1) + MARGIN;
    let text = read_to_close(&mut reader, deadline)
        .await
        .unwrap_or_else(|t| panic!("still open after {:?}: {t:?}", started.elapsed()));
    (text, started)
}

#[tokio::test]
async fn a_trickled_body_gets_408_and_a_closed_connection() {
    let mock = Mock::start("m", &[]);
    let sy = start(&mock, "read_timeout_ms = 1000");
    // One byte per packet, far slower than 4096 bytes in a second.
    let (text, started) = trickled(
        sy.url.trim_start_matches("http://"),
        b"POST /v1/messages HTTP/1.1\r\nhost: test\r\ncontent-type: application/json\r\ncontent-length: 4096\r\n\r\n",
        vec![b' '; 4096],
    )
    .await;
    assert!(text.starts_with("HTTP/1.1 408"), "{text:?}");
    assert!(
        text.to_ascii_lowercase().contains("connection: close"),
        "{text:?}"
    );
    assert!(text.contains("\"request_timeout\""), "{text:?}");
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "closed before the read timeout: {:?}",
        started.elapsed()
    );
    assert_eq!(mock.received(&Http::new()).await, 0);
}

/// A later request on a kept connection has its own read deadline, counted from its
/// head: its trickled body is cut as the first request's would be.
#[tokio::test]
async fn a_later_requests_trickled_body_gets_408_too() {
    let mock = Mock::start("m", &[]);
    let sy = start(&mock, "read_timeout_ms = 1000");
    let stream = connect(&sy).await;
    let (mut reader, mut writer) = stream.into_split();
    writer.write_all(QUICK_GET).await.unwrap();
    // Its answer first: then the next head comes on a kept, idle connection.
    let answer = read_answer(&mut reader, Instant::now() + MARGIN)
        .await
        .expect("an answer to the first request, the connection kept");
    assert!(answer.contains("not_found"), "{answer:?}");
    writer
        .write_all(b"POST /v1/messages HTTP/1.1\r\nhost: test\r\ncontent-length: 4096\r\n\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    trickle(writer, vec![b' '; 4096], Duration::from_millis(100));
    let text = read_to_close(&mut reader, started + Duration::from_secs(1) + MARGIN)
        .await
        .unwrap_or_else(|t| panic!("still open after {:?}: {t:?}", started.elapsed()));
    assert!(text.starts_with("HTTP/1.1 408"), "{text:?}");
    assert!(text.contains("\"request_timeout\""), "{text:?}");
    assert!(started.elapsed() >= Duration::from_millis(900));
    assert_eq!(mock.received(&Http::new()).await, 0);
}

#[tokio::test]
async fn a_slow_head_is_cut_and_an_empty_connection_closed() {
    let mock = Mock::start("m", &[]);
    let sy = start(&mock, "read_timeout_ms = 1000");
    // A head that never ends: a header line a byte at a time.
    let (text, _) = trickled(
        sy.url.trim_start_matches("http://"),
        b"POST /v1/messages HTTP/1.1\r\n",
        b"x-slow: ".repeat(500),
    )
    .await;
    assert!(text.starts_with("HTTP/1.1 408"), "{text:?}");
    assert!(text.contains("\"request_timeout\""), "{text:?}");

    // A connection that sends nothing is closed without an answer.
    let mut empty = connect(&sy).await;
    let started = Instant::now();
    let text = read_to_close(&mut empty, started + Duration::from_secs(1) + MARGIN)
        .await
        .unwrap_or_else(|t| panic!("an empty connection still open: {t:?}"));
    assert_eq!(text, "");
    assert!(started.elapsed() >= Duration::from_millis(900));
}

#[tokio::test]
async fn shutdown_closes_kept_connections_that_served_requests_at_once() {
    let mock = Mock::start("a", &[]);
    // Idle and drain deadlines far off: only the shutdown signal can close them soon.
    let mut sy = start(&mock, "idle_timeout_ms = 60000\nrequest_timeout_ms = 60000");
    let mut kept = Vec::new();
    for _ in 0..3 {
        let mut conn = connect(&sy).await;
        for _ in 0..2 {
            conn.write_all(QUICK_GET).await.unwrap();
            let answer = read_answer(&mut conn, Instant::now() + Duration::from_secs(5)).await;
            assert!(answer.unwrap().starts_with("HTTP/1.1 404"));
        }
        kept.push(conn);
    }
    sy.proc.signal("TERM");
    let deadline = Instant::now() + Duration::from_secs(10);
    for conn in &mut kept {
        let text = read_to_close(conn, deadline)
            .await
            .unwrap_or_else(|t| panic!("a kept connection is still open: {t:?}"));
        assert_eq!(text, "", "closed without a word");
    }
    assert_eq!(sy.proc.wait_exit(Duration::from_secs(10)), Some(0));
}

#[tokio::test]
async fn an_idle_connection_is_closed_but_a_slow_exchange_is_not() {
    let slow = Mock::start("slow", &["--latency-ms", "2500"]);
    let sy = start(&slow, "idle_timeout_ms = 1000");

    // Kept alive after one quick answer, then idle.
    let mut idle = connect(&sy).await;
    idle.write_all(QUICK_GET).await.unwrap();
    let answer = read_answer(&mut idle, Instant::now() + Duration::from_secs(5)).await;
    assert!(answer.unwrap().starts_with("HTTP/1.1 404"));
    let answered = Instant::now();

    // Busy longer than the idle timeout, waiting on the master.
    let mut busy = connect(&sy).await;
    let body = MESSAGE.as_bytes();
    let head = format!(
        "POST /v1/messages HTTP/1.1\r\nhost: test\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    busy.write_all(head.as_bytes()).await.unwrap();
    busy.write_all(body).await.unwrap();

    let text = read_to_close(&mut idle, answered + Duration::from_secs(1) + MARGIN)
        .await
        .unwrap_or_else(|t| panic!("the idle connection is still open: {t:?}"));
    assert_eq!(text, "", "closed without a word");
    assert!(
        answered.elapsed() >= Duration::from_millis(900),
        "closed before the idle timeout: {:?}",
        answered.elapsed()
    );

    let answer = read_answer(&mut busy, Instant::now() + Duration::from_secs(10)).await;
    let answer = answer.expect("the slow exchange was cut");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // And the connection is still there for the next request.
    busy.write_all(QUICK_GET).await.unwrap();
    let answer = read_answer(&mut busy, Instant::now() + Duration::from_secs(5)).await;
    assert!(answer.expect("kept alive").starts_with("HTTP/1.1 404"));
}

#[tokio::test]
async fn connections_beyond_max_connections_wait_until_one_closes() {
    let mock = Mock::start("m", &[]);
    let sy = start(&mock, "max_connections = 2");
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut c = connect(&sy).await;
        c.write_all(QUICK_GET).await.unwrap();
        let answer = read_answer(&mut c, Instant::now() + Duration::from_secs(5)).await;
        assert!(answer.expect("served").starts_with("HTTP/1.1 404"));
        held.push(c);
    }
    // The third connects (the kernel's backlog) but is not served.
    let mut third = connect(&sy).await;
    third.write_all(QUICK_GET).await.unwrap();
    let early = read_answer(&mut third, Instant::now() + Duration::from_millis(700)).await;
    assert!(early.is_none(), "served beyond the cap: {early:?}");
    // Once one of the two closes, it is.
    drop(held.pop());
    let answer = read_answer(&mut third, Instant::now() + Duration::from_secs(5)).await;
    assert!(answer
        .expect("served after a slot freed")
        .starts_with("HTTP/1.1 404"));
}

#[tokio::test]
async fn a_body_over_max_body_bytes_is_still_413() {
    let mock = Mock::start("m", &[]);
    let sy = start(&mock, "max_body_bytes = 100");
    let http = Http::new();
    let big = format!("{{\"text\": \"{}\"}}", "x".repeat(200));
    let (status, _, body) = http.post(&sy.messages(), &big).await;
    assert_eq!(status, 413);
    assert_eq!(json(&body)["error"]["code"], "body_too_large");

    // Without a Content-Length (chunked), counted as it comes.
    let mut c = connect(&sy).await;
    let chunk = "y".repeat(60);
    let req = format!(
        "POST /v1/messages HTTP/1.1\r\nhost: test\r\ntransfer-encoding: chunked\r\n\r\n3c\r\n{chunk}\r\n3c\r\n{chunk}\r\n0\r\n\r\n"
    );
    c.write_all(req.as_bytes()).await.unwrap();
    let answer = read_answer(&mut c, Instant::now() + Duration::from_secs(5)).await;
    let answer = answer.expect("answered");
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    // Under the limit, it goes through.
    let (status, _, _) = http.post(&sy.messages(), MESSAGE).await;
    assert_eq!(status, 200);
    assert_eq!(mock.received(&http).await, 1);
}

#[tokio::test]
async fn a_reload_that_raises_max_connections_lets_a_waiting_one_in() {
    let mock = Mock::start("m", &[]);
    let sy = start(&mock, "max_connections = 1");
    let mut first = connect(&sy).await;
    first.write_all(QUICK_GET).await.unwrap();
    let answer = read_answer(&mut first, Instant::now() + Duration::from_secs(5)).await;
    assert!(answer.expect("served").starts_with("HTTP/1.1 404"));
    let mut second = connect(&sy).await;
    second.write_all(QUICK_GET).await.unwrap();
    let early = read_answer(&mut second, Instant::now() + Duration::from_millis(700)).await;
    assert!(early.is_none(), "served beyond the cap: {early:?}");
    // The first stays open; raising the cap is enough.
    sy.rewrite_config(
        &sy.config_text()
            .replace("max_connections = 1", "max_connections = 2"),
    );
    let answer = read_answer(&mut second, Instant::now() + Duration::from_secs(10)).await;
    assert!(answer
        .expect("served after the reload")
        .starts_with("HTTP/1.1 404"));
    drop(first);
}

#[tokio::test]
async fn the_admin_listener_has_the_same_limits() {
    let mock = Mock::start("m", &[]);
    let sy = start(&mock, "read_timeout_ms = 1000\nidle_timeout_ms = 1000");
    let admin = sy.admin.trim_start_matches("http://").to_string();
    // A slow head is cut with a 408.
    let (text, _) = trickled(&admin, b"GET /health HTTP/1.1\r\n", b"x-slow: ".repeat(500)).await;
    assert!(text.starts_with("HTTP/1.1 408"), "{text:?}");
    // An idle kept-alive connection is closed.
    let mut idle = TcpStream::connect(&admin).await.unwrap();
    idle.write_all(b"GET /health HTTP/1.1\r\nhost: test\r\n\r\n")
        .await
        .unwrap();
    let answer = read_answer(&mut idle, Instant::now() + Duration::from_secs(5)).await;
    assert!(answer.expect("answered").starts_with("HTTP/1.1 200"));
    let answered = Instant::now();
    read_to_close(&mut idle, answered + Duration::from_secs(1) + MARGIN)
        .await
        .unwrap_or_else(|t| panic!("the idle admin connection is still open: {t:?}"));
}
