//! The deployment kit under `deploy/`: the alert rules pass their promtool tests, the
//! dashboard's queries parse, every metric the kit queries is one switchyard exports,
//! the compose file is valid and mounts only files that exist, the image copies only
//! files that exist and bakes a config that passes `check`, and the systemd unit
//! verifies. No container engine runs here: `docker-compose config` validates the
//! compose file without one.

mod common;

use common::*;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn deploy(path: &str) -> PathBuf {
    repo().join("deploy").join(path)
}

/// Runs a system tool; a missing one fails the test with the package that has it.
fn tool(program: &str, package: &str, args: &[&str], dir: &Path) -> Output {
    Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| {
            panic!("`{program}` must be installed (Debian package `{package}`; tests/run.sh installs it): {e}")
        })
}

fn assert_ok(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every `switchyard_*` name in `text`.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("switchyard_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.insert(tail[..end].to_string());
        rest = &tail[end..];
    }
    names
}

/// The PromQL queries of the dashboard, with Grafana's variables replaced by values
/// Prometheus accepts.
fn dashboard_queries() -> Vec<String> {
    let text = std::fs::read_to_string(deploy("grafana/dashboards/switchyard.json")).unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(&text).expect("dashboard is JSON");
    let mut queries = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().expect("every target has an expr");
            queries.push(
                expr.replace("$__rate_interval", "1m")
                    .replace("$__range", "1h")
                    .replace("$instance", ".*"),
            );
        }
    }
    queries
}

#[test]
fn alert_rules_pass_their_promtool_tests() {
    let dir = deploy("prometheus");
    assert_ok(
        &tool(
            "promtool",
            "prometheus",
            &["check", "config", "prometheus.yml"],
            &dir,
        ),
        "promtool check config",
    );
    assert_ok(
        &tool(
            "promtool",
            "prometheus",
            &["test", "rules", "alerts_test.yml"],
            &dir,
        ),
        "promtool test rules",
    );
}

#[test]
fn dashboard_queries_parse() {
    let queries = dashboard_queries();
    assert!(queries.len() >= 15, "only {} queries", queries.len());
    // promtool checks PromQL inside rule files: one recording rule per query.
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (n, q) in queries.iter().enumerate() {
        rules.push_str(&format!(
            "      - record: dashboard:query{n}\n        expr: {}\n",
            serde_json::to_string(q).unwrap()
        ));
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("dashboard.yml"), rules).unwrap();
    assert_ok(
        &tool(
            "promtool",
            "prometheus",
            &["check", "rules", "dashboard.yml"],
            dir.path(),
        ),
        "promtool check rules (the dashboard's queries)",
    );
}

#[tokio::test]
async fn every_metric_the_kit_queries_is_exported() {
    let (a, b) = (Mock::start("a", &[]), Mock::start("b", &[]));
    // Active checks on one master, so that their counters exist too.
    let checked = format!(
        "health_url = \"{}\"\n",
        a.send_url().replace("/send", "/health")
    );
    let sy = Switchyard::start(&masters_toml(&[(&a, &checked), (&b, "")]));
    let http = Http::new();
    let (status, _, _) = http.post(&sy.messages(), r#"{"to": "1"}"#).await;
    assert_eq!(status, 200);
    let (_, _, body) = http.get(&format!("{}/metrics", sy.admin)).await;
    let text = String::from_utf8(body.to_vec()).unwrap();
    let mut exported = BTreeSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split(' ');
            let (name, kind) = (parts.next().unwrap(), parts.next().unwrap_or(""));
            exported.insert(name.to_string());
            if kind == "histogram" {
                for suffix in ["_bucket", "_sum", "_count"] {
                    exported.insert(format!("{name}{suffix}"));
                }
            }
        }
    }

    let rules = std::fs::read_to_string(deploy("prometheus/alerts.yml")).unwrap();
    let queried_by_rules = metric_names(&rules);
    let queried_by_dashboard = metric_names(&dashboard_queries().join("\n"));
    assert!(queried_by_rules.len() >= 10, "{queried_by_rules:?}");
    assert!(queried_by_dashboard.len() >= 15, "{queried_by_dashboard:?}");
    for (source, names) in [
        ("deploy/prometheus/alerts.yml", &queried_by_rules),
        ("the dashboard", &queried_by_dashboard),
    ] {
        let unknown: Vec<_> = names.difference(&exported).collect();
        assert!(
            unknown.is_empty(),
            "{source} queries metrics switchyard does not export: {unknown:?}\nexported: {exported:?}"
        );
    }
}

#[test]
fn compose_file_is_valid_and_mounts_files_that_exist() {
    let out = tool(
        "docker-compose",
        "docker-compose",
        &["-f", "compose.yaml", "config"],
        &deploy(""),
    );
    assert_ok(&out, "docker-compose config");
    let resolved = String::from_utf8(out.stdout).unwrap();
    // Bind mounts come out with absolute sources: `- /abs/source:/target[:ro]`.
    let mut mounts = 0;
    for line in resolved.lines() {
        let Some(spec) = line.trim().strip_prefix("- /") else {
            continue;
        };
        let source = Path::new("/").join(spec.split(':').next().unwrap());
        assert!(
            source.exists(),
            "the compose file mounts {source:?}, which does not exist"
        );
        mounts += 1;
    }
    assert!(
        mounts >= 5,
        "expected the config, rule and Grafana mounts:\n{resolved}"
    );
    for service in [
        "switchyard:",
        "master-a:",
        "master-b:",
        "master-c:",
        "prometheus:",
        "grafana:",
    ] {
        assert!(
            resolved.contains(&format!("\n  {service}\n")),
            "no service {service}"
        );
    }
    assert!(resolved.contains(&format!("context: {}\n", repo().display())));
}

#[test]
fn image_copies_files_that_exist_and_bakes_a_container_config() {
    let dockerfile = std::fs::read_to_string(repo().join("Dockerfile")).unwrap();
    let mut copied = 0;
    for line in dockerfile.lines() {
        let Some(args) = line.strip_prefix("COPY ") else {
            continue;
        };
        if args.starts_with("--from") {
            continue;
        }
        let words: Vec<&str> = args.split_whitespace().collect();
        for source in &words[..words.len() - 1] {
            assert!(
                repo().join(source).exists(),
                "the Dockerfile copies {source}, which does not exist"
            );
            copied += 1;
        }
    }
    assert!(copied >= 4, "{dockerfile}");
    assert!(dockerfile.contains("COPY deploy/switchyard.toml /etc/switchyard/switchyard.toml"));
    assert!(
        dockerfile.contains("/livez"),
        "the HEALTHCHECK is liveness, not /health"
    );

    let config = deploy("switchyard.toml");
    let out = Command::new(BIN)
        .args(["check", "--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    assert_ok(&out, "switchyard check deploy/switchyard.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(text.contains("listen = \"0.0.0.0:8080\""));
    assert!(text.contains("admin_listen = \"0.0.0.0:9090\""));
}

#[test]
fn systemd_unit_verifies() {
    // `verify` wants the binary at the path ExecStart names: point it at this build.
    let unit = std::fs::read_to_string(deploy("switchyard.service")).unwrap();
    assert!(unit.contains("ProtectSystem=strict") && unit.contains("NoNewPrivileges=yes"));
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("switchyard.service"),
        unit.replace("/usr/local/bin/switchyard", BIN),
    )
    .unwrap();
    let out = tool(
        "systemd-analyze",
        "systemd",
        &["verify", "--man=no", "switchyard.service"],
        dir.path(),
    );
    assert_ok(&out, "systemd-analyze verify");
    // Unknown keys and bad values are warnings with exit status 0.
    let stderr = String::from_utf8_lossy(&out.stderr);
    let complaints: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("switchyard.service"))
        .collect();
    assert!(complaints.is_empty(), "systemd-analyze verify:\n{stderr}");
}
