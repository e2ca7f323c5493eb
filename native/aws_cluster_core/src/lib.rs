//! aws_cluster's core: everything the NIF does, as plain Rust that `cargo test` can run.
//!
//! One module per domain; the NIF crate is a thin boundary over these.

pub mod aws;
#[cfg(feature = "ecs")]
pub mod ecs_metadata;
pub mod error;
pub mod gossip;
pub mod imds;
pub mod interface;
#[cfg(any(feature = "postgres", feature = "dynamodb"))]
pub mod registry;
pub mod sched;

pub use error::{Error, Reason, Result};
