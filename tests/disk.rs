//! The queue on a disk that fills up or is read-only: real small filesystems (tmpfs),
//! so the errors are the kernel's own (ENOSPC, EROFS).
//!
//! Mounting needs root (or CAP_SYS_ADMIN): where it is not allowed these tests fail,
//! saying so. `.ci/run` runs as root; elsewhere run them with
//! `sudo -E cargo test --test disk`.

mod common;
use common::*;
use std::collections::HashSet;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// A tmpfs of a given size on its own temporary directory, unmounted on drop.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    /// Panics, with the reason, where a tmpfs cannot be mounted.
    fn mount(options: &str) -> SmallDisk {
        let dir = tempfile::tempdir().expect("tempdir");
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", options, "tmpfs"])
            .arg(dir.path())
            .output();
        match mounted {
            Ok(o) if o.status.success() => SmallDisk { dir },
            Ok(o) => panic!(
                "cannot mount a tmpfs (these tests need root: sudo -E cargo test --test disk): {}",
                String::from_utf8_lossy(&o.stderr).trim()
            ),
            Err(e) => panic!("cannot run mount (these tests need root and mount(8)): {e}"),
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Changes the mount options (size) in place, files kept.
    fn remount(&self, options: &str) {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,{options}")])
            .arg(self.path())
            .status()
            .expect("mount");
        assert!(status.success(), "remount {options}");
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _best_effort = Command::new("umount").arg("-l").arg(self.path()).status();
    }
}

fn queue_on(disk: &SmallDisk, masters: &str) -> String {
    format!(
        "[queue]\npath = \"{}\"\nbackoff_initial_ms = 50\n{masters}",
        disk.path().join("queue").display()
    )
}

/// Sends an async message every 100 ms until one is accepted again (507s meanwhile,
/// with clean bodies); its id. The disk must have room again.
async fn accepted_again(http: &Http, sy: &Switchyard) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let (code, h, body) = http
            .post_with(&sy.messages(), "after", &[("prefer", "respond-async")])
            .await;
        if code == 202 {
            return header(&h, "x-switchyard-message-id").to_string();
        }
        assert_eq!(code, 507);
        assert_clean_507(&body);
        if std::time::Instant::now() > deadline {
            panic!(
                "still 507 after the disk grew: {}",
                sy.proc.drain_lines().join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_full_disk_gives_507_loses_nothing_accepted_and_recovers_when_space_returns() {
    let disk = SmallDisk::mount("size=3m");
    let a = Mock::start("a", &["--record-keys"]);
    let sy = Switchyard::start(&queue_on(&disk, &masters_toml(&[(&a, "")])));
    let http = Http::new();
    // No master takes messages: everything stays on the disk until it is full.
    let (code, _, _) = http
        .post(&format!("{}/ha/masters/a/disable", sy.admin), "")
        .await;
    assert_eq!(code, 200);
    let big = "x".repeat(60_000);
    let mut accepted = HashSet::new();
    let mut refused = 0;
    for _ in 0..120 {
        let (code, h, body) = http
            .post_with(&sy.messages(), &big, &[("prefer", "respond-async")])
            .await;
        match code.as_u16() {
            202 => {
                accepted.insert(header(&h, "x-switchyard-message-id").to_string());
            }
            507 => {
                assert_eq!(json(&body)["error"]["code"], "queue_write_failed");
                refused += 1;
            }
            other => panic!("unexpected {other}: {}", String::from_utf8_lossy(&body)),
        }
    }
    assert!(
        !accepted.is_empty() && refused > 0,
        "{} accepted, {refused} refused: the disk should fill",
        accepted.len()
    );

    sy.proc.wait_line(
        "alert: the queue cannot write to disk",
        Duration::from_secs(10),
    );

    // Space comes back: the queue takes messages again, without a restart.
    disk.remount("size=64m");
    accepted.insert(accepted_again(&http, &sy).await);

    // Every accepted message is delivered, and only those: a refused one left nothing.
    let (code, _, _) = http
        .post(&format!("{}/ha/masters/a/enable", sy.admin), "")
        .await;
    assert_eq!(code, 200);
    eventually(Duration::from_secs(30), "all delivered", || async {
        keys_received(&http, &a).await.len() >= accepted.len()
    })
    .await;
    let delivered: HashSet<String> = keys_received(&http, &a).await.into_keys().collect();
    assert_eq!(delivered, accepted);
}

#[tokio::test]
async fn a_read_only_data_dir_stops_the_start_with_the_key_and_reason() {
    let disk = SmallDisk::mount("size=1m,ro");
    let config_dir = tempfile::tempdir().unwrap();
    let config = config_dir.path().join("switchyard.toml");
    let masters = "[[masters]]\nid = \"a\"\nsend_url = \"http://127.0.0.1:9/send\"\n";
    std::fs::write(&config, format!("{SERVER}{}", queue_on(&disk, masters))).unwrap();
    let mut proc = Proc::spawn(&["run", "--config", config.to_str().unwrap()]);
    assert_eq!(proc.wait_exit(Duration::from_secs(20)), Some(1));
    let out = proc.drain_lines().join("\n");
    assert!(
        out.contains("queue.path") && out.contains("Read-only file system"),
        "{out}"
    );
}

/// A 507 body: the code, and a reason without the storage library's text.
fn assert_clean_507(body: &[u8]) {
    let text = String::from_utf8_lossy(body);
    assert_eq!(json(body)["error"]["code"], "queue_write_failed", "{text}");
    for internal in ["Fjall", "Os {", "code:", "os error"] {
        assert!(
            !text.contains(internal),
            "{internal:?} in a 507 body: {text}"
        );
    }
}

#[tokio::test]
async fn a_disk_that_fills_mid_run_delivers_every_accepted_message_exactly_once() {
    let disk = SmallDisk::mount("size=3m");
    // Deliveries take a while, so that many are under way when the disk fills and
    // their outcomes cannot be written.
    let a = Mock::start("a", &["--record-keys", "--latency-ms", "30"]);
    let sy = Switchyard::start(&queue_on(&disk, &masters_toml(&[(&a, "")])));
    let http = Http::new();
    let health = format!("{}/health", sy.admin);
    assert_eq!(json(&http.get(&health).await.2)["queue"], "ok");
    let big = "x".repeat(40_000);
    let mut accepted = HashSet::new();
    let mut refused = 0;
    let mut saw_failed = false;
    // Eight clients at once until the disk has refused a good many messages.
    for _round in 0..100 {
        let sends = (0..8).map(|_| {
            let (http, url, big) = (http.clone(), sy.messages(), big.clone());
            tokio::spawn(async move {
                http.post_with(&url, &big, &[("prefer", "respond-async")])
                    .await
            })
        });
        for send in sends.collect::<Vec<_>>() {
            let (code, h, body) = send.await.unwrap();
            match code.as_u16() {
                202 => {
                    accepted.insert(header(&h, "x-switchyard-message-id").to_string());
                }
                507 => {
                    assert_clean_507(&body);
                    refused += 1;
                }
                other => panic!("unexpected {other}: {}", String::from_utf8_lossy(&body)),
            }
        }
        let (code, _, body) = http.get(&health).await;
        if json(&body)["queue"] == "failed" {
            assert_eq!(code, 503);
            assert_eq!(json(&body)["status"], "unhealthy");
            saw_failed = true;
        }
        if refused >= 40 {
            break;
        }
    }
    assert!(
        accepted.len() > 10 && refused >= 40,
        "{} accepted, {refused} refused: the disk should fill",
        accepted.len()
    );

    // Space comes back: the queue takes messages again, without a restart.
    disk.remount("size=64m");
    accepted.insert(accepted_again(&http, &sy).await);

    // Every accepted message reaches the master once: none is lost, none goes twice.
    let queue = format!("{}/admin/queue", sy.admin);
    eventually(Duration::from_secs(60), "the queue drains", || async {
        let q = json(&http.get(&queue).await.2);
        q["depth"] == 0 && q["pending_outcomes"] == 0
    })
    .await;
    let received = keys_received(&http, &a).await;
    let twice: Vec<_> = received.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        twice.is_empty(),
        "{} of {} delivered more than once: {twice:?}",
        twice.len(),
        accepted.len()
    );
    let delivered: HashSet<String> = received.into_keys().collect();
    assert_eq!(delivered, accepted);
    assert_eq!(a.received(&http).await, accepted.len() as u64);
    assert!(
        saw_failed,
        "/health never said the queue failed while the disk was full"
    );
    eventually(Duration::from_secs(10), "/health says ok again", || async {
        let (code, _, body) = http.get(&health).await;
        code == 200 && json(&body)["queue"] == "ok"
    })
    .await;
}
