//! `registry_*` NIFs over `aws_cluster_core::registry`: the membership table, on
//! PostgreSQL or DynamoDB (`registry::Backend`). `registry_new*` only check and parse;
//! every database call is async.

use crate::aws::{field, invalid, map};
use crate::{error, runtime};
#[cfg(feature = "postgres")]
use aws_cluster_core::registry::postgres::{PgConfig, PgRegistry};
use aws_cluster_core::registry::{Backend, Check, Reading, Row, RowKey};
use aws_cluster_core::Error;
use rustler::{Binary, Encoder, Env, LocalPid, OwnedEnv, ResourceArc, Term};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;

mod keys {
    rustler::atoms! {
        url, ssl, ssl_ca_file, table, secret, cluster, connect_timeout_ms, operation_timeout_ms,
        node, address, availability_zone, instance_id, group, boot_id, version,
        rows, rejected, refused, why, aws_cluster_registry, changed,
        server_version, ssl_in_use, privileges, live_rows, host,
        select, insert, update, delete, ttl_ms,
    }
}

/// One topology's registry connection; the secret lives only in its row key. Dropping
/// it (the topology stopped) ends its listener too.
pub struct RegistryResource {
    backend: Backend,
    cluster: String,
    listener: std::sync::Mutex<Option<oneshot::Sender<()>>>,
}

#[rustler::resource_impl]
impl rustler::Resource for RegistryResource {}

/// `registry_new(opts)`: `{:ok, registry}` or `{:error, e}` naming the bad option. `opts`
/// is a map with `url`, `table`, `cluster` (binaries), `secret` (a binary of 32+ bytes)
/// and `connect_timeout_ms`, `operation_timeout_ms`, and `ssl`, `ssl_ca_file` (binaries or
/// nil). Nothing is connected yet; the CA file is read here, hence a dirty scheduler.
#[cfg(feature = "postgres")]
#[rustler::nif(schedule = "DirtyIo")]
fn registry_new<'a>(env: Env<'a>, opts: Term<'a>) -> Term<'a> {
    let made = common(opts).and_then(|(cluster, key)| {
        let pg = postgres(opts, key)?;
        Ok((Backend::Postgres(Arc::new(pg)), cluster))
    });
    resource(env, made)
}

/// `registry_new_dynamodb(client, opts)`: the registry in DynamoDB table `table`, called
/// with `client` (`aws_client_new`). `opts` has `table`, `cluster`, `secret` and `ttl_ms`
/// (how long a written row stays live).
#[cfg(feature = "dynamodb")]
#[rustler::nif]
fn registry_new_dynamodb<'a>(
    env: Env<'a>,
    client: ResourceArc<crate::aws::ClientResource>,
    opts: Term<'a>,
) -> Term<'a> {
    use aws_cluster_core::registry::dynamo::DynamoRegistry;
    let made = common(opts).and_then(|(cluster, key)| {
        let table = required_text(opts, keys::table(), "table")?;
        let ttl = positive_ms(opts, keys::ttl_ms(), "ttl_ms")?;
        let dynamo = DynamoRegistry::new(client.client.clone(), &table, key, ttl)?;
        Ok((Backend::Dynamo(Arc::new(dynamo)), cluster))
    });
    resource(env, made)
}

fn resource(env: Env<'_>, made: Result<(Backend, String), Error>) -> Term<'_> {
    match made {
        Ok((backend, cluster)) => (
            crate::atoms::ok(),
            ResourceArc::new(RegistryResource {
                backend,
                cluster,
                listener: std::sync::Mutex::new(None),
            }),
        )
            .encode(env),
        Err(e) => error::error_tuple(env, &e),
    }
}

/// The cluster and the row key, whichever the backend.
fn common(opts: Term<'_>) -> Result<(String, RowKey), Error> {
    if !opts.is_map() {
        return Err(invalid("the registry options must be a map"));
    }
    let secret: Binary = match opts.map_get(keys::secret()) {
        Ok(v) => v
            .decode()
            .map_err(|_| invalid("option secret must be a binary").with_detail("key", "secret"))?,
        Err(_) => return Err(invalid("option secret is required").with_detail("key", "secret")),
    };
    let cluster = required_text(opts, keys::cluster(), "cluster")?;
    let key = RowKey::new(secret.as_slice(), &cluster)?;
    Ok((cluster, key))
}

fn required_text(opts: Term<'_>, key: rustler::Atom, name: &'static str) -> Result<String, Error> {
    field::<String>(opts, key, name, "a binary")?
        .ok_or_else(|| invalid(&format!("option {name} is required")).with_detail("key", name))
}

fn positive_ms(opts: Term<'_>, key: rustler::Atom, name: &'static str) -> Result<Duration, Error> {
    match field::<u64>(opts, key, name, "a positive integer (ms)")? {
        Some(ms) if ms > 0 => Ok(Duration::from_millis(ms)),
        _ => Err(invalid(&format!("option {name} must be positive")).with_detail("key", name)),
    }
}

#[cfg(feature = "postgres")]
fn postgres(opts: Term<'_>, key: RowKey) -> Result<PgRegistry, Error> {
    let cfg = PgConfig {
        url: required_text(opts, keys::url(), "url")?,
        ssl: field(opts, keys::ssl(), "ssl", "a binary")?,
        ssl_ca_file: field(opts, keys::ssl_ca_file(), "ssl_ca_file", "a binary")?,
        table: required_text(opts, keys::table(), "table")?,
        connect_timeout: positive_ms(opts, keys::connect_timeout_ms(), "connect_timeout_ms")?,
        operation_timeout: positive_ms(opts, keys::operation_timeout_ms(), "operation_timeout_ms")?,
    };
    PgRegistry::new(cfg, key)
}

/// `registry_open(registry, ref, create)`: replies `{:ok, true}` once connected and the
/// table exists (with `create`, made if missing).
#[rustler::nif(schedule = "DirtyIo")]
fn registry_open<'a>(
    env: Env<'a>,
    registry: ResourceArc<RegistryResource>,
    reference: Term<'a>,
    create: bool,
) -> Term<'a> {
    let backend = registry.backend.clone();
    let cluster = registry.cluster.clone();
    let work = async move { backend.open(&cluster, create).await };
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
    let backend = registry.backend.clone();
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
        backend.listen(cluster, on_change, stop_rx).await;
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
    let backend = registry.backend.clone();
    let work = async move { backend.heartbeat(&row, announce).await };
    runtime::started(
        env,
        runtime::spawn_reply(env, reference, work, |env, ()| true.encode(env)),
    )
}

/// `registry_read(registry, ref, cluster, ttl_ms, limit)`: replies `{:ok, %{rows: [map],
/// rejected: [%{node, why}], refused: n}}`: the verified rows live within `ttl_ms`, at
/// most `limit`, the first refused ones and how many were refused.
#[rustler::nif(schedule = "DirtyIo")]
fn registry_read<'a>(
    env: Env<'a>,
    registry: ResourceArc<RegistryResource>,
    reference: Term<'a>,
    cluster: String,
    ttl_ms: u64,
    limit: i64,
) -> Term<'a> {
    let backend = registry.backend.clone();
    let work = async move {
        backend
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
            map(
                env,
                &[
                    (keys::rows(), &rows),
                    (keys::rejected(), &rejected),
                    (keys::refused(), &reading.refused),
                ],
            )
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
    let backend = registry.backend.clone();
    let work = async move { backend.check(&cluster, Duration::from_millis(ttl_ms)).await };
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
/// boot; replies `{:ok, true}`.
#[rustler::nif(schedule = "DirtyIo")]
fn registry_delete<'a>(
    env: Env<'a>,
    registry: ResourceArc<RegistryResource>,
    reference: Term<'a>,
    cluster: String,
    node: String,
    boot_id: String,
) -> Term<'a> {
    let backend = registry.backend.clone();
    let work = async move { backend.delete(&cluster, &node, &boot_id).await };
    runtime::started(
        env,
        runtime::spawn_reply(env, reference, work, |env, ()| true.encode(env)),
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
        // The backend stamps it as it writes.
        stamp_ms: 0,
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
