//! `[cluster]` (SPEC section 11), checked and compiled into a [`ClusterConfig`]. The
//! section is checked whether or not it is enabled, so a mistake shows before the day
//! it is turned on.

use super::{valid_id, Errors};
use crate::config::bounds::{shown, MAX_PRIORITY};
use crate::config::raw::RawCluster;
use crate::config::ClusterConfig;
use std::time::Duration;

/// etcd counts lease TTLs in whole seconds and will not keep one much under 2 s.
const MIN_LEASE_TTL_MS: u64 = 2_000;
const MAX_LEASE_TTL_MS: u64 = 60_000;
const MAX_ENDPOINTS: usize = 16;
const MAX_PREFIX_BYTES: usize = 128;
const MAX_ADDRESS_BYTES: usize = 255;
/// A node stopped with SIGTERM waits at most this long for its hand-off: service
/// managers kill a process that takes longer to stop (systemd after 90 s by default).
const MAX_HANDOFF_TIMEOUT_MS: u64 = 600_000;

/// `None` when the section is off or has an error (the error is in `errs`).
pub(super) fn compile(raw: &RawCluster, errs: &mut Errors) -> Option<ClusterConfig> {
    let before = errs.0.len();
    if raw.etcd.is_empty() {
        errs.push("cluster.etcd", "must list at least one etcd endpoint");
    } else if raw.etcd.len() > MAX_ENDPOINTS {
        errs.push(
            "cluster.etcd",
            format!(
                "lists {} endpoints: at most {MAX_ENDPOINTS}",
                raw.etcd.len()
            ),
        );
    }
    for (i, endpoint) in raw.etcd.iter().enumerate() {
        endpoint_url(errs, &format!("cluster.etcd[{i}]"), endpoint);
    }
    prefix(errs, &raw.prefix);
    errs.within("cluster.priority", raw.priority, 0, MAX_PRIORITY.into());
    errs.within(
        "cluster.lease_ttl_ms",
        raw.lease_ttl_ms,
        MIN_LEASE_TTL_MS,
        MAX_LEASE_TTL_MS,
    );
    errs.within(
        "cluster.handoff_timeout_ms",
        raw.handoff_timeout_ms,
        0,
        MAX_HANDOFF_TIMEOUT_MS,
    );
    if !raw.advertise_admin.is_empty() {
        host_port(errs, "cluster.advertise_admin", &raw.advertise_admin);
    }
    if !raw.node_id.is_empty() && !valid_id(&raw.node_id) {
        errs.push(
            "cluster.node_id",
            format!(
                "`{}` is not a valid id: 1 to 64 letters, digits, `_`, `.` or `-`",
                shown(&raw.node_id)
            ),
        );
    }
    if !raw.enabled || errs.0.len() > before {
        return None;
    }
    let node_id = if raw.node_id.is_empty() {
        match host_name() {
            Some(name) if valid_id(&name) => name,
            Some(name) => {
                return errs.fail(
                    "cluster.node_id",
                    format!(
                        "empty, and the host name `{}` is not a valid id: set one",
                        shown(&name)
                    ),
                )
            }
            None => {
                return errs.fail(
                    "cluster.node_id",
                    "empty, and the host name cannot be read: set one",
                )
            }
        }
    } else {
        raw.node_id.clone()
    };
    let advertise_admin = (!raw.advertise_admin.is_empty()).then(|| raw.advertise_admin.clone());
    Some(ClusterConfig {
        node_id,
        etcd: raw
            .etcd
            .iter()
            .map(|e| e.trim_end_matches('/').to_string())
            .collect(),
        prefix: raw.prefix.clone(),
        priority: raw.priority as u32,
        lease_ttl: Duration::from_millis(raw.lease_ttl_ms.div_ceil(1000) * 1000),
        advertise_admin,
        handoff_timeout: Duration::from_millis(raw.handoff_timeout_ms),
    })
}

/// `http://host:port` with nothing after the port.
fn endpoint_url(errs: &mut Errors, path: &str, v: &str) {
    let Some(uri) = errs.http_url(path, v) else {
        return;
    };
    if uri.scheme_str() != Some("http") {
        errs.push(
            path,
            "only http endpoints are supported: reach etcd over a private network",
        );
    } else if uri.port_u16().is_none() {
        errs.push(
            path,
            format!("`{}` has no port, as in http://127.0.0.1:2379", shown(v)),
        );
    } else if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        errs.push(
            path,
            format!("`{}` must be scheme, host and port only", shown(v)),
        );
    }
}

/// Starts with `/`, does not end with one, printable ASCII without spaces.
fn prefix(errs: &mut Errors, v: &str) {
    let path = "cluster.prefix";
    if !v.starts_with('/') || v.len() < 2 || v.ends_with('/') {
        errs.push(
            path,
            format!(
                "`{}` must start with `/` and name something, as in /switchyard/prod",
                shown(v)
            ),
        );
    } else if v.len() > MAX_PREFIX_BYTES {
        errs.push(
            path,
            format!("is {} bytes long: at most {MAX_PREFIX_BYTES}", v.len()),
        );
    } else if !v.bytes().all(|b| b.is_ascii_graphic()) {
        errs.push(
            path,
            format!("`{}` must be printable ASCII without spaces", shown(v)),
        );
    }
}

/// `host:port`, the form peers dial.
fn host_port(errs: &mut Errors, path: &str, v: &str) {
    let valid = v.len() <= MAX_ADDRESS_BYTES
        && v.rsplit_once(':').is_some_and(|(host, port)| {
            !host.is_empty()
                && host.bytes().all(|b| b.is_ascii_graphic() && b != b'/')
                && port.parse::<u16>().is_ok_and(|p| p != 0)
        });
    if !valid {
        errs.push(
            path,
            format!(
                "`{}` is not a host:port peers can reach, as in 10.0.0.5:9090",
                shown(v)
            ),
        );
    }
}

fn host_name() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use crate::config::compile::parse;

    fn errors(text: &str) -> Vec<String> {
        match parse(text, &|_| None) {
            Ok(_) => Vec::new(),
            Err(e) => e.0.iter().map(|e| e.to_string()).collect(),
        }
    }

    const MASTER: &str = "[[masters]]\nid = \"a\"\nsend_url = \"http://127.0.0.1:1/send\"\n";

    #[test]
    fn off_by_default_and_defaults_when_on() {
        let c = parse(MASTER, &|_| None).expect("valid");
        assert!(c.cluster.is_none());
        let c = parse(
            &format!("[cluster]\nenabled = true\nnode_id = \"n1\"\n{MASTER}"),
            &|_| None,
        )
        .expect("valid");
        let cl = c.cluster.expect("on");
        assert_eq!(cl.node_id, "n1");
        assert_eq!(cl.etcd, ["http://127.0.0.1:2379"]);
        assert_eq!(cl.prefix, "/switchyard/default");
        assert_eq!(cl.priority, 100);
        assert_eq!(cl.lease_ttl.as_millis(), 3000);
        assert_eq!(cl.advertise_admin, None);
        assert_eq!(cl.handoff_timeout.as_millis(), 30_000);
    }

    #[test]
    fn every_bad_key_is_named_even_when_off() {
        let errs = errors(&format!(
            "[cluster]\nnode_id = \"a b\"\netcd = [\"https://e:1\", \"http://e\", \"ftp://e:1\", \"http://e:1/x\"]\n\
             prefix = \"/p/\"\npriority = 2000000\nlease_ttl_ms = 500\nadvertise_admin = \"nohost\"\n\
             handoff_timeout_ms = 600001\n{MASTER}"
        ));
        for key in [
            "cluster.node_id:",
            "cluster.etcd[0]: only http",
            "cluster.etcd[1]: `http://e` has no port",
            "cluster.etcd[2]: scheme `ftp`",
            "cluster.etcd[3]: ",
            "cluster.prefix:",
            "cluster.priority:",
            "cluster.lease_ttl_ms:",
            "cluster.advertise_admin:",
            "cluster.handoff_timeout_ms:",
        ] {
            assert!(
                errs.iter().any(|e| e.starts_with(key)),
                "{key} missing from {errs:?}"
            );
        }
        assert_eq!(errors(&format!("[cluster]\netcd = []\n{MASTER}")).len(), 1);
    }

    #[test]
    fn the_lease_ttl_is_rounded_up_to_whole_seconds() {
        let c = parse(
            &format!("[cluster]\nenabled = true\nnode_id = \"n\"\nlease_ttl_ms = 2500\n{MASTER}"),
            &|_| None,
        )
        .expect("valid");
        assert_eq!(c.cluster.expect("on").lease_ttl.as_millis(), 3000);
    }
}
