use super::*;

fn parsed(text: &[u8]) -> Result<Option<Head>, Refusal> {
    parse(&mut BytesMut::from(text), &mut Names::new())
}

fn head(text: &str) -> Head {
    parsed(text.as_bytes()).unwrap().unwrap()
}

fn refusal(text: &str) -> StatusCode {
    parsed(text.as_bytes()).unwrap_err().0
}

#[test]
fn framing_and_keep_alive_follow_rfc_9112() {
    let h = head("POST /v1/messages HTTP/1.1\r\nContent-Length: 5\r\n\r\n");
    assert!(matches!(h.body, BodyState::Length(5)));
    assert!(h.keep_alive);
    let h = head("POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n");
    assert!(matches!(h.body, BodyState::Chunked(_)));
    let h = head("GET / HTTP/1.1\r\nConnection: close\r\n\r\n");
    assert!(matches!(h.body, BodyState::Done));
    assert!(!h.keep_alive);
    assert!(!head("GET / HTTP/1.0\r\n\r\n").keep_alive);
    assert!(head("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").keep_alive);
    let h = head("POST / HTTP/1.1\r\ncontent-length: 3, 3\r\n\r\n");
    assert!(matches!(h.body, BodyState::Length(3)));
    // Equal repeats are one length; the headers reach the handler as sent.
    let lengths = h
        .headers
        .iter()
        .filter(|(n, _)| *n == header::CONTENT_LENGTH);
    assert_eq!(lengths.count(), 1);
}

#[test]
fn ambiguous_or_unsupported_framing_is_refused() {
    let both = "POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n";
    assert_eq!(refusal(both), StatusCode::BAD_REQUEST);
    let differ = "POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n";
    assert_eq!(refusal(differ), StatusCode::BAD_REQUEST);
    let signed = "POST / HTTP/1.1\r\nContent-Length: +3\r\n\r\n";
    assert_eq!(refusal(signed), StatusCode::BAD_REQUEST);
    let gzip = "POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n";
    assert_eq!(refusal(gzip), StatusCode::NOT_IMPLEMENTED);
    let not_last = "POST / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n";
    assert_eq!(refusal(not_last), StatusCode::BAD_REQUEST);
    let old = "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n";
    assert_eq!(refusal(old), StatusCode::BAD_REQUEST);
    let expect = "POST / HTTP/1.1\r\nExpect: the-moon\r\nContent-Length: 1\r\n\r\n";
    assert_eq!(refusal(expect), StatusCode::EXPECTATION_FAILED);
    assert_eq!(refusal("NOT HTTP\r\n\r\n"), StatusCode::BAD_REQUEST);
}

#[test]
fn heads_are_bounded() {
    let many: String = (0..=MAX_HEADERS).map(|i| format!("x-{i}: v\r\n")).collect();
    let text = format!("GET / HTTP/1.1\r\n{many}\r\n");
    assert_eq!(refusal(&text), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    // An unfinished head past the bound is refused without waiting for its end.
    let long = format!("GET / HTTP/1.1\r\nx-long: {}", "a".repeat(MAX_HEAD));
    assert_eq!(refusal(&long), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    assert!(parsed(b"GET / HTTP/1.1\r\nx: y\r\n").unwrap().is_none());
}

#[test]
fn expect_continue_only_when_a_body_follows() {
    let h = head("POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 9\r\n\r\n");
    assert!(h.expect_continue);
    let h = head("POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 0\r\n\r\n");
    assert!(!h.expect_continue);
}

fn answer_text(resp: Response<crate::server::Body>, is_head: bool, c: Connection) -> String {
    let mut out = Vec::new();
    encode(&mut out, resp.into(), is_head, c, Instant::now());
    String::from_utf8(out).unwrap()
}

#[test]
fn answers_carry_their_length_date_and_connection() {
    let resp = crate::reply::error(StatusCode::NOT_FOUND, "not_found", "no");
    let text = answer_text(resp, false, Connection::Unsaid);
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 404 Not Found\r\n"), "{head}");
    assert!(head.contains(&format!("content-length: {}", body.len())));
    assert!(head.contains("\r\ndate: ") && head.ends_with("GMT") || head.contains("GMT\r\n"));
    assert!(!head.contains("connection"));
    let mut resp = crate::reply::error(StatusCode::OK, "x", "y");
    resp.headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from_static("999"));
    let text = answer_text(resp, true, Connection::Close);
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    assert!(body.is_empty(), "HEAD gets no body");
    assert!(
        !head.contains("999"),
        "the handler's own length is not sent"
    );
    assert!(head.contains("connection: close"));
    let mut resp = Response::new(crate::server::Body::default());
    *resp.status_mut() = StatusCode::NO_CONTENT;
    let text = answer_text(resp, false, Connection::KeepAlive);
    assert!(!text.contains("content-length"));
    assert!(text.contains("connection: keep-alive"));
}

#[test]
fn the_send_path_is_the_same_uri_as_a_parsed_one() {
    let target = |text: &str| head(text).uri;
    let send = target("POST /v1/messages HTTP/1.1\r\nhost: a\r\n\r\n");
    assert_eq!(
        send,
        Uri::from_maybe_shared(Bytes::from("/v1/messages")).unwrap()
    );
    assert_eq!((send.path(), send.query()), ("/v1/messages", None));
    // Other targets are parsed as they are.
    let query = target("POST /v1/messages?a=1 HTTP/1.1\r\n\r\n");
    assert_eq!((query.path(), query.query()), ("/v1/messages", Some("a=1")));
    let absolute = target("POST http://h:1/v1/messages HTTP/1.1\r\n\r\n");
    assert_eq!(
        (absolute.host(), absolute.path()),
        (Some("h"), "/v1/messages")
    );
}

#[test]
fn a_known_name_is_the_name_a_parse_gives() {
    for name in [
        "host",
        "accept",
        "expect",
        "prefer",
        "x-api-key",
        "connection",
        "user-agent",
        "content-type",
        "x-request-id",
        "authorization",
        "content-length",
        "idempotency-key",
        "transfer-encoding",
    ] {
        let title: String = name
            .split('-')
            .map(|w| w[..1].to_ascii_uppercase() + &w[1..])
            .collect::<Vec<_>>()
            .join("-");
        for spelled in [name.to_string(), name.to_ascii_uppercase(), title] {
            let parsed = HeaderName::from_bytes(spelled.as_bytes()).unwrap();
            assert_eq!(known_name(spelled.as_bytes()), Some(parsed), "{spelled}");
        }
    }
    // Same lengths, other names: left to the parse.
    for other in [
        "hose",
        "accept_",
        "x-api-kez",
        "content-typo",
        "x_request_id",
    ] {
        assert_eq!(known_name(other.as_bytes()), None, "{other}");
    }
    let h = head("POST / HTTP/1.1\r\nX-Request-Id: a\r\nIDEMPOTENCY-KEY: k\r\nX-Other: o\r\n\r\n");
    let names: Vec<_> = h.headers.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["x-request-id", "idempotency-key", "x-other"]);
}
