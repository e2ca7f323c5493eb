//! ECS task discovery's answers, read from the JSON of `ListTasks` and `DescribeTasks`
//! (the awsJson1_1 protocol), as plain data.
//!
//! Not wired to a client yet: this is the part of ECS discovery that decides which tasks
//! are peers and at which address, tested against canned pages because moto's ListTasks
//! never paginates.

use crate::{Error, Reason, Result};
use serde_json::Value;

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

/// A DescribeTasks answer's tasks. Entries of `failures` (ARNs that went missing between
/// the two calls) are left out: a task that cannot be described is not a peer.
pub fn describe_tasks_page(body: &str) -> Result<Vec<Task>> {
    let root = parse(body, "DescribeTasks")?;
    let tasks = root
        .get("tasks")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("DescribeTasks", "the answer has no tasks list"))?;
    Ok(tasks.iter().filter_map(task).collect())
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

    #[test]
    fn describe_chunks_hold_at_most_100() {
        let arns: Vec<String> = (0..250).map(|i| format!("arn:t/{i}")).collect();
        let sizes: Vec<usize> = chunks(&arns).map(<[String]>::len).collect();
        assert_eq!(sizes, vec![100, 100, 50]);
    }
}
