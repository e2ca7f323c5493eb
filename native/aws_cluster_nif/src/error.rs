//! Encoding of core errors as `{reason, message, details}` for `AWSCluster.Error`.

use aws_cluster_core::error::Detail;
use aws_cluster_core::Error;
use rustler::{Atom, Encoder, Env, Term};

/// `{reason_atom, message, %{key_atom => value}}`; reasons and keys are static strings.
pub fn encode<'a>(env: Env<'a>, err: &Error) -> Term<'a> {
    let reason = atom(env, err.reason.as_str());
    let mut details = Term::map_new(env);
    for (key, value) in &err.details {
        let value = match value {
            Detail::Text(text) => text.as_str().encode(env),
            Detail::Number(n) => n.encode(env),
        };
        if let Ok(next) = details.map_put(atom(env, key), value) {
            details = next;
        }
    }
    (reason, err.message.as_str(), details).encode(env)
}

/// `{:error, {reason, message, details}}`.
pub fn error_tuple<'a>(env: Env<'a>, err: &Error) -> Term<'a> {
    (crate::atoms::error(), encode(env, err)).encode(env)
}

fn atom<'a>(env: Env<'a>, name: &str) -> Term<'a> {
    match Atom::from_str(env, name) {
        Ok(a) => a.encode(env),
        Err(_) => crate::atoms::error().encode(env),
    }
}
