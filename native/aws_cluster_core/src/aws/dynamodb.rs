//! DynamoDB over awsJson1_0 through the same signed client: the three item calls the
//! registry needs (`UpdateItem`, `Query` read to its last page, `DeleteItem`). Items
//! cross as DynamoDB's JSON attribute maps; the registry builds them.

use super::failure::{classify, Failure, Operation};
use super::query::{self, JsonCall};
use super::AwsClient;
use crate::{Error, Reason, Result};
use serde_json::{json, Map, Value};

impl AwsClient {
    /// `UpdateItem`; `Ok(false)` when its `ConditionExpression` did not hold.
    pub async fn dynamodb_update(&self, request: Value) -> Result<bool> {
        let call = self.dynamodb_call(Operation::UpdateItem, &request);
        match tokio::time::timeout(self.operation_timeout, call).await {
            Err(_) => Err(self.dynamodb_fail(Operation::UpdateItem, Failure::Timeout)),
            Ok(Ok(_)) => Ok(true),
            Ok(Err(e)) if e.detail("code") == Some("ConditionalCheckFailedException") => Ok(false),
            Ok(Err(e)) => Err(e),
        }
    }

    /// The endpoint DynamoDB calls go to, for messages.
    pub fn dynamodb_endpoint(&self) -> &str {
        &self.dynamodb_endpoint
    }

    /// `DeleteItem`; a failed `ConditionExpression` is fine (nothing to delete).
    pub async fn dynamodb_delete(&self, request: Value) -> Result<()> {
        let call = self.dynamodb_call(Operation::DeleteItem, &request);
        match tokio::time::timeout(self.operation_timeout, call).await {
            Err(_) => Err(self.dynamodb_fail(Operation::DeleteItem, Failure::Timeout)),
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) if e.detail("code") == Some("ConditionalCheckFailedException") => Ok(()),
            Ok(Err(e)) => Err(e),
        }
    }

    /// `Query` for `request`, page after page (`LastEvaluatedKey`), each page's items
    /// handed to `on_page` until it returns false or the last page is read, all within
    /// the operation timeout; a repeated key fails rather than loops.
    pub async fn dynamodb_query<F>(&self, request: Value, mut on_page: F) -> Result<()>
    where
        F: FnMut(Vec<Map<String, Value>>) -> Result<bool>,
    {
        let all = async {
            let mut request = request;
            let mut seen = Vec::new();
            loop {
                let body = self.dynamodb_call(Operation::Query, &request).await?;
                let page: Value =
                    serde_json::from_str(&body).map_err(|_| bad("the Query answer is not JSON"))?;
                let page_items = page
                    .get("Items")
                    .and_then(Value::as_array)
                    .ok_or_else(|| bad("the Query answer has no Items list"))?;
                let items = page_items.iter().filter_map(|i| i.as_object().cloned());
                if !on_page(items.collect())? {
                    return Ok(());
                }
                match page.get("LastEvaluatedKey").filter(|k| k.is_object()) {
                    None => return Ok(()),
                    Some(key) if seen.contains(key) => {
                        return Err(bad("a Query page repeats an earlier LastEvaluatedKey"))
                    }
                    Some(key) => {
                        seen.push(key.clone());
                        request["ExclusiveStartKey"] = key.clone();
                    }
                }
            }
        };
        match tokio::time::timeout(self.operation_timeout, all).await {
            Ok(result) => result,
            Err(_) => Err(self.dynamodb_fail(Operation::Query, Failure::Timeout)),
        }
    }

    async fn dynamodb_call(&self, op: Operation, request: &Value) -> Result<String> {
        let body = request.to_string();
        let call = JsonCall {
            service: query::DYNAMODB,
            endpoint: &self.dynamodb_endpoint,
            operation: op.name(),
            body: &body,
        };
        self.query
            .call_json(&call)
            .await
            .map_err(|f| self.dynamodb_fail(op, f))
    }

    fn dynamodb_fail(&self, op: Operation, failure: Failure) -> Error {
        classify(op, &self.dynamodb_endpoint, self.timeout_ms(), failure)
    }
}

fn bad(message: &str) -> Error {
    Error::new(Reason::BadResponse, format!("dynamodb:Query: {message}"))
        .with_detail("operation", "Query")
}

/// A string attribute.
pub fn s(text: &str) -> Value {
    json!({ "S": text })
}

/// A number attribute.
pub fn n(value: i64) -> Value {
    json!({ "N": value.to_string() })
}

/// The text of string attribute `key` of `item`, if it is one.
pub fn text(item: &Map<String, Value>, key: &str) -> Option<String> {
    item.get(key)?.get("S")?.as_str().map(str::to_owned)
}

/// The value of number attribute `key` of `item`, if it is one.
pub fn number(item: &Map<String, Value>, key: &str) -> Option<i64> {
    item.get(key)?.get("N")?.as_str()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws::fake::{client_for, Fake, Reply};

    #[tokio::test]
    async fn query_reads_every_page_and_a_failed_condition_is_not_an_error() {
        let fake = Fake::start(|r| {
            if r.contains("DynamoDB_20120810.UpdateItem") {
                Reply::status(
                    400,
                    r#"{"__type":"com.amazonaws.dynamodb.v20120810#ConditionalCheckFailedException","message":"no"}"#,
                )
            } else if r.contains("ExclusiveStartKey") {
                Reply::ok(r#"{"Items":[{"node":{"S":"b"}}]}"#)
            } else {
                Reply::ok(r#"{"Items":[{"node":{"S":"a"}}],"LastEvaluatedKey":{"node":{"S":"a"}}}"#)
            }
        })
        .await;
        let client = client_for(&fake.endpoint(), 5_000).await;
        let mut nodes = Vec::new();
        client
            .dynamodb_query(json!({"TableName": "t"}), |items| {
                nodes.extend(items.iter().filter_map(|i| text(i, "node")));
                Ok(true)
            })
            .await
            .expect("items");
        assert_eq!(nodes, ["a", "b"]);
        assert_eq!(fake.requests().len(), 2);
        // Told to stop after the first page, it asks for no second.
        client
            .dynamodb_query(json!({"TableName": "t"}), |_| Ok(false))
            .await
            .expect("stopped");
        assert_eq!(fake.requests().len(), 3);
        assert!(fake.requests()[0].contains("application/x-amz-json-1.0"));
        assert!(!client.dynamodb_update(json!({})).await.expect("no error"));
    }

    #[tokio::test]
    async fn a_repeated_page_key_and_throttling_are_errors_named_by_action() {
        let fake =
            Fake::start(|_| Reply::ok(r#"{"Items":[],"LastEvaluatedKey":{"k":{"S":"x"}}}"#)).await;
        let client = client_for(&fake.endpoint(), 5_000).await;
        let e = client
            .dynamodb_query(json!({}), |_| Ok(true))
            .await
            .expect_err("loops");
        assert_eq!(e.reason, Reason::BadResponse);
        let fake = Fake::start(|_| {
            Reply::status(
                400,
                r#"{"__type":"ProvisionedThroughputExceededException","message":"slow"}"#,
            )
        })
        .await;
        let client = client_for(&fake.endpoint(), 5_000).await;
        let e = client
            .dynamodb_query(json!({}), |_| Ok(true))
            .await
            .expect_err("throttled");
        assert_eq!(e.reason, Reason::Throttled);
        assert_eq!(e.detail("action"), Some("dynamodb:Query"));
    }
}
