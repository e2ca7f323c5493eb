//! Interface addresses from `getifaddrs(3)`.
//!
//! The node names itself after the address of the interface that carries cluster traffic
//! (Weave's `ethwe`, a second ENI), so lookups must say precisely what exists when the
//! asked-for interface or address family is missing.

use crate::error::{Error, Reason, Result};
use std::ffi::CStr;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Address family, as `:inet` / `:inet6` in Elixir.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Inet,
    Inet6,
}

impl Family {
    pub fn as_str(self) -> &'static str {
        match self {
            Family::Inet => "inet",
            Family::Inet6 => "inet6",
        }
    }

    pub fn parse(name: &str) -> Result<Family> {
        match name {
            "inet" => Ok(Family::Inet),
            "inet6" => Ok(Family::Inet6),
            other => Err(Error::new(
                Reason::InvalidArgument,
                format!("family must be inet or inet6, got {other:?}"),
            )),
        }
    }
}

/// Interface flags worth knowing when picking a cluster interface.
pub const FLAG_NAMES: [(libc::c_uint, &str); 6] = [
    (libc::IFF_UP as libc::c_uint, "up"),
    (libc::IFF_RUNNING as libc::c_uint, "running"),
    (libc::IFF_LOOPBACK as libc::c_uint, "loopback"),
    (libc::IFF_BROADCAST as libc::c_uint, "broadcast"),
    (libc::IFF_POINTOPOINT as libc::c_uint, "pointtopoint"),
    (libc::IFF_MULTICAST as libc::c_uint, "multicast"),
];

/// One address of one interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceAddress {
    pub name: String,
    pub family: Family,
    pub address: IpAddr,
    pub netmask: Option<IpAddr>,
    pub flags: Vec<&'static str>,
}

/// Everything `getifaddrs` reports: the IP addresses, and the names of all interfaces,
/// including those that have no IP address at all.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub addresses: Vec<InterfaceAddress>,
    pub names: Vec<String>,
}

/// Reads every interface and its IPv4/IPv6 addresses.
pub fn snapshot() -> Result<Snapshot> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list we own until freeifaddrs.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        let err = std::io::Error::last_os_error();
        return Err(Error::new(
            Reason::Internal,
            format!("getifaddrs failed: {err}"),
        ));
    }
    let mut snap = Snapshot::default();
    let mut cursor = head;
    while !cursor.is_null() {
        // SAFETY: cursor is a valid node of the list returned by getifaddrs.
        let entry = unsafe { &*cursor };
        cursor = entry.ifa_next;
        if entry.ifa_name.is_null() {
            continue;
        }
        // SAFETY: ifa_name is a NUL-terminated string owned by the list.
        let name = unsafe { CStr::from_ptr(entry.ifa_name) }
            .to_string_lossy()
            .into_owned();
        if !snap.names.contains(&name) {
            snap.names.push(name.clone());
        }
        // SAFETY: the sockaddr pointers come from getifaddrs and are null or valid.
        let address = unsafe { sockaddr_ip(entry.ifa_addr) };
        let Some(address) = address else { continue };
        let netmask = unsafe { sockaddr_ip(entry.ifa_netmask) };
        let family = if address.is_ipv4() {
            Family::Inet
        } else {
            Family::Inet6
        };
        let flags = FLAG_NAMES
            .iter()
            .filter(|(bit, _)| entry.ifa_flags & bit != 0)
            .map(|(_, n)| *n)
            .collect();
        snap.addresses.push(InterfaceAddress {
            name,
            family,
            address,
            netmask,
            flags,
        });
    }
    // SAFETY: head came from a successful getifaddrs and is freed exactly once.
    unsafe { libc::freeifaddrs(head) };
    Ok(snap)
}

/// The address of `name` in `family`, preferring one that is not IPv6 link-local
/// (a link-local address needs a scope id and cannot name a node).
pub fn address(name: &str, family: Family) -> Result<IpAddr> {
    select(&snapshot()?, name, family)
}

/// The selection rule of [`address`], on a given snapshot.
pub fn select(snap: &Snapshot, name: &str, family: Family) -> Result<IpAddr> {
    if !snap.names.iter().any(|n| n == name) {
        return Err(Error::new(
            Reason::NoSuchInterface,
            format!(
                "no interface named {name:?}; interfaces here: {}",
                snap.names.join(", ")
            ),
        )
        .with_detail("interface", name)
        .with_detail("available", snap.names.join(",")));
    }
    let mut candidates: Vec<IpAddr> = snap
        .addresses
        .iter()
        .filter(|a| a.name == name && a.family == family)
        .map(|a| a.address)
        .collect();
    candidates.sort_by_key(is_link_local);
    candidates.into_iter().next().ok_or_else(|| {
        let has: Vec<String> = snap
            .addresses
            .iter()
            .filter(|a| a.name == name)
            .map(|a| a.address.to_string())
            .collect();
        let has = if has.is_empty() {
            "none".to_string()
        } else {
            has.join(", ")
        };
        Error::new(
            Reason::NoAddress,
            format!(
                "interface {name:?} has no {} address (addresses it has: {has})",
                family.as_str()
            ),
        )
        .with_detail("interface", name)
        .with_detail("family", family.as_str())
    })
}

fn is_link_local(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) == 0xfe80,
    }
}

/// Converts an AF_INET/AF_INET6 sockaddr; anything else (AF_PACKET ...) is `None`.
///
/// # Safety
/// `sa` must be null or point to a sockaddr of the size its family implies.
unsafe fn sockaddr_ip(sa: *const libc::sockaddr) -> Option<IpAddr> {
    if sa.is_null() {
        return None;
    }
    match (*sa).sa_family as libc::c_int {
        libc::AF_INET => {
            let sin = &*(sa as *const libc::sockaddr_in);
            Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(
                sin.sin_addr.s_addr,
            ))))
        }
        libc::AF_INET6 => {
            let sin6 = &*(sa as *const libc::sockaddr_in6);
            Some(IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr)))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(name: &str, ip: &str) -> InterfaceAddress {
        let address: IpAddr = ip.parse().unwrap();
        InterfaceAddress {
            name: name.into(),
            family: if address.is_ipv4() {
                Family::Inet
            } else {
                Family::Inet6
            },
            address,
            netmask: None,
            flags: vec!["up"],
        }
    }

    #[test]
    fn loopback_has_127_0_0_1() {
        let snap = snapshot().unwrap();
        let lo = snap
            .addresses
            .iter()
            .find(|a| a.name == "lo" && a.family == Family::Inet)
            .expect("lo has an IPv4 address");
        assert_eq!(lo.address, IpAddr::V4(Ipv4Addr::LOCALHOST));
        assert_eq!(lo.netmask, Some("255.0.0.0".parse().unwrap()));
        assert!(lo.flags.contains(&"loopback"));
        assert_eq!(
            address("lo", Family::Inet).unwrap(),
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        );
    }

    #[test]
    fn unknown_interface_lists_the_real_ones() {
        let err = address("nope0", Family::Inet).unwrap_err();
        assert_eq!(err.reason, Reason::NoSuchInterface);
        assert!(err.message.contains("nope0"));
        assert!(err.message.contains("lo"), "{}", err.message);
    }

    #[test]
    fn interface_without_that_family_is_no_address() {
        let snap = Snapshot {
            addresses: vec![addr("ethwe", "10.32.0.2")],
            names: vec!["ethwe".into(), "bare".into()],
        };
        let err = select(&snap, "ethwe", Family::Inet6).unwrap_err();
        assert_eq!(err.reason, Reason::NoAddress);
        assert!(err.message.contains("10.32.0.2"));
        let err = select(&snap, "bare", Family::Inet).unwrap_err();
        assert_eq!(err.reason, Reason::NoAddress);
        assert!(err.message.contains("none"));
    }

    #[test]
    fn global_ipv6_is_preferred_over_link_local() {
        let snap = Snapshot {
            addresses: vec![addr("eth1", "fe80::1"), addr("eth1", "fd00::5")],
            names: vec!["eth1".into()],
        };
        assert_eq!(
            select(&snap, "eth1", Family::Inet6).unwrap(),
            "fd00::5".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn family_parse_rejects_unknown() {
        assert_eq!(Family::parse("inet6").unwrap(), Family::Inet6);
        assert_eq!(
            Family::parse("ipx").unwrap_err().reason,
            Reason::InvalidArgument
        );
    }
}
