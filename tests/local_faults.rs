//! Faults of switchyard's own machine are not the masters' (SPEC section 8): with its
//! file descriptors used up, probes and forwards fail, yet no master is blamed, no
//! failover starts, and a critical `local_resource_exhausted` alert is raised.
//!
//! The limit is lowered on the running binary with `prlimit` (util-linux); the admin
//! API is read over connections opened before, since no new one can be accepted then.

mod common;
use common::*;
use std::process::Command;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One kept-alive HTTP/1.1 connection, opened while file descriptors were free.
struct KeptAlive {
    stream: TcpStream,
    host: String,
}

impl KeptAlive {
    async fn open(base: &str) -> KeptAlive {
        let host = base.trim_start_matches("http://").to_string();
        let stream = TcpStream::connect(&host).await.expect("connect");
        KeptAlive { stream, host }
    }

    /// Sends one request and reads the answer: (status, head, body).
    async fn request(&mut self, method: &str, path: &str, body: &str) -> (u16, String, String) {
        let req = format!(
            "{method} {path} HTTP/1.1\r\nhost: {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            self.host,
            body.len()
        );
        self.stream.write_all(req.as_bytes()).await.expect("write");
        let mut buf = Vec::new();
        let mut chunk = [0u8; 16 * 1024];
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(end) = find(&buf, b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).to_string();
                let length: usize = head
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("content-length")
                            .then(|| v.trim().parse().ok())?
                    })
                    .unwrap_or_else(|| panic!("no content-length in {head}"));
                if buf.len() >= end + 4 + length {
                    let status = head[9..12].parse().expect("status");
                    let body = String::from_utf8_lossy(&buf[end + 4..end + 4 + length]);
                    return (status, head, body.to_string());
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let n = tokio::time::timeout(left, self.stream.read(&mut chunk))
                .await
                .expect("an answer within 10 s")
                .expect("read");
            assert!(n > 0, "connection closed by switchyard");
            buf.extend_from_slice(&chunk[..n]);
        }
    }

    async fn json(&mut self, path: &str) -> serde_json::Value {
        let (status, _, body) = self.request("GET", path, "").await;
        assert!(status == 200 || status == 503, "{path}: {status} {body}");
        json(body.as_bytes())
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The sum of the samples of `metric` whose labels contain every one of `labels`.
fn sample(metrics: &str, metric: &str, labels: &[&str]) -> u64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(metric) && labels.iter().all(|want| l.contains(want)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// The file descriptors `pid` holds, by number.
fn open_fds(pid: u32) -> Vec<u32> {
    let mut fds: Vec<u32> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("read /proc/PID/fd")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    fds.sort_unstable();
    fds
}

fn soft_nofile(pid: u32) -> String {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("Max open files");
    line.split_whitespace().nth(3).unwrap().to_string()
}

/// Sets the soft limit on open files of `pid` (the hard one is left alone, so it can
/// be raised back without privileges).
fn set_soft_nofile(pid: u32, soft: &str) {
    let ok = Command::new("prlimit")
        .args(["--pid", &pid.to_string(), &format!("--nofile={soft}:")])
        .status()
        .expect("prlimit (util-linux) must be installed")
        .success();
    assert!(ok, "prlimit --nofile={soft}: failed");
}

#[tokio::test]
async fn out_of_file_descriptors_blames_no_master() {
    let (a, s) = (Mock::start("a", &[]), Mock::start("s", &[]));
    let config = format!(
        "{SERVER}[health]\ninterval_ms = 100\ntimeout_ms = 1000\nunhealthy_threshold = 2\n\
         passive_failures = 1\n[failover]\nrecovery_wait_ms = 200\n[queue]\nenabled = false\n{}",
        masters_toml(&[
            (&a, &format!("health_url = \"{}/health\"", a.url)),
            (
                &s,
                &format!("health_url = \"{}/health\"\nrole = \"standby\"", s.url)
            ),
        ])
    );
    let sy = Switchyard::start(&config);
    let pid = sy.proc.child.id();
    let mut admin = KeptAlive::open(&sy.admin).await;
    let mut client = KeptAlive::open(&sy.url).await;
    // Both answered once, so both connections are served before the limit drops.
    assert_eq!(
        admin.json("/ha/status").await["masters"][0]["state"],
        "healthy"
    );
    let (status, _, _) = client.request("GET", "/v1/messages/nope", "").await;
    assert_eq!(status, 404);
    let checks = |m: &str| sample(m, "switchyard_health_checks_total", &["master=\"a\""]);
    let before = checks(&admin.request("GET", "/metrics", "").await.2);

    // A new descriptor takes the lowest free number, allowed below the limit: with the
    // limit at the lowest number above stdin, stdout and stderr (all held), none can be
    // opened, whatever gaps sockets closing later leave. Those held keep working.
    let original = soft_nofile(pid);
    let held = open_fds(pid);
    assert!(held.len() > 5 && held[..3] == [0, 1, 2], "{held:?}");
    set_soft_nofile(pid, "3");

    // A message now: no connection to `a` can be made (none is pooled yet).
    let (status, head, body) = client.request("POST", "/v1/messages", MESSAGE).await;
    assert_eq!(status, 503, "{head}\n{body}");
    assert!(head.to_ascii_lowercase().contains("retry-after"), "{head}");

    // Several probe intervals pass: every check fails for the proxy's own reason.
    let deadline = Instant::now() + Duration::from_secs(20);
    let metrics = loop {
        let m = admin.request("GET", "/metrics", "").await.2;
        if checks(&m) >= before + 8 {
            break m;
        }
        assert!(Instant::now() < deadline, "probes did not run: {m}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let status = admin.json("/ha/status").await;
    let health = admin.json("/health").await;
    let events = admin.json("/ha/events?limit=100").await;

    set_soft_nofile(pid, &original);

    for m in status["masters"].as_array().unwrap() {
        assert_eq!(m["state"], "healthy", "{status}");
        assert_eq!(m["failed_total"], 0, "{status}");
    }
    assert_eq!(status["masters"][1]["promoted"], false, "{status}");
    assert_eq!(health["status"], "healthy", "{health}");
    let kinds = event_kinds(&events);
    for kind in ["degraded", "failed", "failover_started"] {
        assert!(!kinds.contains(&kind), "{kind} in {events}");
    }
    assert!(
        sample(
            &metrics,
            "switchyard_alerts_total",
            &["severity=\"critical\""]
        ) >= 1,
        "{metrics}"
    );
    assert_eq!(
        sample(
            &metrics,
            "switchyard_health_checks_total",
            &["master=\"a\"", "result=\"fail\""]
        ),
        0,
        "{metrics}"
    );
    assert!(
        sample(
            &metrics,
            "switchyard_requests_total",
            &["master=\"a\"", "outcome=\"local_error\""]
        ) >= 1,
        "{metrics}"
    );
    sy.proc
        .wait_line("local_resource_exhausted", Duration::from_secs(5));

    // The limit back: a message goes through, to `a`, over a new connection.
    let http = Http::new();
    let (st, h, body) = http.post(&sy.messages(), MESSAGE).await;
    assert_eq!(st, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(header(&h, "x-switchyard-master"), "a");
    assert_eq!(status_of(&http, &sy, "a").await["state"], "healthy");
}

#[tokio::test]
async fn a_queued_delivery_out_of_file_descriptors_is_no_attempt() {
    let a = Mock::start("a", &[]);
    // No probes here: only the delivery meets the fault.
    let config = format!(
        "{SERVER}[health]\npassive_failures = 1\n[queue]\nbackoff_initial_ms = 50\n\
         backoff_max_ms = 50\nmax_attempts = 2\n{}",
        masters_toml(&[(&a, "")])
    );
    let sy = Switchyard::start(&config);
    let pid = sy.proc.child.id();
    let mut admin = KeptAlive::open(&sy.admin).await;
    let mut client = KeptAlive::open(&sy.url).await;

    // `a` out of rotation: the message waits in the queue.
    let (status, _, _) = admin.request("POST", "/ha/masters/a/disable", "").await;
    assert_eq!(status, 200);
    let (status, _, body) = client.request("POST", "/v1/messages", MESSAGE).await;
    assert_eq!(status, 202, "{body}");
    let id = json(body.as_bytes())["id"].as_str().unwrap().to_string();
    let path = format!("/v1/messages/{id}");
    let (status, _, _) = client.request("GET", &path, "").await;
    assert_eq!(status, 200);

    let original = soft_nofile(pid);
    set_soft_nofile(pid, "3");
    // Saving the operator state needs a descriptor too: the change is in force, and
    // the answer says that it could not be saved.
    let (status, _, body) = admin.request("POST", "/ha/masters/a/enable", "").await;
    assert_eq!(status, 500, "{body}");
    assert_eq!(json(body.as_bytes())["error"]["code"], "state_not_saved");
    // Deliveries are tried (every 50 ms) and fail for the proxy's own reason; a
    // master blamed for them would leave rotation, and the tries would stop.
    let deadline = Instant::now() + Duration::from_secs(20);
    let tried = loop {
        let m = admin.request("GET", "/metrics", "").await.2;
        let tried = sample(&m, "switchyard_requests_total", &["master=\"a\""]);
        let state = admin.json("/ha/status").await["masters"][0]["state"].clone();
        if tried >= 5 || state != "healthy" {
            break tried;
        }
        assert!(Instant::now() < deadline, "no delivery was tried: {m}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let record = json(client.request("GET", &path, "").await.2.as_bytes());
    let status = admin.json("/ha/status").await;
    set_soft_nofile(pid, &original);

    // More tries than max_attempts, yet none counted: it is not dead, and `a` is
    // not blamed.
    assert_eq!(status["masters"][0]["state"], "healthy", "{status}");
    assert!(tried > 2, "{tried}");
    assert_eq!(record["status"], "queued", "{record}");
    assert_eq!(record["attempts"], 0, "{record}");
    assert!(
        record["last_error"]
            .as_str()
            .unwrap_or_default()
            .contains("out of file descriptors"),
        "{record}"
    );
    assert_eq!(status["masters"][0]["state"], "healthy", "{status}");
    assert_eq!(status["masters"][0]["failed_total"], 0, "{status}");

    // The limit back: it is delivered.
    let http = Http::new();
    until_status(&http, &sy, &id, "delivered", Duration::from_secs(10)).await;
    assert_eq!(a.received(&http).await, 1);
}
