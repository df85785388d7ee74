//! `switchyard dead-letters list|retry|delete`: `GET /admin/dead-letters`,
//! `POST /admin/dead-letters/{id}/retry`, `DELETE /admin/dead-letters/{id}`.

use super::{cell, segment, table, text_cell, AdminClient, MAX_CELL};
use serde_json::Value;
use std::collections::HashSet;

/// How many more dead letters than it has tried `retry --all` reads per request.
const PAGE: usize = 100;
/// The most the admin API lists at once.
const MAX_LIST: usize = 10_000;

pub async fn list(admin: &AdminClient, limit: u32) -> anyhow::Result<()> {
    let answer = admin
        .get(&format!("/admin/dead-letters?limit={limit}"))
        .await?;
    print!("{}", render(&answer));
    Ok(())
}

pub async fn retry(admin: &AdminClient, id: &str) -> anyhow::Result<()> {
    admin.post(&retry_path(id)).await?;
    println!("{}: queued again", cell(id, MAX_CELL));
    Ok(())
}

/// Retries every dead letter, each one once: one that dies again meanwhile is not
/// retried a second time. The list is oldest first and a retried letter that dies
/// again keeps its place, so each read asks for [`PAGE`] more than were tried. Stops
/// at the first refusal (a full queue, the API gone); one deleted or retried by
/// someone else meanwhile is skipped.
pub async fn retry_all(admin: &AdminClient) -> anyhow::Result<()> {
    let mut tried = HashSet::new();
    let (mut retried, mut gone) = (0u64, 0u64);
    loop {
        let limit = (tried.len() + PAGE).min(MAX_LIST);
        let page = admin
            .get(&format!("/admin/dead-letters?limit={limit}"))
            .await?;
        let listed = ids(&page);
        let seen_all = listed.len() < limit;
        let fresh: Vec<String> = listed
            .into_iter()
            .filter(|id| !tried.contains(id))
            .collect();
        if fresh.is_empty() {
            if seen_all {
                break;
            }
            println!("{}", summary(retried, gone));
            anyhow::bail!(
                "the first {MAX_LIST} dead letters were all retried and died again before the rest could be listed"
            );
        }
        for id in fresh {
            match admin.post(&retry_path(&id)).await {
                Ok(_) => retried += 1,
                Err(e) if e.code() == Some("dead_letter_not_found") => gone += 1,
                Err(e) => {
                    println!("{}", summary(retried, gone));
                    anyhow::bail!("{}: {e}", cell(&id, MAX_CELL));
                }
            }
            tried.insert(id);
        }
    }
    println!("{}", summary(retried, gone));
    Ok(())
}

pub async fn delete(admin: &AdminClient, id: &str) -> anyhow::Result<()> {
    admin
        .delete(&format!("/admin/dead-letters/{}", segment(id)))
        .await?;
    println!("{}: deleted", cell(id, MAX_CELL));
    Ok(())
}

fn retry_path(id: &str) -> String {
    format!("/admin/dead-letters/{}/retry", segment(id))
}

/// The ids listed in a `/admin/dead-letters` body.
fn ids(answer: &Value) -> Vec<String> {
    answer["dead_letters"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|d| d["id"].as_str().map(str::to_string))
        .collect()
}

/// The line `retry --all` ends with.
pub fn summary(retried: u64, gone: u64) -> String {
    let mut line = format!("retried {retried} dead letter(s)");
    if gone > 0 {
        line.push_str(&format!(
            "; {gone} already gone (deleted or retried meanwhile)"
        ));
    }
    line
}

/// Formats a `/admin/dead-letters` body as a table, oldest first, with how many there
/// are in all when the page holds fewer.
pub fn render(answer: &Value) -> String {
    let list = answer["dead_letters"]
        .as_array()
        .map_or(&[][..], Vec::as_slice);
    let total = answer["total"].as_u64().unwrap_or(list.len() as u64);
    if list.is_empty() {
        return "no dead letters\n".to_string();
    }
    let rows = list
        .iter()
        .map(|d| {
            vec![
                text_cell(&d["id"]),
                d["attempts"].as_u64().unwrap_or(0).to_string(),
                text_cell(&d["last_error"]),
                text_cell(&d["created_at"]),
            ]
        })
        .collect();
    let mut out = table(&["ID", "ATTEMPTS", "LAST ERROR", "CREATED"], rows);
    if total > list.len() as u64 {
        out.push_str(&format!(
            "({} of {total} shown; --limit N for more)\n",
            list.len()
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn dead(id: &str, error: &str) -> Value {
        json!({"id": id, "status": "dead", "master": "a", "attempts": 3,
               "last_error": error, "created_at": "2026-12-01T10:00:00.000Z",
               "body": "{\"to\": \"+1\"}"})
    }

    #[test]
    fn a_page_is_a_table_with_the_total_when_cut() {
        let answer = json!({"total": 2, "dead_letters": [dead("0193-a", "master answered 503")]});
        assert_eq!(
            render(&answer),
            "ID      ATTEMPTS  LAST ERROR           CREATED\n\
             0193-a  3         master answered 503  2026-12-01T10:00:00.000Z\n\
             (1 of 2 shown; --limit N for more)\n"
        );
        let all = json!({"total": 1, "dead_letters": [dead("0193-a", "x")]});
        assert!(!render(&all).contains("shown"));
        assert_eq!(
            render(&json!({"total": 0, "dead_letters": []})),
            "no dead letters\n"
        );
    }

    #[test]
    fn long_or_multiline_errors_stay_in_one_bounded_cell() {
        let error = format!("upstream said:\n{}", "e".repeat(1000));
        let out = render(&json!({"total": 1, "dead_letters": [dead("id", &error)]}));
        assert_eq!(out.lines().count(), 2, "{out}");
        assert!(out.lines().all(|l| l.chars().count() < 120), "{out}");
    }

    #[test]
    fn ids_and_summary() {
        let page = json!({"dead_letters": [dead("x", ""), dead("y", "")]});
        assert_eq!(ids(&page), ["x", "y"]);
        assert_eq!(summary(2, 0), "retried 2 dead letter(s)");
        assert_eq!(
            summary(1, 1),
            "retried 1 dead letter(s); 1 already gone (deleted or retried meanwhile)"
        );
    }
}
