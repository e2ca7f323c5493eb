//! AWS discovery: one client per topology, fully paginated EC2 and AutoScaling queries
//! over the AWS Query protocol (`query`, `xml`), and the mapping of every failure onto a
//! [`Reason`] a caller can act on.
//!
//! Instances and groups are plain structs, and failures are [`Error`]s whose `details`
//! keep the raw AWS facts (`code`, `operation`, `action`, `status`, `endpoint`).

#[cfg(feature = "autoscaling")]
mod autoscaling;
mod client;
#[cfg(feature = "dynamodb")]
pub mod dynamodb;
mod ec2;
#[cfg(feature = "ecs")]
pub mod ecs;
mod failure;
mod query;
mod xml;

#[cfg(test)]
pub(crate) mod fake;

#[cfg(feature = "autoscaling")]
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
