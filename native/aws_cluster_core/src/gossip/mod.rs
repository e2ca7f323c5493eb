//! Authenticated gossip packets: sealing, opening, the key ring and replay protection.
//!
//! A gossip packet is one UDP datagram that tells the receivers "node `name@host` is alive"
//! (announce) or "is leaving, do not redial" (leave). It is encrypted and authenticated with
//! ChaCha20-Poly1305 under a key derived by HKDF-SHA256 from a configured secret, so a
//! receiver believes nothing it cannot authenticate, and nothing it has seen before.
//!
//! # Wire format, version 1
//!
//! All integers are big-endian. A packet is never larger than [`MAX_PACKET`] (1,400) bytes,
//! so it fits one Ethernet frame with room for IPv6 + UDP headers and is never fragmented.
//!
//! ```text
//! offset  size  field
//!      0     1  version           0x01
//!      1     4  label tag         SHA-256("aws_cluster/gossip/v1/label:" || label)[0..4]
//!      5     4  key id            HKDF-Expand(PRK, "aws_cluster/gossip/v1/key-id", 4)
//!      9    12  nonce             random (getrandom) for every packet
//!     21     n  ciphertext        ChaCha20 of the payload below, n = payload length
//!   21+n    16  tag               Poly1305 over AAD and ciphertext
//! ```
//!
//! The associated data is the 21 header bytes followed by the full cluster label, so the
//! version, label tag, key id and nonce cannot be altered, and a packet sealed for another
//! cluster never authenticates even if its 4-byte label tag happens to collide.
//!
//! Keys: `PRK = HKDF-Extract(salt = "aws_cluster/gossip/v1", ikm = secret)`; the AEAD key is
//! `HKDF-Expand(PRK, "aws_cluster/gossip/v1/aead:" || label, 32)`, so one secret reused by two
//! clusters still gives them unrelated keys. The key id only lets a receiver pick the key
//! without trial decryption; it is a PRF output and reveals nothing about the secret.
//!
//! Payload (plaintext, [`MIN_PAYLOAD`] = 31 to 1,363 bytes):
//!
//! ```text
//! offset  size  field
//!      0     1  kind              1 = announce, 2 = leave
//!      1     1  flags             0 (reserved; anything else is malformed)
//!      2     8  boot id           random per sender start; (boot id, seq) orders packets
//!     10     8  seq               per-boot sequence number
//!     18     8  timestamp         sender's wall clock, unix milliseconds
//!     26     1  name length N     3..=255
//!     27     N  node name         `name@host`, see [`validate_name`]
//!   27+N     1  metadata count M  0..=4
//!      then M times:
//!            1  key length K      1..=16
//!            K  key               [a-z0-9_], unique within the packet
//!            1  value length V    0..=64
//!            V  value             printable ASCII 0x20..=0x7e
//! ```
//!
//! Nothing may follow the last metadata entry. There is no compression.
//!
//! # Receiving
//!
//! [`open`] checks, in this order, and stops at the first failure, each with its own
//! [`Reject`] reason: size ([`Reject::TooShort`], [`Reject::TooLarge`]), version
//! ([`Reject::BadVersion`]), label tag ([`Reject::WrongLabel`]), key id
//! ([`Reject::UnknownKey`]), AEAD ([`Reject::AuthFailed`]), payload layout
//! ([`Reject::Malformed`], [`Reject::BadName`]), timestamp window ([`Reject::Stale`],
//! [`Reject::Future`]) and replay ([`Reject::Replayed`], [`Reject::TooManySenders`]).
//! Everything before the AEAD check costs a few comparisons, so junk is cheap to drop.
//!
//! Nonces are random 96-bit values. A fleet of 1,000 nodes announcing every 5 s sends about
//! 6.3e9 packets a year per key; the chance that two of them share a nonce is about
//! n^2 / 2^97, i.e. 2.5e-10. Rotating the secret resets the count.

mod keyring;
mod packet;
mod replay;

#[cfg(test)]
mod mutation_tests;

pub use keyring::{Keyring, MAX_KEYS, MAX_LABEL, MAX_SECRET, MIN_SECRET_LEN};
pub use packet::{validate_name, Kind, Message, MAX_META_ENTRIES, MAX_META_KEY, MAX_META_VALUE};
pub use replay::{ReplayGuard, DEFAULT_MAX_SENDERS, DEFAULT_WINDOW_MS, REORDER_WINDOW};

/// The only wire version this code speaks.
pub const VERSION: u8 = 1;
/// Version, label tag, key id and nonce.
pub const HEADER_LEN: usize = 1 + LABEL_TAG_LEN + KEY_ID_LEN + NONCE_LEN;
pub const LABEL_TAG_LEN: usize = 4;
pub const KEY_ID_LEN: usize = 4;
pub const NONCE_LEN: usize = 12;
pub const TAG_LEN: usize = 16;
/// Hard cap on a datagram, sent or accepted.
pub const MAX_PACKET: usize = 1400;
/// The smallest payload: fixed fields, a 3-byte name (`a@b`) and an empty metadata count.
pub const MIN_PAYLOAD: usize = 27 + 3 + 1;
/// Anything shorter cannot be a packet.
pub const MIN_PACKET: usize = HEADER_LEN + MIN_PAYLOAD + TAG_LEN;

/// Why a datagram was dropped. Each reason becomes one Elixir atom and one counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reject {
    TooShort,
    TooLarge,
    BadVersion,
    WrongLabel,
    UnknownKey,
    AuthFailed,
    Malformed,
    BadName,
    Stale,
    Future,
    Replayed,
    TooManySenders,
}

impl Reject {
    /// Every reason, for callers that keep one counter per reason.
    pub const ALL: [Reject; 12] = [
        Reject::TooShort,
        Reject::TooLarge,
        Reject::BadVersion,
        Reject::WrongLabel,
        Reject::UnknownKey,
        Reject::AuthFailed,
        Reject::Malformed,
        Reject::BadName,
        Reject::Stale,
        Reject::Future,
        Reject::Replayed,
        Reject::TooManySenders,
    ];

    /// The Elixir atom for this reason.
    pub fn as_str(self) -> &'static str {
        match self {
            Reject::TooShort => "too_short",
            Reject::TooLarge => "too_large",
            Reject::BadVersion => "bad_version",
            Reject::WrongLabel => "wrong_label",
            Reject::UnknownKey => "unknown_key",
            Reject::AuthFailed => "auth_failed",
            Reject::Malformed => "malformed",
            Reject::BadName => "bad_name",
            Reject::Stale => "stale",
            Reject::Future => "future",
            Reject::Replayed => "replayed",
            Reject::TooManySenders => "too_many_senders",
        }
    }
}

/// Opens `packet` with `ring`, then admits it through `guard` (timestamp window and
/// replay). `now_ms` is the receiver's wall clock in unix milliseconds.
pub fn open(
    ring: &Keyring,
    guard: &mut ReplayGuard,
    packet: &[u8],
    now_ms: u64,
) -> Result<Message, Reject> {
    let message = ring.open(packet, now_ms, guard.window_ms())?;
    guard.admit(&message, now_ms)?;
    Ok(message)
}
