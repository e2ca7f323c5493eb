//! DescribeAutoScalingGroups, fully paginated, reduced to each group's instances.

use super::failure::Operation;
use super::{xml, AwsClient, Listing};
use crate::{Error, Reason, Result};

/// One AutoScaling group.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Group {
    pub name: String,
    pub desired_capacity: Option<i32>,
    pub instances: Vec<GroupInstance>,
}

/// An instance as its group sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupInstance {
    pub id: String,
    /// `Pending | InService | Terminating | Standby | Detaching ...`
    pub lifecycle_state: Option<String>,
    /// `Healthy | Unhealthy`
    pub health_status: Option<String>,
    pub availability_zone: Option<String>,
}

/// AWS's largest page for this call.
const PAGE_SIZE: i32 = 100;

impl AwsClient {
    /// The named groups (all groups when `names` is empty), across all pages.
    /// A name that matches no group is simply absent from the answer, as in AWS.
    pub async fn describe_auto_scaling_groups(&self, names: &[String]) -> Result<Listing<Group>> {
        if let Some(bad) = names.iter().find(|n| n.is_empty() || n.len() > 255) {
            return Err(Error::new(
                Reason::InvalidArgument,
                format!(
                    "AutoScaling group names must be 1 to 255 characters, got {} characters",
                    bad.len()
                ),
            ));
        }
        let mut params = vec![("MaxRecords".to_string(), PAGE_SIZE.to_string())];
        for (i, name) in names.iter().enumerate() {
            params.push((
                format!("AutoScalingGroupNames.member.{}", i + 1),
                name.clone(),
            ));
        }
        self.paginate(Operation::DescribeAutoScalingGroups, params, |root| {
            let result = root.child("DescribeAutoScalingGroupsResult");
            let groups = result
                .into_iter()
                .flat_map(|r| r.list("AutoScalingGroups", "member"))
                .map(group)
                .collect();
            (
                groups,
                result.and_then(|r| r.get("NextToken")).map(str::to_owned),
            )
        })
        .await
    }
}

fn group(g: &xml::Node) -> Group {
    Group {
        name: g.get("AutoScalingGroupName").unwrap_or_default().to_owned(),
        desired_capacity: g.get("DesiredCapacity").and_then(|n| n.parse().ok()),
        instances: g
            .list("Instances", "member")
            .map(|i| GroupInstance {
                id: i.get("InstanceId").unwrap_or_default().to_owned(),
                lifecycle_state: i.get("LifecycleState").map(str::to_owned),
                health_status: i.get("HealthStatus").map(str::to_owned),
                availability_zone: i.get("AvailabilityZone").map(str::to_owned),
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::super::fake::{client_for, Fake, Reply};
    use super::*;

    fn page(groups: &str, next: Option<&str>) -> Reply {
        let next = next
            .map(|t| format!("<NextToken>{t}</NextToken>"))
            .unwrap_or_default();
        Reply::ok(format!(
            "<DescribeAutoScalingGroupsResponse xmlns=\"http://autoscaling.amazonaws.com/doc/2011-01-01/\">\
             <DescribeAutoScalingGroupsResult><AutoScalingGroups>{groups}</AutoScalingGroups>{next}\
             </DescribeAutoScalingGroupsResult><ResponseMetadata><RequestId>r</RequestId></ResponseMetadata>\
             </DescribeAutoScalingGroupsResponse>"
        ))
    }

    fn group(name: &str, instances: &str) -> String {
        format!(
            "<member><AutoScalingGroupName>{name}</AutoScalingGroupName><MinSize>0</MinSize>\
             <MaxSize>5</MaxSize><DesiredCapacity>2</DesiredCapacity><Instances>{instances}</Instances></member>"
        )
    }

    const INSTANCES: &str =
        "<member><InstanceId>i-1</InstanceId><AvailabilityZone>us-east-1a</AvailabilityZone>\
        <LifecycleState>InService</LifecycleState><HealthStatus>Healthy</HealthStatus></member>\
        <member><InstanceId>i-2</InstanceId><AvailabilityZone>us-east-1b</AvailabilityZone>\
        <LifecycleState>Standby</LifecycleState><HealthStatus>Unhealthy</HealthStatus></member>";

    #[tokio::test]
    async fn groups_and_instances_across_pages() {
        let fake = Fake::start(|request: &str| {
            if request.contains("NextToken=t2") {
                page(&group("g2", ""), None)
            } else {
                page(&group("g1", INSTANCES), Some("t2"))
            }
        })
        .await;
        let client = client_for(&fake.endpoint(), 2_000).await;
        let listing = client
            .describe_auto_scaling_groups(&["g1".into(), "g2".into()])
            .await
            .expect("groups");
        assert_eq!(listing.pages, 2);
        let names: Vec<&str> = listing.items.iter().map(|g| g.name.as_str()).collect();
        assert_eq!(names, ["g1", "g2"]);
        let g1 = &listing.items[0];
        assert_eq!(g1.desired_capacity, Some(2));
        assert_eq!(
            g1.instances[1],
            GroupInstance {
                id: "i-2".into(),
                lifecycle_state: Some("Standby".into()),
                health_status: Some("Unhealthy".into()),
                availability_zone: Some("us-east-1b".into()),
            }
        );
        let requests = fake.requests();
        assert!(
            requests[0].contains("AutoScalingGroupNames.member.2=g2"),
            "{}",
            requests[0]
        );
        assert!(requests[0].contains("MaxRecords=100"));
    }

    #[tokio::test]
    async fn throttling_is_reported_with_the_query_protocol_code() {
        let fake = Fake::start(|_: &str| {
            Reply::status(
                400,
                "<ErrorResponse><Error><Type>Sender</Type><Code>Throttling</Code>\
                 <Message>Rate exceeded</Message></Error><RequestId>r</RequestId></ErrorResponse>",
            )
        })
        .await;
        let client = client_for(&fake.endpoint(), 2_000).await;
        let err = client
            .describe_auto_scaling_groups(&[])
            .await
            .expect_err("throttled");
        assert_eq!(err.reason, Reason::Throttled);
        assert_eq!(err.detail("code"), Some("Throttling"));
        assert_eq!(
            err.message,
            "DescribeAutoScalingGroups failed: Throttling: Rate exceeded"
        );
    }

    #[tokio::test]
    async fn empty_names_are_rejected() {
        let client = client_for("http://127.0.0.1:9", 1_000).await;
        let err = client
            .describe_auto_scaling_groups(&[String::new()])
            .await
            .expect_err("invalid");
        assert_eq!(err.reason, Reason::InvalidArgument);
    }
}
