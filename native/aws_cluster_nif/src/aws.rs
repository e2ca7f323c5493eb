//! `aws_*` NIFs over `aws_cluster_core::aws`.
//!
//! All of them are async (see `runtime`): building the client loads TLS roots and
//! config files, and every call waits on the network, so none of it may run on a
//! scheduler. They run on dirty IO schedulers as well: the hand-off to the runtime is a
//! cross-thread wake-up, and in a VM that cost 35-50 µs at p99 on a normal scheduler
//! (bench/schedulers.exs), over the 20 µs we allow there. Instances, groups and tasks
//! cross as maps with atom keys fixed at compile time;
//! tag keys and values stay binaries.

use crate::{error, runtime};
#[cfg(feature = "ecs")]
use aws_cluster_core::aws::ecs::{ContainerInstance, Task, TaskQuery, TaskState};
use aws_cluster_core::aws::{
    AwsClient, ClientConfig, Instance, InstanceQuery, Listing, NetworkInterface,
};
#[cfg(feature = "autoscaling")]
use aws_cluster_core::aws::{Group, GroupInstance};
use aws_cluster_core::{Error, Reason};
use rustler::{Atom, Encoder, Env, ResourceArc, Term};
use std::time::Duration;

mod keys {
    rustler::atoms! {
        region, endpoint, access_key_id, secret_access_key, session_token, max_attempts,
        operation_timeout_ms, attempt_timeout_ms, connect_timeout_ms,
        id, state, private_ip, public_ip, private_dns, ipv6, availability_zone, subnet_id,
        vpc_id, tags, launch_time, network_interfaces, device_index, private_ips,
        instances, groups, pages, name, desired_capacity, lifecycle_state, health_status,
        cluster, family, service_name, started_by, launch_type, tasks, arn, cluster_arn,
        group, last_status, address, container_instance_arn, container_instances,
        ec2_instance_id, status, running, gone, starting,
    }
}

/// The AWS client of one topology, shared by every call made with it.
pub struct ClientResource {
    pub(crate) client: AwsClient,
}

#[rustler::resource_impl]
impl rustler::Resource for ClientResource {}

/// `aws_client_new(ref, opts)`: replies `{:ok, client}`. `opts` is a map with atom keys
/// `region` (required), `endpoint`, `access_key_id`, `secret_access_key`,
/// `session_token` (binaries or nil) and `max_attempts`, `operation_timeout_ms`,
/// `attempt_timeout_ms`, `connect_timeout_ms` (integers or nil).
#[rustler::nif(schedule = "DirtyIo")]
fn aws_client_new<'a>(env: Env<'a>, reference: Term<'a>, opts: Term<'a>) -> Term<'a> {
    let config = match client_config(opts) {
        Ok(c) => c,
        Err(e) => return error::error_tuple(env, &e),
    };
    runtime::started(
        env,
        runtime::spawn_reply(env, reference, AwsClient::new(config), |env, client| {
            ResourceArc::new(ClientResource { client }).encode(env)
        }),
    )
}

/// `aws_describe_instances(client, ref, filters, instance_ids, page_size)`: replies
/// `{:ok, %{instances: [map], pages: n}}` after reading every page.
#[rustler::nif(schedule = "DirtyIo")]
fn aws_describe_instances<'a>(
    env: Env<'a>,
    client: ResourceArc<ClientResource>,
    reference: Term<'a>,
    filters: Vec<(String, Vec<String>)>,
    instance_ids: Vec<String>,
    page_size: Option<i32>,
) -> Term<'a> {
    let query = InstanceQuery {
        filters,
        instance_ids,
        page_size,
    };
    if let Err(e) = query.validate() {
        return error::error_tuple(env, &e);
    }
    let client = client.client.clone();
    let work = async move { client.describe_instances(&query).await };
    runtime::started(
        env,
        runtime::spawn_reply(env, reference, work, instance_listing),
    )
}

/// Benchmark baseline only (`bench/schedulers.exs`): the same query as
/// `aws_describe_instances`, but waited for *on the calling scheduler thread*, the very
/// thing the async protocol exists to avoid. It answers `{:ok, %{instances, pages}}` or
/// an error directly instead of a message. No library code calls it, and it is only
/// compiled with the `bench` feature (`AWS_CLUSTER_NIF_FEATURES=bench`), so a
/// production library cannot block a scheduler through it.
#[cfg(feature = "bench")]
#[rustler::nif]
fn aws_describe_instances_blocking<'a>(
    env: Env<'a>,
    client: ResourceArc<ClientResource>,
    filters: Vec<(String, Vec<String>)>,
    instance_ids: Vec<String>,
    page_size: Option<i32>,
) -> Term<'a> {
    let query = InstanceQuery {
        filters,
        instance_ids,
        page_size,
    };
    let outcome = query.validate().and_then(|()| {
        runtime::runtime().and_then(|rt| rt.block_on(client.client.describe_instances(&query)))
    });
    match outcome {
        Ok(listing) => (crate::atoms::ok(), instance_listing(env, listing)).encode(env),
        Err(e) => error::error_tuple(env, &e),
    }
}

fn instance_listing(env: Env<'_>, listing: Listing<Instance>) -> Term<'_> {
    listing_map(env, keys::instances(), &listing, instance)
}

/// `%{<key> => [item], pages: n}`: how every describe call answers.
fn listing_map<'a, T>(
    env: Env<'a>,
    key: Atom,
    listing: &Listing<T>,
    item: fn(Env<'a>, &T) -> Term<'a>,
) -> Term<'a> {
    let items: Vec<Term> = listing.items.iter().map(|i| item(env, i)).collect();
    map(env, &[(key, &items), (keys::pages(), &listing.pages)])
}

/// `aws_describe_auto_scaling_groups(client, ref, names)`: replies
/// `{:ok, %{groups: [map], pages: n}}`; no names means every group.
#[cfg(feature = "autoscaling")]
#[rustler::nif(schedule = "DirtyIo")]
fn aws_describe_auto_scaling_groups<'a>(
    env: Env<'a>,
    client: ResourceArc<ClientResource>,
    reference: Term<'a>,
    names: Vec<String>,
) -> Term<'a> {
    let client = client.client.clone();
    let work = async move { client.describe_auto_scaling_groups(&names).await };
    runtime::started(
        env,
        runtime::spawn_reply(env, reference, work, |env, listing: Listing<Group>| {
            listing_map(env, keys::groups(), &listing, group)
        }),
    )
}

/// `aws_describe_ecs_tasks(client, ref, query)`: replies `{:ok, %{tasks: [map], pages: n}}`
/// after reading every ListTasks page and describing every task. `query` is a map with
/// `cluster` (required) and `family`, `service_name`, `started_by`, `launch_type`
/// (binaries or nil).
#[cfg(feature = "ecs")]
#[rustler::nif(schedule = "DirtyIo")]
fn aws_describe_ecs_tasks<'a>(
    env: Env<'a>,
    client: ResourceArc<ClientResource>,
    reference: Term<'a>,
    query: Term<'a>,
) -> Term<'a> {
    let query = match task_query(query) {
        Ok(q) => q,
        Err(e) => return error::error_tuple(env, &e),
    };
    let client = client.client.clone();
    let work = async move { client.ecs_tasks(&query).await };
    runtime::started(
        env,
        runtime::spawn_reply(env, reference, work, |env, listing: Listing<Task>| {
            listing_map(env, keys::tasks(), &listing, task)
        }),
    )
}

/// `aws_describe_container_instances(client, ref, cluster, arns)`: replies
/// `{:ok, %{container_instances: [map], pages: n}}`.
#[cfg(feature = "ecs")]
#[rustler::nif(schedule = "DirtyIo")]
fn aws_describe_container_instances<'a>(
    env: Env<'a>,
    client: ResourceArc<ClientResource>,
    reference: Term<'a>,
    cluster: String,
    arns: Vec<String>,
) -> Term<'a> {
    let client = client.client.clone();
    let work = async move { client.ecs_container_instances(&cluster, &arns).await };
    runtime::started(
        env,
        runtime::spawn_reply(
            env,
            reference,
            work,
            |env, listing: Listing<ContainerInstance>| {
                listing_map(
                    env,
                    keys::container_instances(),
                    &listing,
                    container_instance,
                )
            },
        ),
    )
}

#[cfg(feature = "ecs")]
fn task_query(opts: Term<'_>) -> Result<TaskQuery, Error> {
    if !opts.is_map() {
        return Err(invalid("the ECS task query must be a map"));
    }
    let cluster: Option<String> = field(opts, keys::cluster(), "cluster", "a binary")?;
    let query = TaskQuery {
        cluster: cluster.ok_or_else(|| invalid("the ECS task query needs a cluster"))?,
        family: field(opts, keys::family(), "family", "a binary")?,
        service_name: field(opts, keys::service_name(), "service_name", "a binary")?,
        started_by: field(opts, keys::started_by(), "started_by", "a binary")?,
        launch_type: field(opts, keys::launch_type(), "launch_type", "a binary")?,
    };
    query.validate()?;
    Ok(query)
}

#[cfg(feature = "ecs")]
fn task<'a>(env: Env<'a>, t: &Task) -> Term<'a> {
    let tags = t.tags.iter().fold(Term::map_new(env), |m, (k, v)| {
        m.map_put(k.as_str(), v.as_str()).unwrap_or(m)
    });
    let state = match t.state {
        TaskState::Running => keys::running(),
        TaskState::Gone => keys::gone(),
        TaskState::Starting => keys::starting(),
    };
    map(
        env,
        &[
            (keys::arn(), &t.arn),
            (keys::cluster_arn(), &t.cluster_arn),
            (keys::family(), &t.family),
            (keys::group(), &t.group),
            (keys::last_status(), &t.last_status),
            (keys::state(), &state),
            (keys::availability_zone(), &t.availability_zone),
            (keys::launch_type(), &t.launch_type),
            (keys::container_instance_arn(), &t.container_instance_arn),
            (keys::address(), &t.address),
            (keys::tags(), &tags),
        ],
    )
}

#[cfg(feature = "ecs")]
fn container_instance<'a>(env: Env<'a>, c: &ContainerInstance) -> Term<'a> {
    map(
        env,
        &[
            (keys::arn(), &c.arn),
            (keys::ec2_instance_id(), &c.ec2_instance_id),
            (keys::status(), &c.status),
        ],
    )
}

fn client_config(opts: Term<'_>) -> Result<ClientConfig, Error> {
    if !opts.is_map() {
        return Err(invalid("the AWS client options must be a map"));
    }
    let region: Option<String> = field(opts, keys::region(), "region", "a binary")?;
    let region = region.ok_or_else(|| invalid("the AWS client options need a region"))?;
    let mut c = ClientConfig::new(region);
    c.endpoint = field(opts, keys::endpoint(), "endpoint", "a binary")?;
    c.access_key_id = field(opts, keys::access_key_id(), "access_key_id", "a binary")?;
    c.secret_access_key = field(
        opts,
        keys::secret_access_key(),
        "secret_access_key",
        "a binary",
    )?;
    c.session_token = field(opts, keys::session_token(), "session_token", "a binary")?;
    if let Some(n) = field::<u32>(
        opts,
        keys::max_attempts(),
        "max_attempts",
        "a positive integer",
    )? {
        c.max_attempts = n;
    }
    if let Some(ms) = millis(opts, keys::operation_timeout_ms(), "operation_timeout_ms")? {
        c.operation_timeout = ms;
    }
    c.attempt_timeout = millis(opts, keys::attempt_timeout_ms(), "attempt_timeout_ms")?;
    if let Some(ms) = millis(opts, keys::connect_timeout_ms(), "connect_timeout_ms")? {
        c.connect_timeout = ms;
    }
    c.validate()?;
    Ok(c)
}

fn millis(opts: Term<'_>, key: Atom, name: &'static str) -> Result<Option<Duration>, Error> {
    Ok(field::<u64>(opts, key, name, "a non-negative integer (ms)")?.map(Duration::from_millis))
}

/// `opts[key]`: absent or nil is `None`; anything else must decode as `T`.
pub(crate) fn field<'a, T: rustler::Decoder<'a>>(
    opts: Term<'a>,
    key: Atom,
    name: &'static str,
    expected: &str,
) -> Result<Option<T>, Error> {
    match opts.map_get(key) {
        Err(_) => Ok(None),
        Ok(v) if crate::atoms::nil() == v => Ok(None),
        Ok(v) => v.decode::<T>().map(Some).map_err(|_| {
            invalid(&format!("option {name} must be {expected}")).with_detail("key", name)
        }),
    }
}

pub(crate) fn invalid(message: &str) -> Error {
    Error::new(Reason::InvalidArgument, message)
}

/// A map with atom keys, each value encoded here so callers list fields, not encodings;
/// keys are distinct by construction.
pub(crate) fn map<'a>(env: Env<'a>, pairs: &[(Atom, &dyn Encoder)]) -> Term<'a> {
    let keys: Vec<Term> = pairs.iter().map(|(k, _)| k.encode(env)).collect();
    let values: Vec<Term> = pairs.iter().map(|(_, v)| v.encode(env)).collect();
    match Term::map_from_term_arrays(env, &keys, &values) {
        Ok(m) => m,
        Err(_) => keys
            .iter()
            .zip(&values)
            .fold(Term::map_new(env), |m, (k, v)| {
                m.map_put(*k, *v).unwrap_or(m)
            }),
    }
}

fn instance<'a>(env: Env<'a>, i: &Instance) -> Term<'a> {
    let tags = i.tags.iter().fold(Term::map_new(env), |m, (k, v)| {
        m.map_put(k.as_str(), v.as_str()).unwrap_or(m)
    });
    let enis: Vec<Term> = i
        .network_interfaces
        .iter()
        .map(|n| interface(env, n))
        .collect();
    map(
        env,
        &[
            (keys::id(), &i.id),
            (keys::state(), &i.state),
            (keys::private_ip(), &i.private_ip),
            (keys::public_ip(), &i.public_ip),
            (keys::private_dns(), &i.private_dns),
            (keys::ipv6(), &i.ipv6),
            (keys::availability_zone(), &i.availability_zone),
            (keys::subnet_id(), &i.subnet_id),
            (keys::vpc_id(), &i.vpc_id),
            (keys::tags(), &tags),
            (keys::launch_time(), &i.launch_time),
            (keys::network_interfaces(), &enis),
        ],
    )
}

fn interface<'a>(env: Env<'a>, n: &NetworkInterface) -> Term<'a> {
    map(
        env,
        &[
            (keys::id(), &n.id),
            (keys::device_index(), &n.device_index),
            (keys::subnet_id(), &n.subnet_id),
            (keys::private_ips(), &n.private_ips),
            (keys::ipv6(), &n.ipv6),
        ],
    )
}

#[cfg(feature = "autoscaling")]
fn group<'a>(env: Env<'a>, g: &Group) -> Term<'a> {
    let instances: Vec<Term> = g.instances.iter().map(|i| group_instance(env, i)).collect();
    map(
        env,
        &[
            (keys::name(), &g.name),
            (keys::desired_capacity(), &g.desired_capacity),
            (keys::instances(), &instances),
        ],
    )
}

#[cfg(feature = "autoscaling")]
fn group_instance<'a>(env: Env<'a>, i: &GroupInstance) -> Term<'a> {
    map(
        env,
        &[
            (keys::id(), &i.id),
            (keys::lifecycle_state(), &i.lifecycle_state),
            (keys::health_status(), &i.health_status),
            (keys::availability_zone(), &i.availability_zone),
        ],
    )
}
