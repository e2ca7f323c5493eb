//! Randomized mutation test: mutated packets go through `open`; nothing may panic and only
//! genuine packets may be accepted.
//!
//! `AWS_CLUSTER_FUZZ_ITERS` sets the number of mutated packets (default 1,000,000; the long
//! mode is `AWS_CLUSTER_FUZZ_ITERS=10000000`), `AWS_CLUSTER_FUZZ_SEED` replays a run.

use super::packet::tests::{ring, NOW, S1, S2, WINDOW};
use super::{open, Keyring, Kind, Message, Reject, ReplayGuard, HEADER_LEN, MAX_PACKET};
use std::collections::{HashMap, HashSet};
use std::panic::{self, AssertUnwindSafe};

const DEFAULT_ITERS: u64 = 1_000_000;
const S3: &[u8] = b"a third secret, known to nobody here";

/// splitmix64: tiny, seedable, good enough to pick mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn byte(&mut self) -> u8 {
        self.next() as u8
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.byte()).collect()
    }
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

fn corpus(r: &Keyring) -> Vec<(Vec<u8>, Vec<u8>)> {
    let names = [
        "a@b",
        "chat@127.0.0.2",
        "web_1@ip-10-0-1-5.ec2.internal",
        "n@::1",
    ];
    let mut out = Vec::new();
    for (i, name) in names.iter().enumerate() {
        for (j, kind) in [Kind::Announce, Kind::Leave].into_iter().enumerate() {
            let meta = match i % 3 {
                0 => vec![],
                1 => vec![("az".to_string(), "us-east-1a".to_string())],
                _ => vec![
                    ("az".to_string(), "eu-west-1c".to_string()),
                    ("zone_id".to_string(), "euw1-az3".to_string()),
                ],
            };
            let m = Message {
                kind,
                name: name.to_string(),
                boot_id: 0xB007 + i as u64,
                seq: (i * 2 + j) as u64,
                timestamp_ms: NOW - i as u64,
                meta,
            };
            let payload = m.encode().unwrap();
            out.push((r.seal(&m).unwrap(), payload));
        }
    }
    out
}

/// Mutates bytes the way a hostile network might: flips, overwrites, cuts, growth,
/// splices of genuine packets, random junk with a genuine header.
fn mutate(rng: &mut Rng, base: &[u8], other: &[u8]) -> Vec<u8> {
    let mut p = base.to_vec();
    match rng.below(12) {
        0 => {
            let bit = rng.below(p.len() * 8);
            p[bit / 8] ^= 1 << (bit % 8);
        }
        1 => {
            for _ in 0..1 + rng.below(8) {
                let bit = rng.below(p.len() * 8);
                p[bit / 8] ^= 1 << (bit % 8);
            }
        }
        2 => {
            let at = rng.below(p.len());
            p[at] = rng.byte();
        }
        3 => p.truncate(rng.below(p.len())),
        4 => {
            let limit = if rng.below(4) == 0 { 1_500 } else { 32 };
            let n = 1 + rng.below(limit);
            p.extend(rng.bytes(n));
        }
        5 => {
            let at = rng.below(p.len() + 1);
            let n = 1 + rng.below(16);
            let junk = rng.bytes(n);
            p.splice(at..at, junk);
        }
        6 => {
            let at = rng.below(p.len());
            let n = 1 + rng.below(p.len() - at);
            p.drain(at..at + n);
        }
        7 => {
            let cut = rng.below(p.len().min(other.len()) + 1);
            p.truncate(cut);
            p.extend_from_slice(&other[cut..]);
        }
        8 => {
            let n = rng.below(MAX_PACKET + 200);
            p = rng.bytes(n);
        }
        9 => {
            let n = rng.below(MAX_PACKET);
            p.truncate(HEADER_LEN);
            p.extend(rng.bytes(n));
        }
        10 => {
            let (a, b) = (rng.below(p.len()), rng.below(p.len()));
            p.swap(a, b);
        }
        _ => {
            // Header of one genuine packet, body of another.
            let cut = HEADER_LEN.min(other.len());
            p[..cut].copy_from_slice(&other[..cut]);
        }
    }
    p
}

fn report(kind: &str, input: &[u8], seed: u64, i: u64) -> String {
    let hex: String = input.iter().map(|b| format!("{b:02x}")).collect();
    format!("{kind} at iteration {i} (AWS_CLUSTER_FUZZ_SEED={seed}): {hex}")
}

#[test]
fn mutated_packets_never_panic_and_never_authenticate() {
    let iters = env_u64("AWS_CLUSTER_FUZZ_ITERS").unwrap_or(DEFAULT_ITERS);
    let seed = env_u64("AWS_CLUSTER_FUZZ_SEED").unwrap_or_else(|| {
        let mut b = [0u8; 8];
        aws_lc_rs::rand::fill(&mut b).unwrap();
        u64::from_le_bytes(b)
    });
    let mut rng = Rng(seed);
    let r = ring(&[S2, S1], "prod");
    let corpus = corpus(&r);
    // Packets a receiver with a different ring or label would see from us, and vice versa.
    let foreign: Vec<Vec<u8>> = [ring(&[S2], "staging"), ring(&[S3], "prod")]
        .iter()
        .flat_map(corpus_packets)
        .collect();
    let genuine: HashSet<Vec<u8>> = corpus.iter().map(|(p, _)| p.clone()).collect();
    let mut accepted_once: HashSet<Vec<u8>> = HashSet::new();
    let mut guard = ReplayGuard::new(64, WINDOW);
    let mut counts: HashMap<&'static str, u64> = HashMap::new();

    let mut i = 0u64;
    let mut unsealable = 0u64;
    while i < iters {
        let (base, payload) = &corpus[rng.below(corpus.len())];
        let pick = rng.below(16);
        if pick < 12 {
            let other = if pick < 2 {
                &foreign[rng.below(foreign.len())]
            } else {
                &corpus[rng.below(corpus.len())].0
            };
            let packet = mutate(&mut rng, base, other);
            let outcome =
                panic::catch_unwind(AssertUnwindSafe(|| open(&r, &mut guard, &packet, NOW)))
                    .unwrap_or_else(|_| panic!("{}", report("panic", &packet, seed, i)));
            match outcome {
                Ok(_) => {
                    assert!(
                        genuine.contains(&packet),
                        "{}",
                        report("forged packet accepted", &packet, seed, i)
                    );
                    assert!(
                        accepted_once.insert(packet.clone()),
                        "{}",
                        report("replay accepted", &packet, seed, i)
                    );
                    *counts.entry("accepted").or_default() += 1;
                }
                Err(reason) => *counts.entry(reason.as_str()).or_default() += 1,
            }
        } else {
            // Authentic but mutated payloads: the parser must hold up on its own.
            let mutated = mutate(&mut rng, payload, payload);
            // Grown past the cap: not a packet anyone can send, so not one `open` sees.
            let Ok(packet) = r.seal_payload(&mutated, [7; 12]) else {
                unsealable += 1;
                continue;
            };
            let outcome = panic::catch_unwind(AssertUnwindSafe(|| r.open(&packet, NOW, WINDOW)))
                .unwrap_or_else(|_| panic!("{}", report("panic", &mutated, seed, i)));
            match outcome {
                Ok(m) => {
                    assert_eq!(
                        m.encode().unwrap(),
                        mutated,
                        "{}",
                        report("non-canonical payload accepted", &mutated, seed, i)
                    );
                    *counts.entry("authentic_accepted").or_default() += 1;
                }
                Err(reason) => *counts.entry(reason.as_str()).or_default() += 1,
            }
        }
        i += 1;
    }

    let total: u64 = counts.values().sum();
    let mut sorted: Vec<_> = counts.iter().collect();
    sorted.sort();
    eprintln!(
        "gossip mutation test: {total} mutated packets opened ({unsealable} oversized \
         payloads skipped), seed {seed}: {sorted:?}"
    );
    assert_eq!(total, iters);
    for reason in Reject::ALL {
        if reason != Reject::TooManySenders && iters >= 100_000 {
            assert!(
                counts.contains_key(reason.as_str()),
                "no mutated packet reached {} in {iters} iterations (seed {seed})",
                reason.as_str()
            );
        }
    }
}

fn corpus_packets(r: &Keyring) -> Vec<Vec<u8>> {
    corpus(r).into_iter().map(|(p, _)| p).collect()
}

#[test]
fn every_single_bit_flip_of_every_corpus_packet_is_rejected() {
    let r = ring(&[S1], "prod");
    for (packet, _) in corpus(&r) {
        for bit in 0..packet.len() * 8 {
            let mut p = packet.clone();
            p[bit / 8] ^= 1 << (bit % 8);
            let expect = match bit / 8 {
                0 => Reject::BadVersion,
                1..=4 => Reject::WrongLabel,
                5..=8 => Reject::UnknownKey,
                _ => Reject::AuthFailed,
            };
            assert_eq!(r.open(&p, NOW, WINDOW), Err(expect), "bit {bit}");
        }
    }
}
