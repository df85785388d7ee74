//! `switchyard events [--limit N]`: `GET /ha/events?limit=N`, the audit trail as a
//! table, newest first (the order the API gives).

use super::{table, text_cell, AdminClient};
use serde_json::Value;

pub async fn run(admin: &AdminClient, limit: u32) -> anyhow::Result<()> {
    let answer = admin.get(&format!("/ha/events?limit={limit}")).await?;
    print!("{}", render(&answer));
    Ok(())
}

/// Formats a `/ha/events` body as a table.
pub fn render(answer: &Value) -> String {
    let events = answer["events"].as_array().map_or(&[][..], Vec::as_slice);
    if events.is_empty() {
        return "no events\n".to_string();
    }
    let rows = events
        .iter()
        .map(|e| {
            vec![
                text_cell(&e["at"]),
                text_cell(&e["kind"]),
                text_cell(&e["master"]),
                text_cell(&e["backup"]),
                text_cell(&reason(e)),
            ]
        })
        .collect();
    table(&["AT", "KIND", "MASTER", "BACKUP", "REASON"], rows)
}

/// The reason; for an admin action, led by the route called and who called it.
fn reason(e: &Value) -> Value {
    let reason = e["reason"].as_str().unwrap_or("");
    match (e["route"].as_str(), e["caller"].as_str()) {
        (Some(route), Some(caller)) => format!("{route} from {caller}: {reason}").into(),
        (Some(route), None) => format!("{route}: {reason}").into(),
        _ => e["reason"].clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn events_keep_the_api_order_and_show_absent_fields_as_dashes() {
        let answer = json!({"events": [
            {"id": 2, "at": "2026-12-01T10:00:02.000Z", "kind": "failover_started",
             "master": "a", "backup": "b", "reason": "a failed", "duration_ms": null},
            {"id": 1, "at": "2026-12-01T10:00:01.000Z", "kind": "paused",
             "master": null, "backup": null, "reason": "paused by the admin API"},
        ]});
        assert_eq!(
            render(&answer),
            "AT                        KIND              MASTER  BACKUP  REASON\n\
             2026-12-01T10:00:02.000Z  failover_started  a       b       a failed\n\
             2026-12-01T10:00:01.000Z  paused            -       -       paused by the admin API\n"
        );
    }

    #[test]
    fn admin_actions_show_the_route_and_the_caller() {
        let answer = json!({"events": [
            {"at": "t", "kind": "admin_action", "master": "a", "reason": "disable: answered 200 OK",
             "route": "POST /ha/masters/a/disable", "caller": "127.0.0.1:50123"},
        ]});
        let out = render(&answer);
        assert!(
            out.contains(
                "admin_action  a       -       POST /ha/masters/a/disable from 127.0.0.1:50123"
            ),
            "{out}"
        );
    }

    #[test]
    fn long_reasons_are_cut_and_no_events_say_so() {
        let answer =
            json!({"events": [{"at": "t", "kind": "degraded", "reason": "r".repeat(500)}]});
        let out = render(&answer);
        assert!(out.lines().all(|l| l.chars().count() < 120), "{out}");
        assert!(out.contains('…'), "{out}");
        assert_eq!(render(&json!({"events": []})), "no events\n");
    }
}
