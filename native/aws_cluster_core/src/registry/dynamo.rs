//! The registry on DynamoDB: one table keyed by (`cluster`, `node`), both strings.
//!
//! A heartbeat is an `UpdateItem` that sets the row's fields and its signed `stamp_ms`
//! (the writer's clock), bumps `beats` and moves `expires_at` (epoch seconds, for the
//! table's TTL, which deletes expired items days later at best) forward. It is
//! conditional on a `seq` per boot that only grows, seeded from the clock, so a retried
//! write can never put an older row back over a newer one, and a restarted topology in
//! the same VM (same boot id) still writes. Readers judge liveness themselves, by the
//! signed stamp and their own clock: DynamoDB keeps returning expired items until its
//! TTL sweep gets to them.

use super::{now_ms, Check, Reading, Row, RowKey, CLOCK_SLACK_MS};
use crate::aws::dynamodb::{n, number, s, text};
use crate::aws::AwsClient;
use crate::{Error, Reason, Result};
use serde_json::{json, Map, Value};
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

/// One topology's registry table on DynamoDB.
pub struct DynamoRegistry {
    client: AwsClient,
    table: String,
    key: RowKey,
    ttl: Duration,
    seq: AtomicI64,
}

impl DynamoRegistry {
    /// `table` is 3-255 of `[A-Za-z0-9_.-]`, as DynamoDB requires.
    pub fn new(client: AwsClient, table: &str, key: RowKey, ttl: Duration) -> Result<Self> {
        let ok = (3..=255).contains(&table.len())
            && table
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
        if !ok {
            return Err(Error::new(
                Reason::InvalidArgument,
                "option table: a DynamoDB table name is 3-255 of A-Z a-z 0-9 _ . -",
            )
            .with_detail("key", "table"));
        }
        Ok(DynamoRegistry {
            client,
            table: table.to_owned(),
            key,
            ttl,
            seq: AtomicI64::new(0),
        })
    }

    /// Writes this node's row. A write the condition refuses (this boot's row already
    /// holds a later `seq`: another writer with this node's name and boot) is an error.
    pub async fn heartbeat(&self, row: &Row) -> Result<()> {
        let now = now_ms();
        let row = Row {
            stamp_ms: now,
            ..row.clone()
        };
        let expires = now + self.ttl.as_millis() as i64;
        let seq = self.next_seq(now);
        let mut values = json!({
            ":address": s(&row.address), ":boot": s(&row.boot_id), ":version": s(&row.version),
            ":mac": s(&self.key.sign(&row)), ":seq": n(seq), ":one": n(1),
            ":exp": n(expires / 1000), ":stamp": n(now),
        });
        let mut set = vec![
            "address = :address",
            "boot_id = :boot",
            "version = :version",
            "mac = :mac",
            "seq = :seq",
            "expires_at = :exp",
            "stamp_ms = :stamp",
        ];
        let mut remove = Vec::new();
        for (attr, value) in [
            ("availability_zone", &row.availability_zone),
            ("instance_id", &row.instance_id),
            ("grp", &row.group),
        ] {
            match value {
                Some(v) => {
                    values[format!(":{attr}")] = s(v);
                    set.push(match attr {
                        "availability_zone" => "availability_zone = :availability_zone",
                        "instance_id" => "instance_id = :instance_id",
                        _ => "grp = :grp",
                    });
                }
                None => remove.push(attr),
            }
        }
        let mut update = format!("SET {} ADD beats :one", set.join(", "));
        if !remove.is_empty() {
            update.push_str(&format!(" REMOVE {}", remove.join(", ")));
        }
        let request = json!({
            "TableName": self.table,
            "Key": {"cluster": s(&row.cluster), "node": s(&row.node)},
            "UpdateExpression": update,
            // `mac = :mac`: a retry of a write that landed (its reply lost) is no conflict.
            "ConditionExpression":
                "attribute_not_exists(seq) OR boot_id <> :boot OR seq < :seq OR mac = :mac",
            "ExpressionAttributeValues": values,
        });
        if self.client.dynamodb_update(request).await? {
            return Ok(());
        }
        Err(Error::new(
            Reason::BadResponse,
            format!(
                "registry heartbeat: DynamoDB refused the write of {}: its row already \
                 holds a later write of this boot (seq {seq} or more); is another node \
                 running with this name, or did this host's clock step back?",
                row.node
            ),
        )
        .with_detail("code", "ConditionalCheckFailedException"))
    }

    /// Reads once, so a start says at once whether the table is there and readable.
    pub async fn open(&self, cluster: &str) -> Result<()> {
        self.read(cluster, self.ttl, 1).await.map(|_| ())
    }

    /// This boot's next `seq`: past the last one and at least the clock (ms), so a
    /// registry made again in this VM starts above what the one before wrote.
    fn next_seq(&self, now: i64) -> i64 {
        let next = |last: i64| now.max(last + 1);
        // The closure never refuses, so this is always Ok(the value it replaced).
        let last = self
            .seq
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |last| {
                Some(next(last))
            })
            .unwrap_or_else(|last| last);
        next(last)
    }

    /// The live rows of `cluster` (consistent reads, page after page), each verified
    /// (`Reading::offer`) on this host's clock as its page comes, until `limit` are kept.
    pub async fn read(&self, cluster: &str, ttl: Duration, limit: usize) -> Result<Reading> {
        let now = now_ms();
        let cutoff = now - ttl.as_millis() as i64 - CLOCK_SLACK_MS;
        let request = json!({
            "TableName": self.table,
            "KeyConditionExpression": "#c = :c",
            "FilterExpression": "stamp_ms > :cutoff",
            "ExpressionAttributeNames": {"#c": "cluster"},
            "ExpressionAttributeValues": {":c": s(cluster), ":cutoff": n(cutoff)},
            "ConsistentRead": true,
        });
        let mut reading = Reading::default();
        let on_page = |items: Vec<Map<String, Value>>| {
            for item in &items {
                if reading.rows.len() >= limit {
                    return Ok(false);
                }
                let mac = text(item, "mac").unwrap_or_default();
                reading.offer(&self.key, row_of(item), &mac, now, ttl)?;
            }
            Ok(true)
        };
        self.client.dynamodb_query(request, on_page).await?;
        Ok(reading)
    }

    /// Deletes this node's row of this boot.
    pub async fn delete(&self, cluster: &str, node: &str, boot_id: &str) -> Result<()> {
        let request = json!({
            "TableName": self.table,
            "Key": {"cluster": s(cluster), "node": s(node)},
            "ConditionExpression": "boot_id = :boot",
            "ExpressionAttributeValues": {":boot": s(boot_id)},
        });
        self.client.dynamodb_delete(request).await
    }

    /// For the doctor: one read (the live rows), then whether this identity may
    /// `UpdateItem` and `DeleteItem`, each asked under a condition that can never hold,
    /// so nothing is written: DynamoDB checks the permission before the condition.
    pub async fn check(&self, cluster: &str, ttl: Duration) -> Result<Check> {
        let reading = self.read(cluster, ttl, usize::MAX).await?;
        let key = json!({"cluster": s(cluster), "node": s("aws_cluster doctor probe")});
        let never = "attribute_exists(#n) AND attribute_not_exists(#n)";
        let update = self.client.dynamodb_update(json!({
            "TableName": self.table, "Key": key, "ConditionExpression": never,
            "UpdateExpression": "SET probe = :p",
            "ExpressionAttributeNames": {"#n": "node"},
            "ExpressionAttributeValues": {":p": n(1)},
        }));
        let update = allowed(update.await.map(|written| !written))?;
        let delete = self.client.dynamodb_delete(json!({
            "TableName": self.table, "Key": key, "ConditionExpression": never,
            "ExpressionAttributeNames": {"#n": "node"},
        }));
        let delete = allowed(delete.await.map(|()| true))?;
        let endpoint = self.client.dynamodb_endpoint();
        Ok(Check {
            server_version: "DynamoDB".into(),
            ssl: endpoint.starts_with("https://"),
            privileges: [true, update, update, delete],
            live_rows: reading.rows.len() as i64,
            host: endpoint.to_owned(),
        })
    }
}

/// A probe's answer: `Ok(true)` when the call got as far as the condition, `Ok(false)`
/// when AWS refused the action; any other failure is the check's error.
fn allowed(answer: Result<bool>) -> Result<bool> {
    match answer {
        Ok(reached) => Ok(reached),
        Err(e) if e.reason == Reason::Unauthorized => Ok(false),
        Err(e) => Err(e),
    }
}

fn row_of(item: &Map<String, Value>) -> Row {
    Row {
        cluster: text(item, "cluster").unwrap_or_default(),
        node: text(item, "node").unwrap_or_default(),
        address: text(item, "address").unwrap_or_default(),
        availability_zone: text(item, "availability_zone"),
        instance_id: text(item, "instance_id"),
        group: text(item, "grp"),
        boot_id: text(item, "boot_id").unwrap_or_default(),
        version: text(item, "version").unwrap_or_default(),
        stamp_ms: number(item, "stamp_ms").unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws::fake::{client_for, Fake, Reply};

    #[tokio::test]
    async fn seq_grows_from_the_clock_and_a_refused_condition_is_an_error() {
        let fake = Fake::start(|_| {
            Reply::status(
                400,
                r#"{"__type":"com.amazonaws.dynamodb.v20120810#ConditionalCheckFailedException","message":"no"}"#,
            )
        })
        .await;
        let client = client_for(&fake.endpoint(), 5_000).await;
        let key = RowKey::new(&[3u8; 32], "c").expect("key");
        let reg = DynamoRegistry::new(client, "nodes", key, Duration::from_secs(15)).expect("new");
        // The clock seeds it; within one ms it still grows.
        assert_eq!(reg.next_seq(1_000), 1_000);
        assert_eq!(reg.next_seq(1_000), 1_001);
        assert_eq!(reg.next_seq(5_000), 5_000);
        let row = Row {
            cluster: "c".into(),
            node: "n@127.0.1.5".into(),
            address: "127.0.1.5".into(),
            boot_id: "b".into(),
            version: "0.1.0".into(),
            ..Row::default()
        };
        let e = reg.heartbeat(&row).await.expect_err("refused");
        assert_eq!(e.reason, Reason::BadResponse);
        assert_eq!(e.detail("code"), Some("ConditionalCheckFailedException"));
        assert!(e.message.contains("n@127.0.1.5"), "{}", e.message);
    }
}
