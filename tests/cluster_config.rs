//! One config for a whole cluster (SPEC section 11) against a real etcd and real
//! nodes: `POST /admin/config` and `switchyard config push FILE` store the shared part
//! as a compare-and-swap on the config version; every node applies it, a node started
//! later included; stale, invalid and node-local pushes change nothing; a node that
//! cannot apply a push keeps its running config and says why.

mod common;
use common::etcd::{node, Etcd};
use common::*;
use http::StatusCode;
use std::time::Duration;

const WITHIN: Duration = Duration::from_secs(20);

async fn health(http: &Http, node: &Switchyard) -> serde_json::Value {
    json(&http.get(&format!("{}/health", node.admin)).await.2)
}

async fn version(http: &Http, node: &Switchyard) -> u64 {
    health(http, node).await["config_version"]
        .as_u64()
        .expect("config_version")
}

/// `POST /admin/config` with `If-Match: if_match` when given.
async fn push(
    http: &Http,
    node: &Switchyard,
    if_match: Option<&str>,
    body: &str,
) -> (StatusCode, serde_json::Value) {
    let headers: Vec<(&str, &str)> = if_match.map(|v| ("if-match", v)).into_iter().collect();
    let (code, _, body) = http
        .post_with(&format!("{}/admin/config", node.admin), body, &headers)
        .await;
    (code, json(&body))
}

async fn master_ids(http: &Http, node: &Switchyard) -> Vec<String> {
    let status = json(&http.get(&format!("{}/ha/status", node.admin)).await.2);
    status["masters"]
        .as_array()
        .expect("masters")
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_string())
        .collect()
}

async fn events(http: &Http, node: &Switchyard) -> Vec<(String, String)> {
    let (_, _, body) = http
        .get(&format!("{}/ha/events?limit=1000", node.admin))
        .await;
    json(&body)["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let s = |k: &str| e[k].as_str().unwrap_or("").to_string();
            (s("kind"), s("reason"))
        })
        .collect()
}

/// Waits until every node runs config `version` with exactly the masters `ids`.
async fn all_run(http: &Http, nodes: &[&Switchyard], version_: u64, ids: &[&str]) {
    for n in nodes {
        let deadline = std::time::Instant::now() + WITHIN;
        loop {
            let h = health(http, n).await;
            let masters = master_ids(http, n).await;
            if h["config_version"] == version_ && masters == ids {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{} does not run config version {version_} with {ids:?}: {h} {masters:?}",
                n.admin
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// The answer to a `POST /admin/config` head declaring a body of `length` bytes, sent
/// without the body.
async fn declared_body(node: &Switchyard, length: usize) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = node.admin.trim_start_matches("http://");
    let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /admin/config HTTP/1.1\r\nhost: test\r\nif-match: 2\r\ncontent-length: {length}\r\n\r\n"
    );
    c.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&answer).contains("}}") {
        let read = tokio::time::timeout(WITHIN, c.read(&mut buf)).await;
        match read.expect("an answer in time").unwrap() {
            0 => break,
            n => answer.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&answer).into_owned()
}

/// How many applies `switchyard_cluster_apply_seconds` has counted on a node.
async fn applies(http: &Http, node: &Switchyard) -> u64 {
    let (_, _, body) = http.get(&format!("{}/metrics", node.admin)).await;
    String::from_utf8_lossy(&body)
        .lines()
        .find_map(|l| l.strip_prefix("switchyard_cluster_apply_seconds_count "))
        .map_or(0, |n| n.trim().parse().unwrap())
}

fn error_paths(body: &serde_json::Value) -> Vec<String> {
    body["error"]["errors"]
        .as_array()
        .unwrap_or_else(|| panic!("no errors in {body}"))
        .iter()
        .map(|e| e["path"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn a_push_on_one_node_is_applied_by_every_node_and_by_one_started_later() {
    let etcd = Etcd::start();
    let (m1, m2) = (Mock::start("m1", &[]), Mock::start("m2", &[]));
    let local = masters_toml(&[(&m1, "")]);
    let a = node(&etcd, "/t/apply", "a", 200, &local);
    let b = node(&etcd, "/t/apply", "b", 100, &local);
    let http = Http::new();
    all_run(&http, &[&a, &b], 1, &["m1"]).await;

    let shared = format!(
        "[routing]\nstrategy = \"round_robin\"\n{}",
        masters_toml(&[(&m1, ""), (&m2, "")])
    );
    let applies_before = applies(&http, &b).await;
    let (code, body) = push(&http, &a, Some("1"), &shared).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["config_version"], 2);
    // Applied on the node that took it before it answered.
    assert_eq!(master_ids(&http, &a).await, ["m1", "m2"]);
    all_run(&http, &[&a, &b], 2, &["m1", "m2"]).await;
    assert!(
        applies(&http, &b).await > applies_before,
        "the apply is timed"
    );

    // The master the push added takes traffic from the other node.
    for _ in 0..10 {
        let (code, _, _) = http.post(&b.messages(), "{\"to\":\"x\"}").await;
        assert_eq!(code, 200);
    }
    assert!(m2.received(&http).await >= 4, "m2 got traffic from b");
    let reloaded = events(&http, &b).await;
    assert!(
        reloaded
            .iter()
            .any(|(k, r)| k == "config_reloaded" && r.contains("config version 2")),
        "{reloaded:?}"
    );

    // A local reload keeps the shared part and the cluster's version: a master added
    // to the file's own [[masters]] is ignored, and said to be.
    b.rewrite_config(&format!(
        "{}\n[[masters]]\nid = \"m9\"\nsend_url = \"http://127.0.0.1:9/\"\n",
        b.config_text()
    ));
    let (code, _, body) = http.post(&format!("{}/admin/reload", b.admin), "").await;
    assert_eq!(code, 200);
    assert_eq!(json(&body)["config_version"], 2);
    assert_eq!(master_ids(&http, &b).await, ["m1", "m2"]);
    let warning = b.proc.wait_line("shared sections are ignored", WITHIN);
    assert!(warning.contains("masters"), "{warning}");

    // A node started after the push runs it, though its own file has m1 only.
    let c = node(&etcd, "/t/apply", "c", 50, &local);
    all_run(&http, &[&a, &b, &c], 2, &["m1", "m2"]).await;
}

#[tokio::test]
async fn stale_invalid_and_node_local_pushes_change_nothing() {
    let etcd = Etcd::start();
    let m1 = Mock::start("m1", &[]);
    let local = masters_toml(&[(&m1, "")]);
    let a = node(&etcd, "/t/refuse", "a", 200, &local);
    let b = node(&etcd, "/t/refuse", "b", 100, &local);
    let http = Http::new();
    let shared = masters_toml(&[(&m1, "weight = 2")]);
    let (code, body) = push(&http, &b, Some("\"1\""), &shared).await;
    assert_eq!(code, 200, "{body}");
    all_run(&http, &[&a, &b], 2, &["m1"]).await;

    let other = format!("{shared}\n[[masters]]\nid = \"m9\"\nsend_url = \"http://127.0.0.1:9/\"\n");
    for stale in ["1", "3"] {
        let (code, body) = push(&http, &a, Some(stale), &other).await;
        assert_eq!(code, 409, "{body}");
        assert_eq!(body["error"]["code"], "version_conflict");
        assert_eq!(body["error"]["config_version"], 2);
    }
    let (code, body) = push(&http, &a, None, &other).await;
    assert_eq!(code, 428, "{body}");
    assert_eq!(body["error"]["code"], "precondition_required");
    let (code, body) = push(&http, &a, Some("two"), &other).await;
    assert_eq!(code, 400, "{body}");

    let invalid = "[routing]\nstrategy = \"random\"\n[[masters]]\nid = \"x\"\n\
                   send_url = \"not a url\"\nweight = -1\n";
    let (code, body) = push(&http, &a, Some("2"), invalid).await;
    assert_eq!(code, 400, "{body}");
    assert_eq!(body["error"]["code"], "invalid_config");
    let paths = error_paths(&body);
    for want in [
        "routing.strategy",
        "masters[0].send_url",
        "masters[0].weight",
    ] {
        assert!(paths.iter().any(|p| p == want), "{want} in {paths:?}");
    }

    let local_keys = format!(
        "[server]\nlisten = \"127.0.0.1:1\"\n[log]\nformat = \"json\"\n\
         [queue]\npath = \"elsewhere/queue\"\nmax_attempts = 3\n{shared}"
    );
    let (code, body) = push(&http, &a, Some("2"), &local_keys).await;
    assert_eq!(code, 400, "{body}");
    assert_eq!(error_paths(&body), ["server", "log", "queue.path"]);
    // Refused on its declared length, before any of it is read.
    let answer = declared_body(&a, 1024 * 1024 + 1).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("config_too_large"), "{answer}");

    // Nothing moved: every node still runs version 2, and version 2 is still the one
    // a push must be based on.
    all_run(&http, &[&a, &b], 2, &["m1"]).await;
    let (code, body) = push(&http, &a, Some("2"), &other).await;
    assert_eq!(code, 200, "{body}");
    all_run(&http, &[&a, &b], 3, &["m1", "m9"]).await;

    // A node alone has no cluster config.
    let alone = Switchyard::start(&local);
    let (code, body) = push(&http, &alone, Some("1"), &shared).await;
    assert_eq!(code, 404, "{body}");
    assert_eq!(body["error"]["code"], "cluster_disabled");
}

/// `switchyard config push FILE` with its arguments; (exit code, stdout, stderr).
fn cli_push(file: &std::path::Path, admin: &str, extra: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(BIN)
        .args(["config", "push"])
        .arg(file)
        .args(["--admin", admin])
        .args(extra)
        .output()
        .expect("run switchyard config push");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn config_push_from_the_command_line() {
    let etcd = Etcd::start();
    let (m1, m2) = (Mock::start("m1", &[]), Mock::start("m2", &[]));
    let local = masters_toml(&[(&m1, "")]);
    let a = node(&etcd, "/t/cli", "a", 200, &local);
    let b = node(&etcd, "/t/cli", "b", 100, &local);
    let http = Http::new();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("shared.toml");

    std::fs::write(&file, masters_toml(&[(&m2, "")])).unwrap();
    let (code, out, err) = cli_push(&file, &a.admin, &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("config version is now 2"), "{out}");
    all_run(&http, &[&a, &b], 2, &["m2"]).await;

    let (code, out, err) = cli_push(&file, &b.admin, &["--if-match", "1"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("409 version_conflict"), "{err}");

    std::fs::write(
        &file,
        "[routing]\nstrategy = \"random\"\n[server]\nlisten = \"127.0.0.1:1\"\n",
    )
    .unwrap();
    let (code, out, err) = cli_push(&file, &b.admin, &[]);
    assert_eq!(code, 1, "{out}{err}");
    for want in ["server: node-local", "routing.strategy:", "masters:"] {
        assert!(err.contains(want), "{want} in {err}");
    }
    all_run(&http, &[&a, &b], 2, &["m2"]).await;
}

#[tokio::test]
async fn a_push_one_node_cannot_apply_is_kept_out_there_and_reported() {
    let etcd = Etcd::start();
    let m1 = Mock::start("m1", &[]);
    let local = masters_toml(&[(&m1, "")]);
    let a = node(&etcd, "/t/reject", "a", 200, &local);
    let b = node(&etcd, "/t/reject", "b", 100, &local);
    let http = Http::new();
    // A CA bundle under a relative path that only a's directory has.
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = params.self_signed(&key).unwrap().pem();
    std::fs::write(a.dir.path().join("ca.pem"), &ca).unwrap();
    let shared = format!(
        "{local}\n[[masters]]\nid = \"tls\"\nsend_url = \"https://127.0.0.1:9/send\"\n\
         role = \"standby\"\ntls_ca = \"ca.pem\"\n"
    );
    let (code, body) = push(&http, &a, Some("1"), &shared).await;
    assert_eq!(code, 200, "{body}");
    all_run(&http, &[&a], 2, &["m1", "tls"]).await;

    // b keeps its running config and says why.
    eventually(WITHIN, "b to report the rejected push", || async {
        let h = health(&http, &b).await;
        h["last_reload_error"]
            .as_str()
            .is_some_and(|e| e.contains("version 2") && e.contains("masters[1].tls_ca"))
    })
    .await;
    assert_eq!(version(&http, &b).await, 1);
    assert_eq!(master_ids(&http, &b).await, ["m1"]);
    let seen = events(&http, &b).await;
    assert!(seen.iter().any(|(k, _)| k == "config_rejected"), "{seen:?}");

    // Once the file is there, b's next local reload applies the push.
    std::fs::write(b.dir.path().join("ca.pem"), &ca).unwrap();
    let (code, _, body) = http.post(&format!("{}/admin/reload", b.admin), "").await;
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
    all_run(&http, &[&a, &b], 2, &["m1", "tls"]).await;
    assert!(health(&http, &b).await["last_reload_error"].is_null());
}

#[tokio::test]
async fn a_node_cut_off_from_etcd_refuses_a_push_and_keeps_what_it_applied() {
    let mut etcd = Etcd::start();
    let (m1, m2) = (Mock::start("m1", &[]), Mock::start("m2", &[]));
    let local = masters_toml(&[(&m1, "")]);
    let a = node(&etcd, "/t/isolated", "a", 200, &local);
    let http = Http::new();
    let shared = masters_toml(&[(&m1, ""), (&m2, "")]);
    let (code, body) = push(&http, &a, Some("1"), &shared).await;
    assert_eq!(code, 200, "{body}");

    etcd.kill();
    let only_m2 = masters_toml(&[(&m2, "")]);
    let (code, body) = push(&http, &a, Some("2"), &only_m2).await;
    assert_eq!(code, 503, "{body}");
    assert_eq!(body["error"]["code"], "cluster_isolated");
    all_run(&http, &[&a], 2, &["m1", "m2"]).await;
    let (code, _, _) = http.post(&a.messages(), "{\"to\":\"x\"}").await;
    assert_eq!(code, 200, "forwarding goes on without etcd");

    // Back in touch: the push goes through on the version it was based on.
    etcd.restart();
    eventually(WITHIN, "a push once etcd is back", || async {
        push(&http, &a, Some("2"), &only_m2).await.0 == 200
    })
    .await;
    all_run(&http, &[&a], 3, &["m2"]).await;
}
