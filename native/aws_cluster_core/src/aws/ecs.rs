//! ECS task discovery: ListTasks (every page) and DescribeTasks (100 ARNs a call) over
//! the awsJson1_1 protocol, and DescribeContainerInstances for tasks that share their
//! host's address (bridge and host networking), all read into plain data.
//!
//! moto's ListTasks never paginates and ignores `serviceName`, so pagination, chunking
//! and those filters are tested here against a scripted server.

use super::failure::{classify, Failure, Operation};
use super::query::{self, JsonCall};
use super::{AwsClient, Listing};
use crate::{Error, Reason, Result};
use serde_json::{json, Map, Value};
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};

/// DescribeTasks takes at most this many task ARNs per call.
pub const DESCRIBE_CHUNK: usize = 100;

/// Where a task is in its life, as far as clustering cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskState {
    /// `lastStatus == "RUNNING"`: a peer.
    Running,
    /// STOPPING, DEPROVISIONING or STOPPED: reported as gone. AWS lists recently stopped
    /// tasks for a while even under `desiredStatus=RUNNING`.
    Gone,
    /// PROVISIONING, PENDING, ACTIVATING or anything new: not a peer yet, not gone.
    Starting,
}

impl TaskState {
    pub fn of(last_status: &str) -> TaskState {
        match last_status {
            "RUNNING" => TaskState::Running,
            "STOPPING" | "DEPROVISIONING" | "STOPPED" => TaskState::Gone,
            _ => TaskState::Starting,
        }
    }
}

/// One task of a DescribeTasks answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Task {
    pub arn: String,
    pub cluster_arn: Option<String>,
    pub family: Option<String>,
    pub group: Option<String>,
    pub last_status: String,
    pub state: TaskState,
    pub availability_zone: Option<String>,
    pub launch_type: Option<String>,
    pub container_instance_arn: Option<String>,
    /// The task ENI's private IPv4 (awsvpc); `None` in bridge or host mode.
    pub address: Option<String>,
    pub tags: Vec<(String, String)>,
}

/// ListTasks' largest page.
const LIST_PAGE: u32 = 100;
const LAUNCH_TYPES: &[&str] = &["EC2", "FARGATE", "EXTERNAL"];

/// Which tasks ListTasks asks for: always `desiredStatus=RUNNING` in `cluster`, narrowed
/// by at most one of family, service name or startedBy (ECS takes no more than one),
/// and by launch type.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskQuery {
    pub cluster: String,
    pub family: Option<String>,
    pub service_name: Option<String>,
    pub started_by: Option<String>,
    pub launch_type: Option<String>,
}

impl TaskQuery {
    /// Checks the query, naming the option at fault.
    pub fn validate(&self) -> Result<()> {
        let invalid = |key: &'static str, msg: String| {
            Err(Error::new(Reason::InvalidArgument, msg).with_detail("key", key))
        };
        if self.cluster.is_empty() || self.cluster.len() > 2048 {
            return invalid(
                "cluster",
                "cluster must be a cluster name or ARN of 1 to 2048 bytes".into(),
            );
        }
        let narrowing = [
            ("family", &self.family),
            ("service_name", &self.service_name),
            ("started_by", &self.started_by),
        ];
        let given: Vec<&str> = narrowing
            .iter()
            .filter(|(_, v)| v.is_some())
            .map(|(k, _)| *k)
            .collect();
        if given.len() > 1 {
            return invalid(
                given[1],
                format!(
                    "give only one of family, service_name and started_by, got {}",
                    given.join(" and ")
                ),
            );
        }
        for (key, value) in narrowing {
            if value
                .as_ref()
                .is_some_and(|v| v.is_empty() || v.len() > 2048)
            {
                return invalid(key, format!("{key} must be 1 to 2048 bytes"));
            }
        }
        if let Some(lt) = &self.launch_type {
            if !LAUNCH_TYPES.contains(&lt.as_str()) {
                return invalid(
                    "launch_type",
                    format!("launch_type must be EC2, FARGATE or EXTERNAL, got {lt:?}"),
                );
            }
        }
        Ok(())
    }

    fn list_body(&self, token: Option<&str>) -> Value {
        let mut body = Map::new();
        body.insert("cluster".into(), json!(self.cluster));
        body.insert("desiredStatus".into(), json!("RUNNING"));
        body.insert("maxResults".into(), json!(LIST_PAGE));
        for (key, value) in [
            ("family", &self.family),
            ("serviceName", &self.service_name),
            ("startedBy", &self.started_by),
            ("launchType", &self.launch_type),
        ] {
            if let Some(v) = value {
                body.insert(key.into(), json!(v));
            }
        }
        if let Some(t) = token {
            body.insert("nextToken".into(), json!(t));
        }
        Value::Object(body)
    }
}

/// A container instance: the EC2 instance a bridge or host-mode task shares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerInstance {
    pub arn: String,
    pub ec2_instance_id: Option<String>,
    pub status: Option<String>,
}

impl AwsClient {
    /// Every task of `query` that ECS lists as desired RUNNING, described with its tags,
    /// across all ListTasks pages and DescribeTasks chunks. The whole of it runs under
    /// `operation_timeout`. `pages` counts every request.
    pub async fn ecs_tasks(&self, query: &TaskQuery) -> Result<Listing<Task>> {
        query.validate()?;
        // Which call a timeout cut off, for the error's action.
        let describing = AtomicBool::new(false);
        let all = async {
            let mut listing = Listing {
                items: Vec::new(),
                pages: 0,
            };
            let mut arns: Vec<String> = Vec::new();
            let mut token: Option<String> = None;
            // A next token seen before would page forever (until operation_timeout).
            let mut seen = HashSet::new();
            loop {
                let body = query.list_body(token.as_deref());
                let answer = self.ecs_call(Operation::ListTasks, &body).await?;
                listing.pages += 1;
                let (page, next) = list_tasks_page(&answer).map_err(|e| self.context(e))?;
                arns.extend(page);
                match next {
                    None => break,
                    Some(next) if !seen.insert(next.clone()) => {
                        return Err(self.fail(
                            Operation::ListTasks,
                            Failure::Response {
                                status: Some(200),
                                cause: format!(
                                    "page {} repeats an earlier nextToken",
                                    listing.pages
                                ),
                            },
                        ))
                    }
                    Some(next) => token = Some(next),
                }
            }
            let mut unique = HashSet::new();
            arns.retain(|a| unique.insert(a.clone()));
            describing.store(true, Ordering::Relaxed);
            for chunk in chunks(&arns) {
                let body = json!({"cluster": query.cluster, "tasks": chunk, "include": ["TAGS"]});
                let answer = self.ecs_call(Operation::DescribeTasks, &body).await?;
                listing.pages += 1;
                listing
                    .items
                    .extend(describe_tasks_page(&answer).map_err(|e| self.context(e))?);
            }
            Ok(listing)
        };
        match tokio::time::timeout(self.operation_timeout, all).await {
            Ok(result) => result,
            Err(_) if describing.load(Ordering::Relaxed) => {
                Err(self.fail(Operation::DescribeTasks, Failure::Timeout))
            }
            Err(_) => Err(self.fail(Operation::ListTasks, Failure::Timeout)),
        }
    }

    /// The container instances `arns` of `cluster`, 100 a call. An ARN ECS does not know
    /// is left out (it is in the answer's `failures`), as a task without a host is not a
    /// peer.
    pub async fn ecs_container_instances(
        &self,
        cluster: &str,
        arns: &[String],
    ) -> Result<Listing<ContainerInstance>> {
        TaskQuery {
            cluster: cluster.to_owned(),
            ..TaskQuery::default()
        }
        .validate()?;
        let all = async {
            let mut listing = Listing {
                items: Vec::new(),
                pages: 0,
            };
            for chunk in chunks(arns) {
                let body = json!({"cluster": cluster, "containerInstances": chunk});
                let answer = self
                    .ecs_call(Operation::DescribeContainerInstances, &body)
                    .await?;
                listing.pages += 1;
                listing
                    .items
                    .extend(container_instances_page(&answer).map_err(|e| self.context(e))?);
            }
            Ok(listing)
        };
        self.within_budget(Operation::DescribeContainerInstances, all)
            .await
    }

    async fn ecs_call(&self, op: Operation, body: &Value) -> Result<String> {
        let body = body.to_string();
        let call = JsonCall {
            service: query::ECS,
            endpoint: &self.ecs_endpoint,
            operation: op.name(),
            body: &body,
        };
        self.query
            .call_json(&call)
            .await
            .map_err(|f| self.fail(op, f))
    }

    async fn within_budget<T>(
        &self,
        op: Operation,
        work: impl std::future::Future<Output = Result<T>>,
    ) -> Result<T> {
        match tokio::time::timeout(self.operation_timeout, work).await {
            Ok(result) => result,
            Err(_) => Err(self.fail(op, Failure::Timeout)),
        }
    }

    fn fail(&self, op: Operation, failure: Failure) -> Error {
        classify(op, &self.ecs_endpoint, self.timeout_ms(), failure)
    }

    /// A parse error with the same context as a classified failure.
    fn context(&self, e: Error) -> Error {
        let action = match e.detail("operation") {
            Some("DescribeTasks") => Operation::DescribeTasks.action(),
            Some("DescribeContainerInstances") => Operation::DescribeContainerInstances.action(),
            _ => Operation::ListTasks.action(),
        };
        e.with_detail("action", action)
            .with_detail("endpoint", self.ecs_endpoint.clone())
    }
}

/// A DescribeContainerInstances answer's instances; `failures` for ARNs ECS does not
/// know are left out, and any other failure fails the answer.
pub fn container_instances_page(body: &str) -> Result<Vec<ContainerInstance>> {
    let op = "DescribeContainerInstances";
    let root = parse(body, op)?;
    only_missing(&root, op)?;
    let list = root
        .get("containerInstances")
        .and_then(Value::as_array)
        .ok_or_else(|| bad(op, "the answer has no containerInstances list"))?;
    Ok(list
        .iter()
        .filter_map(|c| {
            Some(ContainerInstance {
                arn: text(c, "containerInstanceArn")?,
                ec2_instance_id: text(c, "ec2InstanceId"),
                status: text(c, "status"),
            })
        })
        .collect())
}

/// One ListTasks page: its task ARNs and the next token.
pub fn list_tasks_page(body: &str) -> Result<(Vec<String>, Option<String>)> {
    let root = parse(body, "ListTasks")?;
    let arns = root
        .get("taskArns")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("ListTasks", "the answer has no taskArns list"))?
        .iter()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect();
    Ok((arns, next_token(&root)))
}

/// A DescribeTasks answer's tasks. Entries of `failures` that are `MISSING` (tasks gone
/// between the two calls) are left out: a task that cannot be described is not a peer.
/// Any other failure fails the answer, so it can never pass for tasks that are gone.
pub fn describe_tasks_page(body: &str) -> Result<Vec<Task>> {
    let root = parse(body, "DescribeTasks")?;
    only_missing(&root, "DescribeTasks")?;
    let tasks = root
        .get("tasks")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("DescribeTasks", "the answer has no tasks list"))?;
    Ok(tasks.iter().filter_map(task).collect())
}

fn only_missing(root: &Value, op: &'static str) -> Result<()> {
    let failures = root.get("failures").and_then(Value::as_array);
    match failures
        .into_iter()
        .flatten()
        .find(|f| text(f, "reason").as_deref() != Some("MISSING"))
    {
        None => Ok(()),
        Some(f) => Err(bad(
            op,
            &format!(
                "failed for {}: {}{}",
                text(f, "arn").unwrap_or_else(|| "a resource".into()),
                text(f, "reason").unwrap_or_else(|| "no reason given".into()),
                text(f, "detail")
                    .map(|d| format!(" ({d})"))
                    .unwrap_or_default()
            ),
        )),
    }
}

/// The ARNs in DescribeTasks-sized chunks.
pub fn chunks(arns: &[String]) -> impl Iterator<Item = &[String]> {
    arns.chunks(DESCRIBE_CHUNK)
}

fn task(v: &Value) -> Option<Task> {
    let arn = text(v, "taskArn")?;
    let last_status = text(v, "lastStatus").unwrap_or_default();
    Some(Task {
        arn,
        cluster_arn: text(v, "clusterArn"),
        family: family(v),
        group: text(v, "group"),
        state: TaskState::of(&last_status),
        last_status,
        availability_zone: text(v, "availabilityZone"),
        launch_type: text(v, "launchType"),
        container_instance_arn: text(v, "containerInstanceArn"),
        address: eni_address(v).or_else(|| container_address(v)),
        tags: tags(v),
    })
}

// DescribeTasks has no family field; the task definition ARN ends in `/<family>:<rev>`.
fn family(v: &Value) -> Option<String> {
    let def = text(v, "taskDefinitionArn")?;
    let name = def.rsplit('/').next()?;
    let family = name.rsplit_once(':').map_or(name, |(f, _)| f);
    (!family.is_empty()).then(|| family.to_owned())
}

fn eni_address(v: &Value) -> Option<String> {
    v.get("attachments")?
        .as_array()?
        .iter()
        .filter(|a| a.get("type").and_then(Value::as_str) == Some("ElasticNetworkInterface"))
        .flat_map(|a| {
            a.get("details")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
        })
        .find(|d| d.get("name").and_then(Value::as_str) == Some("privateIPv4Address"))
        .and_then(|d| text(d, "value"))
}

fn container_address(v: &Value) -> Option<String> {
    v.get("containers")?
        .as_array()?
        .iter()
        .flat_map(|c| {
            c.get("networkInterfaces")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
        })
        .find_map(|n| text(n, "privateIpv4Address"))
}

fn tags(v: &Value) -> Vec<(String, String)> {
    v.get("tags")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|t| Some((text(t, "key")?, text(t, "value").unwrap_or_default())))
        .collect()
}

fn text(v: &Value, key: &str) -> Option<String> {
    v.get(key)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

fn next_token(root: &Value) -> Option<String> {
    text(root, "nextToken")
}

fn parse(body: &str, op: &'static str) -> Result<Value> {
    let root: Value =
        serde_json::from_str(body).map_err(|e| bad(op, &format!("the answer is not JSON: {e}")))?;
    if root.is_object() {
        Ok(root)
    } else {
        Err(bad(op, "the answer is not a JSON object"))
    }
}

fn bad(op: &'static str, msg: &str) -> Error {
    Error::new(Reason::BadResponse, format!("ecs:{op}: {msg}")).with_detail("operation", op)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn awsvpc(arn: &str, status: &str, ip: &str) -> String {
        format!(
            r#"{{"taskArn":"{arn}","clusterArn":"arn:aws:ecs:us-east-1:123:cluster/web",
            "taskDefinitionArn":"arn:aws:ecs:us-east-1:123:task-definition/app:7",
            "group":"service:app","lastStatus":"{status}","desiredStatus":"RUNNING",
            "availabilityZone":"us-east-1b","launchType":"FARGATE",
            "attachments":[{{"type":"ElasticNetworkInterface","details":[
              {{"name":"subnetId","value":"subnet-1"}},
              {{"name":"privateIPv4Address","value":"{ip}"}}]}}],
            "tags":[{{"key":"cluster","value":"web"}}]}}"#
        )
    }

    #[test]
    fn reads_an_awsvpc_task() {
        let body = format!(
            r#"{{"tasks":[{}],"failures":[]}}"#,
            awsvpc("arn:t/1", "RUNNING", "127.0.1.5")
        );
        let tasks = describe_tasks_page(&body).expect("page");
        assert_eq!(tasks.len(), 1);
        let t = &tasks[0];
        assert_eq!(t.address.as_deref(), Some("127.0.1.5"));
        assert_eq!(t.family.as_deref(), Some("app"));
        assert_eq!(t.group.as_deref(), Some("service:app"));
        assert_eq!(t.availability_zone.as_deref(), Some("us-east-1b"));
        assert_eq!(t.state, TaskState::Running);
        assert_eq!(t.tags, vec![("cluster".to_owned(), "web".to_owned())]);
    }

    #[test]
    fn falls_back_to_the_container_interface() {
        let body = r#"{"tasks":[{"taskArn":"arn:t/2","lastStatus":"RUNNING",
            "attachments":[{"type":"ElasticNetworkInterface","details":[]}],
            "containers":[{"networkInterfaces":[{"privateIpv4Address":"127.0.2.9"}]}]}]}"#;
        let tasks = describe_tasks_page(body).expect("page");
        assert_eq!(tasks[0].address.as_deref(), Some("127.0.2.9"));
    }

    #[test]
    fn a_bridge_task_has_no_address_and_keeps_its_container_instance() {
        let body = r#"{"tasks":[{"taskArn":"arn:t/3","lastStatus":"RUNNING",
            "containerInstanceArn":"arn:ci/1","containers":[{"name":"app"}]}]}"#;
        let t = &describe_tasks_page(body).expect("page")[0];
        assert_eq!(t.address, None);
        assert_eq!(t.container_instance_arn.as_deref(), Some("arn:ci/1"));
    }

    #[test]
    fn states_split_into_peers_gone_and_starting() {
        for (status, state) in [
            ("RUNNING", TaskState::Running),
            ("STOPPING", TaskState::Gone),
            ("DEPROVISIONING", TaskState::Gone),
            ("STOPPED", TaskState::Gone),
            ("PROVISIONING", TaskState::Starting),
            ("PENDING", TaskState::Starting),
            ("ACTIVATING", TaskState::Starting),
            ("", TaskState::Starting),
        ] {
            assert_eq!(TaskState::of(status), state, "{status}");
        }
    }

    #[test]
    fn entries_without_an_arn_and_failures_are_not_tasks() {
        let body = format!(
            r#"{{"tasks":[{{"lastStatus":"RUNNING"}},{}],
            "failures":[{{"arn":"arn:t/9","reason":"MISSING"}}]}}"#,
            awsvpc("arn:t/4", "STOPPED", "127.0.1.6")
        );
        let tasks = describe_tasks_page(&body).expect("page");
        assert_eq!(tasks.len(), 1);
        assert_eq!(tasks[0].state, TaskState::Gone);
    }

    #[test]
    fn a_failure_other_than_missing_fails_the_answer() {
        let body =
            r#"{"tasks":[],"failures":[{"arn":"arn:t/9","reason":"ACCESS_DENIED","detail":"no"}]}"#;
        let e = describe_tasks_page(body).expect_err("not missing");
        assert_eq!(e.reason, Reason::BadResponse);
        assert!(
            e.message.contains("arn:t/9: ACCESS_DENIED (no)"),
            "{}",
            e.message
        );
        let body = r#"{"containerInstances":[],"failures":[{"arn":"arn:ci/1","reason":"CLUSTER_MISMATCH"}]}"#;
        assert!(container_instances_page(body).is_err());
        let body =
            r#"{"containerInstances":[],"failures":[{"arn":"arn:ci/1","reason":"MISSING"}]}"#;
        assert_eq!(
            container_instances_page(body).expect("missing is fine"),
            vec![]
        );
    }

    #[test]
    fn list_pages_carry_their_token() {
        let (arns, next) =
            list_tasks_page(r#"{"taskArns":["a","b"],"nextToken":"t2"}"#).expect("page");
        assert_eq!(arns, vec!["a", "b"]);
        assert_eq!(next.as_deref(), Some("t2"));
        let (arns, next) = list_tasks_page(r#"{"taskArns":[],"nextToken":""}"#).expect("page");
        assert!(arns.is_empty() && next.is_none());
    }

    #[test]
    fn bad_answers_name_the_operation() {
        for (body, op) in [
            ("<xml/>", "ListTasks"),
            ("[]", "ListTasks"),
            (r#"{"tasks":[]}"#, "ListTasks"),
        ] {
            let e = list_tasks_page(body).expect_err(body);
            assert_eq!(e.reason, Reason::BadResponse);
            assert_eq!(e.detail("operation"), Some(op));
        }
        let e = describe_tasks_page(r#"{"taskArns":[]}"#).expect_err("no tasks");
        assert!(e.message.contains("ecs:DescribeTasks"), "{}", e.message);
    }

    mod wire {
        use super::super::*;
        use crate::aws::fake::{client_for, Fake, Reply};

        fn body_of(request: &str) -> Value {
            let body = request.split("\r\n\r\n").nth(1).unwrap_or("{}");
            serde_json::from_str(body).unwrap_or(Value::Null)
        }

        fn target(request: &str) -> String {
            request
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("x-amz-target: ")
                        .map(str::to_owned)
                })
                .unwrap_or_default()
        }

        /// 250 tasks over three ListTasks pages; DescribeTasks answers what it is asked.
        fn paged(request: &str) -> Reply {
            let body = body_of(request);
            let t = target(request);
            if t.ends_with(".listtasks") {
                let (range, next) = match body.get("nextToken").and_then(Value::as_str) {
                    None => (0..100, Some("p2")),
                    Some("p2") => (100..200, Some("p3")),
                    _ => (200..250, None),
                };
                let arns: Vec<String> = range.map(|i| format!("arn:t/{i}")).collect();
                Reply::ok(json!({"taskArns": arns, "nextToken": next}).to_string())
            } else if t.ends_with(".describetasks") {
                let tasks: Vec<Value> = body["tasks"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|a| json!({"taskArn": a, "lastStatus": "RUNNING"}))
                    .collect();
                Reply::ok(json!({"tasks": tasks, "failures": []}).to_string())
            } else {
                Reply::status(400, r#"{"__type":"UnknownOperationException"}"#)
            }
        }

        #[tokio::test]
        async fn every_list_page_is_read_and_described_100_at_a_time() {
            let fake = Fake::start(paged).await;
            let client = client_for(&fake.endpoint(), 5_000).await;
            let query = TaskQuery {
                cluster: "web".into(),
                service_name: Some("chat".into()),
                launch_type: Some("FARGATE".into()),
                ..TaskQuery::default()
            };
            let listing = client.ecs_tasks(&query).await.expect("tasks");
            assert_eq!(listing.items.len(), 250);
            assert_eq!(listing.pages, 6);
            let requests = fake.requests();
            let first = body_of(&requests[0]);
            assert_eq!(
                target(&requests[0]),
                "amazonec2containerservicev20141113.listtasks"
            );
            assert!(requests[0].contains("application/x-amz-json-1.1"));
            assert_eq!(first["desiredStatus"], "RUNNING");
            assert_eq!(first["serviceName"], "chat");
            assert_eq!(first["launchType"], "FARGATE");
            assert_eq!(first["maxResults"], 100);
            let sizes: Vec<usize> = requests[3..]
                .iter()
                .map(|r| body_of(r)["tasks"].as_array().map_or(0, Vec::len))
                .collect();
            assert_eq!(sizes, vec![100, 100, 50]);
            assert_eq!(body_of(&requests[3])["include"], json!(["TAGS"]));
        }

        #[tokio::test]
        async fn a_repeated_token_is_a_bad_response_not_a_loop() {
            let fake = Fake::start(|_| Reply::ok(r#"{"taskArns":["a"],"nextToken":"same"}"#)).await;
            let client = client_for(&fake.endpoint(), 5_000).await;
            let query = TaskQuery {
                cluster: "web".into(),
                ..TaskQuery::default()
            };
            let e = client.ecs_tasks(&query).await.expect_err("loop");
            assert_eq!(e.reason, Reason::BadResponse);
            assert!(e.message.contains("repeats"), "{}", e.message);
            assert_eq!(fake.requests().len(), 2);
        }

        #[tokio::test]
        async fn throttling_and_denial_are_classified_with_the_ecs_action() {
            let fake = Fake::start(|r| {
                if target(r).ends_with(".listtasks") {
                    Reply::ok(r#"{"taskArns":["arn:t/1"]}"#)
                } else {
                    Reply::status(
                        400,
                        r#"{"__type":"AccessDeniedException","message":"not allowed"}"#,
                    )
                }
            })
            .await;
            let client = client_for(&fake.endpoint(), 5_000).await;
            let query = TaskQuery {
                cluster: "web".into(),
                ..TaskQuery::default()
            };
            let e = client.ecs_tasks(&query).await.expect_err("denied");
            assert_eq!(e.reason, Reason::Unauthorized);
            assert_eq!(e.detail("action"), Some("ecs:DescribeTasks"));
            assert!(e.message.contains("ecs:DescribeTasks"), "{}", e.message);

            let fake = Fake::start(|_| {
                Reply::status(
                    400,
                    r#"{"__type":"ThrottlingException","message":"Rate exceeded"}"#,
                )
            })
            .await;
            let client = client_for(&fake.endpoint(), 5_000).await;
            let e = client.ecs_tasks(&query).await.expect_err("throttled");
            assert_eq!(e.reason, Reason::Throttled);
            assert_eq!(e.detail("code"), Some("ThrottlingException"));
        }

        #[tokio::test]
        async fn container_instances_map_to_ec2_ids() {
            let fake = Fake::start(|_| {
                Reply::ok(
                    r#"{"containerInstances":[{"containerInstanceArn":"arn:ci/1",
                    "ec2InstanceId":"i-1","status":"ACTIVE"}],
                    "failures":[{"arn":"arn:ci/2","reason":"MISSING"}]}"#,
                )
            })
            .await;
            let client = client_for(&fake.endpoint(), 5_000).await;
            let arns = vec!["arn:ci/1".to_owned(), "arn:ci/2".to_owned()];
            let listing = client
                .ecs_container_instances("web", &arns)
                .await
                .expect("instances");
            assert_eq!(listing.items.len(), 1);
            assert_eq!(listing.items[0].ec2_instance_id.as_deref(), Some("i-1"));
            assert!(target(&fake.requests()[0]).ends_with(".describecontainerinstances"));
        }
    }

    #[test]
    fn queries_name_the_bad_option() {
        let key = |q: TaskQuery| {
            q.validate()
                .err()
                .and_then(|e| e.detail("key").map(str::to_owned))
        };
        let base = TaskQuery {
            cluster: "web".into(),
            ..TaskQuery::default()
        };
        assert_eq!(key(base.clone()), None);
        assert_eq!(
            key(TaskQuery {
                cluster: String::new(),
                ..base.clone()
            })
            .as_deref(),
            Some("cluster")
        );
        assert_eq!(
            key(TaskQuery {
                family: Some("a".into()),
                started_by: Some("b".into()),
                ..base.clone()
            })
            .as_deref(),
            Some("started_by")
        );
        assert_eq!(
            key(TaskQuery {
                launch_type: Some("LAMBDA".into()),
                ..base
            })
            .as_deref(),
            Some("launch_type")
        );
    }

    #[test]
    fn describe_chunks_hold_at_most_100() {
        let arns: Vec<String> = (0..250).map(|i| format!("arn:t/{i}")).collect();
        let sizes: Vec<usize> = chunks(&arns).map(<[String]>::len).collect();
        assert_eq!(sizes, vec![100, 100, 50]);
    }
}
