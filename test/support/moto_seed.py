"""Seeds moto_server for aws_cluster's tests (driven by AWSCluster.Test.Moto).

Protocol: requests on stdin, replies on stdout, each framed by a 4-byte big-endian
length. A request is JSON: {"op": ..., "endpoint": ..., "region": ..., <args>}.
A reply is an Erlang term in text form, `{ok, Value}` or `{error, <<"why">>}`, so the
Elixir side parses it with :erl_parse and needs no JSON library.

Address plan (DESIGN.md section 6): VPC 127.0.0.0/16, subnet 127.0.N.0/24 in the N-th
AZ (a, b, c), and 127.0.128.0/17 in AZ a for bulk instances. An instance's subnet
follows from its private IP, so tests only name addresses.
"""

import json
import struct
import sys
import warnings

warnings.filterwarnings("ignore")

import boto3  # noqa: E402

VPC_CIDR = "127.0.0.0/16"
AZ_SUBNETS = {"a": "127.0.1.0/24", "b": "127.0.2.0/24", "c": "127.0.3.0/24"}
BULK_CIDR = "127.0.128.0/17"
LAUNCH_CONFIG = "aws-cluster-test-lc"
AMI = "ami-12c6146b"
INSTANCE_TYPE = "t2.micro"

_clients = {}


def clients(req):
    key = (req["endpoint"], req["region"])
    if key not in _clients:
        kw = dict(
            endpoint_url=req["endpoint"],
            region_name=req["region"],
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        _clients[key] = (boto3.client("ec2", **kw), boto3.client("autoscaling", **kw))
    return _clients[key]


def vpc_id(ec2):
    vpcs = ec2.describe_vpcs(Filters=[{"Name": "cidr", "Values": [VPC_CIDR]}])["Vpcs"]
    return vpcs[0]["VpcId"] if vpcs else None


def subnet_id(ec2, cidr):
    subnets = ec2.describe_subnets(Filters=[{"Name": "cidr-block", "Values": [cidr]}])["Subnets"]
    if not subnets:
        raise ValueError("no subnet %s: call setup_vpc first" % cidr)
    return subnets[0]["SubnetId"]


def cidr_for_ip(ip):
    octets = ip.split(".")
    if len(octets) != 4 or octets[:2] != ["127", "0"]:
        raise ValueError("test instances must have 127.0.x.y addresses, got %r" % ip)
    third = int(octets[2])
    if 1 <= third <= 3:
        return AZ_SUBNETS["abc"[third - 1]]
    if third >= 128:
        return BULK_CIDR
    raise ValueError("no subnet holds %s (use 127.0.1-3.x or 127.0.128-255.x)" % ip)


def tag_spec(tags):
    if not tags:
        return []
    return [
        {
            "ResourceType": "instance",
            "Tags": [{"Key": k, "Value": v} for k, v in tags.items()],
        }
    ]


def op_setup_vpc(req):
    ec2, _ = clients(req)
    region = req["region"]
    vid = vpc_id(ec2) or ec2.create_vpc(CidrBlock=VPC_CIDR)["Vpc"]["VpcId"]
    existing = {
        s["CidrBlock"]: s["SubnetId"]
        for s in ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vid]}])["Subnets"]
    }
    out = {}
    for letter, cidr in list(AZ_SUBNETS.items()) + [("bulk", BULK_CIDR)]:
        if cidr not in existing:
            az = region + ("a" if letter == "bulk" else letter)
            existing[cidr] = ec2.create_subnet(VpcId=vid, CidrBlock=cidr, AvailabilityZone=az)[
                "Subnet"
            ]["SubnetId"]
        out[letter] = existing[cidr]
    return {"vpc_id": vid, "subnets": out}


def op_run_instances(req):
    ec2, _ = clients(req)
    ids = []
    for spec in req["instances"]:
        ip = spec["ip"]
        args = dict(
            ImageId=AMI,
            InstanceType=INSTANCE_TYPE,
            MinCount=1,
            MaxCount=1,
            TagSpecifications=tag_spec(spec.get("tags")),
        )
        second = spec.get("second_ip")
        if second:
            args["NetworkInterfaces"] = [
                {
                    "DeviceIndex": 0,
                    "SubnetId": subnet_id(ec2, cidr_for_ip(ip)),
                    "PrivateIpAddress": ip,
                },
                {
                    "DeviceIndex": 1,
                    "SubnetId": subnet_id(ec2, cidr_for_ip(second)),
                    "PrivateIpAddress": second,
                },
            ]
        else:
            args["SubnetId"] = subnet_id(ec2, cidr_for_ip(ip))
            args["PrivateIpAddress"] = ip
        ids.append(ec2.run_instances(**args)["Instances"][0]["InstanceId"])
    return ids


def op_bulk_instances(req):
    """`count` instances in the bulk subnet, `per_reservation` per RunInstances call.

    moto pages DescribeInstances by reservation, so many reservations are what make
    a small page_size span pages.
    """
    ec2, _ = clients(req)
    count = int(req["count"])
    per = int(req.get("per_reservation", 100))
    sid = subnet_id(ec2, BULK_CIDR)
    ids = []
    while len(ids) < count:
        n = min(per, count - len(ids))
        r = ec2.run_instances(
            ImageId=AMI,
            InstanceType=INSTANCE_TYPE,
            MinCount=n,
            MaxCount=n,
            SubnetId=sid,
            TagSpecifications=tag_spec(req.get("tags")),
        )
        ids.extend(i["InstanceId"] for i in r["Instances"])
    return ids


def op_terminate(req):
    ec2, _ = clients(req)
    ec2.terminate_instances(InstanceIds=req["ids"])
    return len(req["ids"])


def op_stop(req):
    ec2, _ = clients(req)
    ec2.stop_instances(InstanceIds=req["ids"])
    return len(req["ids"])


def op_start(req):
    ec2, _ = clients(req)
    ec2.start_instances(InstanceIds=req["ids"])
    return len(req["ids"])


def op_tag(req):
    ec2, _ = clients(req)
    tags = [{"Key": k, "Value": v} for k, v in req["tags"].items()]
    ec2.create_tags(Resources=req["ids"], Tags=tags)
    return len(req["ids"])


def op_untag(req):
    ec2, _ = clients(req)
    ec2.delete_tags(Resources=req["ids"], Tags=[{"Key": k} for k in req["keys"]])
    return len(req["ids"])


def op_create_asg(req):
    """A group over the three AZ subnets holding exactly `instance_ids` (attached)."""
    ec2, asg = clients(req)
    names = [c["LaunchConfigurationName"] for c in asg.describe_launch_configurations()["LaunchConfigurations"]]
    if LAUNCH_CONFIG not in names:
        asg.create_launch_configuration(
            LaunchConfigurationName=LAUNCH_CONFIG, ImageId=AMI, InstanceType=INSTANCE_TYPE
        )
    ids = req.get("instance_ids", [])
    subnets = ",".join(subnet_id(ec2, c) for c in AZ_SUBNETS.values())
    asg.create_auto_scaling_group(
        AutoScalingGroupName=req["name"],
        LaunchConfigurationName=LAUNCH_CONFIG,
        MinSize=0,
        MaxSize=max(len(ids), 1) + 10,
        DesiredCapacity=0,
        VPCZoneIdentifier=subnets,
    )
    if ids:
        asg.attach_instances(AutoScalingGroupName=req["name"], InstanceIds=ids)
    return req["name"]


def op_attach(req):
    _, asg = clients(req)
    asg.attach_instances(AutoScalingGroupName=req["name"], InstanceIds=req["ids"])
    return len(req["ids"])


def op_set_health(req):
    _, asg = clients(req)
    asg.set_instance_health(InstanceId=req["id"], HealthStatus=req["status"])
    return req["id"]


def op_standby(req):
    _, asg = clients(req)
    asg.enter_standby(
        AutoScalingGroupName=req["name"],
        InstanceIds=req["ids"],
        ShouldDecrementDesiredCapacity=True,
    )
    return len(req["ids"])


def op_exit_standby(req):
    _, asg = clients(req)
    asg.exit_standby(AutoScalingGroupName=req["name"], InstanceIds=req["ids"])
    return len(req["ids"])


def op_detach(req):
    _, asg = clients(req)
    asg.detach_instances(
        AutoScalingGroupName=req["name"],
        InstanceIds=req["ids"],
        ShouldDecrementDesiredCapacity=True,
    )
    return len(req["ids"])


def op_asg_terminate(req):
    """Scale-in through the AutoScaling API (the group shrinks; nothing replaces it).

    Terminating a group member through EC2 instead makes moto launch a replacement to
    keep the desired capacity, as AWS would.
    """
    _, asg = clients(req)
    for iid in req["ids"]:
        asg.terminate_instance_in_auto_scaling_group(
            InstanceId=iid, ShouldDecrementDesiredCapacity=True
        )
    return len(req["ids"])


def op_recorded_calls(req):
    """Counts the requests in moto's recorder log by caller and API action.

    The log is moto's own (POST /moto-api/recorder/start-recording, file
    MOTO_RECORDER_FILEPATH in moto's environment). A caller is "sdk" when the
    User-Agent is aws_cluster's own (aws-cluster/<version>: the nodes), "other"
    otherwise (this seeder's boto3). Keys are "caller:Action".
    """
    import base64
    import urllib.parse
    import urllib.request

    url = req["endpoint"] + "/moto-api/recorder/download-recording"
    with urllib.request.urlopen(url, timeout=30) as resp:
        text = resp.read().decode("utf-8")
    counts = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        entry = json.loads(line)
        headers = {k.lower(): v for k, v in (entry.get("headers") or {}).items()}
        agent = headers.get("user-agent", "") + " " + headers.get("x-amz-user-agent", "")
        caller = "sdk" if "aws-cluster/" in agent.lower() else "other"
        body = entry.get("body") or ""
        if entry.get("body_encoded"):
            body = base64.b64decode(body).decode("utf-8", "replace")
        action = urllib.parse.parse_qs(body).get("Action", [None])[0]
        if action is None:
            target = headers.get("x-amz-target", "")
            action = target.rsplit(".", 1)[-1] if target else "unknown"
        key = caller + ":" + action
        counts[key] = counts.get(key, 0) + 1
    return counts


def service_client(service, req):
    """A cached boto3 client of `service` for the request's endpoint and region."""
    key = (service, req["endpoint"], req["region"])
    if key not in _clients:
        _clients[key] = boto3.client(
            service,
            endpoint_url=req["endpoint"],
            region_name=req["region"],
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
    return _clients[key]


def ecs_client(req):
    return service_client("ecs", req)


def dynamodb_client(req):
    return service_client("dynamodb", req)


def op_ecs_cluster(req):
    """Creates ECS cluster `name`; RunTask needs the VPC's DNS host names enabled."""
    ec2, _ = clients(req)
    ec2.modify_vpc_attribute(VpcId=vpc_id(ec2), EnableDnsHostnames={"Value": True})
    return ecs_client(req).create_cluster(clusterName=req["name"])["cluster"]["clusterArn"]


def op_ecs_run_tasks(req):
    """Runs one task of `family` per spec in `cluster` and returns {arn, ip} for each.

    awsvpc (default): a spec is {"az": "a"|"b"|"c", "tags": {..}}, on FARGATE in that
    AZ's subnet; its ENI address comes from the subnet (test/support/moto_launch.py).
    host: a spec is {"container_instance": arn, "tags": {..}}, started on that instance.
    """
    ec2, _ = clients(req)
    ecs = ecs_client(req)
    mode = req.get("network_mode", "awsvpc")
    ecs.register_task_definition(
        family=req["family"],
        networkMode=mode,
        containerDefinitions=[{"name": "app", "image": "app", "memory": 128}],
    )
    out = []
    for spec in req["tasks"]:
        tags = [{"key": k, "value": v} for k, v in (spec.get("tags") or {}).items()]
        if mode == "awsvpc":
            subnet = subnet_id(ec2, AZ_SUBNETS[spec["az"]])
            task = ecs.run_task(
                cluster=req["cluster"],
                taskDefinition=req["family"],
                launchType="FARGATE",
                networkConfiguration={
                    "awsvpcConfiguration": {"subnets": [subnet], "securityGroups": []}
                },
                tags=tags,
            )["tasks"][0]
            ip = [d["value"] for d in task["attachments"][0]["details"] if d["name"] == "privateIPv4Address"][0]
        else:
            task = ecs.start_task(
                cluster=req["cluster"],
                taskDefinition=req["family"],
                containerInstances=[spec["container_instance"]],
                tags=tags,
            )["tasks"][0]
            ip = None
        out.append({"arn": task["taskArn"], "ip": ip})
    return out


def op_ecs_stop(req):
    ecs = ecs_client(req)
    for arn in req["arns"]:
        ecs.stop_task(cluster=req["cluster"], task=arn, reason="test")
    return len(req["arns"])


def op_ecs_container_instance(req):
    """Registers EC2 instance `instance_id` as a container instance of `cluster`."""
    doc = json.dumps({"instanceId": req["instance_id"], "region": req["region"]})
    ci = ecs_client(req).register_container_instance(
        cluster=req["cluster"], instanceIdentityDocument=doc
    )
    return ci["containerInstance"]["containerInstanceArn"]


def op_dynamodb_table(req):
    """Creates registry table `name` (cluster HASH, node RANGE; on demand) with TTL on expires_at."""
    db = dynamodb_client(req)
    db.create_table(
        TableName=req["name"],
        KeySchema=[
            {"AttributeName": "cluster", "KeyType": "HASH"},
            {"AttributeName": "node", "KeyType": "RANGE"},
        ],
        AttributeDefinitions=[
            {"AttributeName": "cluster", "AttributeType": "S"},
            {"AttributeName": "node", "AttributeType": "S"},
        ],
        BillingMode="PAY_PER_REQUEST",
    )
    db.update_time_to_live(
        TableName=req["name"],
        TimeToLiveSpecification={"Enabled": True, "AttributeName": "expires_at"},
    )
    return req["name"]


def op_dynamodb_items(req):
    """Every item of table `name` (a Scan, every page), as {attribute: value} with plain values."""
    db = dynamodb_client(req)
    out, start = [], None
    while True:
        kw = {"TableName": req["name"]}
        if start:
            kw["ExclusiveStartKey"] = start
        page = db.scan(**kw)
        for item in page["Items"]:
            out.append({k: list(v.values())[0] for k, v in item.items()})
        start = page.get("LastEvaluatedKey")
        if not start:
            return out


def op_dynamodb_put(req):
    """Puts `item` ({attribute: string}) into table `name`, as any writer to the table could."""
    item = {k: ({"N": v[1:]} if v.startswith("#") else {"S": v}) for k, v in req["item"].items()}
    dynamodb_client(req).put_item(TableName=req["name"], Item=item)
    return True


def op_ping(req):
    return "pong"


def erl(value):
    """Erlang term text for JSON-like Python data."""
    if value is None:
        return "nil"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str):
        out = []
        for ch in value:
            if ch in '"\\':
                out.append("\\" + ch)
            elif ord(ch) < 32 or ord(ch) == 127:
                out.append("\\x{%x}" % ord(ch))
            else:
                out.append(ch)
        return '<<"%s"/utf8>>' % "".join(out)
    if isinstance(value, dict):
        return "#{%s}" % ",".join("%s => %s" % (erl(str(k)), erl(v)) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return "[%s]" % ",".join(erl(v) for v in value)
    return erl(str(value))


def read_frame(stream):
    head = stream.read(4)
    if len(head) < 4:
        return None
    (length,) = struct.unpack(">I", head)
    return stream.read(length)


def write_frame(stream, data):
    stream.write(struct.pack(">I", len(data)) + data)
    stream.flush()


def main():
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    while True:
        frame = read_frame(stdin)
        if frame is None:
            return
        try:
            req = json.loads(frame)
            handler = globals().get("op_" + req["op"])
            if handler is None:
                raise ValueError("unknown op %r" % req["op"])
            reply = "{ok, %s}" % erl(handler(req))
        except Exception as e:  # the reply carries any failure; the loop survives
            reply = "{error, %s}" % erl("%s: %s" % (type(e).__name__, e))
        try:
            write_frame(stdout, reply.encode("utf-8"))
        except BrokenPipeError:  # the VM went away mid-request: nothing to answer
            return


if __name__ == "__main__":
    main()
