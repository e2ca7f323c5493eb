//! `gossip_*` NIFs over `aws_cluster_core::gossip`: key rings and replay guards as
//! resources, sealing and opening packets.
//!
//! Scheduler choice, from bench/gossip.exs (release build, 2-core VM): per call, including
//! the Elixir wrapper, gossip_seal of a 192-byte heartbeat about 6 µs (most of it building
//! the message map), gossip_open 1.9 µs, junk rejected by open 0.3 µs, gossip_keyring_new
//! 2-4 µs. All are far below the 100 µs the design draws the line at and the ~1 ms of a
//! timeslice, so they run on normal schedulers: a dirty hop would cost more than the work.
//!
//! Each call reports its measured cost to the scheduler (`enif_consume_timeslice`, 1% per
//! 10 µs): without it a NIF call counts as one reduction and a process looping over
//! packets ran for many milliseconds between yields. Bench, 1M seal+open: 11,843
//! `long_schedule` (>= 1 ms) events before, 1,649 after, 813 for the pure-Elixir baseline
//! in the same run (the rest is the loaded box preempting scheduler threads).
//!
//! Replay state lives in a resource behind a `Mutex`, not in Elixir: `admit` must run in
//! the same call that authenticated the packet, or a replay could slip in between, and each
//! receiver owns one guard so the lock is never contended.
//!
//! Reason atoms are a fixed list below; node names and metadata come back as binaries. No
//! atom is ever made from packet data.

use crate::{atoms, error};
use aws_cluster_core::gossip::{self, Keyring, Kind, Message, Reject, ReplayGuard};
use rustler::schedule::consume_timeslice;
use rustler::{Atom, Binary, Encoder, Env, NewBinary, NifResult, Resource, ResourceArc, Term};
use std::sync::Mutex;
use std::time::Instant;

mod gossip_atoms {
    rustler::atoms! {
        announce,
        leave,
        kind,
        name,
        boot_id,
        seq,
        timestamp,
        meta,
        too_short,
        too_large,
        bad_version,
        wrong_label,
        unknown_key,
        auth_failed,
        malformed,
        bad_name,
        stale,
        future,
        replayed,
        too_many_senders,
        internal,
    }
}

use gossip_atoms as ga;

pub struct KeyringResource(Keyring);

#[rustler::resource_impl]
impl Resource for KeyringResource {}

pub struct ReplayResource(Mutex<ReplayGuard>);

#[rustler::resource_impl]
impl Resource for ReplayResource {}

#[rustler::nif]
fn gossip_keyring_new<'a>(
    env: Env<'a>,
    secrets: Vec<Binary<'a>>,
    label: Binary<'a>,
    insecure: bool,
) -> Term<'a> {
    let started = Instant::now();
    let secrets: Vec<&[u8]> = secrets.iter().map(|b| b.as_slice()).collect();
    let reply = match Keyring::new(&secrets, label.as_slice(), insecure) {
        Ok(ring) => (atoms::ok(), ResourceArc::new(KeyringResource(ring))).encode(env),
        Err(e) => error::error_tuple(env, &e),
    };
    charge(env, started);
    reply
}

/// Key ids of the ring in order (the first seals), as 4-byte binaries: safe to log.
#[rustler::nif]
fn gossip_keyring_ids<'a>(env: Env<'a>, ring: ResourceArc<KeyringResource>) -> Term<'a> {
    let ids: Vec<Term> = ring.0.key_ids().iter().map(|id| binary(env, id)).collect();
    ids.encode(env)
}

#[rustler::nif]
fn gossip_replay_new(max_senders: usize, window_ms: u64) -> ResourceArc<ReplayResource> {
    ResourceArc::new(ReplayResource(Mutex::new(ReplayGuard::new(
        max_senders,
        window_ms,
    ))))
}

#[allow(clippy::too_many_arguments)]
#[rustler::nif]
fn gossip_seal<'a>(
    env: Env<'a>,
    ring: ResourceArc<KeyringResource>,
    kind: Atom,
    name: Binary<'a>,
    boot_id: u64,
    seq: u64,
    timestamp_ms: u64,
    meta: Vec<(Binary<'a>, Binary<'a>)>,
) -> Term<'a> {
    let result =
        message(kind, &name, boot_id, seq, timestamp_ms, &meta).and_then(|m| ring.0.seal(&m));
    match result {
        Ok(packet) => (atoms::ok(), binary(env, &packet)).encode(env),
        Err(e) => error::error_tuple(env, &e),
    }
}

/// `replay` is a guard from `gossip_replay_new` or `nil` (timestamp window of
/// `gossip::DEFAULT_WINDOW_MS`, no replay check: for tools, never for a receiver).
#[rustler::nif]
fn gossip_open<'a>(
    env: Env<'a>,
    ring: ResourceArc<KeyringResource>,
    replay: Term<'a>,
    packet: Binary<'a>,
    now_ms: u64,
) -> NifResult<Term<'a>> {
    let started = Instant::now();
    // Only an explicit `nil` skips the replay check: any other non-guard term is a
    // caller bug, and failing open there would silently accept replays.
    let result = if let Ok(guard) = replay.decode::<ResourceArc<ReplayResource>>() {
        match guard.0.lock() {
            Ok(mut g) => gossip::open(&ring.0, &mut g, packet.as_slice(), now_ms).map_err(Some),
            // A poisoned lock means an earlier call panicked mid-update; refuse rather
            // than trust half-written replay state.
            Err(_) => Err(None),
        }
    } else if replay.decode::<Atom>().is_ok_and(|a| a == atoms::nil()) {
        ring.0
            .open(packet.as_slice(), now_ms, gossip::DEFAULT_WINDOW_MS)
            .map_err(Some)
    } else {
        return Err(rustler::Error::BadArg);
    };
    let reply = match result {
        Ok(m) => (atoms::ok(), encode_message(env, &m)).encode(env),
        Err(Some(reason)) => (atoms::error(), reject_atom(reason)).encode(env),
        Err(None) => (atoms::error(), ga::internal()).encode(env),
    };
    charge(env, started);
    Ok(reply)
}

/// Tells the scheduler what the call really cost: 1% of a timeslice per 10 µs, at least
/// 1%, so a process looping over packets yields on time whatever the build or load.
fn charge(env: Env<'_>, started: Instant) {
    let percent = (started.elapsed().as_micros() / 10).clamp(1, 100) as i32;
    consume_timeslice(env, percent);
}

fn message(
    kind: Atom,
    name: &Binary,
    boot_id: u64,
    seq: u64,
    timestamp_ms: u64,
    meta: &[(Binary, Binary)],
) -> aws_cluster_core::Result<Message> {
    use aws_cluster_core::{Error, Reason};
    let invalid = |key: &'static str, text: &str| {
        Error::new(Reason::InvalidArgument, text).with_detail("key", key)
    };
    let kind = if kind == ga::announce() {
        Kind::Announce
    } else if kind == ga::leave() {
        Kind::Leave
    } else {
        return Err(invalid("kind", "kind must be :announce or :leave"));
    };
    let text = |b: &Binary, key: &'static str| {
        std::str::from_utf8(b.as_slice())
            .map(str::to_string)
            .map_err(|_| invalid(key, "must be UTF-8"))
    };
    let meta = meta
        .iter()
        .map(|(k, v)| Ok((text(k, "meta")?, text(v, "meta")?)))
        .collect::<aws_cluster_core::Result<Vec<_>>>()?;
    Ok(Message {
        kind,
        name: text(name, "name")?,
        boot_id,
        seq,
        timestamp_ms,
        meta,
    })
}

fn encode_message<'a>(env: Env<'a>, m: &Message) -> Term<'a> {
    let kind = match m.kind {
        Kind::Announce => ga::announce(),
        Kind::Leave => ga::leave(),
    };
    let meta: Vec<(Term, Term)> = m
        .meta
        .iter()
        .map(|(k, v)| (binary(env, k.as_bytes()), binary(env, v.as_bytes())))
        .collect();
    let meta = Term::map_from_pairs(env, &meta).unwrap_or_else(|_| Term::map_new(env));
    let keys = [
        ga::kind().encode(env),
        ga::name().encode(env),
        ga::boot_id().encode(env),
        ga::seq().encode(env),
        ga::timestamp().encode(env),
        ga::meta().encode(env),
    ];
    let values = [
        kind.encode(env),
        binary(env, m.name.as_bytes()),
        m.boot_id.encode(env),
        m.seq.encode(env),
        m.timestamp_ms.encode(env),
        meta,
    ];
    Term::map_from_arrays(env, &keys, &values).unwrap_or_else(|_| Term::map_new(env))
}

fn reject_atom(reason: Reject) -> Atom {
    match reason {
        Reject::TooShort => ga::too_short(),
        Reject::TooLarge => ga::too_large(),
        Reject::BadVersion => ga::bad_version(),
        Reject::WrongLabel => ga::wrong_label(),
        Reject::UnknownKey => ga::unknown_key(),
        Reject::AuthFailed => ga::auth_failed(),
        Reject::Malformed => ga::malformed(),
        Reject::BadName => ga::bad_name(),
        Reject::Stale => ga::stale(),
        Reject::Future => ga::future(),
        Reject::Replayed => ga::replayed(),
        Reject::TooManySenders => ga::too_many_senders(),
    }
}

/// A process-heap binary (at most 1,400 bytes here): no refc allocation per field.
fn binary<'a>(env: Env<'a>, bytes: &[u8]) -> Term<'a> {
    let mut bin = NewBinary::new(env, bytes.len());
    bin.as_mut_slice().copy_from_slice(bytes);
    bin.into()
}
