"""Runs moto_server with two test-only changes to ECS tasks:

* an awsvpc task's ENI takes an address from its own subnet instead of moto's random
  10.x.y.z, so tasks live at 127.0.x.y and real BEAM nodes can be started at their
  addresses (the loopback-only rule);
* a task has the `availabilityZone` AWS gives it (its ENI's subnet's zone, or its
  container instance's), which moto leaves out.

moto/ecs/models.py calls random_private_ip() without a CIDR. Here that call returns a
marker, and the EC2 backend replaces the marker with the lowest free address from host
100 up in the ENI's subnet: deterministic, and clear of the addresses tests give
instances (below 100). Usage: python moto_launch.py <moto_server arguments>.
"""

import ipaddress
import sys

import moto.ecs.models as ecs_models
from moto.ec2.models import EC2Backend
from moto.server import main

MARKER = "aws-cluster-test-subnet-address"
FIRST_HOST = 100

ecs_models.random_private_ip = lambda *args, **kwargs: MARKER
_create = EC2Backend.create_network_interface


def create_network_interface(self, subnet, private_ip_address, *args, **kwargs):
    if private_ip_address == MARKER:
        subnet_obj = self.get_subnet(subnet) if isinstance(subnet, str) else subnet
        private_ip_address = next_free(self, subnet_obj)
    return _create(self, subnet, private_ip_address, *args, **kwargs)


def next_free(backend, subnet):
    network = ipaddress.IPv4Network(subnet.cidr_block)
    used = {eni.private_ip_address for eni in backend.enis.values()}
    used |= {
        i.private_ip_address
        for r in backend.reservations.values()
        for i in r.instances
        if getattr(i, "private_ip_address", None)
    }
    for offset in range(FIRST_HOST, network.num_addresses - 1):
        candidate = str(network.network_address + offset)
        if candidate not in used:
            return candidate
    raise ValueError("subnet %s has no free address from host %d" % (subnet.cidr_block, FIRST_HOST))


EC2Backend.create_network_interface = create_network_interface
_task_init = ecs_models.Task.__init__


def task_init(self, cluster, task_definition, container_instance_arn, *args, **kwargs):
    _task_init(self, cluster, task_definition, container_instance_arn, *args, **kwargs)
    self.availability_zone = zone_of(self, container_instance_arn)


def zone_of(task, container_instance_arn):
    ec2 = ecs_models.ec2_backends[task._account_id][task.region_name]
    for attachment in task.attachments:
        for detail in attachment["details"]:
            if detail["name"] == "subnetId":
                return ec2.get_subnet(detail["value"]).availability_zone
    if container_instance_arn:
        instances = task._backend.container_instances.get(task.cluster_name, {})
        instance = instances.get(container_instance_arn.split("/")[-1])
        if instance is not None:
            ec2_instance = ec2.get_instance(instance.ec2_instance_id)
            return ec2.get_subnet(ec2_instance.subnet_id).availability_zone
    return None


ecs_models.Task.__init__ = task_init

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
