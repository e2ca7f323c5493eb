//! The EC2 instance metadata service (IMDS), read once when a topology starts.
//!
//! Not the SDK's IMDS client, which insists on behaviour (token TTL header echo, fixed
//! endpoint modes) that fakes and moto do not offer; this one needs four GETs, over the
//! same hyper 1 client stack the AWS calls use (`aws/query.rs`).
//!
//! Protocol, as the AWS SDKs do it:
//! * IMDSv2 first: `PUT /latest/api/token` with `x-aws-ec2-metadata-token-ttl-seconds`,
//!   then GETs carrying `x-aws-ec2-metadata-token`;
//! * fall back to IMDSv1 (GET without token) when the token call answers 4xx other than
//!   403, or times out (a container behind a hop limit of 1 never sees the answer);
//! * 403 on the token call means IMDS is disabled: an error, not a fallback;
//! * connect failures, timeouts and 5xx are retried `attempts` times with a short backoff.
//!
//! Own ASG: read from the instance tag `aws:autoscaling:groupName`, exposed at
//! `/latest/meta-data/tags/instance/aws:autoscaling:groupName` only when "instance tags
//! in metadata" is enabled. A 404 there yields `None`, and the caller may ask EC2 instead
//! (`AWSCluster.AWS.auto_scaling_group_of/3`); every other key is required.
//!
//! Every error names the topology config key that would replace the missing value.

use crate::{Error, Reason, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::time::Duration;

pub(crate) type Http = Client<HttpConnector, Empty<Bytes>>;

/// The link-local IMDS address of every EC2 instance.
pub const DEFAULT_ENDPOINT: &str = "http://169.254.169.254";
const TOKEN_TTL_SECONDS: u32 = 21_600;
const MAX_RESPONSE: usize = 64 * 1024;

/// How to reach IMDS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImdsConfig {
    /// `http://host[:port]`.
    pub endpoint: String,
    pub connect_timeout: Duration,
    /// Per request, from connect to the last byte.
    pub timeout: Duration,
    /// Tries per request, including the first.
    pub attempts: u32,
}

impl Default for ImdsConfig {
    fn default() -> Self {
        ImdsConfig {
            endpoint: DEFAULT_ENDPOINT.into(),
            connect_timeout: Duration::from_secs(1),
            timeout: Duration::from_secs(2),
            attempts: 3,
        }
    }
}

/// A value IMDS can provide.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key {
    InstanceId,
    Region,
    AvailabilityZone,
    AutoScalingGroup,
}

impl Key {
    pub const ALL: [Key; 4] = [
        Key::InstanceId,
        Key::Region,
        Key::AvailabilityZone,
        Key::AutoScalingGroup,
    ];

    pub fn parse(name: &str) -> Option<Key> {
        Key::ALL.into_iter().find(|k| k.as_str() == name)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Key::InstanceId => "instance_id",
            Key::Region => "region",
            Key::AvailabilityZone => "availability_zone",
            Key::AutoScalingGroup => "auto_scaling_group",
        }
    }

    /// The topology config key that replaces this value.
    pub fn config_key(self) -> &'static str {
        match self {
            Key::InstanceId => "instance_id",
            Key::Region => "region",
            Key::AvailabilityZone => "availability_zone",
            Key::AutoScalingGroup => "groups",
        }
    }

    fn path(self) -> &'static str {
        match self {
            Key::InstanceId => "/latest/meta-data/instance-id",
            Key::Region => "/latest/meta-data/placement/region",
            Key::AvailabilityZone => "/latest/meta-data/placement/availability-zone",
            Key::AutoScalingGroup => "/latest/meta-data/tags/instance/aws:autoscaling:groupName",
        }
    }
}

/// What IMDS said. A key that was not asked for is `None`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Metadata {
    pub instance_id: Option<String>,
    pub region: Option<String>,
    pub availability_zone: Option<String>,
    pub auto_scaling_group: Option<String>,
    /// 2 when a session token was used, 1 after the fallback, 0 when nothing was asked.
    pub version: u8,
}

impl Metadata {
    fn set(&mut self, key: Key, value: Option<String>) {
        match key {
            Key::InstanceId => self.instance_id = value,
            Key::Region => self.region = value,
            Key::AvailabilityZone => self.availability_zone = value,
            Key::AutoScalingGroup => self.auto_scaling_group = value,
        }
    }
}

/// Reads `keys` from IMDS.
pub async fn fetch(cfg: &ImdsConfig, keys: &[Key]) -> Result<Metadata> {
    let mut out = Metadata::default();
    if keys.is_empty() {
        return Ok(out);
    }
    let target = Target::parse(&cfg.endpoint).map_err(|e| e.with_detail("key", "endpoint"))?;
    let session = Session {
        cfg,
        target: &target,
        http: http_client(cfg),
    };
    let mut token = session.token(keys).await?;
    out.version = if token.is_some() { 2 } else { 1 };
    for (i, &key) in keys.iter().enumerate() {
        let mut response = session.get(key, token.as_deref(), &keys[i..]).await?;
        // A token can expire between calls (or the endpoint restarted): renew it once.
        if response.status == 401 && token.is_some() {
            token = session.token(&keys[i..]).await?;
            response = session.get(key, token.as_deref(), &keys[i..]).await?;
        }
        let value = match response.status {
            200 => Some(value(&response.body).ok_or_else(|| {
                missing(
                    Reason::BadResponse,
                    cfg,
                    &[key],
                    format!("IMDS returned an unusable {} value", key.as_str()),
                )
            })?),
            404 if key == Key::AutoScalingGroup => None,
            404 => {
                return Err(missing(
                    Reason::NotFound,
                    cfg,
                    &[key],
                    format!("IMDS has no {}", key.path()),
                ))
            }
            401 | 403 => {
                return Err(missing(
                    Reason::Unauthorized,
                    cfg,
                    &keys[i..],
                    format!(
                        "IMDS refused {} (HTTP {}); it may require IMDSv2 tokens that could not be obtained",
                        key.path(),
                        response.status
                    ),
                ))
            }
            s => {
                return Err(missing(
                    Reason::BadResponse,
                    cfg,
                    &keys[i..],
                    format!("IMDS answered {} with HTTP {s}", key.path()),
                ))
            }
        };
        out.set(key, value);
    }
    Ok(out)
}

/// The error for `keys` that could not be read, naming their config keys.
fn missing(reason: Reason, cfg: &ImdsConfig, keys: &[Key], cause: String) -> Error {
    let config_keys: Vec<String> = keys
        .iter()
        .map(|k| format!("{}:", k.config_key()))
        .collect();
    let what: Vec<&str> = keys.iter().map(|k| k.as_str()).collect();
    let fix = match config_keys.as_slice() {
        [one] => one.clone(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
        [] => String::new(),
    };
    Error::new(
        reason,
        format!(
            "cannot read {} from the instance metadata service at {} ({cause}); \
             set {fix} in the topology config instead",
            what.join(", "),
            cfg.endpoint
        ),
    )
    .with_detail("endpoint", cfg.endpoint.clone())
    .with_detail(
        "config_keys",
        keys.iter()
            .map(|k| k.config_key())
            .collect::<Vec<_>>()
            .join(","),
    )
}

fn value(body: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(body).ok()?.trim();
    let ok = !text.is_empty() && text.len() <= 255 && text.bytes().all(|b| b.is_ascii_graphic());
    ok.then(|| text.to_owned())
}

struct Session<'a> {
    cfg: &'a ImdsConfig,
    target: &'a Target,
    http: Http,
}

/// A client for one fetch: no pooled connections outlive it.
pub(crate) fn http_client(cfg: &ImdsConfig) -> Http {
    let mut tcp = HttpConnector::new();
    tcp.set_nodelay(true);
    tcp.set_connect_timeout(Some(cfg.connect_timeout));
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(0)
        .build(tcp)
}

impl Session<'_> {
    /// `Some(token)` for IMDSv2, `None` to fall back to v1.
    async fn token(&self, keys: &[Key]) -> Result<Option<String>> {
        let ttl = TOKEN_TTL_SECONDS.to_string();
        let headers = [("x-aws-ec2-metadata-token-ttl-seconds", ttl.as_str())];
        match self.send("PUT", "/latest/api/token", &headers, keys).await {
            Ok(r) if r.status == 200 => match value(&r.body) {
                Some(token) => Ok(Some(token)),
                None => Ok(None),
            },
            Ok(r) if r.status == 403 => Err(missing(
                Reason::Unauthorized,
                self.cfg,
                keys,
                "IMDS refused a session token with HTTP 403: it is disabled for this instance"
                    .into(),
            )),
            Ok(_) => Ok(None),
            Err(Attempt::TimedOut(_)) => Ok(None),
            Err(Attempt::Failed(e)) => Err(e),
        }
    }

    async fn get(&self, key: Key, token: Option<&str>, keys: &[Key]) -> Result<Response> {
        let headers: Vec<(&str, &str)> = token
            .map(|t| vec![("x-aws-ec2-metadata-token", t)])
            .unwrap_or_default();
        match self.send("GET", key.path(), &headers, keys).await {
            Ok(r) => Ok(r),
            Err(Attempt::TimedOut(e)) | Err(Attempt::Failed(e)) => Err(e),
        }
    }

    /// One request with bounded retries on connect failures, timeouts and 5xx.
    async fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        keys: &[Key],
    ) -> std::result::Result<Response, Attempt> {
        let attempts = self.cfg.attempts.max(1);
        let mut last = Transport::Timeout;
        for n in 0..attempts {
            if n > 0 {
                let backoff = 100u64.saturating_mul(1 << n.min(4)).min(1_000);
                tokio::time::sleep(Duration::from_millis(backoff)).await;
            }
            match request(&self.http, self.cfg, self.target, method, path, headers).await {
                Ok(r) if r.status >= 500 && n + 1 < attempts => last = Transport::Status(r.status),
                Ok(r) => return Ok(r),
                Err(e) => last = e,
            }
        }
        let timed_out = matches!(last, Transport::Timeout);
        let reason = match last {
            Transport::Timeout => Reason::Timeout,
            Transport::Malformed(_) | Transport::Status(_) => Reason::BadResponse,
            Transport::Unreachable(_) => Reason::Unreachable,
        };
        let cause = format!("{method} {path}: {} after {attempts} attempts", last.text());
        let err = missing(reason, self.cfg, keys, cause);
        Err(if timed_out {
            Attempt::TimedOut(err)
        } else {
            Attempt::Failed(err)
        })
    }
}

enum Attempt {
    TimedOut(Error),
    Failed(Error),
}

pub(crate) enum Transport {
    Timeout,
    Unreachable(String),
    Malformed(String),
    Status(u16),
}

impl Transport {
    pub(crate) fn text(&self) -> String {
        match self {
            Transport::Timeout => "no answer in time".into(),
            Transport::Unreachable(cause) => cause.clone(),
            Transport::Malformed(what) => format!("malformed HTTP response ({what})"),
            Transport::Status(s) => format!("HTTP {s}"),
        }
    }

    /// A failure after connecting: a timeout, or what went wrong.
    fn dispatch(e: &(dyn std::error::Error + 'static)) -> Transport {
        let mut next = Some(e);
        while let Some(err) = next {
            if let Some(io) = err.downcast_ref::<std::io::Error>() {
                return match io.kind() {
                    std::io::ErrorKind::TimedOut => Transport::Timeout,
                    std::io::ErrorKind::ConnectionRefused => {
                        Transport::Unreachable("connection refused".into())
                    }
                    _ => Transport::Unreachable(io.to_string()),
                };
            }
            next = err.source();
        }
        Transport::Malformed(e.to_string())
    }
}

pub(crate) struct Response {
    pub(crate) status: u16,
    pub(crate) body: Vec<u8>,
}

pub(crate) struct Target {
    /// `host[:port]`, checked; the request URI is `http://{authority}{path}`.
    pub(crate) authority: String,
}

impl Target {
    pub(crate) fn parse(endpoint: &str) -> Result<Target> {
        let bad = || {
            Error::new(
                Reason::InvalidArgument,
                format!("the IMDS endpoint must look like http://host[:port], got {endpoint:?}"),
            )
        };
        let rest = endpoint.strip_prefix("http://").ok_or_else(bad)?;
        let authority = rest.trim_end_matches('/');
        if authority.is_empty() || authority.contains('/') {
            return Err(bad());
        }
        let host = if let Some(v6) = authority.strip_prefix('[') {
            let (host, tail) = v6.split_once(']').ok_or_else(bad)?;
            match tail.strip_prefix(':') {
                Some(p) => p.parse::<u16>().map(|_| host).map_err(|_| bad())?,
                None if tail.is_empty() => host,
                None => return Err(bad()),
            }
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => p.parse::<u16>().map(|_| h).map_err(|_| bad())?,
                None => authority,
            }
        };
        if host.is_empty() {
            return Err(bad());
        }
        Ok(Target {
            authority: authority.to_owned(),
        })
    }
}

/// Why a connect failed, in words: refused, timed out, or the OS's text.
fn connect_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut next = Some(e);
    while let Some(err) = next {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            return match io.kind() {
                std::io::ErrorKind::ConnectionRefused => "connection refused".into(),
                std::io::ErrorKind::TimedOut => "connect timed out".into(),
                _ => io.to_string(),
            };
        }
        next = err.source();
    }
    e.to_string()
}

pub(crate) async fn request(
    http: &Http,
    cfg: &ImdsConfig,
    target: &Target,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> std::result::Result<Response, Transport> {
    let mut builder = http::Request::builder()
        .method(method)
        .uri(format!("http://{}{path}", target.authority))
        .header("user-agent", "aws_cluster")
        .header("content-length", "0");
    for (k, v) in headers {
        builder = builder.header(*k, *v);
    }
    let request = builder
        .body(Empty::new())
        .map_err(|e| Transport::Malformed(format!("request: {e}")))?;
    let exchange = async {
        let response = http.request(request).await.map_err(|e| {
            // Nothing connected (refused, or no answer to the SYN): the endpoint is not
            // there. Only a timeout after connecting means "IMDS did not answer", the case
            // where the v2 token call falls back to v1 (a hop limit of 1 drops replies).
            if e.is_connect() {
                Transport::Unreachable(connect_cause(&e))
            } else {
                Transport::dispatch(&e)
            }
        })?;
        let status = response.status().as_u16();
        let body = Limited::new(response.into_body(), MAX_RESPONSE)
            .collect()
            .await
            .map_err(|e| Transport::Malformed(format!("body: {e}")))?
            .to_bytes();
        Ok(Response {
            status,
            body: body.to_vec(),
        })
    };
    // The connect has its own bound (the connector's); this one covers the exchange.
    match tokio::time::timeout(cfg.connect_timeout + cfg.timeout, exchange).await {
        Err(_) => Err(Transport::Timeout),
        Ok(result) => result,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    fn split_head(raw: &[u8]) -> Option<(&[u8], &[u8])> {
        let pos = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
        Some((&raw[..pos], &raw[pos + 4..]))
    }

    fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
        head.lines().skip(1).find_map(|line| {
            let (k, v) = line.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }

    /// A script body starting with `RAW:` is written as the whole response, verbatim.
    const RAW: &str = "RAW:";

    #[tokio::test]
    async fn chunked_bodies_are_read_and_hostile_chunk_sizes_are_errors() {
        let good = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\ni-1\r\n0\r\n\r\n";
        let hostile =
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffff\r\nabc\r\n";
        for (reply, ok) in [(good, true), (hostile, false)] {
            let body = format!("{RAW}{reply}");
            let (ep, _) = fake(Arc::new(move |m, p, _| match (m, p) {
                ("PUT", _) => Some((404, String::new())),
                _ => Some((200, body.clone())),
            }))
            .await;
            let result = fetch(&cfg(&ep), &[Key::InstanceId]).await;
            match result {
                Ok(m) => assert!(ok && m.instance_id.as_deref() == Some("i-1"), "{m:?}"),
                Err(e) => assert!(!ok && e.reason == Reason::BadResponse, "{e:?}"),
            }
        }
    }

    /// What the fake does: answers by (method, path, token header) -> (status, body).
    type Script = dyn Fn(&str, &str, Option<&str>) -> Option<(u16, String)> + Send + Sync;

    async fn fake(script: Arc<Script>) -> (String, Arc<Mutex<Vec<String>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let log = Arc::new(Mutex::new(Vec::new()));
        let seen = log.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let script = script.clone();
                let seen = seen.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    let mut raw = Vec::new();
                    while split_head(&raw).is_none() {
                        let n = s.read(&mut buf).await.unwrap_or(0);
                        if n == 0 {
                            return;
                        }
                        raw.extend_from_slice(&buf[..n]);
                    }
                    let text = String::from_utf8_lossy(&raw).into_owned();
                    let mut first = text.lines().next().unwrap_or("").split(' ');
                    let method = first.next().unwrap_or("").to_owned();
                    let path = first.next().unwrap_or("").to_owned();
                    let token = header(&text, "x-aws-ec2-metadata-token").map(str::to_owned);
                    seen.lock().unwrap().push(format!("{method} {path}"));
                    match script(&method, &path, token.as_deref()) {
                        Some((_, body)) if body.starts_with(RAW) => {
                            let _ = s.write_all(&body.as_bytes()[RAW.len()..]).await;
                        }
                        Some((status, body)) => {
                            let reply = format!(
                                "HTTP/1.1 {status} X\r\nContent-Length: {}\r\n\r\n{body}",
                                body.len()
                            );
                            let _ = s.write_all(reply.as_bytes()).await;
                        }
                        None => tokio::time::sleep(Duration::from_secs(10)).await,
                    }
                });
            }
        });
        (format!("http://127.0.0.1:{port}"), log)
    }

    fn metadata(path: &str) -> Option<(u16, String)> {
        Some(match path {
            "/latest/meta-data/instance-id" => (200, "i-0abc".into()),
            "/latest/meta-data/placement/region" => (200, "us-east-1".into()),
            "/latest/meta-data/placement/availability-zone" => (200, "us-east-1b\n".into()),
            "/latest/meta-data/tags/instance/aws:autoscaling:groupName" => (200, "web".into()),
            _ => (404, "not found".into()),
        })
    }

    fn cfg(endpoint: &str) -> ImdsConfig {
        ImdsConfig {
            endpoint: endpoint.into(),
            connect_timeout: Duration::from_millis(300),
            timeout: Duration::from_millis(300),
            attempts: 2,
        }
    }

    #[tokio::test]
    async fn v2_token_is_used_for_every_get() {
        let (ep, log) = fake(Arc::new(|method, path, token| match (method, token) {
            ("PUT", _) => Some((200, "tok".into())),
            (_, Some("tok")) => metadata(path),
            _ => Some((401, String::new())),
        }))
        .await;
        let m = fetch(&cfg(&ep), &Key::ALL).await.expect("metadata");
        assert_eq!(m.version, 2);
        assert_eq!(m.instance_id.as_deref(), Some("i-0abc"));
        assert_eq!(m.region.as_deref(), Some("us-east-1"));
        assert_eq!(m.availability_zone.as_deref(), Some("us-east-1b"));
        assert_eq!(m.auto_scaling_group.as_deref(), Some("web"));
        assert_eq!(log.lock().unwrap()[0], "PUT /latest/api/token");
    }

    #[tokio::test]
    async fn falls_back_to_v1_when_tokens_are_not_offered() {
        let (ep, _) = fake(Arc::new(|method, path, _| match method {
            "PUT" => Some((405, String::new())),
            _ => metadata(path),
        }))
        .await;
        let m = fetch(&cfg(&ep), &[Key::Region]).await.expect("metadata");
        assert_eq!((m.version, m.region.as_deref()), (1, Some("us-east-1")));
        assert_eq!(m.instance_id, None);
    }

    #[tokio::test]
    async fn falls_back_to_v1_when_the_token_call_hangs() {
        let (ep, _) = fake(Arc::new(|method, path, _| match method {
            "PUT" => None,
            _ => metadata(path),
        }))
        .await;
        let m = fetch(&cfg(&ep), &[Key::InstanceId])
            .await
            .expect("metadata");
        assert_eq!(m.version, 1);
    }

    #[tokio::test]
    async fn missing_asg_tag_is_none_but_missing_region_is_an_error() {
        let (ep, _) = fake(Arc::new(|method, path, _| match method {
            "PUT" => Some((200, "tok".into())),
            _ if path.contains("tags") || path.ends_with("region") => Some((404, String::new())),
            _ => metadata(path),
        }))
        .await;
        let m = fetch(&cfg(&ep), &[Key::AutoScalingGroup])
            .await
            .expect("ok");
        assert_eq!(m.auto_scaling_group, None);
        let e = fetch(&cfg(&ep), &Key::ALL).await.expect_err("region");
        assert_eq!(e.reason, Reason::NotFound);
        assert!(
            e.message.contains("set region: in the topology config"),
            "{}",
            e.message
        );
        assert_eq!(e.detail("config_keys"), Some("region"));
    }

    #[tokio::test]
    async fn a_connect_that_times_out_is_unreachable_not_a_v1_fallback() {
        // A listener that never accepts, its backlog full: further SYNs go unanswered.
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket
            .bind("127.0.0.1:0".parse().expect("addr"))
            .expect("bind");
        let port = socket.local_addr().expect("addr").port();
        let _listener = socket.listen(0).expect("listen");
        let mut held = Vec::new();
        for _ in 0..4 {
            let connect = tokio::net::TcpStream::connect(("127.0.0.1", port));
            if let Ok(Ok(s)) = tokio::time::timeout(Duration::from_millis(200), connect).await {
                held.push(s);
            }
        }
        let e = fetch(&cfg(&format!("http://127.0.0.1:{port}")), &[Key::Region])
            .await
            .expect_err("no connect");
        assert_eq!(e.reason, Reason::Unreachable, "{}", e.message);
        assert!(e.message.contains("connect timed out"), "{}", e.message);
    }

    #[tokio::test]
    async fn down_is_unreachable_and_names_every_key() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        drop(listener);
        let e = fetch(&cfg(&format!("http://127.0.0.1:{port}")), &Key::ALL)
            .await
            .expect_err("down");
        assert_eq!(e.reason, Reason::Unreachable, "{}", e.message);
        assert!(
            e.message.contains(
                "set instance_id:, region:, availability_zone: and groups: in the topology config"
            ),
            "{}",
            e.message
        );
        assert!(
            e.message.contains("connection refused after 2 attempts"),
            "{}",
            e.message
        );
        assert_eq!(
            e.detail("config_keys"),
            Some("instance_id,region,availability_zone,groups")
        );
    }

    #[tokio::test]
    async fn forbidden_token_means_disabled() {
        let (ep, _) = fake(Arc::new(|_, _, _| Some((403, String::new())))).await;
        let e = fetch(&cfg(&ep), &[Key::Region]).await.expect_err("403");
        assert_eq!(e.reason, Reason::Unauthorized);
    }

    #[tokio::test]
    async fn nothing_asked_means_no_network() {
        let m = fetch(&cfg("http://127.0.0.1:9"), &[]).await.expect("ok");
        assert_eq!(m.version, 0);
    }

    #[test]
    fn endpoints_and_responses_parse() {
        let t = Target::parse("http://[fd00:ec2::254]").expect("v6");
        assert_eq!(t.authority, "[fd00:ec2::254]");
        let t = Target::parse("http://127.0.0.1:8080/").expect("v4");
        assert_eq!(t.authority, "127.0.0.1:8080");
        for bad in [
            "https://x",
            "127.0.0.1",
            "http://",
            "http://h:x",
            "http://h/p",
        ] {
            assert!(Target::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(value(b" i-1\n").as_deref(), Some("i-1"));
        assert_eq!(value(b"a b"), None);
        assert_eq!(value(b""), None);
    }
}
