//! A scripted HTTP/1.1 server on 127.0.0.1 for the wire-level tests: enough to answer
//! EC2/AutoScaling query requests, fail in chosen ways, and record what was asked.

use super::{AwsClient, ClientConfig};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub enum Reply {
    Full {
        status: u16,
        body: String,
    },
    /// Announces the full length, sends half, closes.
    Truncated(String),
    /// Reads the request and never answers.
    Hang,
}

impl Reply {
    pub fn ok(body: impl Into<String>) -> Self {
        Reply::Full {
            status: 200,
            body: body.into(),
        }
    }

    pub fn status(status: u16, body: impl Into<String>) -> Self {
        Reply::Full {
            status,
            body: body.into(),
        }
    }
}

type Handler = dyn Fn(&str) -> Reply + Send + Sync;

pub struct Fake {
    port: u16,
    requests: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Fake {
    pub async fn start(handler: impl Fn(&str) -> Reply + Send + Sync + 'static) -> Fake {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let handler: Arc<Handler> = Arc::new(handler);
        let log = requests.clone();
        let task = tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                tokio::spawn(serve(socket, handler.clone(), log.clone()));
            }
        });
        Fake {
            port,
            requests,
            task,
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn requests(&self) -> Vec<String> {
        self.requests.lock().expect("lock").clone()
    }
}

impl Drop for Fake {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(mut socket: TcpStream, handler: Arc<Handler>, log: Arc<Mutex<Vec<String>>>) {
    loop {
        let Some(request) = read_request(&mut socket).await else {
            return;
        };
        log.lock().expect("lock").push(request.clone());
        match handler(&request) {
            Reply::Full { status, body } => {
                let head = format!(
                    "HTTP/1.1 {status} X\r\nContent-Type: text/xml\r\nContent-Length: {}\r\n\r\n",
                    body.len()
                );
                if socket.write_all(head.as_bytes()).await.is_err()
                    || socket.write_all(body.as_bytes()).await.is_err()
                {
                    return;
                }
            }
            Reply::Truncated(body) => {
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/xml\r\nContent-Length: {}\r\n\r\n",
                    body.len()
                );
                let _ = socket.write_all(head.as_bytes()).await;
                let _ = socket.write_all(&body.as_bytes()[..body.len() / 2]).await;
                return;
            }
            Reply::Hang => {
                tokio::time::sleep(Duration::from_secs(30)).await;
                return;
            }
        }
    }
}

async fn read_request(socket: &mut TcpStream) -> Option<String> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break pos + 4;
        }
        let n = socket.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + length {
        let n = socket.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Some(String::from_utf8_lossy(&buf).into_owned())
}

/// A client for `endpoint` with static test keys and a single attempt.
pub async fn client_for(endpoint: &str, timeout_ms: u64) -> AwsClient {
    client_with_attempts(endpoint, timeout_ms, 1).await
}

pub async fn client_with_attempts(endpoint: &str, timeout_ms: u64, attempts: u32) -> AwsClient {
    let mut cfg = ClientConfig::new("us-east-1");
    cfg.endpoint = Some(endpoint.to_owned());
    cfg.access_key_id = Some("testing".into());
    cfg.secret_access_key = Some("testing".into());
    cfg.max_attempts = attempts;
    cfg.operation_timeout = Duration::from_millis(timeout_ms);
    AwsClient::new(cfg).await.expect("client")
}
