//! switchyard: a load-balancing, failover and store-and-forward proxy for message send
//! endpoints.
//!
//! Two flows, as modules:
//! - the data path — [`server`] accepts, [`proxy`] reads routing hints, loads the
//!   [`routing`] snapshot, lets its strategy choose a master and forwards; what cannot
//!   go out now waits in the [`queue`] on disk and is delivered later;
//! - the control side — [`control`] owns the routing table (its only writer) and
//!   rebuilds it on reloads, admin commands and the decisions of its failover
//!   controller, which runs one [`health`] state machine per master, writes the
//!   [`audit`] trail and raises [`alerts`]; [`admin`] exposes it all; [`telemetry`]
//!   holds metrics.
//!
//! [`clients`] knows the API keys of `/v1/*`; [`config`] parses and validates the TOML file; [`app`] wires a running instance.

pub mod admin;
pub mod admin_cli;
pub mod alerts;
pub mod app;
pub mod audit;
pub mod clients;
pub mod cluster;
pub mod config;
pub mod control;
pub mod demo;
pub mod h1;
pub mod health;
pub mod message_id;
pub mod mock;
pub mod pool;
pub mod proxy;
pub mod queue;
pub mod reply;
pub mod routing;
pub mod server;
pub mod status_cli;
pub mod telemetry;
pub mod tls;
pub mod util;
