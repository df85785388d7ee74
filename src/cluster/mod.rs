//! Cluster mode (SPEC section 11): several nodes acting as one through etcd.
//!
//! Cluster mode is being built and nothing uses it yet. What is here is its storage
//! layer: [`state`], typed key-value, compare-and-swap, lease and lock primitives over
//! an etcd v3 cluster, on which membership, leadership and shared decisions will sit.

pub mod keys;
pub mod state;

pub use state::{Cas, Lock, State, StateError, Versioned};
