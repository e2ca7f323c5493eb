//! The one tokio runtime shared by every async NIF, and the reply protocol.
//!
//! A NIF that does network work validates its arguments, calls [`spawn_reply`] and returns
//! `:ok` at once; the task later sends `{:aws_cluster, ref, {:ok, value} | {:error, e}}` to
//! the calling process. A panic in the task still produces an `{:error, {:internal, ...}}`
//! reply, so an Elixir caller is never left waiting for a message that cannot come.

use crate::{atoms, error};
use aws_cluster_core::{Error, Reason};
use rustler::env::SavedTerm;
use rustler::{Encoder, Env, LocalPid, OwnedEnv, Term};
use std::future::Future;
use std::sync::OnceLock;
use std::time::Duration;
use tokio::runtime::Runtime;

/// Two workers are plenty: every task is network-bound, and the BEAM owns the cores.
const WORKERS: usize = 2;

static RUNTIME: OnceLock<Result<Runtime, String>> = OnceLock::new();

/// The shared runtime, built on first use.
pub(crate) fn runtime() -> Result<&'static Runtime, Error> {
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(WORKERS)
                .max_blocking_threads(2)
                .thread_name("aws_cluster")
                // Best effort: on failure the threads keep the default policy.
                .on_thread_start(|| {
                    aws_cluster_core::sched::batch_current_thread();
                })
                .enable_all()
                .build()
                .map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| Error::new(Reason::Internal, format!("cannot start tokio runtime: {e}")))
}

/// Runs `work` on the shared runtime and sends its result, encoded by `encode`, to the
/// calling process tagged with `reference`.
pub fn spawn_reply<'a, T, W, E>(
    env: Env<'a>,
    reference: Term<'a>,
    work: W,
    encode: E,
) -> Result<(), Error>
where
    T: Send + 'static,
    W: Future<Output = Result<T, Error>> + Send + 'static,
    E: for<'b> FnOnce(Env<'b>, T) -> Term<'b> + Send + 'static,
{
    let rt = runtime()?;
    let pid = env.pid();
    let mut owned = OwnedEnv::new();
    let saved = owned.save(reference);
    // One hand-off from the scheduler thread (one queue push, at most one wake-up); the
    // work itself is spawned from inside the runtime, where a spawn is a local push, so
    // that a panic in it is caught as a JoinError and still answered.
    rt.spawn(async move {
        let outcome = match tokio::spawn(work).await {
            Ok(result) => result,
            Err(join) if join.is_panic() => Err(Error::new(
                Reason::Internal,
                "aws_cluster native task panicked; this is a bug, please report it",
            )),
            Err(_) => Err(Error::new(Reason::Internal, "native task was cancelled")),
        };
        send(&mut owned, &pid, saved, outcome, encode);
    });
    Ok(())
}

fn send<T, E>(
    owned: &mut OwnedEnv,
    pid: &LocalPid,
    saved: SavedTerm,
    outcome: Result<T, Error>,
    encode: E,
) where
    E: for<'b> FnOnce(Env<'b>, T) -> Term<'b>,
{
    // The receiver may have died meanwhile; then there is nobody left to tell.
    let _ = owned.send_and_clear(pid, move |env| {
        let reply = match outcome {
            Ok(value) => (atoms::ok(), encode(env, value)).encode(env),
            Err(e) => error::error_tuple(env, &e),
        };
        (atoms::aws_cluster(), saved.load(env), reply).encode(env)
    });
}

/// `:ok` when the work was handed to the runtime, `{:error, e}` when it could not be.
pub fn started<'a>(env: Env<'a>, result: Result<(), Error>) -> Term<'a> {
    match result {
        Ok(()) => atoms::ok().encode(env),
        Err(e) => error::error_tuple(env, &e),
    }
}

/// Exercises the reply protocol without any AWS: replies `{:ok, delay_ms}` after
/// `delay_ms`, or panics inside the task when `panic` is true. Used by the test suite
/// and the scheduler benchmark as the smallest possible async call.
#[rustler::nif(schedule = "DirtyIo")]
fn runtime_probe<'a>(env: Env<'a>, reference: Term<'a>, delay_ms: u64, panic: bool) -> Term<'a> {
    let work = async move {
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        if panic {
            panic!("runtime_probe asked to panic");
        }
        Ok(delay_ms)
    };
    started(
        env,
        spawn_reply(env, reference, work, |env, v: u64| v.encode(env)),
    )
}

/// Number of worker threads the shared runtime runs (0 before first use).
#[rustler::nif]
fn runtime_workers() -> usize {
    match RUNTIME.get() {
        Some(Ok(rt)) => rt.metrics().num_workers(),
        _ => 0,
    }
}
