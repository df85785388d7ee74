//! `switchyard config push FILE`: `POST /admin/config` with the file's text, the
//! shared part of a cluster's config (SPEC section 11). `If-Match` is `--if-match N`,
//! else the `config_version` the node reports in `GET /health` just before: the push
//! then fails with a conflict only if another push lands in between.

use super::{cell, AdminClient};
use crate::admin::MAX_CONFIG_BYTES;
use crate::server::Body;
use bytes::Bytes;
use http::{header, Method, StatusCode};
use std::path::Path;

pub async fn push(admin: &AdminClient, file: &Path, if_match: Option<u64>) -> anyhow::Result<()> {
    let shown = file.display();
    let size = std::fs::metadata(file)
        .map_err(|e| anyhow::anyhow!("cannot read {shown}: {e}"))?
        .len();
    if size > MAX_CONFIG_BYTES as u64 {
        anyhow::bail!("{shown} is {size} bytes; a pushed config is at most {MAX_CONFIG_BYTES}");
    }
    let text = std::fs::read(file).map_err(|e| anyhow::anyhow!("cannot read {shown}: {e}"))?;
    let version = match if_match {
        Some(n) => n,
        None => {
            // 503 too: /health answers it while no master is eligible.
            let (status, health) = admin
                .send(Method::GET, "/health", Body::default(), &[])
                .await?;
            match health["config_version"].as_u64() {
                Some(n)
                    if status == StatusCode::OK || status == StatusCode::SERVICE_UNAVAILABLE =>
                {
                    n
                }
                _ => return Err(admin.api_error(status, &health).into()),
            }
        }
    };
    let headers = [
        (header::IF_MATCH, version.to_string()),
        (header::CONTENT_TYPE, "application/toml".to_string()),
    ];
    let body = Body::new(Bytes::from(text));
    let (status, answer) = admin
        .send(Method::POST, "/admin/config", body, &headers)
        .await?;
    if status.is_success() {
        println!(
            "{shown}: pushed; the cluster's config version is now {}",
            answer["config_version"]
        );
        return Ok(());
    }
    if let Some(errors) = answer["error"]["errors"].as_array() {
        eprintln!("{shown}: {} error(s)", errors.len());
        for e in errors {
            let path = e["path"].as_str().unwrap_or("");
            let message = cell(e["message"].as_str().unwrap_or(""), 300);
            if path.is_empty() {
                eprintln!("  {message}");
            } else {
                eprintln!("  {}: {message}", cell(path, 100));
            }
        }
        anyhow::bail!("the config was not pushed; the cluster keeps version {version}");
    }
    Err(admin.api_error(status, &answer).into())
}
