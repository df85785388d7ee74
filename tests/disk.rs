//! The queue on a disk that fills up or is read-only: real small filesystems (tmpfs),
//! so the errors are the kernel's own (ENOSPC, EROFS).
//!
//! Mounting needs root (or CAP_SYS_ADMIN); where it is not allowed these tests say so
//! on stderr and pass without running. `.ci/run` runs as root.

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
    fn mount(options: &str) -> Option<SmallDisk> {
        let dir = tempfile::tempdir().expect("tempdir");
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", options, "tmpfs"])
            .arg(dir.path())
            .output()
            .is_ok_and(|o| o.status.success());
        if !mounted {
            eprintln!("skipped: a tmpfs cannot be mounted here (needs root)");
            return None;
        }
        Some(SmallDisk { dir })
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

#[tokio::test]
async fn a_full_disk_gives_507_loses_nothing_accepted_and_recovers_when_space_returns() {
    let Some(disk) = SmallDisk::mount("size=3m") else {
        return;
    };
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
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let (code, h, _) = http
            .post_with(&sy.messages(), "after", &[("prefer", "respond-async")])
            .await;
        if code == 202 {
            accepted.insert(header(&h, "x-switchyard-message-id").to_string());
            break;
        }
        assert_eq!(code, 507);
        if std::time::Instant::now() > deadline {
            panic!(
                "still 507 after the disk grew: {}",
                sy.proc.drain_lines().join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

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
    let Some(disk) = SmallDisk::mount("size=1m,ro") else {
        return;
    };
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
