//! Sealing and opening one packet (layout in the module docs of `gossip`).

use super::keyring::Keyring;
use super::{
    Reject, HEADER_LEN, KEY_ID_LEN, LABEL_TAG_LEN, MAX_PACKET, MIN_PACKET, MIN_PAYLOAD, NONCE_LEN,
    TAG_LEN, VERSION,
};
use crate::{Error, Reason, Result};
use aws_lc_rs::aead::{Aad, Nonce};

pub const MAX_NAME: usize = 255;
pub const MIN_NAME: usize = 3;
/// The part before `@`, as `AWSCluster.Distribution` accepts it.
pub const MAX_BASENAME: usize = 64;
pub const MAX_META_ENTRIES: usize = 4;
pub const MAX_META_KEY: usize = 16;
pub const MAX_META_VALUE: usize = 64;

const FIXED: usize = 27;

/// What a packet says about its sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Announce,
    Leave,
}

impl Kind {
    fn byte(self) -> u8 {
        match self {
            Kind::Announce => 1,
            Kind::Leave => 2,
        }
    }

    fn from_byte(b: u8) -> Option<Kind> {
        match b {
            1 => Some(Kind::Announce),
            2 => Some(Kind::Leave),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Announce => "announce",
            Kind::Leave => "leave",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        match s {
            "announce" => Some(Kind::Announce),
            "leave" => Some(Kind::Leave),
            _ => None,
        }
    }
}

/// The authenticated content of a packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub kind: Kind,
    pub name: String,
    pub boot_id: u64,
    pub seq: u64,
    pub timestamp_ms: u64,
    pub meta: Vec<(String, String)>,
}

/// Checks a node name: `base@host`, base 1..=64 of `[A-Za-z0-9_-]`, host of
/// `[A-Za-z0-9.:-]` (a hostname, IPv4 or IPv6 literal), 3..=255 bytes in all, so that it
/// is a valid Erlang node atom that cannot smuggle anything odd into logs or atoms.
pub fn validate_name(name: &[u8]) -> bool {
    if name.len() < MIN_NAME || name.len() > MAX_NAME {
        return false;
    }
    let Some(at) = name.iter().position(|&b| b == b'@') else {
        return false;
    };
    let (base, host) = (&name[..at], &name[at + 1..]);
    !base.is_empty()
        && base.len() <= MAX_BASENAME
        && !host.is_empty()
        && base
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        && host
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b == b'.' || b == b':' || b == b'-')
}

fn valid_meta_key(key: &[u8]) -> bool {
    !key.is_empty()
        && key.len() <= MAX_META_KEY
        && key
            .iter()
            .all(|&b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

fn valid_meta_value(value: &[u8]) -> bool {
    value.len() <= MAX_META_VALUE && value.iter().all(|b| (0x20..=0x7e).contains(b))
}

impl Message {
    /// The plaintext payload; fails with `invalid_argument` naming the bad field.
    pub fn encode(&self) -> Result<Vec<u8>> {
        if !validate_name(self.name.as_bytes()) {
            return Err(invalid(
                "name",
                format!(
                    "node name {:?} is not base@host (base: 1-{MAX_BASENAME} of A-Z a-z 0-9 _ -; \
                     host: A-Z a-z 0-9 . : -; at most {MAX_NAME} bytes)",
                    self.name
                ),
            ));
        }
        if self.meta.len() > MAX_META_ENTRIES {
            return Err(invalid(
                "meta",
                format!("at most {MAX_META_ENTRIES} metadata entries"),
            ));
        }
        for (i, (k, v)) in self.meta.iter().enumerate() {
            if !valid_meta_key(k.as_bytes()) {
                return Err(invalid(
                    "meta",
                    format!("metadata key {k:?} must be 1-{MAX_META_KEY} of a-z 0-9 _"),
                ));
            }
            if self.meta[..i].iter().any(|(other, _)| other == k) {
                return Err(invalid("meta", format!("metadata key {k:?} is repeated")));
            }
            if !valid_meta_value(v.as_bytes()) {
                return Err(invalid(
                    "meta",
                    format!(
                        "metadata value for {k:?} must be at most {MAX_META_VALUE} printable ASCII bytes"
                    ),
                ));
            }
        }
        let mut out = Vec::with_capacity(FIXED + self.name.len() + 1 + 16);
        out.push(self.kind.byte());
        out.push(0);
        out.extend_from_slice(&self.boot_id.to_be_bytes());
        out.extend_from_slice(&self.seq.to_be_bytes());
        out.extend_from_slice(&self.timestamp_ms.to_be_bytes());
        out.push(self.name.len() as u8);
        out.extend_from_slice(self.name.as_bytes());
        out.push(self.meta.len() as u8);
        for (k, v) in &self.meta {
            out.push(k.len() as u8);
            out.extend_from_slice(k.as_bytes());
            out.push(v.len() as u8);
            out.extend_from_slice(v.as_bytes());
        }
        Ok(out)
    }

    /// Parses an authenticated payload. Layout errors are `Malformed`, a bad node name is
    /// `BadName`.
    pub fn decode(payload: &[u8]) -> std::result::Result<Message, Reject> {
        let mut r = Reader {
            buf: payload,
            pos: 0,
        };
        let kind = Kind::from_byte(r.u8()?).ok_or(Reject::Malformed)?;
        if r.u8()? != 0 {
            return Err(Reject::Malformed);
        }
        let boot_id = r.u64()?;
        let seq = r.u64()?;
        let timestamp_ms = r.u64()?;
        let name_len = r.u8()? as usize;
        let name = r.take(name_len)?;
        if !validate_name(name) {
            return Err(Reject::BadName);
        }
        let count = r.u8()? as usize;
        if count > MAX_META_ENTRIES {
            return Err(Reject::Malformed);
        }
        let mut meta: Vec<(String, String)> = Vec::with_capacity(count);
        for _ in 0..count {
            let klen = r.u8()? as usize;
            let key = r.take(klen)?;
            let vlen = r.u8()? as usize;
            let value = r.take(vlen)?;
            if !valid_meta_key(key) || !valid_meta_value(value) {
                return Err(Reject::Malformed);
            }
            // Both are checked ASCII, so the conversions cannot fail.
            let key = ascii(key)?;
            if meta.iter().any(|(k, _)| *k == key) {
                return Err(Reject::Malformed);
            }
            meta.push((key, ascii(value)?));
        }
        if r.pos != payload.len() {
            return Err(Reject::Malformed);
        }
        Ok(Message {
            kind,
            name: ascii(name)?,
            boot_id,
            seq,
            timestamp_ms,
            meta,
        })
    }
}

fn ascii(bytes: &[u8]) -> std::result::Result<String, Reject> {
    String::from_utf8(bytes.to_vec()).map_err(|_| Reject::Malformed)
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> std::result::Result<&'a [u8], Reject> {
        let end = self.pos.checked_add(n).ok_or(Reject::Malformed)?;
        let slice = self.buf.get(self.pos..end).ok_or(Reject::Malformed)?;
        self.pos = end;
        Ok(slice)
    }

    fn u8(&mut self) -> std::result::Result<u8, Reject> {
        Ok(self.take(1)?[0])
    }

    fn u64(&mut self) -> std::result::Result<u64, Reject> {
        let mut b = [0u8; 8];
        b.copy_from_slice(self.take(8)?);
        Ok(u64::from_be_bytes(b))
    }
}

impl Keyring {
    /// Seals `message` with the first key and a fresh random nonce.
    pub fn seal(&self, message: &Message) -> Result<Vec<u8>> {
        // aws-lc's DRBG: seeded from the OS, no system call per nonce.
        let mut nonce = [0u8; NONCE_LEN];
        aws_lc_rs::rand::fill(&mut nonce)
            .map_err(|_| Error::new(Reason::Internal, "no randomness for a gossip nonce"))?;
        self.seal_payload(&message.encode()?, nonce)
    }

    /// Seals an already encoded payload; the tests use it to authenticate payloads that
    /// `Message::encode` would refuse to produce.
    pub(crate) fn seal_payload(&self, payload: &[u8], nonce: [u8; NONCE_LEN]) -> Result<Vec<u8>> {
        let total = HEADER_LEN + payload.len() + TAG_LEN;
        if total > MAX_PACKET {
            return Err(invalid(
                "packet",
                format!("packet would be {total} bytes, the cap is {MAX_PACKET}"),
            ));
        }
        let key = self
            .keys
            .first()
            .ok_or_else(|| Error::new(Reason::Internal, "key ring is empty"))?;
        let mut out = Vec::with_capacity(total);
        out.push(VERSION);
        out.extend_from_slice(&self.label_tag);
        out.extend_from_slice(&key.id);
        out.extend_from_slice(&nonce);
        let (aad, aad_len) = self.aad(&out);
        out.extend_from_slice(payload);
        let tag = key
            .cipher
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(&aad[..aad_len]),
                &mut out[HEADER_LEN..],
            )
            .map_err(|_| Error::new(Reason::Internal, "ChaCha20-Poly1305 refused to seal"))?;
        out.extend_from_slice(tag.as_ref());
        Ok(out)
    }

    /// Checks size, version, label, key and AEAD, parses the payload and checks the
    /// timestamp against `now_ms` ± `window_ms`. Replay is the caller's next step
    /// (see [`super::open`]).
    pub fn open(
        &self,
        packet: &[u8],
        now_ms: u64,
        window_ms: u64,
    ) -> std::result::Result<Message, Reject> {
        if packet.len() < MIN_PACKET {
            return Err(Reject::TooShort);
        }
        if packet.len() > MAX_PACKET {
            return Err(Reject::TooLarge);
        }
        if packet[0] != VERSION {
            return Err(Reject::BadVersion);
        }
        let tag_at = 1;
        let id_at = tag_at + LABEL_TAG_LEN;
        let nonce_at = id_at + KEY_ID_LEN;
        if packet[tag_at..id_at] != self.label_tag {
            return Err(Reject::WrongLabel);
        }
        let key_id = &packet[id_at..nonce_at];
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&packet[nonce_at..HEADER_LEN]);
        let (aad, aad_len) = self.aad(&packet[..HEADER_LEN]);
        let mut candidates = self.keys.iter().filter(|k| k.id == key_id).peekable();
        if candidates.peek().is_none() {
            return Err(Reject::UnknownKey);
        }
        // Two secrets may share a 4-byte id; each candidate gets its try. The buffer holds
        // ciphertext and tag, and keeps only the plaintext once one key opens it.
        let mut buf = Vec::with_capacity(packet.len() - HEADER_LEN);
        let mut opened = false;
        for key in candidates {
            buf.clear();
            buf.extend_from_slice(&packet[HEADER_LEN..]);
            let nonce = Nonce::assume_unique_for_key(nonce);
            if let Ok(plain) = key
                .cipher
                .open_in_place(nonce, Aad::from(&aad[..aad_len]), &mut buf)
            {
                let len = plain.len();
                buf.truncate(len);
                opened = true;
                break;
            }
        }
        if !opened {
            return Err(Reject::AuthFailed);
        }
        let plain = buf;
        debug_assert!(plain.len() >= MIN_PAYLOAD);
        let message = Message::decode(&plain)?;
        if now_ms.saturating_sub(message.timestamp_ms) > window_ms {
            return Err(Reject::Stale);
        }
        if message.timestamp_ms.saturating_sub(now_ms) > window_ms {
            return Err(Reject::Future);
        }
        Ok(message)
    }

    /// Header plus the full label, on the stack: at most 21 + 128 bytes.
    fn aad(&self, header: &[u8]) -> ([u8; HEADER_LEN + super::MAX_LABEL], usize) {
        let mut aad = [0u8; HEADER_LEN + super::MAX_LABEL];
        let len = header.len() + self.label.len();
        aad[..header.len()].copy_from_slice(header);
        aad[header.len()..len].copy_from_slice(&self.label);
        (aad, len)
    }
}

fn invalid(key: &'static str, message: impl Into<String>) -> Error {
    Error::new(Reason::InvalidArgument, message).with_detail("key", key)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub const S1: &[u8] = b"0123456789abcdef0123456789abcdef";
    pub const S2: &[u8] = b"fedcba9876543210fedcba9876543210";
    pub const NOW: u64 = 1_700_000_000_000;
    pub const WINDOW: u64 = 30_000;

    pub fn ring(secrets: &[&[u8]], label: &str) -> Keyring {
        Keyring::new(secrets, label.as_bytes(), false).unwrap()
    }

    pub fn message(name: &str, seq: u64) -> Message {
        Message {
            kind: Kind::Announce,
            name: name.to_string(),
            boot_id: 0x0102_0304_0506_0708,
            seq,
            timestamp_ms: NOW,
            meta: vec![("az".into(), "us-east-1a".into())],
        }
    }

    #[test]
    fn round_trip_keeps_every_field() {
        let r = ring(&[S1], "prod");
        let mut m = message("chat@10.0.1.5", 7);
        m.kind = Kind::Leave;
        m.meta.push(("zone_id".into(), "use1-az1".into()));
        let packet = r.seal(&m).unwrap();
        assert_eq!(r.open(&packet, NOW, WINDOW), Ok(m));
    }

    /// The wire format must not move when the crypto library does: this packet was sealed
    /// by the RustCrypto implementation this code replaced (fixed nonce 07 x 12).
    #[test]
    fn known_answer_from_the_previous_implementation() {
        let r = ring(&[S1], "prod");
        let m = message("chat@10.0.1.5", 7);
        let packet = r
            .seal_payload(&m.encode().unwrap(), [7u8; NONCE_LEN])
            .unwrap();
        let hex: String = packet.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "010d121e3094c6b7ea070707070707070707070707230b6fa269962234e644a68fc0166e970d86\
             98f84abd1cf41ab047dc5e443437432bf8387949d7a84d3b84054d861bd77224600547b7a73e9\
             731330a3b1e9ab593fa40a53fd4eb"
        );
        assert_eq!(r.open(&packet, NOW, WINDOW), Ok(m));
    }

    #[test]
    fn layout_matches_the_documented_wire_format() {
        let r = ring(&[S1], "prod");
        let m = message("a@b", 1);
        let packet = r.seal(&m).unwrap();
        let payload = m.encode().unwrap();
        assert_eq!(packet.len(), HEADER_LEN + payload.len() + TAG_LEN);
        assert_eq!(packet[0], 1);
        assert_eq!(packet[1..5], r.label_tag());
        assert_eq!(packet[5..9], r.key_ids()[0]);
        assert_eq!(payload[0], 1);
        assert_eq!(payload[1], 0);
        assert_eq!(payload[2..10], 0x0102_0304_0506_0708u64.to_be_bytes());
        assert_eq!(payload[10..18], 1u64.to_be_bytes());
        assert_eq!(payload[18..26], NOW.to_be_bytes());
        assert_eq!(payload[26], 3);
        assert_eq!(&payload[27..30], b"a@b");
        assert_eq!(payload[30], 1);
        assert_eq!(payload[31], 2);
        assert_eq!(&payload[32..34], b"az");
        assert_eq!(payload[34], 10);
        assert_eq!(&payload[35..], b"us-east-1a");
    }

    #[test]
    fn nonces_differ_between_seals() {
        let r = ring(&[S1], "prod");
        let m = message("a@b", 1);
        let a = r.seal(&m).unwrap();
        let b = r.seal(&m).unwrap();
        assert_ne!(a[9..21], b[9..21]);
        assert_ne!(a[21..], b[21..]);
    }

    #[test]
    fn rejects_short_packets() {
        let r = ring(&[S1], "prod");
        let good = r.seal(&message("a@b", 1)).unwrap();
        assert_eq!(good.len(), MIN_PACKET + 1 + 2 + 1 + 10);
        assert_eq!(r.open(b"", NOW, WINDOW), Err(Reject::TooShort));
        assert_eq!(
            r.open(b"heartbeat::garbage", NOW, WINDOW),
            Err(Reject::TooShort)
        );
        assert_eq!(
            r.open(&good[..MIN_PACKET - 1], NOW, WINDOW),
            Err(Reject::TooShort)
        );
    }

    #[test]
    fn minimum_packet_opens() {
        let r = ring(&[S1], "prod");
        let mut m = message("a@b", 1);
        m.meta.clear();
        let packet = r.seal(&m).unwrap();
        assert_eq!(packet.len(), MIN_PACKET);
        assert!(r.open(&packet, NOW, WINDOW).is_ok());
    }

    #[test]
    fn rejects_oversized_packets() {
        let r = ring(&[S1], "prod");
        let mut packet = r.seal(&message("a@b", 1)).unwrap();
        packet.resize(MAX_PACKET + 1, 0);
        assert_eq!(r.open(&packet, NOW, WINDOW), Err(Reject::TooLarge));
        assert_eq!(
            r.open(&vec![1u8; 65_507], NOW, WINDOW),
            Err(Reject::TooLarge)
        );
    }

    #[test]
    fn refuses_to_seal_over_the_cap() {
        let r = ring(&[S1], "prod");
        let err = r.seal_payload(&[0u8; MAX_PACKET], [0; 12]).unwrap_err();
        assert_eq!(err.reason, Reason::InvalidArgument);
        let fits = MAX_PACKET - HEADER_LEN - TAG_LEN;
        assert_eq!(
            r.seal_payload(&vec![0u8; fits], [0; 12]).unwrap().len(),
            MAX_PACKET
        );
    }

    #[test]
    fn rejects_other_versions() {
        let r = ring(&[S1], "prod");
        let mut packet = r.seal(&message("a@b", 1)).unwrap();
        for v in [0u8, 2, 0x80, 0xff] {
            packet[0] = v;
            assert_eq!(r.open(&packet, NOW, WINDOW), Err(Reject::BadVersion));
        }
    }

    #[test]
    fn rejects_wrong_label() {
        let packet = ring(&[S1], "staging").seal(&message("a@b", 1)).unwrap();
        assert_eq!(
            ring(&[S1], "prod").open(&packet, NOW, WINDOW),
            Err(Reject::WrongLabel)
        );
    }

    #[test]
    fn label_is_bound_even_when_the_tag_is_forged() {
        let staging = ring(&[S1], "staging");
        let prod = ring(&[S1], "prod");
        let mut packet = staging.seal(&message("a@b", 1)).unwrap();
        packet[1..5].copy_from_slice(&prod.label_tag());
        assert_eq!(prod.open(&packet, NOW, WINDOW), Err(Reject::AuthFailed));
    }

    #[test]
    fn rejects_unknown_key() {
        let packet = ring(&[S2], "prod").seal(&message("a@b", 1)).unwrap();
        assert_eq!(
            ring(&[S1], "prod").open(&packet, NOW, WINDOW),
            Err(Reject::UnknownKey)
        );
    }

    #[test]
    fn rejects_forged_tag_and_tampered_body() {
        let r = ring(&[S1], "prod");
        let good = r.seal(&message("a@b", 1)).unwrap();
        for at in [9, 20, 21, good.len() - 17, good.len() - 1] {
            let mut bad = good.clone();
            bad[at] ^= 0x01;
            assert_eq!(r.open(&bad, NOW, WINDOW), Err(Reject::AuthFailed), "{at}");
        }
        // Attacker knows the public header but not the key.
        let forger = ring(&[S2], "prod");
        let mut forged = forger.seal(&message("evil@host", 1)).unwrap();
        forged[5..9].copy_from_slice(&r.key_ids()[0]);
        assert_eq!(r.open(&forged, NOW, WINDOW), Err(Reject::AuthFailed));
    }

    #[test]
    fn every_key_in_the_ring_opens_and_the_first_seals() {
        let old = ring(&[S1], "prod");
        let both = ring(&[S2, S1], "prod");
        let new = ring(&[S2], "prod");
        let m = message("a@b", 1);
        assert!(both.open(&old.seal(&m).unwrap(), NOW, WINDOW).is_ok());
        assert!(both.open(&new.seal(&m).unwrap(), NOW, WINDOW).is_ok());
        let sealed = both.seal(&m).unwrap();
        assert_eq!(sealed[5..9], new.key_ids()[0]);
        assert!(new.open(&sealed, NOW, WINDOW).is_ok());
        assert_eq!(old.open(&sealed, NOW, WINDOW), Err(Reject::UnknownKey));
    }

    #[test]
    fn colliding_key_ids_are_each_tried() {
        let mut r = ring(&[S1, S2], "prod");
        let id = r.keys[0].id;
        r.keys[1].id = id;
        let other = ring(&[S2], "prod");
        let mut packet = other.seal(&message("a@b", 1)).unwrap();
        packet[5..9].copy_from_slice(&id);
        // Sealed by S2 but under S1's id: only works because every candidate is tried.
        let mut fixed = other;
        fixed.keys[0].id = id;
        let packet2 = fixed.seal(&message("a@b", 1)).unwrap();
        assert!(r.open(&packet2, NOW, WINDOW).is_ok());
        assert_eq!(r.open(&packet, NOW, WINDOW), Err(Reject::AuthFailed));
    }

    fn sealed_payload(r: &Keyring, payload: &[u8]) -> Vec<u8> {
        r.seal_payload(payload, [3; 12]).unwrap()
    }

    #[test]
    fn rejects_malformed_authenticated_payloads() {
        let r = ring(&[S1], "prod");
        let good = message("a@b", 1).encode().unwrap();
        let mut cases: Vec<Vec<u8>> = Vec::new();
        let mut bad_kind = good.clone();
        bad_kind[0] = 3;
        cases.push(bad_kind);
        let mut flags = good.clone();
        flags[1] = 1;
        cases.push(flags);
        let mut trailing = good.clone();
        trailing.push(0);
        cases.push(trailing);
        cases.push(good[..good.len() - 1].to_vec());
        let mut too_many = message("a@b", 1);
        too_many.meta.clear();
        let mut p = too_many.encode().unwrap();
        *p.last_mut().unwrap() = (MAX_META_ENTRIES + 1) as u8;
        for i in 0..=MAX_META_ENTRIES {
            p.extend_from_slice(&[1, b'a' + i as u8, 0]);
        }
        cases.push(p);
        let mut dup = message("a@b", 1);
        dup.meta.clear();
        let mut p = dup.encode().unwrap();
        *p.last_mut().unwrap() = 2;
        p.extend_from_slice(&[1, b'k', 0, 1, b'k', 0]);
        cases.push(p);
        let mut p = dup.encode().unwrap();
        *p.last_mut().unwrap() = 1;
        p.extend_from_slice(&[1, b'K', 0]);
        cases.push(p);
        let mut p = dup.encode().unwrap();
        *p.last_mut().unwrap() = 1;
        p.extend_from_slice(&[1, b'k', 1, 0x07]);
        cases.push(p);
        let mut p = dup.encode().unwrap();
        *p.last_mut().unwrap() = 1;
        p.extend_from_slice(&[0, 0]);
        cases.push(p);
        let mut name_too_long = good.clone();
        name_too_long[26] = 200;
        cases.push(name_too_long);
        for (i, payload) in cases.iter().enumerate() {
            let packet = sealed_payload(&r, payload);
            assert_eq!(r.open(&packet, NOW, WINDOW), Err(Reject::Malformed), "{i}");
        }
    }

    #[test]
    fn rejects_bad_names_after_authentication() {
        let r = ring(&[S1], "prod");
        let long_host = format!("a@{}", "h".repeat(MAX_NAME - 1));
        let long_base = format!("{}@h", "b".repeat(MAX_BASENAME + 1));
        let bad = [
            "nohost",
            "@host",
            "base@",
            "a@b@c",
            "bad name@h",
            "a@h/x",
            "a@h\n",
            "émile@h",
            "a@h%",
            "ab",
            "a@h\u{0}",
        ];
        let mut names: Vec<String> = bad.iter().map(|s| s.to_string()).collect();
        names.push(long_base);
        for name in &names {
            assert!(!validate_name(name.as_bytes()), "{name:?}");
            let mut payload = vec![1, 0];
            payload.extend_from_slice(&[0; 16]);
            payload.extend_from_slice(&NOW.to_be_bytes());
            payload.push(name.len() as u8);
            payload.extend_from_slice(name.as_bytes());
            payload.push(0);
            let packet = sealed_payload(&r, &payload);
            let expect = if payload.len() < MIN_PAYLOAD {
                Reject::TooShort
            } else {
                Reject::BadName
            };
            assert_eq!(r.open(&packet, NOW, WINDOW), Err(expect), "{name:?}");
        }
        assert!(!validate_name(long_host.as_bytes()));
        for good in [
            "a@b",
            "chat@10.0.1.5",
            "n_1-x@::1",
            "web@ip-10-0-1-5.ec2.internal",
        ] {
            assert!(validate_name(good.as_bytes()), "{good}");
        }
    }

    #[test]
    fn seal_refuses_invalid_messages() {
        let r = ring(&[S1], "prod");
        let mut m = message("no-at-sign", 1);
        assert_eq!(r.seal(&m).unwrap_err().detail("key"), Some("name"));
        m.name = "a@b".into();
        m.meta = (0..5).map(|i| (format!("k{i}"), String::new())).collect();
        assert_eq!(r.seal(&m).unwrap_err().detail("key"), Some("meta"));
        m.meta = vec![("az".into(), "x".repeat(MAX_META_VALUE + 1))];
        assert!(r.seal(&m).is_err());
        m.meta = vec![("AZ".into(), "x".into())];
        assert!(r.seal(&m).is_err());
        m.meta = vec![("az".into(), "x".into()), ("az".into(), "y".into())];
        assert!(r.seal(&m).is_err());
        m.meta = vec![("az".into(), "x".repeat(MAX_META_VALUE))];
        assert!(r.seal(&m).is_ok());
    }

    #[test]
    fn largest_valid_message_fits_the_cap() {
        let r = ring(&[S1], "prod");
        let mut m = message(&format!("{}@{}", "b".repeat(64), "h".repeat(190)), 1);
        m.meta = (0..MAX_META_ENTRIES)
            .map(|i| {
                (
                    format!("{i}").repeat(MAX_META_KEY),
                    "v".repeat(MAX_META_VALUE),
                )
            })
            .collect();
        let packet = r.seal(&m).unwrap();
        assert!(packet.len() <= MAX_PACKET);
        assert_eq!(r.open(&packet, NOW, WINDOW), Ok(m));
    }

    #[test]
    fn rejects_stale_and_future_timestamps() {
        let r = ring(&[S1], "prod");
        let mut m = message("a@b", 1);
        m.timestamp_ms = NOW - WINDOW - 1;
        let stale = r.seal(&m).unwrap();
        assert_eq!(r.open(&stale, NOW, WINDOW), Err(Reject::Stale));
        m.timestamp_ms = NOW - WINDOW;
        assert!(r.open(&r.seal(&m).unwrap(), NOW, WINDOW).is_ok());
        m.timestamp_ms = NOW + WINDOW + 1;
        let future = r.seal(&m).unwrap();
        assert_eq!(r.open(&future, NOW, WINDOW), Err(Reject::Future));
        m.timestamp_ms = NOW + WINDOW;
        assert!(r.open(&r.seal(&m).unwrap(), NOW, WINDOW).is_ok());
        m.timestamp_ms = 0;
        assert_eq!(
            r.open(&r.seal(&m).unwrap(), NOW, WINDOW),
            Err(Reject::Stale)
        );
        m.timestamp_ms = u64::MAX;
        assert_eq!(
            r.open(&r.seal(&m).unwrap(), NOW, WINDOW),
            Err(Reject::Future)
        );
    }

    #[test]
    fn kind_names_round_trip() {
        for k in [Kind::Announce, Kind::Leave] {
            assert_eq!(Kind::parse(k.as_str()), Some(k));
        }
        assert_eq!(Kind::parse("hello"), None);
    }
}
