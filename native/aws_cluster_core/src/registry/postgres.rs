//! The registry on PostgreSQL (tokio-postgres): one table, one row per node.
//!
//! `last_seen` is stamped by the server's `now()` and liveness is judged by the server
//! too (`last_seen > now() - ttl`), so only the database's clock matters. The signed
//! `stamp_ms` is the writer's estimate of that clock (its offset, measured on every
//! connect and write), checked against the server's clock on every read. Every query is
//! parameterized; the table name, the one thing that cannot be a parameter, is checked
//! to be a plain identifier and quoted. A connection that breaks is dropped and made
//! again on the next call; the caller keeps its last good answer meanwhile.

use super::tls::{self, TlsMode};
use super::{now_ms, Check, Reading, Row, RowKey};
use crate::{Error, Reason, Result};
use std::collections::HashMap;
use std::str::FromStr;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, Mutex};
use tokio_postgres::error::SqlState;
use tokio_postgres::{AsyncMessage, Client, Config, Statement};
use tokio_postgres_rustls::MakeRustlsConnect;

/// How to reach the table.
pub struct PgConfig {
    pub url: String,
    /// `sslmode` (libpq's words); `None`: the URL's, else `prefer`.
    pub ssl: Option<String>,
    /// The CA bundle for `verify-full`; `None`: the URL's `sslrootcert`, else the system's.
    pub ssl_ca_file: Option<String>,
    pub table: String,
    pub connect_timeout: Duration,
    pub operation_timeout: Duration,
}

/// One topology's registry: the parsed config, the row key and the current connection.
pub struct PgRegistry {
    config: Config,
    tls: MakeRustlsConnect,
    table: String,
    channel: String,
    key: RowKey,
    operation_timeout: Duration,
    client: Mutex<Option<Arc<Conn>>>,
    /// The server's clock minus this host's, ms.
    offset_ms: AtomicI64,
}

/// Rows per page of a read: keyset pages by node, so a flood of forged rows costs pages,
/// not one huge result.
const PAGE: i64 = 500;
/// After a notification, further ones wait this long: a NOTIFY flood polls at most twice
/// a second.
const NOTIFY_GAP: Duration = Duration::from_millis(500);

/// One connection and the statements prepared on it: a heartbeat or a page read is one
/// round trip, not three (prepare, execute, close).
struct Conn {
    client: Client,
    statements: std::sync::Mutex<HashMap<String, Statement>>,
}

impl Conn {
    async fn prepared(&self, sql: &str) -> std::result::Result<Statement, tokio_postgres::Error> {
        if let Some(statement) = self
            .statements
            .lock()
            .ok()
            .and_then(|s| s.get(sql).cloned())
        {
            return Ok(statement);
        }
        let statement = self.client.prepare(sql).await?;
        if let Ok(mut statements) = self.statements.lock() {
            statements.insert(sql.to_owned(), statement.clone());
        }
        Ok(statement)
    }

    /// After a failed query: a table dropped or altered makes a prepared plan stale.
    fn forget_statements(&self) {
        if let Ok(mut statements) = self.statements.lock() {
            statements.clear();
        }
    }
}

impl std::ops::Deref for Conn {
    type Target = Client;
    fn deref(&self) -> &Client {
        &self.client
    }
}

/// How a LISTEN connection ended.
enum Listened {
    Stopped,
    Dropped { was_listening: bool },
}

impl PgRegistry {
    /// Checks the options; connects on first use.
    pub fn new(cfg: PgConfig, key: RowKey) -> Result<Self> {
        let (url, url_mode, url_root) = tls::split_url(&cfg.url)?;
        let in_url = cfg.ssl.is_none() && url_mode.is_some();
        let mode =
            TlsMode::parse(cfg.ssl.or(url_mode).as_deref().unwrap_or("prefer")).map_err(|e| {
                if in_url {
                    invalid("url", &e.message)
                } else {
                    e
                }
            })?;
        let tls = tls::connector(mode, cfg.ssl_ca_file.or(url_root).as_deref())?;
        let mut config = Config::from_str(&url).map_err(|e| {
            // Never the URL itself: it holds the password.
            invalid(
                "url",
                &format!("the url is not a PostgreSQL URL or key=value string ({e})"),
            )
        })?;
        if config.get_hosts().is_empty() {
            return Err(invalid("url", "the url names no host"));
        }
        config.connect_timeout(cfg.connect_timeout);
        // A peer that vanished (a failover, a cut route) is noticed in about a minute,
        // not the kernel's two hours: the listener depends on it.
        config.keepalives(true);
        config.keepalives_idle(Duration::from_secs(30));
        config.keepalives_interval(Duration::from_secs(10));
        config.keepalives_retries(3);
        config.ssl_mode(mode.ssl_mode());
        config.application_name("aws_cluster");
        Ok(PgRegistry {
            config,
            tls,
            table: quoted_table(&cfg.table)?,
            channel: cfg.table.clone(),
            key,
            operation_timeout: cfg.operation_timeout,
            client: Mutex::new(None),
            offset_ms: AtomicI64::new(0),
        })
    }

    /// Connects (if not connected) and checks the table exists; with `create`, creates
    /// it if it is missing. Diagnostics open without `create`: they write nothing.
    pub async fn open(&self, create: bool) -> Result<()> {
        let table = self.table.as_str();
        let exists = self
            .run("table lookup", |client| async move {
                client
                    .query_one("SELECT to_regclass($1) IS NOT NULL", &[&table])
                    .await
            })
            .await?;
        if exists.try_get::<_, bool>(0).unwrap_or(false) {
            return Ok(());
        }
        if !create {
            return Err(Error::new(
                Reason::NotFound,
                format!(
                    "registry: table {table} does not exist yet; a node creates it when it \
                     starts (its user needs CREATE on the schema once), or create it with \
                     the README's SQL"
                ),
            ));
        }
        self.run("create table", |client| async move {
            create_table(&client, table).await
        })
        .await
    }

    /// Writes this node's row, stamped with the server's clock; with `announce`, also
    /// tells the listeners (`listen`) that the cluster changed: a join is seen at once.
    pub async fn heartbeat(&self, row: &Row, announce: bool) -> Result<()> {
        let sql = format!(
            "INSERT INTO {t} (cluster, node, address, availability_zone, instance_id, grp, \
             boot_id, version, stamp_ms, mac) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
             ON CONFLICT (cluster, node) DO UPDATE SET address = EXCLUDED.address, \
             availability_zone = EXCLUDED.availability_zone, instance_id = EXCLUDED.instance_id, \
             grp = EXCLUDED.grp, boot_id = EXCLUDED.boot_id, version = EXCLUDED.version, \
             stamp_ms = EXCLUDED.stamp_ms, mac = EXCLUDED.mac, beats = {t}.beats + 1, \
             last_seen = now() RETURNING {SERVER_MS}",
            t = self.table
        );
        let channel = self.channel.as_str();
        self.run("heartbeat", |client| async move {
            // A first prepare is a round trip of its own: stamp and time only the write.
            let statement = client.prepared(&sql).await?;
            // After client(): the offset is this connection's.
            let sent = now_ms();
            let row = Row {
                stamp_ms: sent + self.offset_ms.load(Ordering::Relaxed),
                ..row.clone()
            };
            let mac = self.key.sign(&row);
            let written = client
                .query_one(
                    &statement,
                    &[
                        &row.cluster,
                        &row.node,
                        &row.address,
                        &row.availability_zone,
                        &row.instance_id,
                        &row.group,
                        &row.boot_id,
                        &row.version,
                        &row.stamp_ms,
                        &mac,
                    ],
                )
                .await?;
            self.measured(sent, written.try_get(0).ok());
            if announce {
                let notify = "SELECT pg_notify($1, $2)";
                client.execute(notify, &[&channel, &row.cluster]).await?;
            }
            Ok(())
        })
        .await
    }

    /// Takes the server's clock `server_ms`, read by a query sent at `sent` (this host's
    /// ms), as the offset: the server read it about halfway through the round trip.
    fn measured(&self, sent: i64, server_ms: Option<i64>) {
        if let Some(server_ms) = server_ms {
            let midway = sent + (now_ms() - sent) / 2;
            self.offset_ms.store(server_ms - midway, Ordering::Relaxed);
        }
    }

    /// Until `stop` fires or `on_change` returns false: LISTENs on the table's channel over
    /// a connection of its own and calls `on_change` when a notification about `cluster`
    /// came, at most once per `NOTIFY_GAP`. A dropped connection is made again with
    /// backoff (200 ms doubling to 10 s, from 200 ms again after a connection listened).
    pub async fn listen<F>(
        &self,
        cluster: String,
        mut on_change: F,
        mut stop: oneshot::Receiver<()>,
    ) where
        F: FnMut() -> bool + Send,
    {
        const FIRST: Duration = Duration::from_millis(200);
        let mut backoff = FIRST;
        let mut again = false;
        loop {
            tokio::select! {
                _ = &mut stop => return,
                ended = self.listen_once(&cluster, &mut on_change, again) => match ended {
                    Listened::Stopped => return,
                    Listened::Dropped { was_listening: true } => backoff = FIRST,
                    Listened::Dropped { was_listening: false } => {}
                }
            }
            tokio::select! {
                _ = &mut stop => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(10));
            again = true;
        }
    }

    /// One LISTEN connection, until it drops or `on_change` asks to stop. `again`: an
    /// earlier one dropped, so joins may have been announced unheard: `on_change` once
    /// as soon as this one listens.
    async fn listen_once<F>(&self, cluster: &str, on_change: &mut F, again: bool) -> Listened
    where
        F: FnMut() -> bool + Send,
    {
        let dropped = Listened::Dropped {
            was_listening: false,
        };
        let Ok((client, mut connection)) = self.config.connect(self.tls.clone()).await else {
            return dropped;
        };
        // One pending wake-up at most: a flood of notifications queues nothing.
        let (tx, mut rx) = mpsc::channel::<()>(1);
        let ours = cluster.to_owned();
        // Connection's own Future drops notifications: drive it by hand to get them.
        tokio::spawn(async move {
            while let Some(Ok(message)) =
                std::future::poll_fn(|cx| connection.poll_message(cx)).await
            {
                if let AsyncMessage::Notification(n) = message {
                    if n.payload() == ours && tx.try_send(()).is_err() && tx.is_closed() {
                        return;
                    }
                }
            }
        });
        let listen = format!("LISTEN {}", self.table);
        if client.batch_execute(&listen).await.is_err() {
            return dropped;
        }
        if again && !on_change() {
            return Listened::Stopped;
        }
        while rx.recv().await.is_some() {
            if !on_change() {
                return Listened::Stopped;
            }
            tokio::time::sleep(NOTIFY_GAP).await;
        }
        Listened::Dropped {
            was_listening: true,
        }
    }

    /// The rows of `cluster` seen within `ttl`, each verified (`Reading::offer`) against
    /// the server's clock, until `limit` are kept; refused rows do not count towards it.
    pub async fn read(&self, cluster: &str, ttl: Duration, limit: i64) -> Result<Reading> {
        // Byte order ("C"), whatever the database's collation: the pages' keys are
        // compared here too.
        let sql = format!(
            "SELECT cluster, node, address, availability_zone, instance_id, grp, boot_id, \
             version, stamp_ms, mac, {SERVER_MS} FROM {} WHERE cluster = $1 \
             AND last_seen > now() - $2 * interval '1 millisecond' \
             AND node COLLATE \"C\" > $3 ORDER BY node COLLATE \"C\" LIMIT $4",
            self.table
        );
        let ttl_ms = ttl.as_millis() as f64;
        let limit = usize::try_from(limit).unwrap_or(0);
        let pages = |client: Arc<Conn>| async move {
            let mut reading = Reading::default();
            let mut after = String::new();
            let statement = client.prepared(&sql).await?;
            loop {
                let rows = client
                    .query(&statement, &[&cluster, &ttl_ms, &after, &PAGE])
                    .await?;
                let last_page = (rows.len() as i64) < PAGE;
                for r in rows {
                    if reading.rows.len() >= limit {
                        return Ok(Ok(reading));
                    }
                    // Keyset paging needs the node and the clock: without them, fail
                    // rather than page from the start again or skip the age check.
                    let (Ok(node), Ok(server_ms)) = (r.try_get::<_, String>(1), r.try_get(10))
                    else {
                        return Ok(Err(undecodable()));
                    };
                    if node <= after {
                        return Ok(Err(undecodable()));
                    }
                    let row = Row {
                        cluster: r.try_get(0).unwrap_or_default(),
                        node,
                        address: r.try_get(2).unwrap_or_default(),
                        availability_zone: r.try_get(3).unwrap_or_default(),
                        instance_id: r.try_get(4).unwrap_or_default(),
                        group: r.try_get(5).unwrap_or_default(),
                        boot_id: r.try_get(6).unwrap_or_default(),
                        version: r.try_get(7).unwrap_or_default(),
                        stamp_ms: r.try_get(8).unwrap_or_default(),
                    };
                    let mac: String = r.try_get(9).unwrap_or_default();
                    after.clone_from(&row.node);
                    if let Err(e) = reading.offer(&self.key, row, &mac, server_ms, ttl) {
                        return Ok(Err(e));
                    }
                }
                if last_page {
                    return Ok(Ok(reading));
                }
            }
        };
        self.run("read", pages).await?
    }

    /// Connects and reports the server, TLS, the privileges on the table and the live
    /// rows of `cluster`. Creates nothing: a missing table is `:not_found`.
    pub async fn check(&self, cluster: &str, ttl: Duration) -> Result<Check> {
        let sql = format!(
            "SELECT current_setting('server_version'), \
             coalesce((SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()), false), \
             has_table_privilege($1, 'SELECT'), has_table_privilege($1, 'INSERT'), \
             has_table_privilege($1, 'UPDATE'), has_table_privilege($1, 'DELETE'), \
             (SELECT count(*) FROM {} WHERE cluster = $2 \
              AND last_seen > now() - $3 * interval '1 millisecond')",
            self.table
        );
        let table = self.table.as_str();
        let ttl_ms = ttl.as_millis() as f64;
        let row = self
            .run("check", |client| async move {
                client
                    .query_one(sql.as_str(), &[&table, &cluster, &ttl_ms])
                    .await
            })
            .await?;
        Ok(Check {
            server_version: row.try_get(0).unwrap_or_default(),
            ssl: row.try_get(1).unwrap_or_default(),
            privileges: [2, 3, 4, 5].map(|i| row.try_get(i).unwrap_or_default()),
            live_rows: row.try_get(6).unwrap_or_default(),
            host: self.host(),
        })
    }

    /// `host:port` of the first host in the config, for messages (never the password).
    pub fn host(&self) -> String {
        let host = match self.config.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
            Some(tokio_postgres::config::Host::Unix(p)) => p.display().to_string(),
            None => "?".into(),
        };
        let port = self.config.get_ports().first().copied().unwrap_or(5432);
        format!("{host}:{port}")
    }

    /// Deletes this node's row of this boot (a newer boot's row is left alone).
    pub async fn delete(&self, cluster: &str, node: &str, boot_id: &str) -> Result<u64> {
        let sql = format!(
            "DELETE FROM {} WHERE cluster = $1 AND node = $2 AND boot_id = $3",
            self.table
        );
        self.run("delete", |client| async move {
            client
                .execute(sql.as_str(), &[&cluster, &node, &boot_id])
                .await
        })
        .await
    }

    /// Runs `query` on the connection within the operation timeout; a failure that
    /// broke the connection drops it, so the next call connects again.
    async fn run<'a, T, F, Fut>(&'a self, what: &'static str, query: F) -> Result<T>
    where
        F: FnOnce(Arc<Conn>) -> Fut,
        Fut: std::future::Future<Output = std::result::Result<T, tokio_postgres::Error>> + 'a,
    {
        let work = async {
            let client = self.client().await.map_err(Failed::Connect)?;
            query(client.clone())
                .await
                .map_err(|e| Failed::Query(client, e))
        };
        match tokio::time::timeout(self.operation_timeout, work).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(Failed::Connect(e))) => Err(e),
            Ok(Err(Failed::Query(client, e))) => {
                client.forget_statements();
                if client.is_closed() {
                    *self.client.lock().await = None;
                }
                Err(classify(what, &e))
            }
            Err(_) => {
                *self.client.lock().await = None;
                Err(Error::new(
                    Reason::Timeout,
                    format!(
                        "registry {what}: no answer from PostgreSQL within {} ms (operation_timeout)",
                        self.operation_timeout.as_millis()
                    ),
                ))
            }
        }
    }

    async fn client(&self) -> Result<Arc<Conn>> {
        let mut slot = self.client.lock().await;
        if let Some(client) = slot.as_ref().filter(|c| !c.is_closed()) {
            return Ok(client.clone());
        }
        let (client, connection) = self
            .config
            .connect(self.tls.clone())
            .await
            .map_err(|e| classify("connect", &e))?;
        tokio::spawn(async move {
            // Ends when the server or the network closes it; the next call reconnects.
            let _ = connection.await;
        });
        let sent = now_ms();
        let clock = client
            .query_one(&format!("SELECT {SERVER_MS}"), &[])
            .await
            .map_err(|e| classify("connect", &e))?;
        self.measured(sent, clock.try_get(0).ok());
        let conn = Arc::new(Conn {
            client,
            statements: std::sync::Mutex::new(HashMap::new()),
        });
        *slot = Some(conn.clone());
        Ok(conn)
    }
}

enum Failed {
    Connect(Error),
    Query(Arc<Conn>, tokio_postgres::Error),
}

fn undecodable() -> Error {
    Error::new(
        Reason::BadResponse,
        "registry read: a row's node or the server's clock did not decode as text and \
         bigint, or the rows came out of order (is the database's encoding UTF8?)",
    )
}

/// The server's clock, ms since the epoch, as a select expression.
const SERVER_MS: &str = "(extract(epoch from clock_timestamp()) * 1000)::bigint";

// Only called when the table is missing (`open`): a table made in a migration needs no
// CREATE privilege, but CREATE TABLE IF NOT EXISTS checks it even when the table exists.
async fn create_table(
    client: &Client,
    table: &str,
) -> std::result::Result<(), tokio_postgres::Error> {
    let sql = format!(
        "CREATE TABLE IF NOT EXISTS {table} (\
         cluster text NOT NULL, node text NOT NULL, address text NOT NULL, \
         availability_zone text, instance_id text, grp text, boot_id text NOT NULL, \
         version text NOT NULL, stamp_ms bigint NOT NULL, mac text NOT NULL, \
         beats bigint NOT NULL DEFAULT 1, first_seen timestamptz NOT NULL DEFAULT now(), \
         last_seen timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (cluster, node))"
    );
    match client.batch_execute(&sql).await {
        // Two nodes creating it at once: the loser's IF NOT EXISTS can still collide.
        Err(e)
            if e.code() == Some(&SqlState::UNIQUE_VIOLATION)
                || e.code() == Some(&SqlState::DUPLICATE_TABLE) =>
        {
            Ok(())
        }
        other => other,
    }
}

/// A plain identifier (`[a-z_][a-z0-9_]*`, at most 63 bytes), double-quoted.
pub fn quoted_table(name: &str) -> Result<String> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b == b'_')
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok {
        Ok(format!("\"{name}\""))
    } else {
        Err(invalid(
            "table",
            "the table name must be 1-63 of a-z 0-9 _, not starting with a digit",
        ))
    }
}

fn invalid(key: &'static str, message: &str) -> Error {
    Error::new(Reason::InvalidArgument, format!("option {key}: {message}")).with_detail("key", key)
}

/// A tokio-postgres error as a reason a caller can act on. Its text never holds the
/// password (tokio-postgres does not echo it).
pub fn classify(what: &str, e: &tokio_postgres::Error) -> Error {
    let (reason, hint) = match e.code() {
        Some(c)
            if *c == SqlState::INVALID_PASSWORD
                || *c == SqlState::INVALID_AUTHORIZATION_SPECIFICATION =>
        {
            (
                Reason::Unauthorized,
                "; check the user and password (url:, or username: and password:)",
            )
        }
        Some(c) if *c == SqlState::INSUFFICIENT_PRIVILEGE => (
            Reason::Unauthorized,
            "; the user needs SELECT, INSERT, UPDATE, DELETE (and CREATE once) on the table",
        ),
        Some(c) if *c == SqlState::INVALID_CATALOG_NAME => {
            (Reason::NotFound, "; check the database in url:")
        }
        Some(c) if *c == SqlState::UNDEFINED_TABLE || *c == SqlState::UNDEFINED_COLUMN => (
            Reason::NotFound,
            "; the table is missing or older than this version (README: the table's schema)",
        ),
        Some(_) => (Reason::BadResponse, ""),
        None if format!("{e:?}").contains("Certificate") => (
            Reason::Unreachable,
            "; the server's certificate did not verify (sslmode verify-full): set \
             ssl_ca_file: to the CA that signed it (for RDS, its regional or global bundle)",
        ),
        None if e.is_closed() || std::error::Error::source(e).is_some() => (
            Reason::Unreachable,
            "; is the server up and the url's host and port right?",
        ),
        None => (Reason::Unreachable, ""),
    };
    // A server error's Display is only "db error": its own message says what.
    let text = match e.as_db_error() {
        Some(db) => format!("{}: {}", db.severity(), db.message()),
        None => e.to_string(),
    };
    let mut err = Error::new(reason, format!("registry {what}: PostgreSQL: {text}{hint}"));
    if let Some(code) = e.code() {
        err = err.with_detail("code", code.code());
    }
    err
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_names_are_plain_identifiers() {
        assert_eq!(
            quoted_table("aws_cluster_nodes").expect("ok"),
            "\"aws_cluster_nodes\""
        );
        for bad in [
            "",
            "1nodes",
            "nodes; DROP TABLE x",
            "Nodes",
            "a\"b",
            &"n".repeat(64),
        ] {
            let e = quoted_table(bad).expect_err(bad);
            assert_eq!(e.detail("key"), Some("table"));
        }
    }

    #[test]
    fn a_bad_url_names_the_key_without_echoing_it() {
        let key = RowKey::new(&[1u8; 32], "c").expect("key");
        let cfg = PgConfig {
            url: "postgres://u:hunter2@/db?connect_timeout=bogus".into(),
            ssl: None,
            ssl_ca_file: None,
            table: "t".into(),
            connect_timeout: Duration::from_secs(1),
            operation_timeout: Duration::from_secs(1),
        };
        let e = PgRegistry::new(cfg, key).err().expect("refused");
        assert_eq!(e.detail("key"), Some("url"));
        assert!(!e.message.contains("hunter2"), "{}", e.message);
    }

    #[tokio::test]
    async fn a_refused_connection_is_unreachable() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr").port()
        };
        let cfg = PgConfig {
            url: format!("postgres://u:hunter2@127.0.0.1:{port}/db"),
            ssl: None,
            ssl_ca_file: None,
            table: "t".into(),
            connect_timeout: Duration::from_secs(1),
            operation_timeout: Duration::from_secs(2),
        };
        let reg = PgRegistry::new(cfg, RowKey::new(&[1u8; 32], "c").expect("key")).expect("new");
        let e = reg.open(true).await.expect_err("refused");
        assert_eq!(e.reason, Reason::Unreachable);
        assert!(!e.message.contains("hunter2"), "{}", e.message);
    }
}
