//! `registry_*` NIFs over `aws_cluster_core::registry`: the membership table.
//! `registry_new` only checks and parses (microseconds); every database call is async.

use crate::aws::{field, invalid, map};
use crate::{error, runtime};
use aws_cluster_core::registry::postgres::{Check, PgConfig, PgRegistry, Reading};
use aws_cluster_core::registry::{Row, RowKey};
use aws_cluster_core::Error;
use rustler::{Binary, Encoder, Env, LocalPid, OwnedEnv, ResourceArc, Term};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;

mod keys {
    rustler::atoms! {
        url, ssl, ssl_ca_file, table, secret, cluster, connect_timeout_ms, operation_timeout_ms,
        node, address, availability_zone, instance_id, group, boot_id, version,
        rows, rejected, why, aws_cluster_registry, changed,
        server_version, ssl_in_use, privileges, live_rows, host,
        select, insert, update, delete,
    }
}

/// One topology's registry connection; the secret lives only in its row key. Dropping
/// it (the topology stopped) ends its listener too.
pub struct RegistryResource {
    registry: Arc<PgRegistry>,
    cluster: String,
    listener: std::sync::Mutex<Option<oneshot::Sender<()>>>,
}

#[rustler::resource_impl]
impl rustler::Resource for RegistryResource {}

/// `registry_new(opts)`: `{:ok, registry}` or `{:error, e}` naming the bad option. `opts`
/// is a map with `url`, `table`, `cluster` (binaries), `secret` (a binary of 32+ bytes)
/// and `connect_timeout_ms`, `operation_timeout_ms`, and `ssl`, `ssl_ca_file` (binaries or
/// nil). Nothing is connected yet; the CA file is read here, hence a dirty scheduler.
#[rustler::nif(schedule = "DirtyIo")]
fn registry_new<'a>(env: Env<'a>, opts: Term<'a>) -> Term<'a> {
    match new(opts) {
        Ok((registry, cluster)) => (
            crate::atoms::ok(),
            ResourceArc::new(RegistryResource {
                registry: Arc::new(registry),
                cluster,
                listener: std::sync::Mutex::new(None),
            }),
        )
            .encode(env),
        Err(e) => error::error_tuple(env, &e),
    }
}

fn new(opts: Term<'_>) -> Result<(PgRegistry, String), Error> {
    if !opts.is_map() {
        return Err(invalid("the registry options must be a map"));
    }
    let text = |key, name: &'static str| -> Result<String, Error> {
        field::<String>(opts, key, name, "a binary")?
            .ok_or_else(|| invalid(&format!("option {name} is required")).with_detail("key", name))
    };
    let ms = |key, name: &'static str| -> Result<Duration, Error> {
        match field::<u64>(opts, key, name, "a positive integer (ms)")? {
            Some(ms) if ms > 0 => Ok(Duration::from_millis(ms)),
            _ => Err(invalid(&format!("option {name} must be positive")).with_detail("key", name)),
        }
    };
    let secret: Binary = match opts.map_get(keys::secret()) {
        Ok(v) => v
            .decode()
            .map_err(|_| invalid("option secret must be a binary").with_detail("key", "secret"))?,
        Err(_) => return Err(invalid("option secret is required").with_detail("key", "secret")),
    };
    let cluster = text(keys::cluster(), "cluster")?;
    let key = RowKey::new(secret.as_slice(), &cluster)?;
    let cfg = PgConfig {
        url: text(keys::url(), "url")?,
        ssl: field(opts, keys::ssl(), "ssl", "a binary")?,
        ssl_ca_file: field(opts, keys::ssl_ca_file(), "ssl_ca_file", "a binary")?,
        table: text(keys::table(), "table")?,
        connect_timeout: ms(keys::connect_timeout_ms(), "connect_timeout_ms")?,
        operation_timeout: ms(keys::operation_timeout_ms(), "operation_timeout_ms")?,
    };
    Ok((PgRegistry::new(cfg, key)?, cluster))
}

/// `registry_open(registry, ref)`: replies `:ok`-like `{:ok, true}` once connected and the
/// table exists (created if missing).
#[rustler::nif(schedule = "DirtyIo")]
fn registry_open<'a>(
    env: Env<'a>,
    registry: ResourceArc<RegistryResource>,
    reference: Term<'a>,
) -> Term<'a> {
    let registry = registry.registry.clone();
    let work = async move { registry.open().await };
    runtime::started(
        env,
        runtime::spawn_reply(env, reference, work, |env, ()| true.encode(env)),
    )
}

/// `registry_listen(registry, pid)`: from now until the registry is dropped, `pid` gets
/// `{:aws_cluster_registry, :changed}` whenever a node announces a join to this
/// cluster (NOTIFY, a hint: the table stays the truth). Replies `:ok` at once; a second
/// call replaces the first listener.
#[rustler::nif]
fn registry_listen<'a>(
    env: Env<'a>,
    registry: ResourceArc<RegistryResource>,
    pid: LocalPid,
) -> Term<'a> {
    let rt = match runtime::runtime() {
        Ok(rt) => rt,
        Err(e) => return error::error_tuple(env, &e),
    };
    let (stop_tx, stop_rx) = oneshot::channel();
    if let Ok(mut slot) = registry.listener.lock() {
        *slot = Some(stop_tx);
    }
    let reg = registry.registry.clone();
    let cluster = registry.cluster.clone();
    rt.spawn(async move {
        let mut owned = OwnedEnv::new();
        // A dead receiver ends the listener.
        let on_change = move || {
            owned
                .send_and_clear(&pid, |env| {
                    (keys::aws_cluster_registry(), keys::changed()).encode(env)
                })
                .is_ok()
        };
        reg.listen(cluster, on_change, stop_rx).await;
    });
    crate::atoms::ok().encode(env)
}

/// `registry_heartbeat(registry, ref, row, announce)`: writes this node's row (a map with
/// the `Row` fields as binaries or nil) and, with `announce`, notifies the listeners;
/// replies `{:ok, true}`.
#[rustler::nif(schedule = "DirtyIo")]
fn registry_heartbeat<'a>(
    env: Env<'a>,
    registry: ResourceArc<RegistryResource>,
    reference: Term<'a>,
    row: Term<'a>,
    announce: bool,
) -> Term<'a> {
    let row = match decode_row(row) {
        Ok(r) => r,
        Err(e) => return error::error_tuple(env, &e),
    };
    let registry = registry.registry.clone();
    let work = async move { registry.heartbeat(&row, announce).await };
    runtime::started(
        env,
        runtime::spawn_reply(env, reference, work, |env, ()| true.encode(env)),
    )
}

/// `registry_read(registry, ref, cluster, ttl_ms, limit)`: replies `{:ok, %{rows: [map],
/// rejected: [%{node, why}]}}`: the verified rows seen within `ttl_ms` by the server's
/// clock, and the refused ones.
#[rustler::nif(schedule = "DirtyIo")]
fn registry_read<'a>(
    env: Env<'a>,
    registry: ResourceArc<RegistryResource>,
    reference: Term<'a>,
    cluster: String,
    ttl_ms: u64,
    limit: i64,
) -> Term<'a> {
    let registry = registry.registry.clone();
    let work = async move {
        registry
            .read(&cluster, Duration::from_millis(ttl_ms), limit)
            .await
    };
    runtime::started(
        env,
        runtime::spawn_reply(env, reference, work, |env, reading: Reading| {
            let rows: Vec<Term> = reading.rows.iter().map(|r| encode_row(env, r)).collect();
            let rejected: Vec<Term> = reading
                .rejected
                .iter()
                .map(|r| map(env, &[(keys::node(), &r.node), (keys::why(), &r.why)]))
                .collect();
            map(env, &[(keys::rows(), &rows), (keys::rejected(), &rejected)])
        }),
    )
}

/// `registry_check(registry, ref, ttl_ms)`: replies `{:ok, %{server_version, ssl_in_use,
/// privileges: %{select, insert, update, delete}, live_rows, host}}` for the doctor.
#[rustler::nif(schedule = "DirtyIo")]
fn registry_check<'a>(
    env: Env<'a>,
    registry: ResourceArc<RegistryResource>,
    reference: Term<'a>,
    ttl_ms: u64,
) -> Term<'a> {
    let cluster = registry.cluster.clone();
    let registry = registry.registry.clone();
    let work = async move {
        registry
            .check(&cluster, Duration::from_millis(ttl_ms))
            .await
    };
    runtime::started(
        env,
        runtime::spawn_reply(env, reference, work, |env, c: Check| {
            let [select, insert, update, delete] = c.privileges;
            let privileges = map(
                env,
                &[
                    (keys::select(), &select),
                    (keys::insert(), &insert),
                    (keys::update(), &update),
                    (keys::delete(), &delete),
                ],
            );
            map(
                env,
                &[
                    (keys::server_version(), &c.server_version),
                    (keys::ssl_in_use(), &c.ssl),
                    (keys::privileges(), &privileges),
                    (keys::live_rows(), &c.live_rows),
                    (keys::host(), &c.host),
                ],
            )
        }),
    )
}

/// `registry_delete(registry, ref, cluster, node, boot_id)`: deletes that row of that
/// boot; replies `{:ok, deleted}`.
#[rustler::nif(schedule = "DirtyIo")]
fn registry_delete<'a>(
    env: Env<'a>,
    registry: ResourceArc<RegistryResource>,
    reference: Term<'a>,
    cluster: String,
    node: String,
    boot_id: String,
) -> Term<'a> {
    let registry = registry.registry.clone();
    let work = async move { registry.delete(&cluster, &node, &boot_id).await };
    runtime::started(
        env,
        runtime::spawn_reply(env, reference, work, |env, n: u64| n.encode(env)),
    )
}

fn decode_row(row: Term<'_>) -> Result<Row, Error> {
    if !row.is_map() {
        return Err(invalid("the registry row must be a map"));
    }
    let required = |key, name: &'static str| -> Result<String, Error> {
        field::<String>(row, key, name, "a binary")?.ok_or_else(|| {
            invalid(&format!("row field {name} is required")).with_detail("key", name)
        })
    };
    Ok(Row {
        cluster: required(keys::cluster(), "cluster")?,
        node: required(keys::node(), "node")?,
        address: required(keys::address(), "address")?,
        availability_zone: field(
            row,
            keys::availability_zone(),
            "availability_zone",
            "a binary",
        )?,
        instance_id: field(row, keys::instance_id(), "instance_id", "a binary")?,
        group: field(row, keys::group(), "group", "a binary")?,
        boot_id: required(keys::boot_id(), "boot_id")?,
        version: required(keys::version(), "version")?,
    })
}

fn encode_row<'a>(env: Env<'a>, r: &Row) -> Term<'a> {
    map(
        env,
        &[
            (keys::cluster(), &r.cluster),
            (keys::node(), &r.node),
            (keys::address(), &r.address),
            (keys::availability_zone(), &r.availability_zone),
            (keys::instance_id(), &r.instance_id),
            (keys::group(), &r.group),
            (keys::boot_id(), &r.boot_id),
            (keys::version(), &r.version),
        ],
    )
}
