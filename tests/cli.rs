//! The command line as a user runs it: check, demo, --help, graceful shutdown.

mod common;
use common::*;
use std::process::Command;
use std::time::Duration;

#[test]
fn check_accepts_the_example_and_lists_every_error() {
    let out = Command::new(BIN)
        .args([
            "check",
            "--config",
            concat!(env!("CARGO_MANIFEST_DIR"), "/config/switchyard.toml"),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[server]\nlisten = \"nowhere\"\n[routing]\nstrategy = \"random\"\n[[masters]]\nid = \"a\"\nsend_url = \"http://127.0.0.1:1/\"\nweight = 0\ncolour = \"red\"\n[[masters]]\nid = \"a\"\nsend_url = \"http://127.0.0.1:2/\"\nheaders = { authorization = \"Bearer ${SWITCHYARD_TEST_UNSET_VAR}\" }\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["check", "--config", bad.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    for want in [
        "server.listen:",
        "routing.strategy:",
        "masters[0].weight:",
        "masters[0].colour: unknown key",
        "masters[1].id: duplicate master id `a`",
        "masters[1].headers.authorization: environment variable SWITCHYARD_TEST_UNSET_VAR is not set",
    ] {
        assert!(err.contains(want), "missing {want:?} in:\n{err}");
    }
    let out = Command::new(BIN)
        .args(["check", "--config", "/nonexistent/x.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    // `run` refuses an invalid file the same way.
    let out = Command::new(BIN)
        .args(["run", "--config", bad.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("routing.strategy"));
}

#[test]
fn the_cluster_demo_without_etcd_says_how_to_get_it() {
    let empty = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["demo", "--cluster", "--listen", "127.0.0.1:0"])
        .env("PATH", empty.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("apt-get install etcd-server"), "{err}");
    assert!(err.contains("switchyard demo"), "{err}");
}

#[test]
fn every_command_has_help() {
    for cmd in [
        &["--help"][..],
        &["run", "--help"],
        &["check", "--help"],
        &["demo", "--help"],
        &["mock-master", "--help"],
        &["status", "--help"],
        &["cluster", "status", "--help"],
        &["cluster", "resign", "--help"],
        &["config", "push", "--help"],
    ] {
        let out = Command::new(BIN).args(cmd).output().unwrap();
        assert!(out.status.success(), "{cmd:?}");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("Usage"),
            "{cmd:?}"
        );
    }
}

#[tokio::test]
async fn demo_prints_a_curl_command_that_works() {
    let demo = Proc::spawn(&[
        "demo",
        "--listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
    ]);
    let line = demo.wait_line("curl -i -X POST", Duration::from_secs(20));
    // Run the printed command as printed, through a shell.
    let out = Command::new("sh")
        .arg("-c")
        .arg(line.trim())
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(
        text.to_lowercase()
            .contains("x-switchyard-master: linda-master")
            || text
                .to_lowercase()
                .contains("x-switchyard-master: omar-master"),
        "{text}"
    );
    let status_line = demo.wait_line("HA status:", Duration::from_secs(5));
    let admin = url_after(&status_line, "curl ").replace("/ha/status", "");
    let out = Command::new(BIN)
        .args(["status", "--admin", &admin])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("noor-master") && table.contains("standby"),
        "{table}"
    );
}

#[tokio::test]
async fn sigterm_finishes_in_flight_requests_and_exits_0() {
    let slow = Mock::start("slow", &["--latency-ms", "700"]);
    let mut sy = Switchyard::start(&masters_toml(&[(&slow, "")]));
    let http = Http::new();
    let in_flight = {
        let (http, url) = (http.clone(), sy.messages());
        tokio::spawn(async move { http.post(&url, MESSAGE).await })
    };
    wait_in_flight(&http, &sy.admin, 1).await;
    sy.proc.signal("TERM");
    let (st, h, _) = in_flight.await.unwrap();
    assert_eq!(st, 200, "the in-flight request finished");
    assert_eq!(header(&h, "x-switchyard-master"), "slow");
    assert_eq!(sy.proc.wait_exit(Duration::from_secs(15)), Some(0));
    // New connections are refused after shutdown.
    assert!(std::net::TcpStream::connect(sy.url.trim_start_matches("http://")).is_err());
}

/// Runs `switchyard run` with `log` lines in `[log]` and `RUST_LOG=rust_log`, queues one
/// message, stops it with SIGTERM and returns what it wrote to stderr (a file, so
/// not a terminal).
async fn logs_of(log: &str, rust_log: &str) -> String {
    use std::io::BufRead;
    let mock = Mock::start("a", &[]);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("switchyard.toml");
    std::fs::write(
        &config,
        format!(
            "{SERVER}[log]\n{log}\n[queue]\npath = \"{}\"\n{}",
            dir.path().join("queue").display(),
            masters_toml(&[(&mock, "")])
        ),
    )
    .unwrap();
    let stderr = dir.path().join("stderr.log");
    let mut child = Command::new(BIN)
        .args(["run", "--config", config.to_str().unwrap()])
        .env("RUST_LOG", rust_log)
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let line = lines.next().unwrap().unwrap();
    let url = url_after(&line, "listening on ");
    let http = Http::new();
    let (status, _, _) = http
        .post_with(
            &format!("{url}/v1/messages"),
            MESSAGE,
            &[("prefer", "respond-async")],
        )
        .await;
    assert_eq!(status, 202);
    let term = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    assert!(child.wait().unwrap().success());
    std::fs::read_to_string(stderr).unwrap()
}

#[tokio::test]
async fn logs_are_json_or_plain_text_and_keep_the_storage_engine_quiet() {
    let json_logs = logs_of("format = \"json\"", "info").await;
    let mut started = false;
    for line in json_logs.lines().filter(|l| !l.trim().is_empty()) {
        let entry: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
        assert!(entry["level"].is_string(), "{line}");
        started |= entry["fields"]["message"] == "switchyard started";
    }
    assert!(started, "no start line in:\n{json_logs}");

    // Text into a file: no colour codes; debug: nothing from the storage engine.
    let text_logs = logs_of("format = \"text\"", "debug").await;
    assert!(text_logs.contains("switchyard started"), "{text_logs}");
    assert!(!text_logs.contains('\x1b'), "colour codes in:\n{text_logs}");
    for noise in ["fjall", "lsm_tree"] {
        assert!(
            !text_logs.contains(noise),
            "{noise} at debug:\n{}",
            text_logs
                .lines()
                .filter(|l| l.contains(noise))
                .take(5)
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}

/// One worker thread (`TOKIO_WORKER_THREADS=1`) runs on the current-thread scheduler:
/// the same product, answers, queue and shutdown included. A value that is no
/// positive number is refused with the variable's name.
#[tokio::test]
async fn one_worker_thread_answers_queues_delivers_and_stops() {
    let a = Mock::start("a", &[]);
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("switchyard.toml");
    std::fs::write(
        &config_path,
        format!("{SERVER}{}", masters_toml(&[(&a, "")])),
    )
    .unwrap();
    let args = ["run", "--config", config_path.to_str().unwrap()];
    for bad in ["0", "two", ""] {
        let mut proc = Proc::spawn_env(&args, dir.path(), &[("TOKIO_WORKER_THREADS", bad)]);
        proc.wait_line(
            "TOKIO_WORKER_THREADS must be a whole number",
            Duration::from_secs(10),
        );
        assert_eq!(proc.wait_exit(Duration::from_secs(10)), Some(1), "{bad:?}");
    }
    let proc = Proc::spawn_env(&args, dir.path(), &[("TOKIO_WORKER_THREADS", "1")]);
    let mut sy = Switchyard::attach(proc, dir, config_path);
    let http = Http::new();
    let (code, h, _) = http.post(&sy.messages(), MESSAGE).await;
    assert_eq!(code, 200);
    assert_eq!(header(&h, "x-switchyard-master"), "a");
    let async_ = [("prefer", "respond-async")];
    let (code, _, body) = http.post_with(&sy.messages(), MESSAGE, &async_).await;
    assert_eq!(code, 202, "{}", String::from_utf8_lossy(&body));
    let id = json(&body)["id"].as_str().unwrap().to_string();
    until_status(&http, &sy, &id, "delivered", Duration::from_secs(10)).await;
    sy.proc.signal("TERM");
    assert_eq!(sy.proc.wait_exit(Duration::from_secs(15)), Some(0));
}
