//! Cluster mode (SPEC section 11): several nodes acting as one through etcd.
//!
//! [`state`] holds the storage primitives (key-value, compare-and-swap, leases,
//! locks); [`member`] what each node publishes and how the cluster looks from here;
//! [`election`] who leads, with terms and fencing; [`agent`] the task that keeps this
//! node's membership, campaigns and watches the others; [`shared`] the operator state
//! every node applies; [`keys`] idempotency keys shared by every node; [`config_sync`]
//! the shared config pushed to every node; [`handoff`] how a node that leaves hands
//! its queued messages to the others.
//!
//! Static stability: nothing on the request path waits on etcd. A node that cannot
//! reach it goes on serving with what it last applied and reports `isolated`.

pub mod agent;
pub mod config_sync;
pub mod election;
pub mod handoff;
pub mod keys;
pub mod member;
pub mod shared;
pub mod split;
pub mod state;

pub use agent::Cluster;
pub use state::{Cas, Change, Lock, State, StateError, Versioned, Watch};
