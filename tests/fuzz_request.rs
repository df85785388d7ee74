//! Fuzzing the request path: arbitrary methods, paths, headers, framings and bodies
//! sent as raw bytes over a real socket to a real proxy (in this process), whose queue
//! writes to a real store on disk and whose master is a real mock on loopback.
//!
//! After every request the proxy must have answered with a status from the contract,
//! a clean JSON error body when it refused, counted no panic, and still forward a plain
//! message and queue an async one: nothing a client sends stops a component.
//!
//! CI runs a few dozen cases; a longer run (see BENCHMARKS.md for the last one):
//! `PROPTEST_CASES=20000 cargo test --release --test fuzz_request`.
//! Failing cases are kept in `tests/fuzz_request.proptest-regressions` and run first.

use proptest::prelude::*;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

struct Fixture {
    listen: SocketAddr,
    admin: SocketAddr,
    _dir: tempfile::TempDir,
}

/// One proxy for every case, on a runtime of its own.
fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        switchyard::telemetry::count_panics();
        let dir = tempfile::tempdir().unwrap();
        let queue = dir.path().join("queue");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let (_trigger, shutdown) = switchyard::server::shutdown_pair();
                let mock = Arc::new(switchyard::mock::MockMaster::new("m", Duration::ZERO, 0.0));
                let (mock_addr, _task) =
                    switchyard::mock::start(mock, "127.0.0.1:0".parse().unwrap(), shutdown)
                        .await
                        .unwrap();
                let text = format!(
                    "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n\
                     max_body_bytes = 4096\nmax_key_bytes = 32\nread_timeout_ms = 2000\n\
                     [routing]\nkey_field = \"/to\"\nregion_field = \"/region\"\n\
                     [queue]\npath = \"{}\"\nbackoff_initial_ms = 10\n\
                     [[masters]]\nid = \"m\"\nsend_url = \"http://{mock_addr}/send\"\n",
                    queue.display()
                );
                let config = switchyard::config::Config::from_toml(&text).unwrap();
                let running = switchyard::app::start(config, 0, None).await.unwrap();
                tx.send((running.listen, running.admin_listen)).unwrap();
                std::future::pending::<()>().await;
            });
        });
        let (listen, admin) = rx.recv().unwrap();
        Fixture {
            listen,
            admin,
            _dir: dir,
        }
    })
}

/// Sends raw bytes on a new connection and reads until the proxy closes it; the
/// status and body of the first answer.
fn exchange(addr: SocketAddr, request: &[u8]) -> Result<(u16, Vec<u8>), String> {
    let mut conn = TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
    conn.set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    // The proxy may answer (413, 400) and close before reading all of it.
    let _early_answer_possible = conn.write_all(request);
    let mut got = Vec::new();
    if let Err(e) = conn.read_to_end(&mut got) {
        if got.is_empty() {
            return Err(format!("no answer: {e}"));
        }
    }
    // Interim answers (100 Continue to an `Expect`) come first.
    while got.starts_with(b"HTTP/1.1 1") {
        match got.windows(4).position(|w| w == b"\r\n\r\n") {
            Some(end) => drop(got.drain(..end + 4)),
            None => break,
        }
    }
    let text = String::from_utf8_lossy(&got);
    let status = text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| format!("not an HTTP answer: {:?}", &text[..text.len().min(200)]))?;
    let body = match got.windows(4).position(|w| w == b"\r\n\r\n") {
        Some(end) => got[end + 4..].to_vec(),
        None => Vec::new(),
    };
    Ok((status, body))
}

fn post(addr: SocketAddr, headers: &str, body: &str) -> u16 {
    let request = format!(
        "POST /v1/messages HTTP/1.1\r\nhost: x\r\nconnection: close\r\n{headers}content-length: {}\r\n\r\n{body}",
        body.len()
    );
    exchange(addr, request.as_bytes()).map_or(0, |(status, _)| status)
}

/// Whether the proxy still forwards, still queues, and has counted no panic.
fn still_whole(f: &Fixture) -> Result<(), String> {
    let sync = post(f.listen, "", r#"{"text": "still there?"}"#);
    let queued = post(
        f.listen,
        "prefer: respond-async\r\n",
        r#"{"text": "and queued?"}"#,
    );
    if (sync, queued) != (200, 202) {
        return Err(format!("a plain send got {sync}, an async one {queued}"));
    }
    let (_, metrics) = exchange(
        f.admin,
        b"GET /metrics HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
    )?;
    let metrics = String::from_utf8_lossy(&metrics);
    if !metrics.lines().any(|l| l == "switchyard_panics_total 0") {
        return Err("a panic was counted".into());
    }
    Ok(())
}

/// Header values: visible ASCII, spaces, tabs and obs-text, empty to long.
fn header_value() -> impl Strategy<Value = Vec<u8>> {
    let byte = prop_oneof![0x20u8..0x7f, Just(b'\t'), 0x80u8..=0xff];
    prop_oneof![
        4 => proptest::collection::vec(byte.clone(), 0..48),
        1 => (byte, 0usize..70_000).prop_map(|(b, n)| vec![b; n]),
    ]
}

fn header() -> impl Strategy<Value = (String, Vec<u8>)> {
    let name = prop_oneof![
        Just("idempotency-key".to_string()),
        Just("x-routing-key".to_string()),
        Just("x-region".to_string()),
        Just("prefer".to_string()),
        Just("content-type".to_string()),
        Just("expect".to_string()),
        "[a-z][a-z0-9-]{0,20}".prop_filter("framing is chosen apart", |n| {
            !matches!(
                n.as_str(),
                "connection" | "content-length" | "transfer-encoding" | "host"
            )
        }),
    ];
    let prefer = prop_oneof![
        Just(b"respond-async".to_vec()),
        Just(b"respond-async; x=1".to_vec()),
        Just(b"wait=1, respond-async".to_vec()),
    ];
    (name, header_value(), prefer).prop_map(|(name, value, prefer)| {
        let value = if name == "prefer" && value.len() % 2 == 0 {
            prefer
        } else {
            value
        };
        (name, value)
    })
}

/// JSON a client might send, with the recipient and region the config reads.
fn json_body() -> impl Strategy<Value = Vec<u8>> {
    let value = prop_oneof![
        Just(serde_json::Value::Null),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>().prop_map(serde_json::Value::from),
        ".{0,40}".prop_map(serde_json::Value::from),
        (0usize..100).prop_map(|n| serde_json::Value::from("9".repeat(n))),
        Just(serde_json::json!({"nested": [1, 2]})),
    ];
    (value.clone(), value, any::<bool>()).prop_map(|(to, region, with_region)| {
        let mut body = serde_json::json!({"to": to, "text": "hi"});
        if with_region {
            body["region"] = region;
        }
        body.to_string().into_bytes()
    })
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => json_body(),
        1 => proptest::collection::vec(any::<u8>(), 0..600),
        1 => (any::<u8>(), 3000usize..6000).prop_map(|(b, n)| vec![b; n]),
    ]
}

#[derive(Debug, Clone)]
enum Framing {
    Length,
    Chunked(Vec<usize>),
    None,
}

fn framing() -> impl Strategy<Value = Framing> {
    prop_oneof![
        4 => Just(Framing::Length),
        2 => proptest::collection::vec(1usize..700, 1..6).prop_map(Framing::Chunked),
        1 => Just(Framing::None),
    ]
}

fn request_line() -> impl Strategy<Value = (String, String)> {
    let method = prop_oneof![
        6 => Just("POST".to_string()),
        1 => Just("GET".to_string()),
        1 => Just("DELETE".to_string()),
        1 => "[A-Z]{1,8}",
    ];
    let path = prop_oneof![
        6 => Just("/v1/messages".to_string()),
        1 => "/v1/messages/[a-z0-9-]{0,40}",
        1 => "/[a-zA-Z0-9/._~%-]{0,60}",
    ];
    (method, path)
}

fn build(
    (method, path): &(String, String),
    headers: &[(String, Vec<u8>)],
    body: &[u8],
    framing: &Framing,
) -> Vec<u8> {
    let mut r =
        format!("{method} {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n").into_bytes();
    for (name, value) in headers {
        r.extend_from_slice(name.as_bytes());
        r.extend_from_slice(b": ");
        r.extend_from_slice(value);
        r.extend_from_slice(b"\r\n");
    }
    match framing {
        Framing::Length => {
            r.extend_from_slice(format!("content-length: {}\r\n\r\n", body.len()).as_bytes());
            r.extend_from_slice(body);
        }
        Framing::Chunked(sizes) => {
            r.extend_from_slice(b"transfer-encoding: chunked\r\n\r\n");
            let mut rest = body;
            for size in sizes.iter().cycle() {
                if rest.is_empty() {
                    break;
                }
                let (chunk, more) = rest.split_at((*size).min(rest.len()));
                r.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
                r.extend_from_slice(chunk);
                r.extend_from_slice(b"\r\n");
                rest = more;
            }
            r.extend_from_slice(b"0\r\n\r\n");
        }
        Framing::None => r.extend_from_slice(b"\r\n"),
    }
    r
}

/// What the contract lets the proxy answer to anything, with a healthy master and the
/// queue on: the master's answer, queued, or a refusal with a reason (hyper itself
/// answers 400 to what is not HTTP, 431 to oversized heads, 501 to unknown codings).
const ANSWERS: [u16; 11] = [200, 202, 400, 404, 405, 408, 411, 413, 417, 431, 501];

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(48)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn no_request_stops_the_proxy(
        line in request_line(),
        headers in proptest::collection::vec(header(), 0..6),
        body in body(),
        framing in framing(),
    ) {
        let f = fixture();
        let request = build(&line, &headers, &body, &framing);
        let (status, answer) = exchange(f.listen, &request)
            .map_err(|e| TestCaseError::fail(format!("{e} (request of {} bytes)", request.len())))?;
        prop_assert!(ANSWERS.contains(&status), "status {status}: {}", String::from_utf8_lossy(&answer));
        if status >= 400 && !answer.is_empty() {
            let error: serde_json::Value = serde_json::from_slice(&answer)
                .map_err(|e| TestCaseError::fail(format!("{status} without a JSON body ({e}): {}", String::from_utf8_lossy(&answer))))?;
            let message = error["error"]["message"].as_str().unwrap_or_default();
            prop_assert!(error["error"]["code"].is_string(), "{error}");
            for internal in ["Fjall", "Os {", "code:", "os error"] {
                prop_assert!(!message.contains(internal), "{error}");
            }
        }
        still_whole(f).map_err(TestCaseError::fail)?;
    }
}
