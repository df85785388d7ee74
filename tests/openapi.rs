//! The API reference served at `/openapi.json` against the running server: every
//! documented operation is called on the listener its tag names, every answer's status
//! is one the document lists for it, and every JSON body matches the documented schema,
//! strictly (a field the server sends that the document does not list fails).

mod common;

use bytes::Bytes;
use common::*;
use http::{Method, Request, StatusCode};
use http_body_util::Full;
use serde_json::Value;
use std::collections::BTreeSet;
use std::time::Duration;

/// Follows `$ref`s into `#/components/schemas`.
fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    match schema.get("$ref").and_then(Value::as_str) {
        Some(r) => {
            let name = r.strip_prefix("#/components/schemas/").expect("local ref");
            resolve(doc, &doc["components"]["schemas"][name])
        }
        None => schema,
    }
}

/// An `allOf` of object schemas as one object schema (so strictness sees every field).
fn flatten(doc: &Value, schema: &Value) -> Value {
    let schema = resolve(doc, schema);
    let Some(parts) = schema.get("allOf").and_then(Value::as_array) else {
        return schema.clone();
    };
    let mut merged = serde_json::json!({"type": "object", "properties": {}, "required": []});
    for part in parts {
        let part = flatten(doc, part);
        for (k, v) in part["properties"].as_object().unwrap() {
            merged["properties"][k] = v.clone();
        }
        for r in part["required"].as_array().into_iter().flatten() {
            merged["required"].as_array_mut().unwrap().push(r.clone());
        }
    }
    merged
}

fn type_matches(t: &str, v: &Value) -> bool {
    match t {
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "integer" => v.is_u64() || v.is_i64(),
        "number" => v.is_number(),
        "boolean" => v.is_boolean(),
        "null" => v.is_null(),
        other => panic!("unknown type {other} in the document"),
    }
}

/// Checks `value` against the subset of JSON Schema the document uses.
fn check(doc: &Value, schema: &Value, value: &Value, at: &str) -> Result<(), String> {
    let schema = flatten(doc, schema);
    if let Some(c) = schema.get("const") {
        if c != value {
            return Err(format!("{at}: {value} is not {c}"));
        }
    }
    if let Some(options) = schema.get("enum").and_then(Value::as_array) {
        if !options.contains(value) {
            return Err(format!("{at}: {value} is not one of {options:?}"));
        }
    }
    if let Some(t) = schema.get("type") {
        let ok = match t {
            Value::String(t) => type_matches(t, value),
            Value::Array(ts) => ts.iter().any(|t| type_matches(t.as_str().unwrap(), value)),
            _ => panic!("bad type in the document"),
        };
        if !ok {
            return Err(format!("{at}: {value} is not of type {t}"));
        }
    }
    if let (Some(min), Some(n)) = (
        schema.get("minimum").and_then(Value::as_f64),
        value.as_f64(),
    ) {
        if n < min {
            return Err(format!("{at}: {n} is below {min}"));
        }
    }
    if let Some(items) = schema.get("items") {
        for (i, item) in value.as_array().into_iter().flatten().enumerate() {
            check(doc, items, item, &format!("{at}[{i}]"))?;
        }
    }
    let Some(object) = value.as_object() else {
        return Ok(());
    };
    let properties = schema.get("properties").and_then(Value::as_object);
    for required in schema
        .get("required")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let name = required.as_str().unwrap();
        if !object.contains_key(name) {
            return Err(format!("{at}: required field `{name}` is missing"));
        }
    }
    for (name, v) in object {
        let field = format!("{at}.{name}");
        match (
            properties.and_then(|p| p.get(name)),
            schema.get("additionalProperties"),
        ) {
            (Some(s), _) => check(doc, s, v, &field)?,
            (None, Some(extra)) if extra.is_object() => check(doc, extra, v, &field)?,
            (None, _) if properties.is_some() => {
                return Err(format!("{field} is sent but not documented"))
            }
            (None, _) => {}
        }
    }
    Ok(())
}

/// The key of the one client the test configures.
const CLIENT_KEY: &str = "k-billing-0123456789";

struct Checker {
    doc: Value,
    http: Http,
    client: String,
    admin: String,
    called: BTreeSet<(String, String)>,
    /// The headers of the last answer.
    headers: http::HeaderMap,
}

impl Checker {
    /// Calls `method template` (with `path` filled in) on the listener the document
    /// names, and checks the answer against the document. Returns status and body.
    async fn call(
        &mut self,
        method: &str,
        template: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> (StatusCode, Value) {
        let item = &self.doc["paths"][template];
        assert!(item.is_object(), "{template} is not documented");
        // A method the path does not take: its documented operation's 405 applies.
        let undocumented = item.get(method.to_lowercase()).is_none();
        let op = match item.get(method.to_lowercase()) {
            Some(op) => op,
            None => ["get", "post", "delete"]
                .iter()
                .find_map(|m| item.get(*m))
                .unwrap(),
        };
        let base = match op["tags"][0].as_str() {
            Some("client") => &self.client,
            Some("admin") => &self.admin,
            other => panic!("{method} {template}: tag {other:?}"),
        };
        let mut req = Request::builder()
            .method(Method::from_bytes(method.as_bytes()).unwrap())
            .uri(format!("{base}{path}"));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        // The configured client's key, unless the call brings its own.
        let keyed = headers.iter().any(|(k, _)| {
            k.eq_ignore_ascii_case("authorization") || k.eq_ignore_ascii_case("x-api-key")
        });
        if base == &self.client && !keyed {
            req = req.header("authorization", format!("Bearer {CLIENT_KEY}"));
        }
        let req = req.body(Full::new(Bytes::from(body.to_string()))).unwrap();
        let (status, h, bytes) = self.http.send(req).await;
        if undocumented {
            assert_eq!(status, 405, "{method} {path}");
        }
        let responses = &op["responses"];
        let code = status.as_str().to_string();
        let range = format!("{}XX", &code[..1]);
        let documented = [code.as_str(), range.as_str(), "default"]
            .into_iter()
            .find(|k| responses.get(k).is_some())
            .unwrap_or_else(|| {
                panic!(
                    "{method} {path} answered {status}, which the document does not list: {}",
                    String::from_utf8_lossy(&bytes)
                )
            });
        let mut value = Value::Null;
        let content = &responses[documented]["content"];
        if let Some(schema) = content.get("application/json").map(|c| &c["schema"]) {
            assert!(
                header(&h, "content-type").starts_with("application/json"),
                "{method} {path} {status}: content-type {:?}",
                h.get("content-type")
            );
            value = serde_json::from_slice(&bytes).expect("a JSON body");
            if let Err(e) = check(&self.doc, schema, &value, "body") {
                panic!("{method} {path} {status}: {e}\n{value:#}");
            }
        }
        if !undocumented {
            self.called
                .insert((method.to_string(), template.to_string()));
        }
        self.headers = h;
        (status, value)
    }

    /// [`Checker::call`] without headers or body, expecting `status`.
    async fn expect(&mut self, method: &str, template: &str, path: &str, status: u16) -> Value {
        let (got, value) = self.call(method, template, path, &[], "").await;
        assert_eq!(got.as_u16(), status, "{method} {path}: {value}");
        value
    }
}

#[tokio::test]
async fn the_document_matches_the_server() {
    let a = Mock::start("a", &[]);
    let standby = Mock::start("s", &[]);
    let refusing = Mock::start("bad", &["--fail-rate", "1"]);
    // Banned from its first send: suspended once a message of region BB reaches it.
    let banned = Mock::start("banned", &["--ban-after", "0"]);
    let sy = Switchyard::start(&format!(
        "[[clients]]\nid = \"billing\"\nkey = \"{CLIENT_KEY}\"\n\
         [routing]\nstrategy = \"region\"\n[health]\nban_statuses = [403]\n\
         [queue]\nmax_attempts = 1\nbackoff_initial_ms = 1\nbackoff_max_ms = 2\n{}",
        masters_toml(&[
            (&a, "region = \"EU\""),
            (&standby, "region = \"EU\"\nrole = \"standby\""),
            (&refusing, "region = \"ZZ\""),
            (&banned, "region = \"BB\""),
        ])
    ));
    let http = Http::new();
    let (_, _, body) = http.get(&format!("{}/openapi.json", sy.admin)).await;
    let doc: Value = serde_json::from_slice(&body).expect("/openapi.json is JSON");
    assert_eq!(doc["openapi"], "3.1.0");
    let mut c = Checker {
        doc,
        http,
        client: sy.url.clone(),
        admin: sy.admin.clone(),
        called: BTreeSet::new(),
        headers: http::HeaderMap::new(),
    };

    // The client listener.
    let eu = [("x-region", "EU"), ("idempotency-key", "k-1")];
    let (st, _) = c
        .call("POST", "/v1/messages", "/v1/messages", &eu, "{}")
        .await;
    assert_eq!(st, 200);
    let wrong = [("x-api-key", "not-a-key")];
    let (st, _) = c
        .call("POST", "/v1/messages", "/v1/messages", &wrong, "{}")
        .await;
    assert_eq!(st, 401);
    let (st, _) = c
        .call(
            "POST",
            "/v1/messages",
            "/v1/messages",
            &[("x-region", "EU")],
            "{}",
        )
        .await;
    assert_eq!(st, 200);
    // A message answered at once has a status too.
    let sync_id = header(&c.headers, "x-switchyard-message-id").to_string();
    assert!(!sync_id.is_empty());
    let status = c
        .expect(
            "GET",
            "/v1/messages/{id}",
            &format!("/v1/messages/{sync_id}"),
            200,
        )
        .await;
    assert_eq!(status["http_status"], 200);
    let async_eu = [("x-region", "EU"), ("prefer", "respond-async")];
    let (st, queued) = c
        .call("POST", "/v1/messages", "/v1/messages", &async_eu, "{}")
        .await;
    assert_eq!(st, 202);
    let id = queued["id"].as_str().unwrap().to_string();
    c.expect(
        "GET",
        "/v1/messages/{id}",
        &format!("/v1/messages/{id}"),
        200,
    )
    .await;
    let unknown = "/v1/messages/0190e9b2-0000-7000-8000-000000000000";
    c.expect("GET", "/v1/messages/{id}", unknown, 404).await;
    let (st, _) = c
        .call(
            "POST",
            "/v1/messages",
            "/v1/messages",
            &[("idempotency-key", "")],
            "{}",
        )
        .await;
    assert_eq!(st, 400);
    c.expect("GET", "/v1/messages", "/v1/messages", 405).await;

    // Two dead letters: the only master of region ZZ refuses everything, and one
    // attempt is all a message gets.
    let mut dead = Vec::new();
    for _ in 0..2 {
        let zz = [("x-region", "ZZ"), ("prefer", "respond-async")];
        let (_, v) = c
            .call("POST", "/v1/messages", "/v1/messages", &zz, "{}")
            .await;
        dead.push(v["id"].as_str().unwrap().to_string());
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    for id in &dead {
        loop {
            let path = format!("/v1/messages/{id}");
            let (_, v) = c.call("GET", "/v1/messages/{id}", &path, &[], "").await;
            if v["status"] == "dead" {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{id} never became dead: {v}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    // The admin listener.
    for path in [
        "/health",
        "/livez",
        "/metrics",
        "/openapi.json",
        "/ha/status",
        "/ha/failover",
    ] {
        let (st, _) = c.call("GET", path, path, &[], "").await;
        assert!(
            st == 200 || (path == "/health" && st == 503),
            "{path}: {st}"
        );
    }
    c.expect("POST", "/health", "/health", 405).await;
    for path in ["/ha/pause", "/ha/resume"] {
        let (st, _) = c.call("POST", path, path, &[], "").await;
        assert_eq!(st, 200);
    }
    for action in ["disable", "drain", "enable"] {
        let template = format!("/ha/masters/{{id}}/{action}");
        c.expect("POST", &template, &format!("/ha/masters/bad/{action}"), 200)
            .await;
        c.expect(
            "POST",
            &template,
            &format!("/ha/masters/nobody/{action}"),
            404,
        )
        .await;
    }
    c.expect(
        "POST",
        "/ha/masters/{id}/failover",
        "/ha/masters/a/failover",
        200,
    )
    .await;
    c.expect(
        "POST",
        "/ha/masters/{id}/failover",
        "/ha/masters/a/failover",
        409,
    )
    .await;
    c.expect(
        "POST",
        "/ha/masters/{id}/failback",
        "/ha/masters/a/failback",
        200,
    )
    .await;
    c.expect(
        "POST",
        "/ha/masters/{id}/failback",
        "/ha/masters/a/failback",
        409,
    )
    .await;
    c.expect("POST", "/admin/reload", "/admin/reload", 200)
        .await;
    // Cluster mode only (tests/cluster_config.rs calls it on a cluster).
    let (st, v) = c
        .call(
            "POST",
            "/admin/config",
            "/admin/config",
            &[("if-match", "1")],
            "[routing]\n",
        )
        .await;
    assert_eq!(st, 404);
    assert_eq!(v["error"]["code"], "cluster_disabled");
    c.expect("GET", "/admin/queue", "/admin/queue", 200).await;
    let letters = c
        .expect("GET", "/admin/dead-letters", "/admin/dead-letters", 200)
        .await;
    assert_eq!(letters["dead_letters"].as_array().unwrap().len(), 2);
    let retry = "/admin/dead-letters/{id}/retry";
    c.expect(
        "POST",
        retry,
        &format!("/admin/dead-letters/{}/retry", dead[0]),
        200,
    )
    .await;
    let delete = "/admin/dead-letters/{id}";
    c.expect(
        "DELETE",
        delete,
        &format!("/admin/dead-letters/{}", dead[1]),
        200,
    )
    .await;
    c.expect(
        "DELETE",
        delete,
        &format!("/admin/dead-letters/{}", dead[1]),
        404,
    )
    .await;
    // A suspended master (after the failover above: its standby takes the place).
    let bb = [("x-region", "BB"), ("prefer", "respond-async")];
    c.call("POST", "/v1/messages", "/v1/messages", &bb, "{}")
        .await;
    eventually(Duration::from_secs(20), "banned suspended", || async {
        status_of(&c.http, &sy, "banned").await["state"] == "suspended"
    })
    .await;

    let status = c.expect("GET", "/ha/status", "/ha/status", 200).await;
    assert!(
        status["masters"][3]["suspended_reason"].is_string(),
        "{status}"
    );
    let reinstate = "/ha/masters/{id}/reinstate";
    for (path, expected) in [
        ("/ha/masters/banned/reinstate", 200),
        ("/ha/masters/banned/reinstate", 409),
        ("/ha/masters/nobody/reinstate", 404),
    ] {
        c.expect("POST", reinstate, path, expected).await;
    }
    // A broken file: the reload is refused with every error and its key path.
    sy.rewrite_config(
        &sy.config_text()
            .replace("\"region\"\n[health]", "\"fastest\"\n[health]"),
    );
    let rejected = c
        .expect("POST", "/admin/reload", "/admin/reload", 400)
        .await;
    assert_eq!(rejected["error"]["errors"][0]["path"], "routing.strategy");

    let events = c
        .expect("GET", "/ha/events", "/ha/events?limit=50", 200)
        .await;
    assert!(!events["events"].as_array().unwrap().is_empty());
    c.expect("GET", "/ha/events", "/ha/events?limit=0", 400)
        .await;

    // Cluster mode is off here: both cluster routes say so.
    c.expect("GET", "/cluster/status", "/cluster/status", 404)
        .await;
    c.expect(
        "POST",
        "/cluster/leader/resign",
        "/cluster/leader/resign",
        404,
    )
    .await;

    // Cluster mode is off: there is no cluster to take a leaving node's queue from.
    let off = c
        .expect("POST", "/cluster/handoff", "/cluster/handoff", 404)
        .await;
    assert_eq!(off["error"]["code"], "cluster_disabled");
    c.expect("GET", "/cluster/handoff", "/cluster/handoff", 405)
        .await;

    // Every documented operation was called.
    let mut documented = BTreeSet::new();
    for (path, item) in c.doc["paths"].as_object().unwrap() {
        for method in ["get", "post", "delete", "put", "patch"] {
            if item.get(method).is_some() {
                documented.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    let missed: Vec<_> = documented.difference(&c.called).collect();
    assert!(missed.is_empty(), "documented but never called: {missed:?}");
}
