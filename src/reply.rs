//! JSON answers and the error body of SPEC section 4:
//! `{"error": {"code": "snake_case_code", "message": "human sentence"}}`.

use crate::queue::store::StoreError;
use crate::server::Body;
use bytes::Bytes;
use futures_util::FutureExt;
use http::{header, HeaderValue, Response, StatusCode};
use serde::Serialize;
use std::future::Future;
use std::panic::AssertUnwindSafe;

pub fn json(status: StatusCode, value: &impl Serialize) -> Response<Body> {
    let bytes = serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec());
    let mut resp = Response::new(Body::new(Bytes::from(bytes)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

pub fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response<Body> {
    json(
        status,
        &serde_json::json!({"error": {"code": code, "message": message.into()}}),
    )
}

/// 507: the queue's store could not be read or written (what was asked is not done).
/// The client gets the short reason; the log gets the detail.
/// 400 `invalid_config` with every error and its key path; `outcome` says what became
/// of the config ("was rejected", "was not pushed").
pub fn invalid_config(outcome: &str, errors: &crate::config::ConfigErrors) -> Response<Body> {
    let list: Vec<_> = errors
        .0
        .iter()
        .map(|e| serde_json::json!({"path": e.path, "message": e.message}))
        .collect();
    json(
        StatusCode::BAD_REQUEST,
        &serde_json::json!({"error": {
            "code": "invalid_config",
            "message": format!("the config {outcome}; the running config is kept: {errors}"),
            "errors": list,
        }}),
    )
}

pub fn queue_storage(e: &StoreError) -> Response<Body> {
    tracing::error!(error = %e.detail(), "the queue's store failed a request");
    error(
        StatusCode::INSUFFICIENT_STORAGE,
        "queue_storage_failed",
        format!("the queue's store cannot answer now: {e}"),
    )
}

pub fn not_found() -> Response<Body> {
    error(StatusCode::NOT_FOUND, "not_found", "no such route")
}

pub fn method_not_allowed(allow: &'static str) -> Response<Body> {
    let mut resp = error(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("this route accepts {allow}"),
    );
    resp.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    resp
}

pub fn text(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Body> {
    let mut resp = Response::new(Body::new(body.into()));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

/// Runs a request's handler; a panic inside it answers 500 instead of dropping the
/// connection without a word. The panic hook has logged and counted it; the request's
/// state is dropped with its task, so nothing shared is left half-changed by a guard.
pub async fn unless_panic<R: From<Response<Body>>>(handler: impl Future<Output = R>) -> R {
    match AssertUnwindSafe(handler).catch_unwind().await {
        Ok(resp) => resp,
        Err(_) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "the request could not be handled; the failure is logged",
        )
        .into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panicking_handler_answers_500() {
        let resp: Response<Body> = unless_panic(async { panic!("handler bug") }).await;
        assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let ok = unless_panic(async { not_found() }).await;
        assert_eq!(ok.status(), StatusCode::NOT_FOUND);
    }
}
