//! Test harness: the real `switchyard` binary as proxy and mock masters, on
//! 127.0.0.1:0, with conditions awaited under deadlines.
#![allow(dead_code)]

pub mod etcd;

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_switchyard");

/// The `[server]` table every test uses: both listeners on loopback, port 0. Tests
/// that need more server keys append them right after it.
pub const SERVER: &str = "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n";

/// A child process killed on drop, with its stdout lines on a channel.
pub struct Proc {
    pub child: Child,
    lines: mpsc::Receiver<String>,
}

impl Proc {
    pub fn spawn(args: &[&str]) -> Proc {
        Self::spawn_in(args, Path::new("."))
    }

    /// Runs with `dir` as the working directory, where a relative `queue.path` (and so
    /// the audit trail) lands.
    pub fn spawn_in(args: &[&str], dir: &Path) -> Proc {
        Self::spawn_env(args, dir, &[])
    }

    /// Like [`Proc::spawn_in`], with more environment variables.
    pub fn spawn_env(args: &[&str], dir: &Path, env: &[(&str, &str)]) -> Proc {
        let mut cmd = Command::new(BIN);
        cmd.args(args).envs(env.iter().copied()).current_dir(dir);
        Self::spawn_command(cmd)
    }

    /// Runs `cmd` (which runs switchyard, perhaps through a wrapper such as
    /// `ip netns exec`) with its output on the lines channel.
    pub fn spawn_command(mut cmd: Command) -> Proc {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .env("RUST_LOG", "info")
            .spawn()
            .expect("spawn switchyard");
        let (tx, lines) = mpsc::channel();
        let out = child.stdout.take().expect("stdout");
        let err = child.stderr.take().expect("stderr");
        let tx2 = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let _test_may_be_gone = tx.send(line);
            }
        });
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                let _test_may_be_gone = tx2.send(format!("[stderr] {line}"));
            }
        });
        Proc { child, lines }
    }

    /// Waits for a stdout/stderr line containing `needle`; returns it.
    pub fn wait_line(&self, needle: &str, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(_) => panic!("no line containing {needle:?} within {within:?}"),
            }
        }
    }

    /// The lines up to and including the first containing `needle`.
    pub fn lines_until(&self, needle: &str, within: Duration) -> Vec<String> {
        let deadline = Instant::now() + within;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let found = line.contains(needle);
                    seen.push(line);
                    if found {
                        return seen;
                    }
                }
                Err(_) => panic!("no line containing {needle:?} within {within:?}: {seen:?}"),
            }
        }
    }

    /// All lines printed so far (drains the channel).
    pub fn drain_lines(&self) -> Vec<String> {
        self.lines.try_iter().collect()
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .expect("kill")
            .success();
        assert!(ok, "kill -{sig} failed");
    }

    /// Waits for the process to exit; returns its exit code.
    pub fn wait_exit(&mut self, within: Duration) -> Option<i32> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status.code();
            }
            assert!(
                Instant::now() < deadline,
                "process did not exit within {within:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _already_gone = self.child.kill();
        let _reaped = self.child.wait();
    }
}

/// Extracts `http://HOST:PORT` after `marker` in a line.
pub fn url_after(line: &str, marker: &str) -> String {
    let start = line
        .find(marker)
        .unwrap_or_else(|| panic!("{marker:?} not in {line:?}"))
        + marker.len();
    let rest = &line[start..];
    let end = rest
        .find(|c: char| c.is_whitespace() || c == ')')
        .unwrap_or(rest.len());
    rest[..end].to_string()
}

pub struct Mock {
    pub proc: Proc,
    pub url: String,
    pub id: String,
}

impl Mock {
    pub fn start(id: &str, extra: &[&str]) -> Mock {
        Self::start_on(id, "127.0.0.1:0", extra)
    }

    /// Starts a mock on `listen` (an address one that stopped had, to bring it back).
    pub fn start_on(id: &str, listen: &str, extra: &[&str]) -> Mock {
        let mut args = vec!["mock-master", "--listen", listen, "--id", id];
        args.extend_from_slice(extra);
        let proc = Proc::spawn(&args);
        let line = proc.wait_line("listening on", Duration::from_secs(20));
        let url = url_after(&line, "listening on ");
        Mock {
            proc,
            url,
            id: id.to_string(),
        }
    }

    pub fn send_url(&self) -> String {
        format!("{}/send", self.url)
    }

    pub async fn received(&self, http: &Http) -> u64 {
        let (_, _, body) = http.get(&format!("{}/received", self.url)).await;
        json(&body)["count"].as_u64().unwrap()
    }
}

/// A bare HTTP/1.1 server on 127.0.0.1:0, for answers a mock master does not give:
/// `answer` gets each request's body (read to its Content-Length) and returns the
/// status to send back, with an empty body. Returns its base URL.
pub async fn raw_server(answer: impl Fn(Vec<u8>) -> u16 + Send + Sync + 'static) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let answer = std::sync::Arc::new(answer);
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let answer = answer.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let Ok(n) = conn.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let Some((body_start, end)) = message_end(&buf) else {
                        continue;
                    };
                    let body = buf[body_start..end].to_vec();
                    buf.drain(..end);
                    let status = answer(body);
                    let head = format!("HTTP/1.1 {status} -\r\ncontent-length: 0\r\n\r\n");
                    if conn.write_all(head.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    url
}

/// Where the first whole HTTP/1.1 message in `buf` (a head, then a body of its
/// `Content-Length`) has its body start and its end; `None` until all of it is there.
pub fn message_end(buf: &[u8]) -> Option<(usize, usize)> {
    let head_end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let length: usize = String::from_utf8_lossy(&buf[..head_end])
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    let end = head_end + 4 + length;
    (buf.len() >= end).then_some((head_end + 4, end))
}

/// `[[masters]]` tables for mocks: (mock, extra TOML lines).
pub fn masters_toml(masters: &[(&Mock, &str)]) -> String {
    let mut s = String::new();
    for (m, extra) in masters {
        s.push_str(&format!(
            "\n[[masters]]\nid = \"{}\"\nsend_url = \"{}\"\n{extra}\n",
            m.id,
            m.send_url()
        ));
    }
    s
}

pub struct Switchyard {
    pub proc: Proc,
    pub url: String,
    pub admin: String,
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
}

impl Switchyard {
    /// Starts `switchyard run` with `config` (listen addresses are added when absent).
    pub fn start(config: &str) -> Switchyard {
        let dir = tempfile::tempdir().expect("tempdir");
        let config_path = dir.path().join("switchyard.toml");
        let text = if config.contains("[server]") {
            config.to_string()
        } else {
            format!("{SERVER}{config}")
        };
        std::fs::write(&config_path, text).expect("write config");
        Self::run_in(dir, config_path)
    }

    /// Stops with SIGTERM, waits for a clean exit, and starts `switchyard run` again on
    /// the same directory and config file.
    pub fn restart(self) -> Switchyard {
        self.stop_and_start("TERM")
    }

    /// `kill -9`, then starts `switchyard run` again on the same directory and config.
    pub fn kill_and_restart(self) -> Switchyard {
        self.stop_and_start("KILL")
    }

    /// Sends `signal`, waits for the exit (a clean one after TERM), and starts again.
    fn stop_and_start(self, signal: &str) -> Switchyard {
        let Switchyard {
            mut proc,
            dir,
            config_path,
            ..
        } = self;
        proc.signal(signal);
        let code = proc.wait_exit(Duration::from_secs(20));
        if signal == "TERM" {
            assert_eq!(code, Some(0));
        }
        Self::run_in(dir, config_path)
    }

    /// Starts `switchyard run` again on the same directory and config file, once the
    /// process has exited.
    pub fn start_again(self) -> Switchyard {
        let Switchyard {
            dir, config_path, ..
        } = self;
        Self::run_in(dir, config_path)
    }

    fn run_in(dir: tempfile::TempDir, config_path: PathBuf) -> Switchyard {
        let proc = Proc::spawn_in(
            &["run", "--config", config_path.to_str().unwrap()],
            dir.path(),
        );
        Self::attach(proc, dir, config_path)
    }

    /// A `switchyard run` started some other way (e.g. in another network namespace):
    /// waits for its listeners.
    pub fn attach(proc: Proc, dir: tempfile::TempDir, config_path: PathBuf) -> Switchyard {
        let line = proc.wait_line("switchyard listening on", Duration::from_secs(20));
        Switchyard {
            url: url_after(&line, "listening on "),
            admin: url_after(&line, "(admin "),
            proc,
            dir,
            config_path,
        }
    }

    pub fn messages(&self) -> String {
        format!("{}/v1/messages", self.url)
    }

    /// Replaces the config file the way an editor does: write aside, then rename.
    pub fn rewrite_config(&self, text: &str) {
        let tmp = self.dir.path().join(".switchyard.toml.tmp");
        std::fs::write(&tmp, text).expect("write");
        std::fs::rename(&tmp, &self.config_path).expect("rename");
    }

    pub fn config_text(&self) -> String {
        std::fs::read_to_string(&self.config_path).unwrap()
    }
}

#[derive(Clone)]
pub struct Http(Client<HttpConnector, Full<Bytes>>);

impl Default for Http {
    fn default() -> Self {
        Self::new()
    }
}

impl Http {
    pub fn new() -> Http {
        Http(Client::builder(TokioExecutor::new()).build_http())
    }

    pub async fn send(&self, req: Request<Full<Bytes>>) -> (StatusCode, HeaderMap, Bytes) {
        self.try_send(req)
            .await
            .unwrap_or_else(|e| panic!("request failed: {e}"))
    }

    /// Like [`Http::send`], but a failed exchange is an `Err`, not a panic.
    pub async fn try_send(
        &self,
        req: Request<Full<Bytes>>,
    ) -> Result<(StatusCode, HeaderMap, Bytes), String> {
        let resp = tokio::time::timeout(Duration::from_secs(30), self.0.request(req))
            .await
            .map_err(|_| "timed out".to_string())?
            .map_err(|e| e.to_string())?;
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
        Ok((parts.status, parts.headers, body))
    }

    pub async fn get(&self, url: &str) -> (StatusCode, HeaderMap, Bytes) {
        self.send(Request::get(url).body(Full::default()).unwrap())
            .await
    }

    pub async fn post(&self, url: &str, body: &str) -> (StatusCode, HeaderMap, Bytes) {
        self.post_with(url, body, &[]).await
    }

    pub async fn post_with(
        &self,
        url: &str,
        body: &str,
        headers: &[(&str, &str)],
    ) -> (StatusCode, HeaderMap, Bytes) {
        self.send(json_post(url, body, headers)).await
    }

    /// Like [`Http::post_with`], but a failed exchange is an `Err`, not a panic.
    pub async fn try_post_with(
        &self,
        url: &str,
        body: &str,
        headers: &[(&str, &str)],
    ) -> Result<(StatusCode, HeaderMap, Bytes), String> {
        self.try_send(json_post(url, body, headers)).await
    }
}

fn json_post(url: &str, body: &str, headers: &[(&str, &str)]) -> Request<Full<Bytes>> {
    let mut req = Request::post(url).header("content-type", "application/json");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.body(Full::new(Bytes::from(body.to_string()))).unwrap()
}

/// `GET /v1/messages/{id}`'s body.
pub async fn message(http: &Http, sy: &Switchyard, id: &str) -> serde_json::Value {
    json(&http.get(&format!("{}/v1/messages/{id}", sy.url)).await.2)
}

/// Master `id`'s entry in `/ha/status`.
pub async fn status_of(http: &Http, sy: &Switchyard, id: &str) -> serde_json::Value {
    let status = json(&http.get(&format!("{}/ha/status", sy.admin)).await.2);
    status["masters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == id)
        .cloned()
        .unwrap()
}

/// Idempotency-Key → how many times it reached `mock` (started with `--record-keys`).
pub async fn keys_received(http: &Http, mock: &Mock) -> std::collections::HashMap<String, u64> {
    let body = json(&http.get(&format!("{}/received/keys", mock.url)).await.2);
    body["keys"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_u64().unwrap()))
        .collect()
}

/// The kinds of the events in a `/ha/events` body, newest first.
pub fn event_kinds(events: &serde_json::Value) -> Vec<&str> {
    events["events"]
        .as_array()
        .map(|all| all.iter().filter_map(|e| e["kind"].as_str()).collect())
        .unwrap_or_default()
}

/// An alert webhook: its URL, and the alerts POSTed to it as they come.
pub async fn webhook_receiver() -> (
    String,
    tokio::sync::mpsc::UnboundedReceiver<serde_json::Value>,
) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let url = raw_server(move |body| {
        let _ = tx.send(json(&body));
        200
    })
    .await;
    (format!("{url}/alerts"), rx)
}

/// A node's audit trail, newest first: (kind, reason) of each event.
pub async fn events_of(http: &Http, node: &Switchyard) -> Vec<(String, String)> {
    let (_, _, body) = http
        .get(&format!("{}/ha/events?limit=1000", node.admin))
        .await;
    json(&body)["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| {
            let text = |k: &str| e[k].as_str().unwrap_or_default().to_string();
            (text("kind"), text("reason"))
        })
        .collect()
}

pub fn json(body: &[u8]) -> serde_json::Value {
    serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(body)))
}

pub fn header<'a>(h: &'a HeaderMap, name: &str) -> &'a str {
    h.get(name).map(|v| v.to_str().unwrap()).unwrap_or("")
}

/// Polls `check` every 20 ms until it returns true or `within` passes.
pub async fn eventually<F, Fut>(within: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits (up to `within`) until `GET /v1/messages/{id}` shows `status`.
pub async fn until_status(http: &Http, sy: &Switchyard, id: &str, status: &str, within: Duration) {
    let what = format!("message {id} to be {status}");
    eventually(within, &what, || async {
        message(http, sy, id).await["status"] == status
    })
    .await;
}

/// Waits until the first master of `/ha/status` has `n` exchanges in flight.
pub async fn wait_in_flight(http: &Http, admin: &str, n: u64) {
    eventually(
        Duration::from_secs(5),
        &format!("{n} request(s) in flight"),
        || async {
            json(&http.get(&format!("{admin}/ha/status")).await.2)["masters"][0]["in_flight"] == n
        },
    )
    .await;
}

pub const MESSAGE: &str = r#"{"to": "+971500000001", "text": "hello"}"#;

/// The headers of the last send `mock` (started with `--record-keys`) accepted, by
/// lower-case name.
pub async fn headers_received(
    http: &Http,
    mock: &Mock,
) -> std::collections::HashMap<String, String> {
    let body = json(&http.get(&format!("{}/received/headers", mock.url)).await.2);
    body["headers"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
        .collect()
}
