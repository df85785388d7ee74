//! `switchyard masters ACTION ID`: `POST /ha/masters/{id}/{action}`, answered with one
//! line.

use super::{cell, segment, AdminClient, MAX_CELL};
use serde_json::Value;

/// What an operator may do to one master from the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Disable,
    Enable,
    Drain,
    Failover,
    Failback,
    Reinstate,
}

impl Action {
    /// The last segment of the route.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Disable => "disable",
            Action::Enable => "enable",
            Action::Drain => "drain",
            Action::Failover => "failover",
            Action::Failback => "failback",
            Action::Reinstate => "reinstate",
        }
    }
}

pub async fn run(admin: &AdminClient, action: Action, id: &str) -> anyhow::Result<()> {
    let path = format!("/ha/masters/{}/{}", segment(id), action.as_str());
    let answer = admin.post(&path).await?;
    println!("{}", describe(action, id, &answer));
    Ok(())
}

/// One line saying what the admin API did, from its answer to `action` on `id`.
pub fn describe(action: Action, id: &str, answer: &Value) -> String {
    let s = |v: &Value| cell(v.as_str().unwrap_or("?"), MAX_CELL);
    match action {
        Action::Disable | Action::Enable | Action::Drain => {
            let master = answer["id"].as_str().unwrap_or(id);
            format!(
                "{}: admin state {}",
                cell(master, MAX_CELL),
                s(&answer["admin"])
            )
        }
        Action::Failover => format!(
            "{}: failed over to {}",
            cell(answer["failed"].as_str().unwrap_or(id), MAX_CELL),
            s(&answer["backup"])
        ),
        Action::Failback => {
            let master = cell(answer["master"].as_str().unwrap_or(id), MAX_CELL);
            match answer["demoted"].as_str() {
                Some(standby) => format!(
                    "{master}: back in its place; {} demoted",
                    cell(standby, MAX_CELL)
                ),
                None => format!("{master}: back in its place"),
            }
        }
        Action::Reinstate => {
            let master = cell(answer["id"].as_str().unwrap_or(id), MAX_CELL);
            match answer["held_for"].as_str() {
                Some(standby) => format!(
                    "{master}: reinstated, recovering; {} keeps its place until failback",
                    cell(standby, MAX_CELL)
                ),
                None => format!("{master}: reinstated, recovering"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn each_answer_reads_as_one_line() {
        let answer = json!({"id": "a", "admin": "disabled", "enabled": false});
        assert_eq!(
            describe(Action::Disable, "a", &answer),
            "a: admin state disabled"
        );
        let answer = json!({"id": "a", "admin": "draining", "enabled": false});
        assert_eq!(
            describe(Action::Drain, "a", &answer),
            "a: admin state draining"
        );
        let answer = json!({"failed": "a", "backup": "b"});
        assert_eq!(
            describe(Action::Failover, "a", &answer),
            "a: failed over to b"
        );
        let answer = json!({"master": "a", "demoted": "b"});
        assert_eq!(
            describe(Action::Failback, "b", &answer),
            "a: back in its place; b demoted"
        );
        let answer = json!({"id": "a", "state": "recovering", "held_for": "s"});
        assert_eq!(
            describe(Action::Reinstate, "a", &answer),
            "a: reinstated, recovering; s keeps its place until failback"
        );
        let answer = json!({"id": "a", "state": "recovering", "held_for": null});
        assert_eq!(
            describe(Action::Reinstate, "a", &answer),
            "a: reinstated, recovering"
        );
        let answer = json!({"master": "a", "demoted": null});
        assert_eq!(
            describe(Action::Failback, "a", &answer),
            "a: back in its place"
        );
    }

    #[test]
    fn an_unexpected_answer_still_gives_one_bounded_line() {
        let line = describe(Action::Enable, "a", &json!({"admin": "x\n".repeat(100)}));
        assert!(!line.contains('\n'), "{line}");
        assert!(line.chars().count() < 100, "{line}");
        assert_eq!(
            describe(Action::Failover, "a", &json!({})),
            "a: failed over to ?"
        );
    }
}
