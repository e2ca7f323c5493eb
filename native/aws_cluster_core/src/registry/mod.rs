//! The membership registry: every node writes its own row to a shared table and reads
//! the live rows as its discovery answer (`postgres`).
//!
//! A row authenticates itself: an HMAC-SHA256 over its fields and the time it was
//! written, with a key derived from the topology's secret. Whoever can write to the
//! table but lacks the secret cannot make a node dial anything: a row is size-checked,
//! then its MAC verified, then its signed time checked against the reader's `ttl` (so a
//! copy of an old row cannot be kept alive by moving its unsigned `last_seen`), then its
//! node name checked against its address, all before it leaves this crate.

#[cfg(feature = "dynamodb")]
pub mod dynamo;
#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(feature = "postgres")]
pub mod tls;

use crate::{Error, Reason, Result};
use aws_lc_rs::{hkdf, hmac};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;

/// The longest field a row may carry (node names are at most 255 bytes in Erlang).
pub const MAX_FIELD: usize = 255;
const MAC_INFO: &[u8] = b"aws_cluster registry row v2";
/// How far a row's signed time may trail the reader's clock beyond the `ttl`, or lead
/// it: the writer's estimate of the database's clock (PostgreSQL) or two hosts' NTP
/// (DynamoDB).
pub const CLOCK_SLACK_MS: i64 = 1_000;
/// Refused rows a read goes through before it gives up: past this, the answer would be
/// incomplete, so it is an error and the caller keeps its last good set.
pub const MAX_REFUSED: usize = 10_000;
/// Refused rows a reading keeps by name (the rest are only counted).
const REJECTED_KEPT: usize = 16;

/// One node's row, as written and as read back (verified).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Row {
    pub cluster: String,
    pub node: String,
    pub address: String,
    pub availability_zone: Option<String>,
    pub instance_id: Option<String>,
    pub group: Option<String>,
    pub boot_id: String,
    pub version: String,
    /// When the writer wrote it, ms since the epoch by the backend's clock (PostgreSQL:
    /// the writer's estimate of the server's; DynamoDB: the writer's own). Signed.
    pub stamp_ms: i64,
}

/// A row that was read but refused, and why (its node name cut to 64 bytes, as text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    pub node: String,
    pub why: &'static str,
}

/// What a read found: verified live rows, and the rows refused (the first few by name,
/// all of them counted).
#[derive(Debug, Default)]
pub struct Reading {
    pub rows: Vec<Row>,
    pub rejected: Vec<Rejected>,
    pub refused: usize,
}

impl Reading {
    /// Takes one row read from the table: kept if `key` admits it at `now_ms`, else
    /// refused. Too many refused rows fail the read (`MAX_REFUSED`).
    pub fn offer(
        &mut self,
        key: &RowKey,
        row: Row,
        mac: &str,
        now_ms: i64,
        ttl: Duration,
    ) -> Result<()> {
        match key.admit(&row, mac, now_ms, ttl) {
            Ok(()) => self.rows.push(row),
            Err(why) => {
                self.refused += 1;
                if self.rejected.len() < REJECTED_KEPT {
                    self.rejected.push(Rejected {
                        node: row.node.chars().take(64).collect(),
                        why,
                    });
                }
                if self.refused > MAX_REFUSED {
                    return Err(Error::new(
                        Reason::BadResponse,
                        format!(
                            "registry read: over {MAX_REFUSED} rows of cluster {:?} do not \
                             verify (a writer without the secret?); the answer would be \
                             incomplete, so the last good set is kept",
                            row.cluster.chars().take(64).collect::<String>()
                        ),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// What the doctor reports of the table and the connection.
#[derive(Debug, Default)]
pub struct Check {
    pub server_version: String,
    pub ssl: bool,
    /// SELECT, INSERT, UPDATE, DELETE on the table, in that order (DynamoDB: Query,
    /// UpdateItem twice, DeleteItem).
    pub privileges: [bool; 4],
    pub live_rows: i64,
    pub host: String,
}

/// Where one topology's table lives; every call goes to its backend.
#[derive(Clone)]
pub enum Backend {
    #[cfg(feature = "postgres")]
    Postgres(Arc<postgres::PgRegistry>),
    #[cfg(feature = "dynamodb")]
    Dynamo(Arc<dynamo::DynamoRegistry>),
}

impl Backend {
    /// Connects and checks the table is there (PostgreSQL: with `create`, creates it if
    /// missing), or reads once (DynamoDB), so a start says at once what is wrong.
    pub async fn open(&self, cluster: &str, create: bool) -> Result<()> {
        match self {
            #[cfg(feature = "postgres")]
            Backend::Postgres(r) => {
                let _ = cluster;
                r.open(create).await
            }
            #[cfg(feature = "dynamodb")]
            Backend::Dynamo(r) => {
                let _ = create;
                r.open(cluster).await
            }
        }
    }

    /// Writes this node's row; `announce` NOTIFYs PostgreSQL listeners.
    pub async fn heartbeat(&self, row: &Row, announce: bool) -> Result<()> {
        match self {
            #[cfg(feature = "postgres")]
            Backend::Postgres(r) => r.heartbeat(row, announce).await,
            #[cfg(feature = "dynamodb")]
            Backend::Dynamo(r) => {
                let _ = announce;
                r.heartbeat(row).await
            }
        }
    }

    /// The live rows of `cluster`, at most `limit`, verified. PostgreSQL judges liveness
    /// by `ttl` on its own clock; DynamoDB by each row's signed time and `ttl`, on this
    /// host's clock.
    pub async fn read(&self, cluster: &str, ttl: Duration, limit: i64) -> Result<Reading> {
        match self {
            #[cfg(feature = "postgres")]
            Backend::Postgres(r) => r.read(cluster, ttl, limit).await,
            #[cfg(feature = "dynamodb")]
            Backend::Dynamo(r) => {
                r.read(cluster, ttl, usize::try_from(limit).unwrap_or(0))
                    .await
            }
        }
    }

    /// Deletes this boot's row of `node`.
    pub async fn delete(&self, cluster: &str, node: &str, boot_id: &str) -> Result<()> {
        match self {
            #[cfg(feature = "postgres")]
            Backend::Postgres(r) => r.delete(cluster, node, boot_id).await.map(|_| ()),
            #[cfg(feature = "dynamodb")]
            Backend::Dynamo(r) => r.delete(cluster, node, boot_id).await,
        }
    }

    /// PostgreSQL: LISTEN until `stop` (see `PgRegistry::listen`). DynamoDB has no
    /// notifications: this only waits for `stop`.
    pub async fn listen<F>(&self, cluster: String, on_change: F, stop: oneshot::Receiver<()>)
    where
        F: FnMut() -> bool + Send,
    {
        match self {
            #[cfg(feature = "postgres")]
            Backend::Postgres(r) => r.listen(cluster, on_change, stop).await,
            #[cfg(feature = "dynamodb")]
            Backend::Dynamo(_) => {
                let _ = (cluster, on_change, stop.await);
            }
        }
    }

    /// The doctor's report; it writes nothing.
    pub async fn check(&self, cluster: &str, ttl: Duration) -> Result<Check> {
        match self {
            #[cfg(feature = "postgres")]
            Backend::Postgres(r) => r.check(cluster, ttl).await,
            #[cfg(feature = "dynamodb")]
            Backend::Dynamo(r) => r.check(cluster, ttl).await,
        }
    }
}

/// The HMAC key of one topology.
pub struct RowKey(hmac::Key);

impl RowKey {
    /// Derives the key from `secret` (at least 32 bytes) and the cluster label, so one
    /// secret used for two clusters still gives rows that only open in their own.
    pub fn new(secret: &[u8], cluster: &str) -> Result<Self> {
        if secret.len() < 32 {
            return Err(Error::new(
                Reason::InvalidArgument,
                format!(
                    "the registry secret is {} bytes; at least 32 are required",
                    secret.len()
                ),
            )
            .with_detail("key", "secret"));
        }
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, cluster.as_bytes()).extract(secret);
        let okm = prk
            .expand(&[MAC_INFO], hmac::HMAC_SHA256)
            .map_err(|_| Error::new(Reason::Internal, "HKDF expand failed"))?;
        Ok(RowKey(hmac::Key::from(okm)))
    }

    /// The row's MAC, hex.
    pub fn sign(&self, row: &Row) -> String {
        hex(hmac::sign(&self.0, &canonical(row)).as_ref())
    }

    /// Checks a row read from the table at `now_ms` (the backend's clock): sizes, then
    /// the MAC (constant time), then that it was signed within `ttl`, then the node
    /// name's shape against the address.
    pub fn admit(
        &self,
        row: &Row,
        mac: &str,
        now_ms: i64,
        ttl: Duration,
    ) -> std::result::Result<(), &'static str> {
        if fields(row).iter().flatten().any(|f| f.len() > MAX_FIELD) {
            return Err("a field is over 255 bytes");
        }
        let tag = unhex(mac).ok_or("the MAC is not 64 hex digits")?;
        hmac::verify(&self.0, &canonical(row), &tag).map_err(|_| "the MAC does not match")?;
        let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
        if row.stamp_ms < now_ms.saturating_sub(ttl_ms).saturating_sub(CLOCK_SLACK_MS) {
            return Err("its signed time is older than the ttl (a stale or replayed row)");
        }
        // Else a row signed ahead would outlive the ttl when copied back later.
        if row.stamp_ms > now_ms.saturating_add(CLOCK_SLACK_MS) {
            return Err("its signed time is in the future (the writer's clock is ahead)");
        }
        node_name_ok(&row.node, &row.address)
    }
}

/// `basename@address`, where the address is the row's and an IP, and the basename is
/// 1..=64 of `[A-Za-z0-9_-]`.
pub fn node_name_ok(node: &str, address: &str) -> std::result::Result<(), &'static str> {
    let (base, host) = node.split_once('@').ok_or("the node name has no @")?;
    if host != address {
        return Err("the node name's host is not the row's address");
    }
    if host.parse::<std::net::IpAddr>().is_err() {
        return Err("the address is not an IP address");
    }
    let base_ok = !base.is_empty()
        && base.len() <= 64
        && base
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if base_ok {
        Ok(())
    } else {
        Err("the node basename is not 1-64 of A-Z a-z 0-9 _ -")
    }
}

/// The signed fields, in their order (`None` is NULL).
fn fields(row: &Row) -> [Option<&String>; 8] {
    [
        Some(&row.cluster),
        Some(&row.node),
        Some(&row.address),
        row.availability_zone.as_ref(),
        row.instance_id.as_ref(),
        row.group.as_ref(),
        Some(&row.boot_id),
        Some(&row.version),
    ]
}

/// Length-prefixed fields, then the stamp (8 bytes, big-endian): no two rows share an
/// encoding.
fn canonical(row: &Row) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    for field in fields(row) {
        match field {
            Some(text) => {
                out.extend_from_slice(&(text.len() as u32).to_be_bytes());
                out.extend_from_slice(text.as_bytes());
            }
            None => out.extend_from_slice(&u32::MAX.to_be_bytes()),
        }
    }
    out.extend_from_slice(&row.stamp_ms.to_be_bytes());
    out
}

/// This host's clock, ms since the epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if text.len() != 64 || !text.is_ascii() {
        return None;
    }
    (0..32)
        .map(|i| u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row() -> Row {
        Row {
            cluster: "chat".into(),
            node: "chat@127.0.1.5".into(),
            address: "127.0.1.5".into(),
            availability_zone: Some("us-east-1a".into()),
            instance_id: None,
            group: None,
            boot_id: "b1".into(),
            version: "0.1.0".into(),
            stamp_ms: NOW,
        }
    }

    const NOW: i64 = 1_800_000_000_000;
    const TTL: Duration = Duration::from_secs(15);

    fn verify(key: &RowKey, row: &Row, mac: &str) -> std::result::Result<(), &'static str> {
        key.admit(row, mac, NOW, TTL)
    }

    fn key() -> RowKey {
        RowKey::new(&[7u8; 32], "chat").expect("key")
    }

    #[test]
    fn a_signed_row_verifies_and_any_change_breaks_it() {
        let mac = key().sign(&row());
        assert_eq!(verify(&key(), &row(), &mac), Ok(()));
        let mut moved = row();
        moved.availability_zone = Some("us-east-1b".into());
        assert_eq!(verify(&key(), &moved, &mac), Err("the MAC does not match"));
        // None and "" are different rows.
        let mut empty = row();
        empty.instance_id = Some(String::new());
        assert_ne!(key().sign(&empty), mac);
        // Another cluster's key, or another secret, does not open it.
        let other = RowKey::new(&[7u8; 32], "other").expect("key");
        assert!(verify(&other, &row(), &mac).is_err());
        let other = RowKey::new(&[8u8; 32], "chat").expect("key");
        assert!(verify(&other, &row(), &mac).is_err());
    }

    #[test]
    fn the_signed_time_bounds_a_replay() {
        let mut old = row();
        old.stamp_ms = NOW - 15_000 - CLOCK_SLACK_MS - 1;
        let mac = key().sign(&old);
        assert_eq!(
            verify(&key(), &old, &mac),
            Err("its signed time is older than the ttl (a stale or replayed row)")
        );
        // Within the ttl and the slack it is live; a moved stamp breaks the MAC.
        old.stamp_ms += 1;
        let mac = key().sign(&old);
        assert_eq!(verify(&key(), &old, &mac), Ok(()));
        let mut moved = old.clone();
        moved.stamp_ms = NOW;
        assert_eq!(verify(&key(), &moved, &mac), Err("the MAC does not match"));
        // Signed ahead, beyond the slack: refused too, or a copy would outlive the ttl.
        let mut ahead = row();
        ahead.stamp_ms = NOW + CLOCK_SLACK_MS + 1;
        let mac = key().sign(&ahead);
        assert_eq!(
            verify(&key(), &ahead, &mac),
            Err("its signed time is in the future (the writer's clock is ahead)")
        );
    }

    #[test]
    fn a_reading_keeps_a_few_refused_by_name_and_gives_up_past_the_cap() {
        let mut reading = Reading::default();
        for i in 0..MAX_REFUSED {
            let forged = Row {
                node: format!("f{i}@127.0.1.5"),
                ..row()
            };
            reading
                .offer(&key(), forged, "00", NOW, TTL)
                .expect("under the cap");
        }
        reading
            .offer(&key(), row(), &key().sign(&row()), NOW, TTL)
            .expect("a good row");
        assert_eq!((reading.rows.len(), reading.refused), (1, MAX_REFUSED));
        assert_eq!(reading.rejected.len(), REJECTED_KEPT);
        let e = reading
            .offer(&key(), row(), "00", NOW, TTL)
            .expect_err("over the cap");
        assert_eq!(e.reason, Reason::BadResponse);
    }

    #[test]
    fn bad_macs_sizes_and_names_are_refused() {
        assert_eq!(
            verify(&key(), &row(), "zz"),
            Err("the MAC is not 64 hex digits")
        );
        let mut long = row();
        long.group = Some("g".repeat(256));
        let mac = key().sign(&long);
        assert_eq!(
            verify(&key(), &long, &mac),
            Err("a field is over 255 bytes")
        );
        for (node, address) in [
            ("chat@127.0.1.6", "127.0.1.5"),
            ("chat127.0.1.5", "127.0.1.5"),
            ("ch at@127.0.1.5", "127.0.1.5"),
            ("@127.0.1.5", "127.0.1.5"),
            ("chat@evil.example", "evil.example"),
        ] {
            let r = Row {
                node: node.into(),
                address: address.into(),
                ..row()
            };
            let mac = key().sign(&r);
            assert!(verify(&key(), &r, &mac).is_err(), "{node}");
        }
    }

    #[test]
    fn a_short_secret_is_refused_naming_the_key() {
        let e = RowKey::new(b"short", "chat").err().expect("refused");
        assert_eq!(e.reason, Reason::InvalidArgument);
        assert_eq!(e.detail("key"), Some("secret"));
    }
}
