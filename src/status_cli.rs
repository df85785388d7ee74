//! `switchyard status`: `GET /ha/status` printed as a table.

use crate::admin_cli::{table, text_cell, AdminClient};
use serde_json::Value;

pub async fn run(admin: &AdminClient) -> anyhow::Result<()> {
    let status = admin.get("/ha/status").await?;
    print!("{}", render(&status));
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
        "HELD",
        "SHARE",
        "IN-FLIGHT",
        "QUEUED",
        "SENT",
        "FAILED",
        "BUDGET",
        "24H",
        "LAST ERROR",
    ];
    let mut rows = Vec::new();
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
            state(m),
            s("admin"),
            held(m),
            format!("{:.1}%", m["share"].as_f64().unwrap_or(0.0) * 100.0),
            n("in_flight"),
            n("queued"),
            n("sent_total"),
            n("failed_total"),
            budget(m),
            day(m),
            last_error(m),
        ]);
    }
    out.push_str(&table(&header, rows));
    out
}

/// The health state, with the slow-start progress while below full weight
/// (`recovering 40%`).
fn state(m: &Value) -> String {
    let state = m["state"].as_str().unwrap_or("?");
    match m["slow_start"].as_f64() {
        Some(f) if f < 1.0 && matches!(state, "recovering" | "healthy") => {
            format!("{state} {:.0}%", (f * 100.0).floor())
        }
        _ => state.to_string(),
    }
}

/// Its last error; for a suspended master, why it is suspended.
fn last_error(m: &Value) -> String {
    match m["suspended_reason"].as_str() {
        Some(why) => text_cell(&Value::String(format!("suspended: {why}"))),
        None => text_cell(&m["last_error"]),
    }
}

/// Its pace and what it could take now (`3/s, 2 free`); `-` without limits.
fn budget(m: &Value) -> String {
    let rate = m["rate_per_sec"].as_f64().unwrap_or(0.0);
    match (rate > 0.0, m["budget_available"].as_u64()) {
        (true, Some(free)) => format!("{rate}/s, {free} free"),
        (false, Some(free)) => format!("{free} free"),
        _ => "-".into(),
    }
}

/// Sent over the last 24 hours, against its daily limit when it has one (`120/1000`).
fn day(m: &Value) -> String {
    let sent = m["sent_24h"].as_u64().unwrap_or(0);
    match m["daily_limit"].as_u64() {
        Some(limit) if limit > 0 => format!("{sent}/{limit}"),
        _ => sent.to_string(),
    }
}

/// For a master held out by a failover until failback: the standby in its place.
fn held(m: &Value) -> String {
    match (m["held"].as_bool(), m["held_for"].as_str()) {
        (Some(true), Some(standby)) => format!("yes ({standby})"),
        (Some(true), None) => "yes".into(),
        _ => "-".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn masters_are_rows_and_long_errors_are_cut() {
        let status = json!({"strategy": "weighted", "routing_table_version": 3,
            "failover_paused": false, "breaker_open": false, "masters": [
            {"id": "a", "role": "primary", "region": "eu", "state": "healthy",
             "admin": "enabled", "share": 0.25, "in_flight": 1, "queued": 0,
             "sent_total": 10, "failed_total": 2, "last_error": null},
            {"id": "s", "role": "standby", "promoted": true, "region": "eu",
             "state": "degraded", "admin": "disabled", "share": 0.0,
             "last_error": format!("503\n{}", "x".repeat(300))},
        ]});
        let out = render(&status);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(
            lines[0],
            "strategy: weighted   routing table: v3   failover paused: false   breaker open: false"
        );
        assert!(lines[2].starts_with("MASTER  ROLE"), "{out}");
        assert!(lines[3].ends_with("10    2       -       0    -"), "{out}");
        assert!(lines[4].contains("standby (promoted)"), "{out}");
        assert!(
            lines[4].contains("503 xxx") && lines[4].ends_with('…'),
            "{out}"
        );
        assert_eq!(lines.len(), 5, "{out}");
    }

    #[test]
    fn budgets_show_the_pace_what_is_free_and_the_day() {
        let status = json!({"strategy": "round_robin", "masters": [
            {"id": "a", "rate_per_sec": 3.0, "budget_available": 2, "sent_24h": 120,
             "daily_limit": 1000},
            {"id": "b", "rate_per_sec": 0.0, "budget_available": null, "sent_24h": 7,
             "daily_limit": 0},
        ]});
        let out = render(&status);
        assert!(
            out.lines().nth(2).unwrap().contains("FAILED  BUDGET"),
            "{out}"
        );
        assert!(
            out.lines()
                .nth(3)
                .unwrap()
                .contains("3/s, 2 free  120/1000"),
            "{out}"
        );
        assert!(
            out.lines().nth(4).unwrap().contains("-            7 "),
            "{out}"
        );
    }

    #[test]
    fn held_masters_name_their_standby_and_slow_start_shows_progress() {
        let status = json!({"strategy": "weighted", "masters": [
            {"id": "a", "state": "recovering", "admin": "enabled", "held": true,
             "held_for": "s", "slow_start": 0.4},
            {"id": "b", "state": "recovering", "admin": "drained", "held": false,
             "slow_start": 0.437},
            {"id": "c", "state": "healthy", "admin": "enabled", "slow_start": 1.0},
        ]});
        let out = render(&status);
        let cells = |i: usize| -> Vec<String> {
            out.lines()
                .nth(i)
                .unwrap()
                .split("  ")
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .map(String::from)
                .collect()
        };
        assert!(cells(2).contains(&"HELD".to_string()), "{out}");
        assert_eq!(
            cells(3)[1..4],
            ["recovering 40%", "enabled", "yes (s)"],
            "{out}"
        );
        assert_eq!(cells(4)[1..4], ["recovering 43%", "drained", "-"], "{out}");
        assert_eq!(cells(5)[1..4], ["healthy", "enabled", "-"], "{out}");
    }

    #[test]
    fn a_suspended_master_shows_why_in_place_of_its_last_error() {
        let status = json!({"strategy": "weighted", "masters": [
            {"id": "a", "state": "suspended", "admin": "enabled", "held": true,
             "held_for": "s", "last_error": "answered 503",
             "suspended_reason": "answered 403 Forbidden, a ban status"},
        ]});
        let out = render(&status);
        let row = out.lines().nth(3).unwrap();
        assert!(row.contains("suspended  "), "{out}");
        assert!(
            row.ends_with("suspended: answered 403 Forbidden, a ban status"),
            "{out}"
        );
    }
}
