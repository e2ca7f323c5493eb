//! The two AWS wire protocols discovery needs, over one signed HTTP client: Query (EC2,
//! AutoScaling: a form-encoded POST, an XML answer) and awsJson1_1 (ECS: a JSON POST
//! naming its operation in `X-Amz-Target`, a JSON answer). Built on hyper 1 and rustls
//! instead of the generated SDK crates, which cost a 13-minute, 7 GB build for the few
//! read-only calls discovery makes (aws-sdk-ecs alone adds 2.4 minutes, README).
//!
//! One [`QueryClient`] per topology: one connection pool, one credential cache. Each
//! attempt has its own timeout; throttling, 5xx and transport failures are retried with
//! full-jitter exponential backoff up to `max_attempts`. Everything else, and the last
//! failure, is returned as a [`Failure`] for `failure::classify`.

// The awsJson half is protocol code, not a service: it stays in a build without the
// `ecs` and `dynamodb` features, unused there.
#![cfg_attr(not(any(feature = "ecs", feature = "dynamodb")), allow(dead_code))]

use super::failure::{causes, Failure};
use super::xml;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_credential_types::Credentials;
use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::Mutex;

/// Largest response body read: a 1,000-instance DescribeInstances page is ~5 MB.
const MAX_BODY: usize = 64 * 1024 * 1024;
/// Cached credentials are refreshed this long before they expire, and at least this often.
const REFRESH_BEFORE_EXPIRY: Duration = Duration::from_secs(300);
const REFRESH_EVERY: Duration = Duration::from_secs(900);
/// Codes AWS documents as transient besides throttling.
const TRANSIENT: &[&str] = &["RequestTimeout", "RequestTimeoutException", "InternalError"];

/// How AWS (and CloudTrail's userAgent field) sees these calls.
const USER_AGENT: &str = concat!("aws-cluster/", env!("CARGO_PKG_VERSION"));
const BACKOFF_BASE: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(20);

/// A Query-protocol service: the SigV4 name, the API version and the endpoint prefix.
#[derive(Debug, Clone, Copy)]
pub struct Service {
    pub signing_name: &'static str,
    pub version: &'static str,
}

pub const EC2: Service = Service {
    signing_name: "ec2",
    version: "2016-11-15",
};

pub const AUTOSCALING: Service = Service {
    signing_name: "autoscaling",
    version: "2011-01-01",
};

/// One request: `action` of `service`, at `endpoint`, with form `params`.
#[derive(Debug, Clone, Copy)]
pub struct Call<'a> {
    pub service: Service,
    pub endpoint: &'a str,
    pub action: &'a str,
    pub params: &'a [(String, String)],
}

/// An awsJson service: the SigV4 name, the `X-Amz-Target` prefix and its JSON version.
#[derive(Debug, Clone, Copy)]
pub struct JsonService {
    pub signing_name: &'static str,
    pub target_prefix: &'static str,
    pub content_type: &'static str,
}

#[cfg(feature = "ecs")]
pub const ECS: JsonService = JsonService {
    signing_name: "ecs",
    target_prefix: "AmazonEC2ContainerServiceV20141113",
    content_type: "application/x-amz-json-1.1",
};

#[cfg(feature = "dynamodb")]
pub const DYNAMODB: JsonService = JsonService {
    signing_name: "dynamodb",
    target_prefix: "DynamoDB_20120810",
    content_type: "application/x-amz-json-1.0",
};

/// One awsJson1_1 request: `operation` of `service`, at `endpoint`, with a JSON `body`.
#[derive(Debug, Clone, Copy)]
pub struct JsonCall<'a> {
    pub service: JsonService,
    pub endpoint: &'a str,
    pub operation: &'a str,
    pub body: &'a str,
}

/// What goes on the wire, whichever the protocol.
struct Wire<'a> {
    signing_name: &'static str,
    endpoint: &'a str,
    content_type: &'static str,
    target: Option<String>,
    body: String,
    protocol: Protocol,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    Query,
    Json,
}

impl Call<'_> {
    fn wire(&self) -> Wire<'_> {
        Wire {
            signing_name: self.service.signing_name,
            endpoint: self.endpoint,
            content_type: "application/x-www-form-urlencoded; charset=utf-8",
            target: None,
            body: form(self.action, self.service.version, self.params),
            protocol: Protocol::Query,
        }
    }
}

impl JsonCall<'_> {
    fn wire(&self) -> Wire<'_> {
        Wire {
            signing_name: self.service.signing_name,
            endpoint: self.endpoint,
            content_type: self.service.content_type,
            target: Some(format!("{}.{}", self.service.target_prefix, self.operation)),
            body: self.body.to_owned(),
            protocol: Protocol::Json,
        }
    }
}

type Http = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// Where a call goes and how long it may take.
#[derive(Debug, Clone)]
pub struct Settings {
    pub region: String,
    pub max_attempts: u32,
    pub attempt_timeout: Duration,
    pub connect_timeout: Duration,
}

pub struct QueryClient {
    http: Http,
    credentials: SharedCredentialsProvider,
    cached: Mutex<Option<(Credentials, Instant)>>,
    settings: Settings,
}

impl std::fmt::Debug for QueryClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueryClient")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl QueryClient {
    pub fn new(settings: Settings, credentials: SharedCredentialsProvider) -> Arc<QueryClient> {
        let mut tcp = HttpConnector::new();
        tcp.enforce_http(false);
        tcp.set_nodelay(true);
        tcp.set_connect_timeout(Some(settings.connect_timeout));
        let provider = rustls::crypto::aws_lc_rs::default_provider();
        let tls = hyper_rustls::HttpsConnectorBuilder::new();
        // A host without a CA bundle still gets a client: https calls then fail with an
        // unknown-issuer error naming the endpoint, and http endpoints (moto) work.
        let tls = match tls.with_provider_and_native_roots(provider.clone()) {
            Ok(b) => b,
            Err(_) => hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(
                rustls::ClientConfig::builder_with_provider(provider.into())
                    .with_safe_default_protocol_versions()
                    .map(|b| {
                        b.with_root_certificates(rustls::RootCertStore::empty())
                            .with_no_client_auth()
                    })
                    .unwrap_or_else(|_| {
                        rustls::ClientConfig::builder()
                            .with_root_certificates(rustls::RootCertStore::empty())
                            .with_no_client_auth()
                    }),
            ),
        };
        let connector = tls.https_or_http().enable_http1().wrap_connector(tcp);
        let http = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .build(connector);
        Arc::new(QueryClient {
            http,
            credentials,
            cached: Mutex::new(None),
            settings,
        })
    }

    /// Makes the Query `call` and returns the answer's body,
    /// retrying what AWS documents as retryable.
    pub async fn call(&self, call: &Call<'_>) -> Result<String, Failure> {
        self.send(&call.wire()).await
    }

    /// Makes the awsJson1_1 `call` and returns the answer's body, retried as `call`.
    pub async fn call_json(&self, call: &JsonCall<'_>) -> Result<String, Failure> {
        self.send(&call.wire()).await
    }

    async fn send(&self, wire: &Wire<'_>) -> Result<String, Failure> {
        let mut attempt = 1;
        loop {
            let outcome =
                match tokio::time::timeout(self.settings.attempt_timeout, self.attempt(wire)).await
                {
                    Ok(outcome) => outcome,
                    Err(_) => Err(Failure::Timeout),
                };
            match outcome {
                Err(f) if attempt < self.settings.max_attempts && retryable(&f) => {
                    tokio::time::sleep(backoff(attempt)).await;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    async fn attempt(&self, wire: &Wire<'_>) -> Result<String, Failure> {
        let credentials = self.credentials().await?;
        let request = self.signed(wire, credentials)?;
        let response = self
            .http
            .request(request)
            .await
            .map_err(|e| Failure::Dispatch {
                timed_out: is_timeout(&e),
                cause: causes_with_top(&e),
            })?;
        let status = response.status().as_u16();
        let bytes = Limited::new(response.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|e| Failure::Response {
                status: Some(status),
                cause: format!("the body could not be read: {}", causes_with_top(&*e)),
            })?
            .to_bytes();
        let text = String::from_utf8(bytes.to_vec()).map_err(|_| Failure::Response {
            status: Some(status),
            cause: "the body is not UTF-8".into(),
        })?;
        if (200..300).contains(&status) {
            Ok(text)
        } else if wire.protocol == Protocol::Json {
            Err(json_failure(status, &text))
        } else {
            Err(service_failure(status, &text))
        }
    }

    fn signed(
        &self,
        wire: &Wire<'_>,
        credentials: Credentials,
    ) -> Result<http::Request<Full<Bytes>>, Failure> {
        let construction = |what: &str, e: &dyn std::fmt::Display| Failure::Construction {
            cause: format!("{what}: {e}"),
        };
        let uri: http::Uri = format!("{}/", wire.endpoint)
            .parse()
            .map_err(|e| construction("invalid endpoint", &e))?;
        let host = uri
            .authority()
            .map(|a| a.as_str().to_owned())
            .ok_or_else(|| construction("invalid endpoint", &"no host"))?;
        let content_type = wire.content_type;
        let identity: Identity = credentials.into();
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.settings.region)
            .name(wire.signing_name)
            .time(SystemTime::now())
            .settings(SigningSettings::default())
            .build()
            .map_err(|e| construction("signing", &e))?
            .into();
        let mut headers = vec![("host", host.as_str()), ("content-type", content_type)];
        if let Some(target) = &wire.target {
            headers.push(("x-amz-target", target.as_str()));
        }
        let signable = SignableRequest::new(
            "POST",
            uri.to_string(),
            headers.into_iter(),
            SignableBody::Bytes(wire.body.as_bytes()),
        )
        .map_err(|e| construction("signing", &e))?;
        let (instructions, _signature) = sign(signable, &params)
            .map_err(|e| construction("signing", &e))?
            .into_parts();
        let mut request = http::Request::builder()
            .method("POST")
            .uri(uri)
            .header("host", host)
            .header("content-type", content_type)
            .header("user-agent", USER_AGENT);
        if let Some(target) = &wire.target {
            request = request.header("x-amz-target", target.as_str());
        }
        let mut request = request
            .body(Full::new(Bytes::from(wire.body.clone())))
            .map_err(|e| construction("invalid request", &e))?;
        instructions.apply_to_request_http1x(&mut request);
        Ok(request)
    }

    /// Credentials from the chain, cached until shortly before they expire.
    async fn credentials(&self) -> Result<Credentials, Failure> {
        let mut cached = self.cached.lock().await;
        if let Some((creds, at)) = cached.as_ref() {
            let expiring = creds.expiry().is_some_and(|exp| {
                exp.duration_since(SystemTime::now())
                    .map_or(true, |left| left < REFRESH_BEFORE_EXPIRY)
            });
            if !expiring && at.elapsed() < REFRESH_EVERY {
                return Ok(creds.clone());
            }
        }
        let fresh = self.credentials.provide_credentials().await;
        let creds = match (fresh, cached.as_ref()) {
            (Ok(creds), _) => creds,
            // A failed refresh (STS or the ECS agent hiccups) must not fail calls while
            // the credentials in hand are still valid.
            (Err(_), Some((old, _)))
                if old
                    .expiry()
                    .is_none_or(|exp| exp > SystemTime::now() + Duration::from_secs(30)) =>
            {
                return Ok(old.clone());
            }
            (Err(e), _) => {
                return Err(Failure::Construction {
                    cause: format!("loading credentials failed: {}", causes_with_top(&e)),
                })
            }
        };
        *cached = Some((creds.clone(), Instant::now()));
        Ok(creds)
    }
}

/// Page `index` of an answer to `action`, if it is provably complete: strict XML whose
/// root is `<{action}Response>` and which carries AWS's request id (EC2 puts it in the
/// root, AutoScaling in `ResponseMetadata`). A body cut off anywhere fails one of these.
pub fn page<'a>(body: &'a str, action: &str, index: u32) -> Result<xml::Node<'a>, Failure> {
    let bad = |cause: String| Failure::Response {
        status: Some(200),
        cause: format!("page {index}: {cause}"),
    };
    let root = xml::parse(body).map_err(bad)?;
    if root.name.strip_suffix("Response") != Some(action) {
        return Err(bad(format!(
            "expected <{action}Response>, got <{}>",
            root.name
        )));
    }
    let request_id = root.get("requestId").or_else(|| {
        root.child("ResponseMetadata")
            .and_then(|m| m.get("RequestId"))
    });
    if request_id.is_none() {
        return Err(bad(
            "no request id, so the answer is not known to be complete".into(),
        ));
    }
    Ok(root)
}

/// `Action=...&Version=...&k=v...`, form-encoded.
fn form(action: &str, version: &str, params: &[(String, String)]) -> String {
    let mut out = form_urlencoded::Serializer::new(String::new());
    out.append_pair("Action", action);
    out.append_pair("Version", version);
    for (k, v) in params {
        out.append_pair(k, v);
    }
    out.finish()
}

/// The code and message of an error response (EC2's `Response/Errors/Error`,
/// AutoScaling's `ErrorResponse/Error`); a body that is not such XML has neither.
fn service_failure(status: u16, body: &str) -> Failure {
    let error = xml::parse(body).ok();
    let error = error.as_ref().and_then(|root| root.find("Error"));
    Failure::Service {
        status,
        code: error.and_then(|e| e.get("Code")).map(str::to_owned),
        message: error.and_then(|e| e.get("Message")).map(str::to_owned),
    }
}

/// The code and message of an awsJson1_1 error: `__type` (sometimes
/// `namespace#Code`) and `message` or `Message`.
fn json_failure(status: u16, body: &str) -> Failure {
    let error: Option<serde_json::Value> = serde_json::from_str(body).ok();
    let field = |key: &str| {
        error
            .as_ref()
            .and_then(|e| e.get(key))
            .and_then(serde_json::Value::as_str)
            .map(str::to_owned)
    };
    Failure::Service {
        status,
        code: field("__type").map(|t| t.rsplit('#').next().unwrap_or(&t).to_owned()),
        message: field("message").or_else(|| field("Message")),
    }
}

fn retryable(failure: &Failure) -> bool {
    match failure {
        Failure::Service { status, code, .. } => {
            let code = code.as_deref().unwrap_or("");
            *status >= 500
                || *status == 429
                || super::failure::is_throttling(code)
                || TRANSIENT.contains(&code)
        }
        // Inside `call`, a Response failure is a body that could not be read (cut off, not
        // UTF-8): transient, as for the SDK. Pages that do not parse are judged by the
        // caller and never retried.
        Failure::Timeout | Failure::Dispatch { .. } | Failure::Response { .. } => true,
        Failure::Construction { .. } => false,
    }
}

/// Full jitter: a random wait up to `base * 2^(attempt-1)`, capped.
fn backoff(attempt: u32) -> Duration {
    let cap = BACKOFF_BASE
        .saturating_mul(1 << attempt.saturating_sub(1).min(16))
        .min(BACKOFF_MAX);
    let mut r = [0u8; 8];
    let fraction = match aws_lc_rs::rand::fill(&mut r) {
        Ok(()) => u64::from_le_bytes(r) as f64 / u64::MAX as f64,
        Err(_) => 0.5,
    };
    cap.mul_f64(fraction)
}

fn is_timeout(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(e);
    while let Some(err) = next {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::TimedOut {
                return true;
            }
        }
        if err.to_string().contains("timed out") {
            return true;
        }
        next = err.source();
    }
    false
}

/// `causes`, but keeping the top line when it is the only specific one (hyper's own
/// errors carry their meaning in the top line, the SDK's did not).
fn causes_with_top(e: &(dyn std::error::Error + 'static)) -> String {
    let inner = causes(e);
    let top = e.to_string();
    if inner == top || inner.contains(&top) {
        inner
    } else {
        format!("{top}: {inner}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_encodes_every_pair() {
        let body = form(
            "DescribeInstances",
            "2016-11-15",
            &[("Filter.1.Name".into(), "tag:app".into())],
        );
        assert_eq!(
            body,
            "Action=DescribeInstances&Version=2016-11-15&Filter.1.Name=tag%3Aapp"
        );
    }

    #[test]
    fn error_bodies_of_both_services() {
        let ec2 = service_failure(
            503,
            "<Response><Errors><Error><Code>RequestLimitExceeded</Code>\
             <Message>slow down</Message></Error></Errors><RequestID>r</RequestID></Response>",
        );
        assert_eq!(
            ec2,
            Failure::Service {
                status: 503,
                code: Some("RequestLimitExceeded".into()),
                message: Some("slow down".into())
            }
        );
        let asg = service_failure(
            400,
            "<ErrorResponse><Error><Type>Sender</Type><Code>ValidationError</Code>\
             <Message>bad</Message></Error><RequestId>r</RequestId></ErrorResponse>",
        );
        assert!(matches!(asg, Failure::Service { code: Some(c), .. } if c == "ValidationError"));
        let html = service_failure(500, "<html>oops");
        assert_eq!(
            html,
            Failure::Service {
                status: 500,
                code: None,
                message: None
            }
        );
    }

    #[test]
    fn json_error_bodies() {
        let throttled = json_failure(
            400,
            r#"{"__type":"com.amazonaws.ecs#ThrottlingException","message":"Rate exceeded"}"#,
        );
        assert_eq!(
            throttled,
            Failure::Service {
                status: 400,
                code: Some("ThrottlingException".into()),
                message: Some("Rate exceeded".into())
            }
        );
        let denied = json_failure(400, r#"{"__type":"AccessDeniedException","Message":"no"}"#);
        assert!(
            matches!(denied, Failure::Service { code: Some(c), message: Some(m), .. }
            if c == "AccessDeniedException" && m == "no")
        );
        assert_eq!(
            json_failure(502, "<html>bad gateway"),
            Failure::Service {
                status: 502,
                code: None,
                message: None
            }
        );
    }

    #[test]
    fn only_complete_pages_of_the_asked_action_count() {
        let ok = "<DescribeInstancesResponse><requestId>r</requestId></DescribeInstancesResponse>";
        assert!(page(ok, "DescribeInstances", 1).is_ok());
        let asg = "<DescribeAutoScalingGroupsResponse><DescribeAutoScalingGroupsResult/>\
                   <ResponseMetadata><RequestId>r</RequestId></ResponseMetadata>\
                   </DescribeAutoScalingGroupsResponse>";
        assert!(page(asg, "DescribeAutoScalingGroups", 1).is_ok());
        for (body, action) in [
            (
                "<DescribeInstancesResponse></DescribeInstancesResponse>",
                "DescribeInstances",
            ),
            (ok, "DescribeAutoScalingGroups"),
            (&ok[..ok.len() - 1], "DescribeInstances"),
        ] {
            match page(body, action, 3) {
                Err(Failure::Response {
                    status: Some(200),
                    cause,
                }) => {
                    assert!(cause.starts_with("page 3: "), "{cause}")
                }
                other => panic!("{body:?} gave {other:?}"),
            }
        }
    }

    #[test]
    fn what_is_retried() {
        let service = |status, code: Option<&str>| Failure::Service {
            status,
            code: code.map(str::to_owned),
            message: None,
        };
        assert!(retryable(&service(503, None)));
        assert!(retryable(&service(400, Some("Throttling"))));
        assert!(retryable(&service(429, None)));
        assert!(!retryable(&service(403, Some("UnauthorizedOperation"))));
        assert!(retryable(&service(400, Some("RequestTimeout"))));
        assert!(retryable(&Failure::Response {
            status: Some(200),
            cause: "cut".into()
        }));
        assert!(!retryable(&Failure::Construction {
            cause: "no credentials".into()
        }));
        assert!(retryable(&Failure::Timeout));
    }

    #[test]
    fn backoff_is_bounded_and_grows() {
        for attempt in 1..40 {
            assert!(backoff(attempt) <= BACKOFF_MAX);
        }
        assert!(backoff(1) <= BACKOFF_BASE);
        // Full jitter: the largest of many draws approaches each attempt's cap.
        let most = |attempt| (0..200).map(|_| backoff(attempt)).max().unwrap_or_default();
        assert!(most(1) > BACKOFF_BASE / 2);
        assert!(most(4) > BACKOFF_BASE * 4);
        assert!(most(30) > BACKOFF_MAX / 2);
    }
}
