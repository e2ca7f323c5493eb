//! The rustler boundary of aws_cluster: decode arguments, hand work to the core crate
//! (directly, on a dirty scheduler, or on the shared tokio runtime), encode the answer.
//!
//! Each module holds the NIFs of one domain, named `<domain>_<verb>`; they register
//! themselves, so this file is only the table of contents.

mod atoms;
mod aws;
#[cfg(feature = "ecs")]
mod ecs;
mod error;
mod gossip;
mod imds;
mod interface;
mod nif;
#[cfg(any(feature = "postgres", feature = "dynamodb"))]
mod registry;
mod runtime;

rustler::init!("Elixir.AWSCluster.Native");
