//! The admin commands (`masters`, `dead-letters`, `events`, `status`) run as a user
//! runs them, against a real `switchyard run` and real mock masters.

mod common;
use common::*;
use std::process::{Command, Output};
use std::time::Duration;

const ASYNC: [(&str, &str); 1] = [("prefer", "respond-async")];

/// What one run of the command line gave.
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl From<Output> for Run {
    fn from(out: Output) -> Run {
        Run {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

/// Runs `switchyard ARGS --admin ADMIN` (the token only from `env`), off the test's
/// runtime so that servers on it keep answering.
async fn cli(admin: &str, args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .args(["--admin", admin])
        .env_remove("SWITCHYARD_ADMIN_TOKEN");
    for (k, v) in env {
        cmd.env(k, v);
    }
    tokio::task::spawn_blocking(move || cmd.output().expect("run switchyard").into())
        .await
        .unwrap()
}

/// Like [`cli`], and the run must succeed.
async fn ok(admin: &str, args: &[&str]) -> String {
    let run = cli(admin, args, &[]).await;
    assert_eq!(run.code, Some(0), "{args:?}: {}", run.stderr);
    run.stdout
}

/// Like [`cli`], and the run must exit 1 with one line on stderr; returns that line.
async fn fails(admin: &str, args: &[&str], env: &[(&str, &str)]) -> String {
    let run = cli(admin, args, env).await;
    assert_eq!(run.code, Some(1), "{args:?}: {}{}", run.stdout, run.stderr);
    assert_eq!(run.stderr.lines().count(), 1, "{args:?}: {}", run.stderr);
    run.stderr
}

fn primary_and_standby() -> (Mock, Mock, Switchyard) {
    let a = Mock::start("a", &[]);
    let s = Mock::start("s", &[]);
    let sy = Switchyard::start(&masters_toml(&[
        (&a, "role = \"primary\""),
        (&s, "role = \"standby\""),
    ]));
    (a, s, sy)
}

#[tokio::test]
async fn masters_are_disabled_enabled_failed_over_and_back() {
    let (_a, _s, sy) = primary_and_standby();
    let http = Http::new();

    let out = ok(&sy.admin, &["masters", "disable", "a"]).await;
    assert_eq!(out, "a: admin state disabled\n");
    let a = status_of(&http, &sy, "a").await;
    assert_eq!(
        (&a["admin"], &a["enabled"]),
        (&"disabled".into(), &false.into())
    );
    let out = ok(&sy.admin, &["masters", "enable", "a"]).await;
    assert_eq!(out, "a: admin state enabled\n");
    assert_eq!(status_of(&http, &sy, "a").await["enabled"], true);

    let out = ok(&sy.admin, &["masters", "failover", "a"]).await;
    assert_eq!(out, "a: failed over to s\n");
    assert_eq!(status_of(&http, &sy, "s").await["promoted"], true);
    let out = ok(&sy.admin, &["masters", "failback", "a"]).await;
    assert_eq!(out, "a: back in its place; s demoted\n");
    assert_eq!(status_of(&http, &sy, "s").await["promoted"], false);

    // The API's refusals, as one line each, exit 1.
    let err = fails(&sy.admin, &["masters", "failback", "a"], &[]).await;
    assert!(
        err.contains("409 no_failover: a is not failed over"),
        "{err}"
    );
    let err = fails(&sy.admin, &["masters", "disable", "nobody"], &[]).await;
    assert!(err.starts_with("error: 404 unknown_master: "), "{err}");
    // An id cannot reach another route.
    let err = fails(
        &sy.admin,
        &["masters", "disable", "../../admin/reload"],
        &[],
    )
    .await;
    assert!(err.contains("404 unknown_master"), "{err}");
}

#[tokio::test]
async fn the_admin_token_is_asked_for_and_checked() {
    let a = Mock::start("a", &[]);
    let sy = Switchyard::start(&format!(
        "{SERVER}admin_token = \"s3cret\"\n{}",
        masters_toml(&[(&a, "")])
    ));
    for args in [&["masters", "disable", "a"][..], &["events"], &["status"]] {
        let err = fails(&sy.admin, args, &[]).await;
        assert!(err.contains("401 unauthorized"), "{args:?}: {err}");
        assert!(err.contains("--token"), "{args:?}: {err}");
        let mut wrong = args.to_vec();
        wrong.extend(["--token", "guess"]);
        let err = fails(&sy.admin, &wrong, &[]).await;
        assert!(
            err.contains("the token given was refused"),
            "{args:?}: {err}"
        );
    }
    let out = ok(&sy.admin, &["status", "--token", "s3cret"]).await;
    assert!(!out.contains("disabled"), "refused, yet done:\n{out}");

    let run = cli(
        &sy.admin,
        &["masters", "disable", "a"],
        &[("SWITCHYARD_ADMIN_TOKEN", "s3cret")],
    )
    .await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let out = ok(&sy.admin, &["status", "--token", "s3cret"]).await;
    assert!(out.contains("disabled"), "{out}");
    let out = ok(&sy.admin, &["masters", "enable", "a", "--token", "s3cret"]).await;
    assert_eq!(out, "a: admin state enabled\n");
}

#[tokio::test]
async fn dead_letters_are_listed_retried_and_deleted() {
    let a = Mock::start("a", &[]);
    let sy = Switchyard::start(&format!(
        "[health]\npassive_failures = 1000\n[queue]\nmax_attempts = 1\n{}",
        masters_toml(&[(&a, "")])
    ));
    let http = Http::new();
    http.post(&format!("{}/control/down", a.url), "").await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        let (code, _, body) = http.post_with(&sy.messages(), MESSAGE, &ASYNC).await;
        assert_eq!(code, 202);
        ids.push(json(&body)["id"].as_str().unwrap().to_string());
    }
    for id in &ids {
        until_status(&http, &sy, id, "dead", Duration::from_secs(20)).await;
    }

    let out = ok(&sy.admin, &["dead-letters", "list"]).await;
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 4, "{out}");
    assert!(
        lines[0].starts_with("ID") && lines[0].contains("LAST ERROR"),
        "{out}"
    );
    for (line, id) in lines[1..].iter().zip(&ids) {
        let cells: Vec<&str> = line.split_whitespace().collect();
        assert_eq!((cells[0], cells[1]), (id.as_str(), "1"), "{out}");
        assert!(line.contains("503"), "{out}");
    }
    let out = ok(&sy.admin, &["dead-letters", "list", "--limit", "1"]).await;
    assert!(out.contains(&ids[0]) && !out.contains(&ids[1]), "{out}");
    assert!(out.contains("(1 of 3 shown"), "{out}");

    http.post(&format!("{}/control/up", a.url), "").await;
    let out = ok(&sy.admin, &["dead-letters", "retry", &ids[0]]).await;
    assert_eq!(out, format!("{}: queued again\n", ids[0]));
    until_status(&http, &sy, &ids[0], "delivered", Duration::from_secs(20)).await;
    let out = ok(&sy.admin, &["dead-letters", "delete", &ids[1]]).await;
    assert_eq!(out, format!("{}: deleted\n", ids[1]));
    let err = fails(&sy.admin, &["dead-letters", "delete", &ids[1]], &[]).await;
    assert!(err.contains("404 dead_letter_not_found"), "{err}");

    let out = ok(&sy.admin, &["dead-letters", "retry", "--all"]).await;
    assert_eq!(out, "retried 1 dead letter(s)\n");
    until_status(&http, &sy, &ids[2], "delivered", Duration::from_secs(20)).await;
    let out = ok(&sy.admin, &["dead-letters", "list"]).await;
    assert_eq!(out, "no dead letters\n");
    let out = ok(&sy.admin, &["dead-letters", "retry", "--all"]).await;
    assert_eq!(out, "retried 0 dead letter(s)\n");
}

#[tokio::test]
async fn events_show_the_audit_trail_newest_first() {
    let (_a, _s, sy) = primary_and_standby();
    let http = Http::new();
    ok(&sy.admin, &["masters", "failover", "a"]).await;
    ok(&sy.admin, &["masters", "failback", "a"]).await;
    http.post(&format!("{}/ha/pause", sy.admin), "").await;

    let out = ok(&sy.admin, &["events"]).await;
    let kinds: Vec<&str> = out
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().nth(1))
        .collect();
    assert!(out.starts_with("AT "), "{out}");
    let at = |kind: &str| kinds.iter().position(|k| *k == kind);
    // The pause, then the admin action that asked for it.
    assert_eq!(
        (at("admin_action"), at("paused")),
        (Some(0), Some(1)),
        "{out}"
    );
    assert!(at("failback") < at("failover_started"), "{out}");
    let failover = out
        .lines()
        .find(|l| l.contains("failover_started"))
        .unwrap();
    let cells: Vec<&str> = failover.split_whitespace().collect();
    assert_eq!((cells[2], cells[3]), ("a", "s"), "{out}");

    let out = ok(&sy.admin, &["events", "--limit", "1"]).await;
    assert_eq!(out.lines().count(), 2, "{out}");
    assert!(out.contains("POST /ha/pause from 127.0.0.1:"), "{out}");
}

#[tokio::test]
async fn no_admin_api_or_no_json_is_one_line_and_exit_1() {
    let err = fails("http://127.0.0.1:1", &["events"], &[]).await;
    assert!(
        err.starts_with("error: cannot reach the admin API at http://127.0.0.1:1"),
        "{err}"
    );
    assert!(err.contains("refused"), "{err}");
    // Something that answers, but not the admin API: an empty 200.
    let other = raw_server(|_| 200).await;
    for args in [&["masters", "drain", "a"][..], &["dead-letters", "list"]] {
        let err = fails(&other, args, &[]).await;
        assert!(err.contains("is not JSON"), "{err}");
    }
    // Only an address: a path or query would change which route a command reaches.
    for base in ["ftp://127.0.0.1:1", "http://127.0.0.1:1/admin/reload?x="] {
        let err = fails(base, &["status"], &[]).await;
        assert!(
            err.contains("(http://HOST:PORT or https://HOST:PORT)"),
            "{base}: {err}"
        );
    }
}

#[test]
fn every_admin_command_has_help() {
    for cmd in [
        &["masters", "--help"][..],
        &["masters", "disable", "--help"],
        &["masters", "reinstate", "--help"],
        &["dead-letters", "--help"],
        &["dead-letters", "retry", "--help"],
        &["events", "--help"],
    ] {
        let out = Command::new(BIN).args(cmd).output().unwrap();
        assert!(out.status.success(), "{cmd:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("Usage") && text.contains("--admin"),
            "{cmd:?}"
        );
    }
    // `reinstate` needs an id; `retry` needs an id or --all, not both.
    for cmd in [
        &["masters", "reinstate"][..],
        &["dead-letters", "retry"],
        &["dead-letters", "retry", "x", "--all"],
        &["events", "--limit", "0"],
    ] {
        let out = Command::new(BIN).args(cmd).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{cmd:?}");
    }
}
