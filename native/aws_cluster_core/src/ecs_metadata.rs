//! ECS task metadata v4: who this task is, read once at start from the endpoint the ECS
//! agent names in `ECS_CONTAINER_METADATA_URI_V4`, with no API call and no IAM.
//!
//! Two GETs over the IMDS client's HTTP stack (`imds`): `{uri}/task` (cluster, task ARN,
//! family, zone) and `{uri}` (this container's own networks and addresses). Connect
//! failures, timeouts and 5xx are retried. Every error names the topology options that
//! replace what could not be read.

use crate::imds::{self, ImdsConfig, Target, Transport};
use crate::{Error, Reason, Result};
use serde_json::Value;
use std::time::Duration;

/// What the endpoint says about this task.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskMetadata {
    pub cluster: Option<String>,
    pub task_arn: Option<String>,
    pub family: Option<String>,
    pub availability_zone: Option<String>,
    pub launch_type: Option<String>,
    /// Read from the task ARN (`arn:aws:ecs:<region>:...`).
    pub region: Option<String>,
    /// This container's IPv4 addresses, over all its networks.
    pub addresses: Vec<String>,
}

/// How to reach the endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetadataConfig {
    /// `http://host[:port]/path`, the value of `ECS_CONTAINER_METADATA_URI_V4`.
    pub uri: String,
    pub connect_timeout: Duration,
    pub timeout: Duration,
    pub attempts: u32,
}

impl MetadataConfig {
    pub fn new(uri: impl Into<String>) -> Self {
        MetadataConfig {
            uri: uri.into(),
            connect_timeout: Duration::from_secs(1),
            timeout: Duration::from_secs(2),
            attempts: 3,
        }
    }
}

const OPTIONS: &str = "set cluster:, region: and one of family:, service_name:, started_by: \
                       or tags: in the topology config";

/// Reads the task and this container's metadata.
pub async fn fetch(cfg: &MetadataConfig) -> Result<TaskMetadata> {
    let (authority, path) = split(&cfg.uri)?;
    let target = Target::parse(&format!("http://{authority}"))?;
    let http_cfg = ImdsConfig {
        endpoint: format!("http://{authority}"),
        connect_timeout: cfg.connect_timeout,
        timeout: cfg.timeout,
        attempts: cfg.attempts,
    };
    let http = imds::http_client(&http_cfg);
    let task = get(&http, &http_cfg, &target, &format!("{path}/task")).await?;
    let container = get(&http, &http_cfg, &target, path).await?;
    let mut meta = parse_task(&task)?;
    meta.addresses = parse_addresses(&container)?;
    Ok(meta)
}

/// The fields of a `/task` answer.
pub fn parse_task(body: &str) -> Result<TaskMetadata> {
    let v = json(body, "/task")?;
    let task_arn = text(&v, "TaskARN");
    Ok(TaskMetadata {
        cluster: text(&v, "Cluster"),
        region: task_arn.as_deref().and_then(region_of),
        task_arn,
        family: text(&v, "Family"),
        availability_zone: text(&v, "AvailabilityZone"),
        launch_type: text(&v, "LaunchType"),
        addresses: Vec::new(),
    })
}

/// The IPv4 addresses of a container answer's `Networks`.
pub fn parse_addresses(body: &str) -> Result<Vec<String>> {
    let v = json(body, "the container")?;
    Ok(v.get("Networks")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .flat_map(|n| {
            n.get("IPv4Addresses")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
        })
        .filter_map(|a| a.as_str().map(str::to_owned))
        .collect())
}

/// The region of an ARN: its fourth field.
pub fn region_of(arn: &str) -> Option<String> {
    let region = arn.split(':').nth(3)?;
    (!region.is_empty()).then(|| region.to_owned())
}

fn split(uri: &str) -> Result<(&str, &str)> {
    let bad = || {
        Error::new(
            Reason::InvalidArgument,
            format!(
                "the task metadata URI must look like http://host[:port]/path, got {:?}",
                uri.chars().take(120).collect::<String>()
            ),
        )
        .with_detail("key", "metadata_uri")
    };
    let rest = uri.strip_prefix("http://").ok_or_else(bad)?;
    let rest = rest.trim_end_matches('/');
    Ok(match rest.find('/') {
        Some(i) if i > 0 => (&rest[..i], &rest[i..]),
        None if !rest.is_empty() => (rest, ""),
        _ => return Err(bad()),
    })
}

async fn get(http: &imds::Http, cfg: &ImdsConfig, target: &Target, path: &str) -> Result<String> {
    let mut last = Transport::Timeout;
    for n in 0..cfg.attempts.max(1) {
        if n > 0 {
            tokio::time::sleep(Duration::from_millis(100u64 << n.min(3))).await;
        }
        match imds::request(http, cfg, target, "GET", path, &[]).await {
            Ok(r) if r.status == 200 => {
                return String::from_utf8(r.body).map_err(|_| {
                    failure(
                        Reason::BadResponse,
                        format!("GET {path}: the body is not UTF-8"),
                    )
                })
            }
            Ok(r) if r.status >= 500 => last = Transport::Status(r.status),
            Ok(r) => {
                return Err(failure(
                    Reason::BadResponse,
                    format!("GET {path}: HTTP {}", r.status),
                ))
            }
            Err(e) => last = e,
        }
    }
    let reason = match last {
        Transport::Timeout => Reason::Timeout,
        Transport::Unreachable(_) => Reason::Unreachable,
        Transport::Malformed(_) | Transport::Status(_) => Reason::BadResponse,
    };
    Err(failure(
        reason,
        format!(
            "GET {path}: {} after {} attempts",
            last.text(),
            cfg.attempts.max(1)
        ),
    ))
}

fn failure(reason: Reason, cause: String) -> Error {
    Error::new(
        reason,
        format!("the ECS task metadata endpoint failed ({cause}); {OPTIONS}"),
    )
}

fn json(body: &str, what: &str) -> Result<Value> {
    serde_json::from_str::<Value>(body)
        .ok()
        .filter(Value::is_object)
        .ok_or_else(|| failure(Reason::BadResponse, format!("{what} is not a JSON object")))
}

fn text(v: &Value, key: &str) -> Option<String> {
    v.get(key)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    const TASK: &str = r#"{"Cluster":"arn:aws:ecs:eu-west-1:123:cluster/web",
        "TaskARN":"arn:aws:ecs:eu-west-1:123:task/web/abc","Family":"chat","Revision":"7",
        "AvailabilityZone":"eu-west-1b","LaunchType":"FARGATE","Containers":[]}"#;
    const CONTAINER: &str = r#"{"DockerId":"d","Name":"app","Networks":[{"NetworkMode":"awsvpc",
        "IPv4Addresses":["127.0.2.7"]}]}"#;

    #[test]
    fn reads_the_task_and_the_region_from_its_arn() {
        let m = parse_task(TASK).expect("task");
        assert_eq!(
            m.cluster.as_deref(),
            Some("arn:aws:ecs:eu-west-1:123:cluster/web")
        );
        assert_eq!(m.family.as_deref(), Some("chat"));
        assert_eq!(m.region.as_deref(), Some("eu-west-1"));
        assert_eq!(m.availability_zone.as_deref(), Some("eu-west-1b"));
        assert_eq!(parse_addresses(CONTAINER).expect("c"), vec!["127.0.2.7"]);
    }

    #[test]
    fn bad_uris_and_bodies_are_errors() {
        for uri in ["https://x/v4", "http:///v4", "169.254.170.2/v4"] {
            assert_eq!(
                split(uri).expect_err(uri).detail("key"),
                Some("metadata_uri")
            );
        }
        assert_eq!(
            split("http://127.0.0.1:9/v4/id").expect("ok"),
            ("127.0.0.1:9", "/v4/id")
        );
        let e = parse_task("[]").expect_err("array");
        assert_eq!(e.reason, Reason::BadResponse);
        assert!(e.message.contains("cluster:"), "{}", e.message);
    }

    async fn serve(task_status: u16) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let mut buf = [0u8; 4096];
                let n = s.read(&mut buf).await.unwrap_or(0);
                let head = String::from_utf8_lossy(&buf[..n]).to_string();
                let (status, body) = if head.starts_with("GET /v4/id/task ") {
                    (task_status, TASK)
                } else {
                    (200, CONTAINER)
                };
                let reply = format!(
                    "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(reply.as_bytes()).await;
            }
        });
        format!("http://127.0.0.1:{port}/v4/id")
    }

    #[tokio::test]
    async fn fetches_both_documents() {
        let m = fetch(&MetadataConfig::new(serve(200).await))
            .await
            .expect("meta");
        assert_eq!(m.family.as_deref(), Some("chat"));
        assert_eq!(m.addresses, vec!["127.0.2.7"]);
    }

    #[tokio::test]
    async fn down_or_failing_names_the_options() {
        let mut cfg = MetadataConfig::new(serve(503).await);
        cfg.attempts = 2;
        let e = fetch(&cfg).await.expect_err("503");
        assert_eq!(e.reason, Reason::BadResponse);
        assert!(
            e.message.contains("HTTP 503 after 2 attempts"),
            "{}",
            e.message
        );
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        drop(listener);
        let e = fetch(&MetadataConfig::new(format!("http://127.0.0.1:{port}/v4")))
            .await
            .expect_err("down");
        assert_eq!(e.reason, Reason::Unreachable);
        assert!(e.message.contains("family:"), "{}", e.message);
    }
}
