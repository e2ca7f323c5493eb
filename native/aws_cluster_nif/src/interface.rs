//! `interface_*` NIFs over `aws_cluster_core::interface`.
//!
//! getifaddrs talks netlink to the kernel; it runs on a dirty IO scheduler so a slow
//! kernel answer can never hold up a normal scheduler.

use crate::{atoms, error};
use aws_cluster_core::interface::{self, Family, InterfaceAddress};
use rustler::{Encoder, Env, Term};
use std::net::IpAddr;

#[rustler::nif(schedule = "DirtyIo")]
fn interface_addresses(env: Env<'_>) -> Term<'_> {
    match interface::snapshot() {
        Ok(snap) => {
            let list: Vec<Term> = snap
                .addresses
                .iter()
                .map(|a| encode_address(env, a))
                .collect();
            let names: Vec<&str> = snap.names.iter().map(String::as_str).collect();
            (atoms::ok(), list, names).encode(env)
        }
        Err(e) => error::error_tuple(env, &e),
    }
}

#[rustler::nif(schedule = "DirtyIo")]
fn interface_address<'a>(env: Env<'a>, name: String, family: String) -> Term<'a> {
    let result = Family::parse(&family).and_then(|f| interface::address(&name, f));
    match result {
        Ok(ip) => (atoms::ok(), encode_ip(env, ip)).encode(env),
        Err(e) => error::error_tuple(env, &e),
    }
}

fn encode_address<'a>(env: Env<'a>, a: &InterfaceAddress) -> Term<'a> {
    let family = match a.family {
        Family::Inet => atoms::inet(),
        Family::Inet6 => atoms::inet6(),
    };
    let netmask = match a.netmask {
        Some(ip) => encode_ip(env, ip),
        None => atoms::nil().encode(env),
    };
    (
        a.name.as_str(),
        family,
        encode_ip(env, a.address),
        netmask,
        &a.flags,
    )
        .encode(env)
}

/// An `:inet.ip_address()` tuple.
pub fn encode_ip(env: Env<'_>, ip: IpAddr) -> Term<'_> {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, d] = v4.octets();
            (a, b, c, d).encode(env)
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            let terms: Vec<Term> = s.iter().map(|x| x.encode(env)).collect();
            rustler::types::tuple::make_tuple(env, &terms)
        }
    }
}
