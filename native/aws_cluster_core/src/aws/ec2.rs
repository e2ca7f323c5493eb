//! DescribeInstances, fully paginated, reduced to the fields discovery needs.

use super::failure::Operation;
use super::{xml, AwsClient, Listing};
use crate::{Error, Reason, Result};

/// What to ask DescribeInstances for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InstanceQuery {
    /// `(name, values)` pairs, e.g. `("tag:app", ["chat"])`; AWS ANDs filters, ORs values.
    pub filters: Vec<(String, Vec<String>)>,
    pub instance_ids: Vec<String>,
    /// MaxResults per page (5..=1000); AWS forbids it together with `instance_ids`.
    pub page_size: Option<i32>,
}

impl InstanceQuery {
    /// Adds `instance-state-name=running` unless a state filter is already there.
    pub fn running(mut self) -> Self {
        if !self.filters.iter().any(|(n, _)| n == "instance-state-name") {
            self.filters
                .push(("instance-state-name".into(), vec!["running".into()]));
        }
        self
    }

    /// Rejects what AWS would reject, with a message naming the part at fault.
    pub fn validate(&self) -> Result<()> {
        let invalid = |msg: String| Err(Error::new(Reason::InvalidArgument, msg));
        for (name, values) in &self.filters {
            if name.is_empty() {
                return invalid("a DescribeInstances filter has an empty name".into());
            }
            if values.is_empty() {
                return invalid(format!("filter {name:?} has no values"));
            }
        }
        if self.instance_ids.iter().any(String::is_empty) {
            return invalid("instance_ids contains an empty id".into());
        }
        if let Some(n) = self.page_size {
            if !(5..=1000).contains(&n) {
                return invalid(format!("page_size must be between 5 and 1000, got {n}"));
            }
            if !self.instance_ids.is_empty() {
                return invalid("page_size cannot be combined with instance_ids".into());
            }
        }
        Ok(())
    }
}

/// One EC2 instance. Empty strings from the API are `None`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Instance {
    pub id: String,
    /// `pending | running | shutting-down | terminated | stopping | stopped`.
    pub state: Option<String>,
    pub private_ip: Option<String>,
    pub public_ip: Option<String>,
    pub private_dns: Option<String>,
    /// Every IPv6 address of the instance, primary first, without repeats.
    pub ipv6: Vec<String>,
    pub availability_zone: Option<String>,
    pub subnet_id: Option<String>,
    pub vpc_id: Option<String>,
    pub tags: Vec<(String, String)>,
    /// Unix seconds.
    pub launch_time: Option<i64>,
    pub network_interfaces: Vec<NetworkInterface>,
}

/// One elastic network interface attached to an instance.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetworkInterface {
    pub id: Option<String>,
    /// 0 for the primary interface, 1 for the first extra ENI ...
    pub device_index: Option<i32>,
    pub subnet_id: Option<String>,
    /// Primary first.
    pub private_ips: Vec<String>,
    pub ipv6: Vec<String>,
}

impl AwsClient {
    /// Every instance matching `query`, across all pages. Stops at the first failing page:
    /// a partial answer would make peers look gone.
    pub async fn describe_instances(&self, query: &InstanceQuery) -> Result<Listing<Instance>> {
        query.validate()?;
        let mut params = Vec::new();
        for (i, (name, values)) in query.filters.iter().enumerate() {
            params.push((format!("Filter.{}.Name", i + 1), name.clone()));
            for (j, value) in values.iter().enumerate() {
                params.push((format!("Filter.{}.Value.{}", i + 1, j + 1), value.clone()));
            }
        }
        for (i, id) in query.instance_ids.iter().enumerate() {
            params.push((format!("InstanceId.{}", i + 1), id.clone()));
        }
        if let Some(n) = query.page_size {
            params.push(("MaxResults".into(), n.to_string()));
        }
        self.paginate(Operation::DescribeInstances, params, |root| {
            let items = root
                .list("reservationSet", "item")
                .flat_map(|r| r.list("instancesSet", "item"))
                .map(convert)
                .collect();
            (items, root.get("nextToken").map(str::to_owned))
        })
        .await
    }
}

fn push_unique(list: &mut Vec<String>, value: Option<&str>) {
    if let Some(v) = value.filter(|v| !v.is_empty()) {
        if !list.iter().any(|x| x == v) {
            list.push(v.to_owned());
        }
    }
}

fn owned(s: Option<&str>) -> Option<String> {
    s.map(str::to_owned)
}

fn convert(i: &xml::Node) -> Instance {
    let network_interfaces: Vec<NetworkInterface> = i
        .list("networkInterfaceSet", "item")
        .map(interface)
        .collect();
    let mut ipv6 = Vec::new();
    push_unique(&mut ipv6, i.get("ipv6Address"));
    for eni in &network_interfaces {
        for a in &eni.ipv6 {
            push_unique(&mut ipv6, Some(a));
        }
    }
    Instance {
        id: i.get("instanceId").unwrap_or_default().to_owned(),
        state: owned(i.child("instanceState").and_then(|s| s.get("name"))),
        private_ip: owned(i.get("privateIpAddress")),
        public_ip: owned(i.get("ipAddress")),
        private_dns: owned(i.get("privateDnsName")),
        ipv6,
        availability_zone: owned(i.child("placement").and_then(|p| p.get("availabilityZone"))),
        subnet_id: owned(i.get("subnetId")),
        vpc_id: owned(i.get("vpcId")),
        tags: i
            .list("tagSet", "item")
            .filter_map(|t| {
                Some((
                    t.get("key")?.to_owned(),
                    t.get("value").unwrap_or("").to_owned(),
                ))
            })
            .collect(),
        launch_time: i.get("launchTime").and_then(epoch_seconds),
        network_interfaces,
    }
}

fn interface(n: &xml::Node) -> NetworkInterface {
    let addresses: Vec<&xml::Node> = n.list("privateIpAddressesSet", "item").collect();
    let mut private_ips = Vec::new();
    // The primary address first: it is what `{:interface, n}` should resolve to.
    for a in addresses
        .iter()
        .filter(|a| a.get("primary") == Some("true"))
    {
        push_unique(&mut private_ips, a.get("privateIpAddress"));
    }
    push_unique(&mut private_ips, n.get("privateIpAddress"));
    for a in &addresses {
        push_unique(&mut private_ips, a.get("privateIpAddress"));
    }
    let mut ipv6 = Vec::new();
    for a in n.list("ipv6AddressesSet", "item") {
        push_unique(&mut ipv6, a.get("ipv6Address"));
    }
    NetworkInterface {
        id: owned(n.get("networkInterfaceId")),
        device_index: n
            .child("attachment")
            .and_then(|a| a.get("deviceIndex"))
            .and_then(|d| d.parse().ok()),
        subnet_id: owned(n.get("subnetId")),
        private_ips,
        ipv6,
    }
}

/// Unix seconds of an ISO 8601 timestamp as EC2 writes them (`2024-01-02T03:04:05.000Z`,
/// or with a `+hh:mm` offset).
fn epoch_seconds(s: &str) -> Option<i64> {
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if s.get(4..5)? != "-" || !s.get(10..11)?.eq_ignore_ascii_case("T") {
        return None;
    }
    let zone = s[19..].trim_start_matches(|c: char| c == '.' || c.is_ascii_digit());
    let offset = match zone {
        "Z" | "z" | "" => 0,
        z if z.len() == 6 && (z.starts_with('+') || z.starts_with('-')) => {
            let sign = if z.starts_with('-') { -1 } else { 1 };
            sign * (z.get(1..3)?.parse::<i64>().ok()? * 3600
                + z.get(4..6)?.parse::<i64>().ok()? * 60)
        }
        _ => return None,
    };
    // Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
    let y = if mo <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((mo + 9) % 12) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + h * 3_600 + mi * 60 + sec - offset)
}

#[cfg(test)]
mod tests {
    use super::super::fake::{client_for, Fake, Reply};
    use super::*;

    fn reservation(items: &str) -> String {
        format!(
            "<item><reservationId>r-1</reservationId><instancesSet>{items}</instancesSet></item>"
        )
    }

    const FULL: &str = "<item><instanceId>i-1</instanceId>\
        <instanceState><code>16</code><name>running</name></instanceState>\
        <privateDnsName>ip-127-0-1-10.ec2.internal</privateDnsName>\
        <privateIpAddress>127.0.1.10</privateIpAddress><ipAddress></ipAddress>\
        <placement><availabilityZone>us-east-1a</availabilityZone></placement>\
        <subnetId>subnet-1</subnetId><vpcId>vpc-1</vpcId>\
        <launchTime>2024-01-02T03:04:05.000Z</launchTime>\
        <tagSet><item><key>app</key><value>chat</value></item><item><key>empty</key><value></value></item></tagSet>\
        <networkInterfaceSet>\
        <item><networkInterfaceId>eni-2</networkInterfaceId><subnetId>subnet-2</subnetId>\
        <privateIpAddress>127.0.2.20</privateIpAddress>\
        <attachment><deviceIndex>1</deviceIndex></attachment>\
        <privateIpAddressesSet><item><privateIpAddress>127.0.2.21</privateIpAddress><primary>false</primary></item>\
        <item><privateIpAddress>127.0.2.20</privateIpAddress><primary>true</primary></item></privateIpAddressesSet>\
        <ipv6AddressesSet><item><ipv6Address>fd00::2</ipv6Address></item></ipv6AddressesSet></item>\
        </networkInterfaceSet></item>";

    fn page(body: &str, next: Option<&str>) -> Reply {
        let next = next
            .map(|t| format!("<nextToken>{t}</nextToken>"))
            .unwrap_or_default();
        Reply::ok(format!(
            "<DescribeInstancesResponse xmlns=\"http://ec2.amazonaws.com/doc/2016-11-15/\">\
             <requestId>req</requestId><reservationSet>{body}</reservationSet>{next}\
             </DescribeInstancesResponse>"
        ))
    }

    #[tokio::test]
    async fn maps_every_field_and_follows_next_tokens() {
        let fake = Fake::start(|request: &str| {
            if request.contains("NextToken=tok2") {
                page(
                    &reservation("<item><instanceId>i-2</instanceId></item>"),
                    None,
                )
            } else {
                page(&reservation(FULL), Some("tok2"))
            }
        })
        .await;
        let client = client_for(&fake.endpoint(), 2_000).await;
        let query = InstanceQuery {
            filters: vec![("tag:app".into(), vec!["chat".into(), "web".into()])],
            page_size: Some(5),
            ..Default::default()
        }
        .running();
        let listing = client.describe_instances(&query).await.expect("listing");
        assert_eq!(listing.pages, 2);
        let ids: Vec<&str> = listing.items.iter().map(|i| i.id.as_str()).collect();
        assert_eq!(ids, ["i-1", "i-2"]);
        let i = &listing.items[0];
        assert_eq!(i.state.as_deref(), Some("running"));
        assert_eq!(i.private_ip.as_deref(), Some("127.0.1.10"));
        assert_eq!(i.public_ip, None);
        assert_eq!(i.private_dns.as_deref(), Some("ip-127-0-1-10.ec2.internal"));
        assert_eq!(i.availability_zone.as_deref(), Some("us-east-1a"));
        assert_eq!(i.subnet_id.as_deref(), Some("subnet-1"));
        assert_eq!(i.vpc_id.as_deref(), Some("vpc-1"));
        assert_eq!(i.launch_time, Some(1_704_164_645));
        assert_eq!(
            i.tags,
            vec![
                ("app".into(), "chat".into()),
                ("empty".into(), String::new())
            ]
        );
        assert_eq!(i.ipv6, vec!["fd00::2".to_string()]);
        let eni = &i.network_interfaces[0];
        assert_eq!(eni.device_index, Some(1));
        assert_eq!(eni.subnet_id.as_deref(), Some("subnet-2"));
        assert_eq!(eni.private_ips, vec!["127.0.2.20", "127.0.2.21"]);
        let requests = fake.requests();
        assert_eq!(requests.len(), 2);
        assert!(
            requests[0].contains("Filter.1.Name=tag%3Aapp"),
            "{}",
            requests[0]
        );
        assert!(requests[0].contains("Filter.1.Value.2=web"));
        assert!(requests[0].contains("Filter.2.Name=instance-state-name"));
        assert!(requests[0].contains("MaxResults=5"));
    }

    #[tokio::test]
    async fn a_failing_page_fails_the_whole_call() {
        let fake = Fake::start(|request: &str| {
            if request.contains("NextToken=") {
                Reply::status(500, "boom")
            } else {
                page(&reservation(FULL), Some("tok2"))
            }
        })
        .await;
        let client = client_for(&fake.endpoint(), 2_000).await;
        let err = client
            .describe_instances(&InstanceQuery::default())
            .await
            .expect_err("must fail");
        assert_eq!(err.reason, Reason::BadResponse);
        assert_eq!(err.number("status"), Some(500));
    }

    #[tokio::test]
    async fn transient_failures_are_retried_and_token_cycles_refused() {
        use super::super::fake::client_with_attempts;
        use std::sync::atomic::{AtomicUsize, Ordering};
        let calls = std::sync::Arc::new(AtomicUsize::new(0));
        let seen = calls.clone();
        let fake = Fake::start(move |_: &str| match seen.fetch_add(1, Ordering::SeqCst) {
            0 => Reply::status(
                503,
                "<Response><Errors><Error><Code>Unavailable</Code></Error></Errors></Response>",
            ),
            1 => Reply::Truncated("x".repeat(200)),
            _ => page(&reservation(FULL), None),
        })
        .await;
        let client = client_with_attempts(&fake.endpoint(), 10_000, 3).await;
        let listing = client
            .describe_instances(&InstanceQuery::default())
            .await
            .expect("third try");
        assert_eq!((listing.items.len(), listing.pages), (1, 1));
        assert_eq!(calls.load(Ordering::SeqCst), 3);

        // A -> B -> A would page until the operation timeout.
        let fake = Fake::start(|request: &str| {
            let next = if request.contains("NextToken=A") {
                "B"
            } else {
                "A"
            };
            page(&reservation(FULL), Some(next))
        })
        .await;
        let client = client_for(&fake.endpoint(), 10_000).await;
        let err = client
            .describe_instances(&InstanceQuery::default())
            .await
            .expect_err("cycle");
        assert_eq!(err.reason, Reason::BadResponse);
        assert!(
            err.message.contains("repeats an earlier NextToken"),
            "{}",
            err.message
        );
        assert_eq!(fake.requests().len(), 3);
    }

    #[test]
    fn timestamps_in_every_form_ec2_uses() {
        assert_eq!(
            epoch_seconds("2024-01-02T03:04:05.000Z"),
            Some(1_704_164_645)
        );
        assert_eq!(epoch_seconds("2024-01-02T03:04:05Z"), Some(1_704_164_645));
        assert_eq!(
            epoch_seconds("2024-01-02T04:04:05+01:00"),
            Some(1_704_164_645)
        );
        assert_eq!(epoch_seconds("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(epoch_seconds("2000-02-29T00:00:00Z"), Some(951_782_400));
        assert_eq!(epoch_seconds("yesterday"), None);
    }

    #[test]
    fn running_is_added_once_and_validation_names_the_problem() {
        let q = InstanceQuery::default().running().running();
        assert_eq!(q.filters.len(), 1);
        let bad = InstanceQuery {
            page_size: Some(2),
            ..Default::default()
        };
        assert!(bad.validate().unwrap_err().message.contains("page_size"));
        let bad = InstanceQuery {
            filters: vec![("tag:a".into(), vec![])],
            ..Default::default()
        };
        assert!(bad.validate().unwrap_err().message.contains("tag:a"));
        let bad = InstanceQuery {
            instance_ids: vec!["i-1".into()],
            page_size: Some(10),
            ..Default::default()
        };
        assert_eq!(bad.validate().unwrap_err().reason, Reason::InvalidArgument);
    }
}
