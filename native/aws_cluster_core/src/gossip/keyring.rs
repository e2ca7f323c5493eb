//! The key ring: AEAD keys derived by HKDF-SHA256 from the configured secrets.
//!
//! The first key seals, every key opens. That is what makes a rotation possible without a
//! split: a fleet first learns the new secret, then starts sealing with it, then forgets the
//! old one (the runbook is in `AWSCluster.Strategy.Gossip`'s docs).

use super::{KEY_ID_LEN, LABEL_TAG_LEN};
use crate::{Error, Reason, Result};
use aws_lc_rs::aead::{LessSafeKey, UnboundKey, CHACHA20_POLY1305};
use aws_lc_rs::{digest, hkdf};
use std::fmt;

/// Secrets shorter than this are refused unless the caller says `insecure`: 32 random
/// bytes are what a 256-bit key needs, and HKDF cannot add entropy that is not there.
pub const MIN_SECRET_LEN: usize = 32;
/// Longer secrets add nothing and cost hashing time.
pub const MAX_SECRET: usize = 1024;
/// Old, current and next, with room to spare.
pub const MAX_KEYS: usize = 8;
pub const MAX_LABEL: usize = 128;

const SALT: &[u8] = b"aws_cluster/gossip/v1";
const INFO_KEY_ID: &[u8] = b"aws_cluster/gossip/v1/key-id";
const INFO_AEAD: &[u8] = b"aws_cluster/gossip/v1/aead:";
const LABEL_TAG_PREFIX: &[u8] = b"aws_cluster/gossip/v1/label:";

pub(crate) struct RingKey {
    pub(crate) id: [u8; KEY_ID_LEN],
    pub(crate) cipher: LessSafeKey,
}

/// Derived keys for one cluster label. Never prints key material.
pub struct Keyring {
    pub(crate) label: Vec<u8>,
    pub(crate) label_tag: [u8; LABEL_TAG_LEN],
    pub(crate) keys: Vec<RingKey>,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ids: Vec<String> = self.keys.iter().map(|k| hex(&k.id)).collect();
        f.debug_struct("Keyring")
            .field("label", &String::from_utf8_lossy(&self.label))
            .field("key_ids", &ids)
            .finish()
    }
}

impl Keyring {
    /// Derives one key per secret (duplicates are dropped, order kept) for `label`.
    ///
    /// Fails with `invalid_argument` when there is no secret or more than [`MAX_KEYS`], a
    /// secret is empty, longer than [`MAX_SECRET`], or shorter than [`MIN_SECRET_LEN`]
    /// without `insecure`, or the label is not 1..=[`MAX_LABEL`] printable ASCII bytes.
    /// Messages name the secret by position, never by content.
    pub fn new<S: AsRef<[u8]>>(secrets: &[S], label: &[u8], insecure: bool) -> Result<Keyring> {
        validate_label(label)?;
        if secrets.is_empty() {
            return Err(invalid("secrets", "at least one secret is required"));
        }
        if secrets.len() > MAX_KEYS {
            return Err(invalid(
                "secrets",
                format!("at most {MAX_KEYS} secrets, got {}", secrets.len()),
            ));
        }
        let mut seen: Vec<&[u8]> = Vec::with_capacity(secrets.len());
        let mut keys = Vec::with_capacity(secrets.len());
        for (index, secret) in secrets.iter().enumerate() {
            let secret = secret.as_ref();
            validate_secret(index, secret, insecure)?;
            if seen.contains(&secret) {
                continue;
            }
            seen.push(secret);
            keys.push(derive(secret, label)?);
        }
        Ok(Keyring {
            label: label.to_vec(),
            label_tag: label_tag(label),
            keys,
        })
    }

    /// Key ids in ring order (the first one seals).
    pub fn key_ids(&self) -> Vec<[u8; KEY_ID_LEN]> {
        self.keys.iter().map(|k| k.id).collect()
    }

    pub fn label(&self) -> &[u8] {
        &self.label
    }

    pub fn label_tag(&self) -> [u8; LABEL_TAG_LEN] {
        self.label_tag
    }
}

/// The 4 bytes after the version byte: which cluster a packet claims to belong to.
pub fn label_tag(label: &[u8]) -> [u8; LABEL_TAG_LEN] {
    let mut hasher = digest::Context::new(&digest::SHA256);
    hasher.update(LABEL_TAG_PREFIX);
    hasher.update(label);
    let digest = hasher.finish();
    let mut tag = [0u8; LABEL_TAG_LEN];
    tag.copy_from_slice(&digest.as_ref()[..LABEL_TAG_LEN]);
    tag
}

/// An HKDF output length, as aws-lc-rs asks for one.
struct Len(usize);

impl hkdf::KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

fn derive(secret: &[u8], label: &[u8]) -> Result<RingKey> {
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, SALT).extract(secret);
    let mut id = [0u8; KEY_ID_LEN];
    let mut key = [0u8; 32];
    let failed = |_| Error::new(Reason::Internal, "HKDF expand refused its output length");
    prk.expand(&[INFO_KEY_ID], Len(KEY_ID_LEN))
        .and_then(|okm| okm.fill(&mut id))
        .map_err(failed)?;
    prk.expand(&[INFO_AEAD, label], Len(key.len()))
        .and_then(|okm| okm.fill(&mut key))
        .map_err(failed)?;
    let cipher = UnboundKey::new(&CHACHA20_POLY1305, &key)
        .map(LessSafeKey::new)
        .map_err(|_| Error::new(Reason::Internal, "ChaCha20-Poly1305 refused a 32-byte key"));
    key.fill(0);
    Ok(RingKey {
        id,
        cipher: cipher?,
    })
}

fn validate_secret(index: usize, secret: &[u8], insecure: bool) -> Result<()> {
    let problem = if secret.is_empty() {
        Some("is empty".to_string())
    } else if secret.len() > MAX_SECRET {
        Some(format!("is longer than {MAX_SECRET} bytes"))
    } else if secret.len() < MIN_SECRET_LEN && !insecure {
        Some(format!(
            "is {} bytes; at least {MIN_SECRET_LEN} are required (generate one with \
             `:crypto.strong_rand_bytes(32) |> Base.encode64()`), or set insecure: true",
            secret.len()
        ))
    } else {
        None
    };
    match problem {
        Some(text) => Err(invalid("secrets", format!("secret #{index} {text}"))
            .with_number("index", index as i64)),
        None => Ok(()),
    }
}

fn validate_label(label: &[u8]) -> Result<()> {
    if label.is_empty() || label.len() > MAX_LABEL {
        return Err(invalid(
            "label",
            format!("label must be 1..={MAX_LABEL} bytes, got {}", label.len()),
        ));
    }
    if !label.iter().all(|b| (0x20..=0x7e).contains(b)) {
        return Err(invalid("label", "label must be printable ASCII"));
    }
    Ok(())
}

fn invalid(key: &'static str, message: impl Into<String>) -> Error {
    Error::new(Reason::InvalidArgument, message).with_detail("key", key)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const S1: &[u8] = b"0123456789abcdef0123456789abcdef";
    const S2: &[u8] = b"fedcba9876543210fedcba9876543210";

    #[test]
    fn derivation_is_deterministic_and_per_secret() {
        let a = Keyring::new(&[S1], b"prod", false).unwrap();
        let b = Keyring::new(&[S1], b"prod", false).unwrap();
        let c = Keyring::new(&[S2], b"prod", false).unwrap();
        assert_eq!(a.key_ids(), b.key_ids());
        assert_ne!(a.key_ids(), c.key_ids());
    }

    #[test]
    fn key_id_does_not_depend_on_label_but_label_tag_does() {
        let a = Keyring::new(&[S1], b"prod", false).unwrap();
        let b = Keyring::new(&[S1], b"staging", false).unwrap();
        assert_eq!(a.key_ids(), b.key_ids());
        assert_ne!(a.label_tag(), b.label_tag());
    }

    #[test]
    fn duplicate_secrets_are_dropped_keeping_order() {
        let ring = Keyring::new(&[S2, S1, S2], b"prod", false).unwrap();
        let two = Keyring::new(&[S2, S1], b"prod", false).unwrap();
        assert_eq!(ring.key_ids(), two.key_ids());
    }

    #[test]
    fn short_secret_needs_insecure() {
        let err = Keyring::new(&[S1, b"short".as_slice()], b"prod", false).unwrap_err();
        assert_eq!(err.reason, Reason::InvalidArgument);
        assert_eq!(err.detail("key"), Some("secrets"));
        assert_eq!(err.number("index"), Some(1));
        assert!(err.message.contains("secret #1 is 5 bytes"));
        assert!(
            !err.message.contains("short"),
            "secret leaked: {}",
            err.message
        );
        assert!(Keyring::new(&[b"short".as_slice()], b"prod", true).is_ok());
    }

    #[test]
    fn empty_or_too_many_or_oversized_secrets_are_refused() {
        let none: [&[u8]; 0] = [];
        assert!(Keyring::new(&none, b"prod", true).is_err());
        assert!(Keyring::new(&[b"".as_slice()], b"prod", true).is_err());
        let big = vec![7u8; MAX_SECRET + 1];
        assert!(Keyring::new(&[big], b"prod", true).is_err());
        let many: Vec<Vec<u8>> = (0..=MAX_KEYS).map(|i| vec![i as u8; 32]).collect();
        assert!(Keyring::new(&many, b"prod", false).is_err());
    }

    #[test]
    fn label_is_bounded_printable_ascii() {
        assert!(Keyring::new(&[S1], b"", false).is_err());
        assert!(Keyring::new(&[S1], &[b'a'; MAX_LABEL + 1], false).is_err());
        assert!(Keyring::new(&[S1], b"bad\nlabel", false).is_err());
        assert!(Keyring::new(&[S1], &[b'a'; MAX_LABEL], false).is_ok());
    }

    #[test]
    fn debug_shows_ids_not_keys() {
        let ring = Keyring::new(&[S1], b"prod", false).unwrap();
        let text = format!("{ring:?}");
        assert!(text.contains("key_ids"));
        assert!(!text.contains("0123456789abcdef"));
    }
}
