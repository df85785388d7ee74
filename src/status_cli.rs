//! `switchyard status`: `GET /ha/status` printed as a table.

use anyhow::{bail, Context};
use http::{header, Request};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

pub async fn run(admin: &str, token: Option<&str>) -> anyhow::Result<()> {
    let url = format!("{}/ha/status", admin.trim_end_matches('/'));
    let mut req = Request::get(&url);
    if let Some(t) = token.filter(|t| !t.is_empty()) {
        req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    let req = req
        .body(Empty::<bytes::Bytes>::new())
        .with_context(|| format!("`{url}` is not a valid URL"))?;
    let client = Client::builder(TokioExecutor::new()).build_http();
    let resp = client
        .request(req)
        .await
        .with_context(|| format!("cannot reach the admin API at {admin}"))?;
    let status = resp.status();
    let body = resp.into_body().collect().await?.to_bytes();
    let json: Value = serde_json::from_slice(&body).context("the admin API did not answer JSON")?;
    if !status.is_success() {
        let msg = json["error"]["message"].as_str().unwrap_or("unknown error");
        bail!("{status}: {msg}");
    }
    print!("{}", render(&json));
    Ok(())
}

/// Formats a `/ha/status` body as a table.
pub fn render(status: &Value) -> String {
    let mut out = format!(
        "strategy: {}   routing table: v{}   failover paused: {}   breaker open: {}\n\n",
        status["strategy"].as_str().unwrap_or("?"),
        status["routing_table_version"],
        status["failover_paused"],
        status["breaker_open"],
    );
    let header = [
        "MASTER",
        "ROLE",
        "REGION",
        "STATE",
        "ADMIN",
        "SHARE",
        "IN-FLIGHT",
        "QUEUED",
        "SENT",
        "FAILED",
        "LAST ERROR",
    ];
    let mut rows: Vec<Vec<String>> = vec![header.iter().map(|s| s.to_string()).collect()];
    for m in status["masters"].as_array().into_iter().flatten() {
        let s = |k: &str| m[k].as_str().unwrap_or("").to_string();
        let n = |k: &str| m[k].as_u64().unwrap_or(0).to_string();
        let role = if m["promoted"].as_bool() == Some(true) {
            format!("{} (promoted)", s("role"))
        } else {
            s("role")
        };
        rows.push(vec![
            s("id"),
            role,
            s("region"),
            s("state"),
            s("admin"),
            format!("{:.1}%", m["share"].as_f64().unwrap_or(0.0) * 100.0),
            n("in_flight"),
            n("queued"),
            n("sent_total"),
            n("failed_total"),
            m["last_error"]
                .as_str()
                .unwrap_or("-")
                .chars()
                .take(60)
                .collect(),
        ]);
    }
    let widths: Vec<usize> = (0..header.len())
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}
