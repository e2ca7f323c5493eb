//! AWS discovery: one SDK client per topology, fully paginated EC2 and AutoScaling
//! queries, and the mapping of every SDK failure onto a [`Reason`] a caller can act on.
//!
//! The Elixir side never sees an SDK type: instances and groups are plain structs, and
//! failures are [`Error`]s whose `details` keep the raw AWS facts (`code`, `operation`,
//! `action`, `status`, `endpoint`).

mod autoscaling;
mod client;
mod ec2;
mod failure;

#[cfg(test)]
mod fake;

pub use autoscaling::{Group, GroupInstance};
pub use client::{AwsClient, ClientConfig};
pub use ec2::{Instance, InstanceQuery, NetworkInterface};
pub use failure::{classify, Failure, Operation};

/// One fully paginated answer and how many pages (requests) it took.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing<T> {
    pub items: Vec<T>,
    pub pages: u32,
}
