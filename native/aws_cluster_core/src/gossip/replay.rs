//! Per-sender replay protection by (boot id, seq), with a bounded number of senders.
//!
//! Only authenticated packets reach the guard, so its table holds genuine cluster members;
//! the bound still matters because a member's name changes when it restarts elsewhere.
//!
//! Per sender it keeps the current boot id, the highest seq seen, a 64-bit bitmap of the
//! seqs just below it (so packets reordered by the network are still accepted once) and the
//! highest timestamp seen. A packet from a different boot is a restart only if its
//! timestamp is newer than anything seen from the old boot; otherwise it is an old boot's
//! packet played back.
//!
//! A full table forgets only senders whose newest packet is already outside the timestamp
//! window: every packet such a sender ever sent is stale now, so forgetting it cannot let a
//! replay through. If no sender can be forgotten the new one is refused
//! ([`Reject::TooManySenders`]) rather than weakening replay protection.

use super::{Message, Reject};
use std::collections::HashMap;

/// How far a packet may be from the receiver's clock, either way.
pub const DEFAULT_WINDOW_MS: u64 = 30_000;
pub const DEFAULT_MAX_SENDERS: usize = 4096;
/// Seqs this far below the highest one seen are still accepted once.
pub const REORDER_WINDOW: u64 = 64;

#[derive(Debug, Clone)]
struct Sender {
    boot_id: u64,
    max_seq: u64,
    /// Bit i set: seq `max_seq - i` was accepted.
    seen: u64,
    newest_ms: u64,
}

/// The replay state of one receiver.
#[derive(Debug, Clone)]
pub struct ReplayGuard {
    senders: HashMap<String, Sender>,
    max_senders: usize,
    window_ms: u64,
}

impl ReplayGuard {
    /// `max_senders` is clamped to at least 1.
    pub fn new(max_senders: usize, window_ms: u64) -> ReplayGuard {
        ReplayGuard {
            senders: HashMap::new(),
            max_senders: max_senders.max(1),
            window_ms,
        }
    }

    pub fn window_ms(&self) -> u64 {
        self.window_ms
    }

    pub fn len(&self) -> usize {
        self.senders.len()
    }

    pub fn is_empty(&self) -> bool {
        self.senders.is_empty()
    }

    /// Accepts `message` once, recording it; the same (name, boot id, seq) again, or an
    /// older boot, is [`Reject::Replayed`].
    pub fn admit(&mut self, message: &Message, now_ms: u64) -> Result<(), Reject> {
        if let Some(sender) = self.senders.get_mut(&message.name) {
            return sender.admit(message);
        }
        if self.senders.len() >= self.max_senders {
            self.forget_stale(now_ms);
            if self.senders.len() >= self.max_senders {
                return Err(Reject::TooManySenders);
            }
        }
        self.senders.insert(
            message.name.clone(),
            Sender {
                boot_id: message.boot_id,
                max_seq: message.seq,
                seen: 1,
                newest_ms: message.timestamp_ms,
            },
        );
        Ok(())
    }

    /// Drops senders whose newest packet is older than the window.
    pub fn forget_stale(&mut self, now_ms: u64) {
        let window = self.window_ms;
        self.senders
            .retain(|_, s| now_ms.saturating_sub(s.newest_ms) <= window);
    }
}

impl Sender {
    fn admit(&mut self, m: &Message) -> Result<(), Reject> {
        if m.boot_id != self.boot_id {
            if m.timestamp_ms <= self.newest_ms {
                return Err(Reject::Replayed);
            }
            *self = Sender {
                boot_id: m.boot_id,
                max_seq: m.seq,
                seen: 1,
                newest_ms: m.timestamp_ms,
            };
            return Ok(());
        }
        if m.seq > self.max_seq {
            let shift = m.seq - self.max_seq;
            self.seen = if shift >= REORDER_WINDOW {
                0
            } else {
                self.seen << shift
            };
            self.seen |= 1;
            self.max_seq = m.seq;
        } else {
            let back = self.max_seq - m.seq;
            if back >= REORDER_WINDOW || self.seen & (1 << back) != 0 {
                return Err(Reject::Replayed);
            }
            self.seen |= 1 << back;
        }
        self.newest_ms = self.newest_ms.max(m.timestamp_ms);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::packet::tests::{message, ring, NOW, S1};
    use super::super::{open, Kind};
    use super::*;

    fn msg(name: &str, boot: u64, seq: u64, ts: u64) -> Message {
        Message {
            kind: Kind::Announce,
            name: name.into(),
            boot_id: boot,
            seq,
            timestamp_ms: ts,
            meta: vec![],
        }
    }

    #[test]
    fn same_packet_twice_is_replayed() {
        let r = ring(&[S1], "prod");
        let mut g = ReplayGuard::new(16, 30_000);
        let p = r.seal(&message("a@b", 1)).unwrap();
        assert!(open(&r, &mut g, &p, NOW).is_ok());
        assert_eq!(open(&r, &mut g, &p, NOW), Err(Reject::Replayed));
        // A fresh nonce does not make the same (boot, seq) new.
        let p2 = r.seal(&message("a@b", 1)).unwrap();
        assert_eq!(open(&r, &mut g, &p2, NOW), Err(Reject::Replayed));
    }

    #[test]
    fn reordered_packets_are_accepted_once() {
        let mut g = ReplayGuard::new(16, 30_000);
        for seq in [5, 3, 4, 1, 10] {
            assert_eq!(g.admit(&msg("a@b", 1, seq, NOW), NOW), Ok(()), "{seq}");
        }
        for seq in [5, 3, 4, 1, 10] {
            assert_eq!(
                g.admit(&msg("a@b", 1, seq, NOW), NOW),
                Err(Reject::Replayed)
            );
        }
        assert_eq!(g.admit(&msg("a@b", 1, 2, NOW), NOW), Ok(()));
        // Further back than the reorder window counts as replayed.
        assert_eq!(g.admit(&msg("a@b", 1, 200, NOW), NOW), Ok(()));
        assert_eq!(
            g.admit(&msg("a@b", 1, 200 - REORDER_WINDOW, NOW), NOW),
            Err(Reject::Replayed)
        );
        assert_eq!(
            g.admit(&msg("a@b", 1, 200 - REORDER_WINDOW + 1, NOW), NOW),
            Ok(())
        );
    }

    #[test]
    fn big_jumps_clear_the_bitmap() {
        let mut g = ReplayGuard::new(16, 30_000);
        assert_eq!(g.admit(&msg("a@b", 1, 1, NOW), NOW), Ok(()));
        assert_eq!(g.admit(&msg("a@b", 1, u64::MAX, NOW), NOW), Ok(()));
        assert_eq!(
            g.admit(&msg("a@b", 1, u64::MAX, NOW), NOW),
            Err(Reject::Replayed)
        );
        assert_eq!(g.admit(&msg("a@b", 1, u64::MAX - 1, NOW), NOW), Ok(()));
    }

    #[test]
    fn a_restart_is_newer_and_the_old_boot_cannot_come_back() {
        let mut g = ReplayGuard::new(16, 30_000);
        assert_eq!(g.admit(&msg("a@b", 1, 9, NOW), NOW), Ok(()));
        assert_eq!(g.admit(&msg("a@b", 2, 0, NOW + 5), NOW), Ok(()));
        assert_eq!(
            g.admit(&msg("a@b", 1, 10, NOW + 1), NOW),
            Err(Reject::Replayed)
        );
        // A "new" boot that is not newer than what we saw is a replay too.
        assert_eq!(
            g.admit(&msg("a@b", 3, 0, NOW + 5), NOW),
            Err(Reject::Replayed)
        );
        assert_eq!(g.admit(&msg("a@b", 2, 1, NOW + 6), NOW), Ok(()));
    }

    #[test]
    fn senders_are_tracked_separately() {
        let mut g = ReplayGuard::new(16, 30_000);
        assert_eq!(g.admit(&msg("a@b", 1, 1, NOW), NOW), Ok(()));
        assert_eq!(g.admit(&msg("c@d", 1, 1, NOW), NOW), Ok(()));
        assert_eq!(g.len(), 2);
    }

    #[test]
    fn a_full_table_forgets_only_stale_senders() {
        let mut g = ReplayGuard::new(2, 1_000);
        assert_eq!(g.admit(&msg("a@h", 1, 1, NOW), NOW), Ok(()));
        assert_eq!(g.admit(&msg("b@h", 1, 1, NOW + 500), NOW + 500), Ok(()));
        assert_eq!(
            g.admit(&msg("c@h", 1, 1, NOW + 900), NOW + 900),
            Err(Reject::TooManySenders)
        );
        // a@h's newest packet is now outside the window: it can go.
        assert_eq!(g.admit(&msg("c@h", 1, 1, NOW + 1_001), NOW + 1_001), Ok(()));
        assert_eq!(g.len(), 2);
        assert_eq!(
            g.admit(&msg("b@h", 1, 1, NOW + 1_001), NOW + 1_001),
            Err(Reject::Replayed)
        );
    }

    #[test]
    fn max_senders_is_at_least_one() {
        let mut g = ReplayGuard::new(0, 1_000);
        assert_eq!(g.admit(&msg("a@h", 1, 1, NOW), NOW), Ok(()));
        assert!(!g.is_empty());
    }
}
