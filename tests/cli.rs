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
fn every_command_has_help() {
    for cmd in [
        &["--help"][..],
        &["run", "--help"],
        &["check", "--help"],
        &["demo", "--help"],
        &["mock-master", "--help"],
        &["status", "--help"],
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
