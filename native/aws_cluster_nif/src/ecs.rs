//! `ecs_*` NIFs over `aws_cluster_core::ecs_metadata`; async like every network call.

use crate::aws::{invalid, map};
use crate::{error, runtime};
use aws_cluster_core::ecs_metadata::{self, MetadataConfig, TaskMetadata};
use rustler::{Env, Term};
use std::time::Duration;

mod keys {
    rustler::atoms! {
        cluster, task_arn, family, availability_zone, launch_type, region, addresses,
    }
}

/// `ecs_metadata_fetch(ref, uri, timeout_ms, attempts)`: replies `{:ok, %{cluster,
/// task_arn, family, availability_zone, launch_type, region, addresses}}` (binaries or
/// nil; `addresses` a list) read from task metadata v4 at `uri`.
#[rustler::nif(schedule = "DirtyIo")]
fn ecs_metadata_fetch<'a>(
    env: Env<'a>,
    reference: Term<'a>,
    uri: String,
    timeout_ms: u64,
    attempts: u32,
) -> Term<'a> {
    if timeout_ms == 0 || !(1..=10).contains(&attempts) {
        let e = invalid("timeout_ms must be positive and attempts 1 to 10");
        return error::error_tuple(env, &e);
    }
    let mut cfg = MetadataConfig::new(uri);
    cfg.timeout = Duration::from_millis(timeout_ms);
    cfg.attempts = attempts;
    let work = async move { ecs_metadata::fetch(&cfg).await };
    runtime::started(
        env,
        runtime::spawn_reply(env, reference, work, |env, m: TaskMetadata| {
            map(
                env,
                &[
                    (keys::cluster(), &m.cluster),
                    (keys::task_arn(), &m.task_arn),
                    (keys::family(), &m.family),
                    (keys::availability_zone(), &m.availability_zone),
                    (keys::launch_type(), &m.launch_type),
                    (keys::region(), &m.region),
                    (keys::addresses(), &m.addresses),
                ],
            )
        }),
    )
}
