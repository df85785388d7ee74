//! `switchyard cluster status`: `GET /cluster/status` as a table, the node answering
//! marked; `switchyard cluster resign`: `POST /cluster/leader/resign` on the leader.

use super::{table, text_cell, AdminClient};
use serde_json::Value;

pub async fn status(admin: &AdminClient) -> anyhow::Result<()> {
    let answer = admin.get("/cluster/status").await?;
    print!("{}", render(&answer));
    Ok(())
}

pub async fn resign(admin: &AdminClient) -> anyhow::Result<()> {
    let answer = admin.post("/cluster/leader/resign").await?;
    match answer["leader"].as_str() {
        Some(leader) => println!(
            "resigned: {leader} leads now, term {}",
            answer["term"].as_u64().unwrap_or(0)
        ),
        None => println!("resigned: no leader elected yet"),
    }
    Ok(())
}

/// Formats a `/cluster/status` body: a summary line, then one row per node.
pub fn render(answer: &Value) -> String {
    let me = answer["node"].as_str().unwrap_or("");
    let mut out = format!(
        "cluster {}, leader {}, term {}; this node: {} ({})\n",
        answer["cluster_state"].as_str().unwrap_or("-"),
        answer["leader"].as_str().unwrap_or("none"),
        answer["term"].as_u64().unwrap_or(0),
        me,
        answer["state"].as_str().unwrap_or("-"),
    );
    let nodes = answer["nodes"].as_array().map_or(&[][..], Vec::as_slice);
    let rows = nodes
        .iter()
        .map(|n| {
            let id = n["id"].as_str().unwrap_or("");
            vec![
                if id == me {
                    format!("{id} *")
                } else {
                    id.to_string()
                },
                text_cell(&n["state"]),
                text_cell(&n["priority"]),
                text_cell(&n["admin"]),
                text_cell(&n["queue_depth"]),
                text_cell(&n["version"]),
                text_cell(&n["last_seen"]),
            ]
        })
        .collect();
    out.push_str(&table(
        &[
            "NODE",
            "STATE",
            "PRIORITY",
            "ADMIN",
            "QUEUED",
            "VERSION",
            "LAST SEEN",
        ],
        rows,
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_answering_node_is_marked_and_gone_nodes_show_their_last_sight() {
        let answer = json!({
            "cluster_state": "degraded", "leader": "b", "term": 7, "node": "a", "state": "active",
            "nodes": [
                {"id": "a", "state": "active", "priority": 100, "admin": "10.0.0.1:9090",
                 "version": "0.1.0", "queue_depth": 0, "last_seen": "2026-12-01T10:00:02.000Z"},
                {"id": "c", "state": "unreachable", "priority": 50, "admin": "10.0.0.3:9090",
                 "version": "0.1.0", "queue_depth": 12, "last_seen": "2026-12-01T09:58:00.000Z"},
            ]
        });
        let text = render(&answer);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "cluster degraded, leader b, term 7; this node: a (active)"
        );
        assert!(lines[2].starts_with("a *"), "{text}");
        assert!(
            lines[3].contains("unreachable") && lines[3].contains("12"),
            "{text}"
        );
    }
}
