//! The registry on DynamoDB: one table keyed by (`cluster`, `node`), both strings.
//!
//! A heartbeat is an `UpdateItem` that sets the row's fields, bumps `beats` and moves
//! `expires_at` (epoch seconds, for the table's TTL, which deletes expired items days
//! later at best) and `expires_ms` forward. It is conditional on a monotonic `seq` per
//! boot, so a retried write can never put an older row back over a newer one. Readers
//! filter on `expires_ms` themselves, by their own clock: DynamoDB keeps returning
//! expired items until its TTL sweep gets to them.

use super::{Reading, Rejected, Row, RowKey};
use crate::aws::dynamodb::{n, number, s, text};
use crate::aws::AwsClient;
use crate::{Error, Reason, Result};
use serde_json::{json, Map, Value};
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

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

    /// Writes this node's row; a write the condition refuses (an older retry) is dropped.
    pub async fn heartbeat(&self, row: &Row) -> Result<()> {
        let now = now_ms();
        let expires = now + self.ttl.as_millis() as i64;
        let seq = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
        let mut values = json!({
            ":address": s(&row.address), ":boot": s(&row.boot_id), ":version": s(&row.version),
            ":mac": s(&self.key.sign(row)), ":seq": n(seq), ":one": n(1),
            ":exp_ms": n(expires), ":exp": n(expires / 1000), ":seen": n(now),
        });
        let mut set = vec![
            "address = :address",
            "boot_id = :boot",
            "version = :version",
            "mac = :mac",
            "seq = :seq",
            "expires_ms = :exp_ms",
            "expires_at = :exp",
            "last_seen_ms = :seen",
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
            "ConditionExpression": "attribute_not_exists(seq) OR boot_id <> :boot OR seq < :seq",
            "ExpressionAttributeValues": values,
        });
        self.client.dynamodb_update(request).await.map(|_| ())
    }

    /// The unexpired rows of `cluster` (every page, consistent reads), each verified.
    pub async fn read(&self, cluster: &str, limit: usize) -> Result<Reading> {
        let request = json!({
            "TableName": self.table,
            "KeyConditionExpression": "#c = :c",
            "FilterExpression": "expires_ms > :now",
            "ExpressionAttributeNames": {"#c": "cluster"},
            "ExpressionAttributeValues": {":c": s(cluster), ":now": n(now_ms())},
            "ConsistentRead": true,
        });
        let items = self.client.dynamodb_query(request).await?;
        let mut reading = Reading::default();
        // Our own filter too: the expiry is the reader's to judge.
        let now = now_ms();
        for item in items
            .iter()
            .filter(|i| number(i, "expires_ms").is_some_and(|e| e > now))
        {
            if reading.rows.len() >= limit {
                break;
            }
            let row = row_of(item);
            match self
                .key
                .verify(&row, &text(item, "mac").unwrap_or_default())
            {
                Ok(()) => reading.rows.push(row),
                Err(why) => reading.rejected.push(Rejected {
                    node: row.node.chars().take(64).collect(),
                    why,
                }),
            }
        }
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
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
