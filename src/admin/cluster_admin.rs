//! Admin actions in cluster mode (SPEC section 11): an action taken on any node is
//! written to the shared document ([`crate::cluster::shared`]) and applies on every
//! node. The answer comes once the change is in force on this node too, so a client
//! that reads `/ha/status` after it sees it. A node that cannot reach etcd refuses
//! (503 `cluster_isolated`) rather than change itself alone.

use crate::cluster::shared::{Mutation, Shared, UpdateError};
use crate::cluster::state::StateError;
use crate::control::failover::{Command, Handle};
use crate::reply;
use crate::server::Body;
use http::{Response, StatusCode};
use std::time::{Duration, Instant};

/// How long an answer waits for the change to come back applied here.
const APPLIED_WITHIN: Duration = Duration::from_secs(5);

/// Writes `change` and waits until this node applied it.
pub(super) async fn write(shared: &Shared, change: &Mutation) -> Result<(), Box<Response<Body>>> {
    if shared.cluster().is_isolated() {
        return Err(Box::new(reply::error(
            StatusCode::SERVICE_UNAVAILABLE,
            "cluster_isolated",
            "this node cannot reach etcd: an admin action here would apply on this node alone; use another node or wait",
        )));
    }
    let revision = match update(shared, change).await {
        Ok(revision) => revision,
        Err(UpdateError::Refused(r)) => {
            return Err(Box::new(reply::error(
                StatusCode::CONFLICT,
                r.code,
                r.message,
            )))
        }
        Err(e) => {
            return Err(Box::new(reply::error(
                StatusCode::SERVICE_UNAVAILABLE,
                "cluster_unavailable",
                format!("the change was not written: {e}"),
            )))
        }
    };
    if shared.applied(revision, APPLIED_WITHIN).await {
        Ok(())
    } else {
        Err(Box::new(reply::error(
            StatusCode::ACCEPTED,
            "not_applied_yet",
            "the change is written for the cluster but not in force on this node yet",
        )))
    }
}

/// Writes `change`, again while etcd does not answer and this node is not isolated
/// (etcd electing a raft leader after a member died), for [`APPLIED_WITHIN`] at most.
/// A write applied whose answer was lost is no change on the next try.
async fn update(shared: &Shared, change: &Mutation) -> Result<i64, UpdateError> {
    let deadline = Instant::now() + APPLIED_WITHIN;
    loop {
        match shared.update(None, change).await {
            Err(UpdateError::State(StateError::Unreachable(_)))
                if Instant::now() < deadline && !shared.cluster().is_isolated() =>
            {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            other => return other,
        }
    }
}

/// `POST /ha/pause`, `/ha/resume`, `/ha/masters/{id}/failover|failback|reinstate`.
pub(super) async fn command(
    shared: &Shared,
    failover: &Handle,
    command: Command,
) -> Response<Body> {
    let planned = match failover.command(Command::Plan(Box::new(command))).await {
        Ok(value) => value,
        Err((status, code, message)) => return reply::error(status, code, message),
    };
    let change: Mutation = match serde_json::from_value(planned) {
        Ok(change) => change,
        Err(e) => {
            return reply::error(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
        }
    };
    let before = failover.view();
    if let Err(resp) = write(shared, &change).await {
        return *resp;
    }
    let view = failover.view();
    let body = match &change {
        Mutation::Hold { failed, backup, .. } => {
            serde_json::json!({"failed": failed, "backup": backup})
        }
        Mutation::Release { failed } => {
            let demoted = before.backup_of(failed);
            serde_json::json!({"master": failed, "demoted": demoted})
        }
        Mutation::Reinstate { id } => {
            let held_for = view.backup_of(id);
            serde_json::json!({"id": id, "state": "recovering", "held_for": held_for})
        }
        _ => serde_json::json!({
            "failover_paused": view.failover_paused,
            "breaker_open": view.breaker_open,
        }),
    };
    reply::json(StatusCode::OK, &body)
}
