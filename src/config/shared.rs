//! The shared part of a config (SPEC section 11): what `POST /admin/config` stores for
//! every node of a cluster, and how one node puts it together with its own file.
//!
//! A pushed config holds `[routing]`, `[health]`, `[failover]`, `[alerts]`, `[queue]`
//! without `path`, `[[masters]]` and `[[clients]]`: the whole shared part, so a section
//! it leaves out takes its defaults, not the local file's. The node-local keys —
//! `[server]`, `[cluster]`, `[log]` and `queue.path` — always come from the node's own
//! file; a push that holds one is refused, naming it. While a pushed config is in force
//! the shared sections of the local file are ignored ([`ignored`] names those that
//! differ). `${NAME}` in a pushed config is read from each node's own environment, so a
//! secret can differ per node.
//!
//! The merged tree is compiled like any file, so every error carries its key path
//! (`masters[1].weight`); syntax errors say which of the two texts they are in.

use super::compile::{from_value, syntax};
use super::{Config, ConfigError, ConfigErrors};
use toml::value::Table;
use toml::Value;

/// The top-level keys a pushed config may hold.
pub const SHARED: [&str; 7] = [
    "routing", "health", "failover", "alerts", "queue", "masters", "clients",
];

/// The top-level keys that belong to each node's own file.
const NODE_LOCAL: [&str; 3] = ["server", "cluster", "log"];

const LOCAL_HINT: &str = "node-local: set in each node's own file, not in a pushed config \
     (which holds only [routing], [health], [failover], [alerts], [queue] without path, \
     [[masters]] and [[clients]])";

impl Config {
    /// The config a cluster node runs: the node-local part of `local` (its own file)
    /// with the shared part `pushed`. Every error of both, together: syntax (named by
    /// text), node-local keys in the push, then everything the compiler finds in the
    /// merged whole. Reads `${NAME}` from the process environment.
    pub fn from_parts(local: &str, pushed: &str) -> Result<Config, ConfigErrors> {
        from_parts(local, pushed, &|name| std::env::var(name).ok())
    }
}

fn from_parts(
    local: &str,
    pushed: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigErrors> {
    let local = syntax(local, "the local file: ");
    let pushed = syntax(pushed, "the pushed config: ");
    let (local, pushed) = match (local, pushed) {
        (Ok(l), Ok(p)) => (l, p),
        (l, p) => {
            let errors = [l.err(), p.err()].into_iter().flatten();
            return Err(ConfigErrors(errors.flat_map(|e| e.0).collect()));
        }
    };
    let mut errors = node_local_keys(&pushed);
    match from_value(merge(local, pushed), lookup) {
        Ok(config) if errors.is_empty() => Ok(config),
        Ok(_) => Err(ConfigErrors(errors)),
        Err(ConfigErrors(more)) => {
            errors.extend(more);
            Err(ConfigErrors(errors))
        }
    }
}

/// One error per node-local key in a pushed config, at its key path.
pub fn node_local_keys(pushed: &Value) -> Vec<ConfigError> {
    let Some(table) = pushed.as_table() else {
        return Vec::new();
    };
    let mut errors: Vec<ConfigError> = NODE_LOCAL
        .iter()
        .filter(|key| table.contains_key(**key))
        .map(|key| ConfigError::new(*key, LOCAL_HINT))
        .collect();
    if table
        .get("queue")
        .and_then(Value::as_table)
        .is_some_and(|q| q.contains_key("path"))
    {
        errors.push(ConfigError::new("queue.path", LOCAL_HINT));
    }
    errors
}

/// The local tree with its shared part replaced by `pushed`'s (node-local keys of
/// `pushed` are left out; [`node_local_keys`] reports them). Keys neither part knows
/// are carried over, so that the compiler names them.
pub fn merge(local: Value, pushed: Value) -> Value {
    let mut out = match local {
        Value::Table(t) => t,
        _ => Table::new(),
    };
    let local_path = out.get("queue").and_then(|q| q.get("path")).cloned();
    for key in SHARED {
        out.remove(key);
    }
    if let Some(path) = local_path {
        out.insert(
            "queue".into(),
            Value::Table(Table::from_iter([("path".into(), path)])),
        );
    }
    let Value::Table(pushed) = pushed else {
        return Value::Table(out);
    };
    for (key, value) in pushed {
        if NODE_LOCAL.contains(&key.as_str()) {
            continue;
        }
        match (key.as_str(), value) {
            ("queue", Value::Table(mut queue)) => {
                queue.remove("path");
                if let Some(Value::Table(local)) = out.get_mut("queue") {
                    queue.extend(std::mem::take(local));
                }
                out.insert(key, Value::Table(queue));
            }
            (_, value) => {
                out.insert(key, value);
            }
        }
    }
    Value::Table(out)
}

/// The shared sections of a local file that say something else than the pushed config
/// in force (which wins): `["masters", "routing"]`.
pub fn ignored(local: &str, pushed: &str) -> Vec<&'static str> {
    let (Ok(local), Ok(pushed)) = (
        toml::from_str::<Table>(local),
        toml::from_str::<Table>(pushed),
    ) else {
        return Vec::new();
    };
    let shared = |t: &Table, key: &str| {
        let mut v = t.get(key).cloned();
        if let (Some(Value::Table(q)), "queue") = (&mut v, key) {
            q.remove("path");
            if q.is_empty() {
                v = None;
            }
        }
        v
    };
    SHARED
        .into_iter()
        .filter(|key| shared(&local, key).is_some_and(|l| Some(l) != shared(&pushed, key)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOCAL: &str = "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n\
        [queue]\npath = \"here/queue\"\nmax_attempts = 3\n\
        [routing]\nretry_attempts = 4\n\
        [[masters]]\nid = \"old\"\nsend_url = \"http://127.0.0.1:1/\"\n";

    fn parts(local: &str, pushed: &str) -> Result<Config, ConfigErrors> {
        from_parts(local, pushed, &|name| (name == "TOKEN").then(|| "t".into()))
    }

    fn paths(e: ConfigErrors) -> Vec<String> {
        e.0.into_iter().map(|e| e.path).collect()
    }

    #[test]
    fn the_push_brings_the_shared_part_and_the_file_the_rest() {
        let pushed = "[queue]\nmax_attempts = 7\n[[masters]]\nid = \"new\"\n\
                      send_url = \"http://127.0.0.1:2/\"\nheaders = { a = \"${TOKEN}\" }\n";
        let c = parts(LOCAL, pushed).unwrap();
        assert_eq!(c.server.listen.to_string(), "127.0.0.1:0");
        assert_eq!(c.queue.path, std::path::PathBuf::from("here/queue"));
        assert_eq!(c.queue.max_attempts, 7);
        let ids: Vec<&str> = c.masters.iter().map(|m| &*m.id).collect();
        assert_eq!(ids, ["new"]);
        // [routing] is not in the push: its defaults, not the file's 4.
        assert_eq!(c.routing.retry_attempts, 2);
        assert_eq!(ignored(LOCAL, pushed), ["routing", "queue", "masters"]);
    }

    #[test]
    fn node_local_keys_in_a_push_are_named_with_every_other_error() {
        let pushed = "[server]\nlisten = \"1.2.3.4:5\"\n[log]\nformat = \"json\"\n\
                      [queue]\npath = \"x\"\n[routing]\nstrategy = \"nope\"\n\
                      [[masters]]\nid = \"a b\"\nsend_url = \"http://127.0.0.1:2/\"\n";
        let e = parts(LOCAL, pushed).unwrap_err();
        let got = paths(e);
        for want in [
            "server",
            "log",
            "queue.path",
            "routing.strategy",
            "masters[0].id",
        ] {
            assert!(got.iter().any(|p| p == want), "{want} in {got:?}");
        }
        let e = parts(LOCAL, "[cluster]\nenabled = true\n").unwrap_err();
        assert_eq!(paths(e)[0], "cluster");
    }

    #[test]
    fn syntax_errors_say_which_text_they_are_in() {
        let e = parts("[server\n", "a = \n").unwrap_err();
        assert_eq!(e.0.len(), 2, "{e}");
        assert!(e.0[0].message.starts_with("the local file: line 1"), "{e}");
        assert!(
            e.0[1].message.starts_with("the pushed config: line 1"),
            "{e}"
        );
    }

    #[test]
    fn unknown_keys_of_a_push_are_errors() {
        let pushed = "nonsense = 1\n[[masters]]\nid = \"a\"\nsend_url = \"http://127.0.0.1:2/\"\n";
        assert_eq!(paths(parts(LOCAL, pushed).unwrap_err()), ["nonsense"]);
        assert!(ignored(LOCAL, LOCAL).is_empty());
    }
}
