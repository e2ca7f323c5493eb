//! The AWS client, built once per topology.
//!
//! Building it reads no network: the region is always given (from config or IMDS) and
//! credentials are either static keys or aws-config's default chain, which resolves
//! lazily on the first call (env, profile, web identity, ECS task role, instance role).

use super::failure::{classify, Failure, Operation};
use super::query::{self, QueryClient, Settings};
use super::{xml, Listing};
use crate::{Error, Reason, Result};
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region};
use aws_credential_types::provider::SharedCredentialsProvider;
use aws_credential_types::Credentials;
use std::sync::Arc;
use std::time::Duration;

/// Everything needed to build an [`AwsClient`].
#[derive(Clone, PartialEq, Eq)]
pub struct ClientConfig {
    pub region: String,
    /// `http(s)://host[:port]` of moto, LocalStack or a VPC endpoint; `None` for AWS.
    pub endpoint: Option<String>,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    pub session_token: Option<String>,
    /// Attempts per request including the first (see `query` for what is retried).
    pub max_attempts: u32,
    /// The most one call may take, all its pages and retries included.
    pub operation_timeout: Duration,
    /// The most one attempt may take; defaults to `operation_timeout`.
    pub attempt_timeout: Option<Duration>,
    pub connect_timeout: Duration,
}

// Hand-written so secrets never reach a log through `{:?}`.
impl std::fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientConfig")
            .field("region", &self.region)
            .field("endpoint", &self.endpoint)
            .field("static_credentials", &self.access_key_id.is_some())
            .field("max_attempts", &self.max_attempts)
            .field("operation_timeout", &self.operation_timeout)
            .field("attempt_timeout", &self.attempt_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .finish()
    }
}

impl ClientConfig {
    /// A config for `region` with the defaults: AWS endpoint, default credential chain,
    /// 3 attempts, 10 s per call, 3.1 s to connect.
    pub fn new(region: impl Into<String>) -> Self {
        ClientConfig {
            region: region.into(),
            endpoint: None,
            access_key_id: None,
            secret_access_key: None,
            session_token: None,
            max_attempts: 3,
            operation_timeout: Duration::from_secs(10),
            attempt_timeout: None,
            connect_timeout: Duration::from_millis(3_100),
        }
    }

    /// Checks every field, naming the config key at fault.
    pub fn validate(&self) -> Result<()> {
        let invalid = |key: &'static str, msg: String| {
            Err(Error::new(Reason::InvalidArgument, msg).with_detail("key", key))
        };
        let region_ok = !self.region.is_empty()
            && self.region.len() <= 64
            && self
                .region
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !region_ok {
            return invalid(
                "region",
                format!(
                    "region must look like \"us-east-1\", got {:?}",
                    truncate(&self.region)
                ),
            );
        }
        if let Some(ep) = &self.endpoint {
            let rest = ep
                .strip_prefix("http://")
                .or_else(|| ep.strip_prefix("https://"));
            if rest.is_none_or(|r| r.is_empty() || r.starts_with('/')) {
                return invalid(
                    "endpoint",
                    format!(
                        "endpoint must be an http:// or https:// URL, got {:?}",
                        truncate(ep)
                    ),
                );
            }
        }
        match (&self.access_key_id, &self.secret_access_key) {
            (Some(_), None) | (None, Some(_)) => {
                return invalid(
                    "access_key_id",
                    "access_key_id and secret_access_key must be given together".into(),
                )
            }
            (None, None) if self.session_token.is_some() => {
                return invalid(
                    "session_token",
                    "session_token needs access_key_id and secret_access_key".into(),
                )
            }
            _ => {}
        }
        if !(1..=20).contains(&self.max_attempts) {
            return invalid(
                "max_attempts",
                format!(
                    "max_attempts must be between 1 and 20, got {}",
                    self.max_attempts
                ),
            );
        }
        for (key, d) in [
            ("operation_timeout", Some(self.operation_timeout)),
            ("attempt_timeout", self.attempt_timeout),
            ("connect_timeout", Some(self.connect_timeout)),
        ] {
            if let Some(d) = d {
                if d.is_zero() || d > Duration::from_secs(3_600) {
                    return invalid(
                        key,
                        format!(
                            "{key} must be between 1 ms and 1 hour, got {} ms",
                            d.as_millis()
                        ),
                    );
                }
            }
        }
        Ok(())
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(80).collect()
}

/// EC2, AutoScaling and ECS calls sharing one HTTP connection pool and credential cache.
#[derive(Debug, Clone)]
pub struct AwsClient {
    pub(super) query: Arc<QueryClient>,
    pub(super) ec2_endpoint: String,
    pub(super) autoscaling_endpoint: String,
    #[cfg_attr(not(feature = "ecs"), allow(dead_code))]
    pub(super) ecs_endpoint: String,
    #[cfg_attr(not(feature = "dynamodb"), allow(dead_code))]
    pub(super) dynamodb_endpoint: String,
    pub(super) operation_timeout: Duration,
}

impl AwsClient {
    /// Builds the client. Must run inside a tokio runtime: the default credential chain
    /// is set up here (it reads nothing from the network until the first call).
    pub async fn new(cfg: ClientConfig) -> Result<Self> {
        cfg.validate()?;
        let credentials = match (&cfg.access_key_id, &cfg.secret_access_key) {
            (Some(id), Some(secret)) => SharedCredentialsProvider::new(Credentials::new(
                id.clone(),
                secret.clone(),
                cfg.session_token.clone(),
                None,
                "aws_cluster",
            )),
            _ => default_chain(&cfg).await?,
        };
        let settings = Settings {
            region: cfg.region.clone(),
            max_attempts: cfg.max_attempts,
            attempt_timeout: cfg.attempt_timeout.unwrap_or(cfg.operation_timeout),
            connect_timeout: cfg.connect_timeout,
        };
        let endpoint = |service: &str| match &cfg.endpoint {
            Some(ep) => ep.trim_end_matches('/').to_string(),
            None if cfg.region.starts_with("cn-") => {
                format!("https://{service}.{}.amazonaws.com.cn", cfg.region)
            }
            None => format!("https://{service}.{}.amazonaws.com", cfg.region),
        };
        Ok(AwsClient {
            query: QueryClient::new(settings, credentials),
            ec2_endpoint: endpoint("ec2"),
            autoscaling_endpoint: endpoint("autoscaling"),
            ecs_endpoint: endpoint("ecs"),
            dynamodb_endpoint: endpoint("dynamodb"),
            operation_timeout: cfg.operation_timeout,
        })
    }

    /// Calls `op` page after page (`NextToken`) until a page has no next token, all of it
    /// under `operation_timeout` so a caller waiting slightly longer always gets an
    /// answer. `page` reads one strictly parsed, complete page into its items and next
    /// token.
    pub(super) async fn paginate<T>(
        &self,
        op: Operation,
        params: Vec<(String, String)>,
        page: impl Fn(&xml::Node) -> (Vec<T>, Option<String>),
    ) -> Result<Listing<T>> {
        let (service, endpoint) = match op {
            Operation::DescribeInstances => (query::EC2, self.ec2_endpoint.as_str()),
            Operation::DescribeAutoScalingGroups => {
                (query::AUTOSCALING, self.autoscaling_endpoint.as_str())
            }
            Operation::ListTasks
            | Operation::DescribeTasks
            | Operation::DescribeContainerInstances
            | Operation::UpdateItem
            | Operation::Query
            | Operation::DeleteItem => {
                return Err(Error::new(
                    Reason::Internal,
                    format!("{} is not a Query-protocol operation", op.name()),
                ))
            }
        };
        let fail = |f| classify(op, endpoint, self.timeout_ms(), f);
        let all_pages = async {
            let mut listing = Listing {
                items: Vec::new(),
                pages: 0,
            };
            let mut token: Option<String> = None;
            // A next token seen before would page forever (until operation_timeout).
            let mut seen = std::collections::HashSet::new();
            loop {
                let mut params = params.clone();
                if let Some(t) = &token {
                    params.push(("NextToken".into(), t.clone()));
                }
                let call = query::Call {
                    service,
                    endpoint,
                    action: op.name(),
                    params: &params,
                };
                let body = self.query.call(&call).await.map_err(fail)?;
                let root = query::page(&body, op.name(), listing.pages + 1).map_err(fail)?;
                listing.pages += 1;
                let (items, next) = page(&root);
                listing.items.extend(items);
                match next {
                    None => return Ok(listing),
                    Some(next) if !seen.insert(next.clone()) => {
                        return Err(fail(Failure::Response {
                            status: Some(200),
                            cause: format!("page {} repeats an earlier NextToken", listing.pages),
                        }))
                    }
                    Some(next) => token = Some(next),
                }
            }
        };
        match tokio::time::timeout(self.operation_timeout, all_pages).await {
            Ok(result) => result,
            Err(_) => Err(fail(Failure::Timeout)),
        }
    }

    /// The budget of one call, all pages included.
    pub fn operation_timeout(&self) -> Duration {
        self.operation_timeout
    }

    pub(super) fn timeout_ms(&self) -> u64 {
        u64::try_from(self.operation_timeout.as_millis()).unwrap_or(u64::MAX)
    }
}

/// aws-config's default chain: environment, profile files, `credential_process`, web
/// identity, ECS task role, instance role.
async fn default_chain(cfg: &ClientConfig) -> Result<SharedCredentialsProvider> {
    let timeouts = TimeoutConfig::builder()
        .operation_timeout(cfg.operation_timeout)
        .connect_timeout(cfg.connect_timeout)
        .build();
    let shared = aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new(cfg.region.clone()))
        .retry_config(RetryConfig::standard().with_max_attempts(cfg.max_attempts))
        .timeout_config(timeouts)
        .load()
        .await;
    shared.credentials_provider().ok_or_else(|| {
        Error::new(
            Reason::Unauthorized,
            "no AWS credential provider is available; pass access_key_id/secret_access_key",
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(cfg: &ClientConfig) -> Option<String> {
        cfg.validate()
            .err()
            .and_then(|e| e.detail("key").map(str::to_owned))
    }

    #[test]
    fn defaults_are_valid() {
        assert!(ClientConfig::new("us-east-1").validate().is_ok());
    }

    #[test]
    fn each_bad_field_is_named() {
        let base = ClientConfig::new("us-east-1");
        let mut c = base.clone();
        c.region = "US EAST".into();
        assert_eq!(key(&c).as_deref(), Some("region"));
        c = base.clone();
        c.region = String::new();
        assert_eq!(key(&c).as_deref(), Some("region"));
        c = base.clone();
        c.endpoint = Some("127.0.0.1:5000".into());
        assert_eq!(key(&c).as_deref(), Some("endpoint"));
        c = base.clone();
        c.access_key_id = Some("a".into());
        assert_eq!(key(&c).as_deref(), Some("access_key_id"));
        c = base.clone();
        c.session_token = Some("t".into());
        assert_eq!(key(&c).as_deref(), Some("session_token"));
        c = base.clone();
        c.max_attempts = 0;
        assert_eq!(key(&c).as_deref(), Some("max_attempts"));
        c = base.clone();
        c.operation_timeout = Duration::ZERO;
        assert_eq!(key(&c).as_deref(), Some("operation_timeout"));
        c = base.clone();
        c.attempt_timeout = Some(Duration::ZERO);
        assert_eq!(key(&c).as_deref(), Some("attempt_timeout"));
        c = base;
        c.endpoint = Some("http://127.0.0.1:5000".into());
        assert!(c.validate().is_ok());
    }

    #[test]
    fn debug_hides_secrets() {
        let mut c = ClientConfig::new("us-east-1");
        c.access_key_id = Some("AKIDSECRET".into());
        c.secret_access_key = Some("supersecret".into());
        let text = format!("{c:?}");
        assert!(!text.contains("supersecret") && !text.contains("AKIDSECRET"));
    }

    #[tokio::test]
    async fn builds_without_network() {
        let mut c = ClientConfig::new("us-east-1");
        c.endpoint = Some("http://127.0.0.1:9/".into());
        c.access_key_id = Some("testing".into());
        c.secret_access_key = Some("testing".into());
        let client = AwsClient::new(c).await.expect("client");
        assert_eq!(client.ec2_endpoint, "http://127.0.0.1:9");
        assert_eq!(client.timeout_ms(), 10_000);
    }
}
