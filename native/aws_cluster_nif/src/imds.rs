//! `imds_*` NIFs over `aws_cluster_core::imds`; async like every network call.

use crate::aws::{field, invalid, map};
use crate::{error, runtime};
use aws_cluster_core::imds::{self, ImdsConfig, Key, Metadata};
use aws_cluster_core::Error;
use rustler::{Env, Term};
use std::time::Duration;

mod keys {
    rustler::atoms! {
        endpoint, connect_timeout_ms, timeout_ms, attempts, keys,
        instance_id, region, availability_zone, auto_scaling_group, version,
    }
}

/// `imds_fetch(ref, opts)`: replies `{:ok, %{instance_id, region, availability_zone,
/// auto_scaling_group, version}}` (values binaries or nil). `opts` is a map with
/// `endpoint` (binary), `connect_timeout_ms`, `timeout_ms`, `attempts` (integers) and
/// `keys`, the list of values to read as binaries (`"region"` ...); nil means default.
#[rustler::nif(schedule = "DirtyIo")]
fn imds_fetch<'a>(env: Env<'a>, reference: Term<'a>, opts: Term<'a>) -> Term<'a> {
    let (cfg, wanted) = match config(opts) {
        Ok(parsed) => parsed,
        Err(e) => return error::error_tuple(env, &e),
    };
    let work = async move { imds::fetch(&cfg, &wanted).await };
    runtime::started(
        env,
        runtime::spawn_reply(env, reference, work, |env, m: Metadata| {
            map(
                env,
                &[
                    (keys::instance_id(), &m.instance_id),
                    (keys::region(), &m.region),
                    (keys::availability_zone(), &m.availability_zone),
                    (keys::auto_scaling_group(), &m.auto_scaling_group),
                    (keys::version(), &m.version),
                ],
            )
        }),
    )
}

fn config(opts: Term<'_>) -> Result<(ImdsConfig, Vec<Key>), Error> {
    if !opts.is_map() {
        return Err(invalid("the IMDS options must be a map"));
    }
    let mut cfg = ImdsConfig::default();
    if let Some(ep) = field::<String>(opts, keys::endpoint(), "endpoint", "a binary")? {
        cfg.endpoint = ep;
    }
    let ms = |key: rustler::Atom, name: &'static str| -> Result<Option<Duration>, Error> {
        match field::<u64>(opts, key, name, "a positive integer (ms)")? {
            Some(0) => {
                Err(invalid(&format!("option {name} must be positive")).with_detail("key", name))
            }
            other => Ok(other.map(Duration::from_millis)),
        }
    };
    if let Some(d) = ms(keys::connect_timeout_ms(), "connect_timeout_ms")? {
        cfg.connect_timeout = d;
    }
    if let Some(d) = ms(keys::timeout_ms(), "timeout_ms")? {
        cfg.timeout = d;
    }
    if let Some(n) = field::<u32>(opts, keys::attempts(), "attempts", "a positive integer")? {
        if !(1..=10).contains(&n) {
            return Err(
                invalid("option attempts must be between 1 and 10").with_detail("key", "attempts")
            );
        }
        cfg.attempts = n;
    }
    let wanted = match field::<Vec<String>>(opts, keys::keys(), "keys", "a list of binaries")? {
        None => Key::ALL.to_vec(),
        Some(names) => names
            .iter()
            .map(|n| {
                Key::parse(n).ok_or_else(|| {
                    invalid(&format!(
                        "unknown IMDS key {n:?}; known: instance_id, region, availability_zone, auto_scaling_group"
                    ))
                    .with_detail("key", "keys")
                })
            })
            .collect::<Result<_, _>>()?,
    };
    Ok((cfg, wanted))
}
