//! `POST /admin/config` (SPEC section 11): a TOML body with the shared part of the
//! config, and `If-Match: N` with the `config_version` it was based on. Stored for the
//! whole cluster by `crate::cluster::config_sync::push`.
//!
//! Answers: 200 `{"config_version": N}` once stored and applied on this node; 400
//! `invalid_config` with every error (`errors: [{path, message}]`), node-local keys
//! included; 409 `version_conflict` when the cluster is at another version (its
//! `config_version` in the body); 428 `precondition_required` without `If-Match`; 413
//! `config_too_large` past [`MAX_CONFIG_BYTES`]; 503 `cluster_isolated` when etcd
//! cannot be reached; 404 `cluster_disabled` on a node that runs alone.

use super::{cluster_disabled, refuse, Admin};
use crate::cluster::config_sync::{self, PushError};
use crate::config::ConfigErrors;
use crate::proxy::body::{self, BodyError};
use crate::reply;
use crate::server::Body;
use http::{header, Request, Response, StatusCode};
use hyper::body::Incoming;

/// The largest config body accepted.
pub const MAX_CONFIG_BYTES: usize = 1024 * 1024;

impl Admin {
    pub(super) async fn push_config(&self, req: Request<Incoming>) -> Response<Body> {
        if let Some(refused) = refuse(req.method(), "POST") {
            return refused;
        }
        let Some(cluster) = &self.cluster else {
            return cluster_disabled();
        };
        let if_match = match if_match(req.headers()) {
            Ok(n) => n,
            Err(resp) => return *resp,
        };
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse().ok());
        let read_timeout = self.control.table().config.server.read_timeout;
        let deadline = body::deadline(req.extensions(), read_timeout);
        let bytes = match body::read(req.into_body(), declared, MAX_CONFIG_BYTES, || deadline).await
        {
            Ok(b) => b,
            Err(BodyError::TooLarge) => {
                return reply::error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "config_too_large",
                    format!("a pushed config is at most {MAX_CONFIG_BYTES} bytes"),
                )
            }
            Err(e) => return e.into_response(),
        };
        let Ok(text) = String::from_utf8(bytes.to_vec()) else {
            return reply::invalid_config(
                "was not pushed",
                &ConfigErrors(vec![crate::config::ConfigError::new(
                    "",
                    "the body is not UTF-8",
                )]),
            );
        };
        match config_sync::push(cluster, &self.control, if_match, text).await {
            Ok(version) => reply::json(
                StatusCode::OK,
                &serde_json::json!({"config_version": version}),
            ),
            Err(PushError::Invalid(errors)) => reply::invalid_config("was not pushed", &errors),
            Err(e @ PushError::Conflict { current, .. }) => reply::json(
                StatusCode::CONFLICT,
                &serde_json::json!({"error": {
                    "code": "version_conflict",
                    "message": e.to_string(),
                    "config_version": current,
                }}),
            ),
            Err(e @ PushError::Isolated(_)) => reply::error(
                StatusCode::SERVICE_UNAVAILABLE,
                "cluster_isolated",
                format!(
                    "{e}: the config was not pushed (or, if etcd broke during the write, \
                     may have been: /health on any node shows the version in force)"
                ),
            ),
        }
    }
}

/// The version `If-Match` names: `3` or the entity-tag form `"3"`.
fn if_match(headers: &http::HeaderMap) -> Result<u64, Box<Response<Body>>> {
    let Some(value) = headers.get(header::IF_MATCH) else {
        return Err(Box::new(reply::error(
            StatusCode::PRECONDITION_REQUIRED,
            "precondition_required",
            "send If-Match: N with the config_version (GET /health) the new config is based on",
        )));
    };
    let text = value.to_str().unwrap_or("").trim();
    let text = text
        .strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .unwrap_or(text);
    text.parse().map_err(|_| {
        Box::new(reply::error(
            StatusCode::BAD_REQUEST,
            "bad_if_match",
            "If-Match must be a config_version: a whole number such as 3",
        ))
    })
}
