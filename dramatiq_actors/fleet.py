"""EC2, through boto3: the only module that talks to AWS.

Every GPU node is an instance tagged ``role=vllm_node`` and ``model=<name>``.
Clients honour the standard AWS environment (credentials, ``AWS_ENDPOINT_URL``
for an EC2-compatible endpoint such as moto's server). Calls are synchronous:
async actors run them in a thread (``asyncio.to_thread``).
"""

from __future__ import annotations

import dataclasses
import functools
import threading
import uuid
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from edge.errors import PortalError

__all__ = ["CAPACITY_CODES", "ROLE_TAG", "SPOT_SHARE", "Fleet", "FleetError", "Instance",
           "LaunchSpec", "aws_configured", "hourly_price"]

#: Tag every node instance carries.
ROLE_TAG = ("role", "vllm_node")

#: On-demand USD per hour (us-east-1) of common GPU instance types, for reports and
#: for booting the cheapest stopped node first. A node's own hourly_cost wins.
HOURLY_USD = {
    "g4dn.xlarge": 0.526, "g4dn.2xlarge": 0.752, "g4dn.12xlarge": 3.912,
    "g5.xlarge": 1.006, "g5.2xlarge": 1.212, "g5.4xlarge": 1.624, "g5.12xlarge": 5.672,
    "g5.48xlarge": 16.288, "g6.xlarge": 0.805, "g6.2xlarge": 0.978, "g6.12xlarge": 4.602,
    "g6e.xlarge": 1.861, "g6e.12xlarge": 10.493, "p4d.24xlarge": 32.773,
    "p5.48xlarge": 98.32, "t3.micro": 0.0104, "t3.medium": 0.0416,
}


def aws_configured() -> bool:
    """Whether boto3 finds credentials (environment, files or an instance role)."""
    return boto3.session.Session().get_credentials() is not None


#: What spot capacity costs as a share of on-demand, for reports and the simulator
#: (EC2's spot prices move; GPU types have sold at 30 to 40 % of on-demand).
SPOT_SHARE = 0.35


def hourly_price(instance_type: str, *, spot: bool = False) -> int:
    """Micro-dollars per hour of an instance type (0 when unknown)."""
    usd = HOURLY_USD.get(instance_type, 0.0) * (SPOT_SHARE if spot else 1.0)
    return round(usd * 1_000_000)


#: EC2's error codes that mean "not this type, subnet or market now": the launch goes on
#: to the next instance type or subnet of the model's plan.
CAPACITY_CODES = frozenset({
    "InsufficientInstanceCapacity", "InsufficientCapacityOnHost", "InstanceLimitExceeded",
    "VcpuLimitExceeded", "MaxSpotInstanceCountExceeded", "SpotMaxPriceTooLow",
    "InsufficientFreeAddressesInSubnet", "UnfulfillableCapacity", "Unsupported",
})


class FleetError(PortalError):
    """EC2 refused or failed an operation; ``code`` is EC2's error code when it gave one."""

    def __init__(self, message: str, code: str = "") -> None:
        super().__init__(message)
        self.code = code

    @property
    def capacity(self) -> bool:
        """A refusal for want of capacity or quota, which another type or subnet may not meet."""
        return self.code in CAPACITY_CODES


@dataclasses.dataclass(frozen=True)
class Instance:
    id: str
    region: str
    state: str  # EC2's: pending, running, stopping, stopped, shutting-down, terminated
    instance_type: str
    private_ip: str
    public_ip: str
    tags: dict[str, str]
    launched_at: datetime | None
    spot: bool = False

    @property
    def model(self) -> str:
        return self.tags.get("model", "")


@dataclasses.dataclass(frozen=True, kw_only=True)
class LaunchSpec:
    """What a new node is made of; either an image or a launch template."""

    model: str
    instance_type: str
    region: str
    image_id: str = ""
    launch_template: str = ""
    subnet_id: str = ""
    security_group_ids: tuple[str, ...] = ()
    key_name: str = ""
    name: str = ""
    disk_gb: int = 0
    user_data: str = ""
    spot: bool = False  # a one-time spot request, terminated when EC2 takes it back


class Fleet:
    """EC2 operations on node instances, across the configured regions."""

    def __init__(self, regions: list[str], attempts: int = 5) -> None:
        self.regions = regions
        self.attempts = attempts  # botocore's, per call (EC2's 5xx capacity refusals too)
        self._local = threading.local()

    def client(self, region: str) -> Any:
        # boto3 clients are thread-safe, sessions are not: one session per thread.
        cache = self._local.__dict__.setdefault("clients", {})
        if region not in cache:
            session = boto3.session.Session()
            cache[region] = session.client(
                "ec2", region_name=region,
                config=Config(retries={"total_max_attempts": self.attempts,
                                       "mode": "standard"},
                              connect_timeout=5, read_timeout=30))
        return cache[region]

    def instances(self) -> Iterator[Instance]:
        """Every node instance in every region (paginated), terminated ones included."""
        for region in self.regions:
            paginator = self.client(region).get_paginator("describe_instances")
            pages = _call(paginator.paginate,
                          Filters=[{"Name": f"tag:{ROLE_TAG[0]}", "Values": [ROLE_TAG[1]]}],
                          PaginationConfig={"PageSize": 100})
            for page in _iterate(pages):
                for reservation in page.get("Reservations", []):
                    for raw in reservation.get("Instances", []):
                        yield _instance(raw, region)

    def describe(self, region: str, instance_id: str) -> Instance | None:
        try:
            answer = self.client(region).describe_instances(InstanceIds=[instance_id])
        except ClientError as exc:
            if "NotFound" in exc.response.get("Error", {}).get("Code", ""):
                return None
            raise FleetError(str(exc)) from exc
        except BotoCoreError as exc:
            raise FleetError(str(exc)) from exc
        for reservation in answer.get("Reservations", []):
            for raw in reservation.get("Instances", []):
                return _instance(raw, region)
        return None

    def launch(self, spec: LaunchSpec, count: int = 1) -> list[Instance]:
        tags = [{"Key": ROLE_TAG[0], "Value": ROLE_TAG[1]}, {"Key": "model", "Value": spec.model},
                {"Key": "Name", "Value": spec.name or f"vllm-{spec.model}"},
                {"Key": "managed-by", "Value": "inference-portal"}]
        request: dict[str, Any] = {
            "MinCount": count, "MaxCount": count, "InstanceType": spec.instance_type,
            # botocore retries a 5xx: the token makes a retried launch the same launch.
            "ClientToken": uuid.uuid4().hex,
            "TagSpecifications": [{"ResourceType": "instance", "Tags": tags},
                                  {"ResourceType": "volume", "Tags": tags}],
        }
        if spec.launch_template:
            key = "LaunchTemplateId" if spec.launch_template.startswith("lt-") \
                else "LaunchTemplateName"
            request["LaunchTemplate"] = {key: spec.launch_template}
        if spec.image_id:
            request["ImageId"] = spec.image_id
        if spec.subnet_id:
            request["SubnetId"] = spec.subnet_id
        if spec.security_group_ids:
            request["SecurityGroupIds"] = list(spec.security_group_ids)
        if spec.key_name:
            request["KeyName"] = spec.key_name
        if spec.user_data:
            request["UserData"] = spec.user_data
        if spec.spot:
            request["InstanceMarketOptions"] = {"MarketType": "spot", "SpotOptions": {
                "SpotInstanceType": "one-time", "InstanceInterruptionBehavior": "terminate"}}
        if spec.disk_gb:
            request["BlockDeviceMappings"] = [{"DeviceName": "/dev/sda1", "Ebs": {
                "VolumeSize": spec.disk_gb, "VolumeType": "gp3", "DeleteOnTermination": True}}]
        answer = _call(self.client(spec.region).run_instances, **request)
        return [_instance(raw, spec.region) for raw in answer["Instances"]]

    def start(self, region: str, instance_id: str) -> None:
        _call(self.client(region).start_instances, InstanceIds=[instance_id])

    def stop(self, region: str, instance_id: str) -> None:
        _call(self.client(region).stop_instances, InstanceIds=[instance_id])

    def reboot(self, region: str, instance_id: str) -> None:
        _call(self.client(region).reboot_instances, InstanceIds=[instance_id])

    def terminate(self, region: str, instance_id: str) -> None:
        _call(self.client(region).terminate_instances, InstanceIds=[instance_id])


def _call(method: Any, **kwargs: Any) -> Any:
    try:
        return method(**kwargs)
    except ClientError as exc:
        raise FleetError(str(exc), exc.response.get("Error", {}).get("Code", "")) from exc
    except BotoCoreError as exc:
        raise FleetError(str(exc)) from exc


def _iterate(pages: Any) -> Iterator[dict[str, Any]]:
    try:
        yield from pages
    except (ClientError, BotoCoreError) as exc:
        raise FleetError(str(exc)) from exc


def _instance(raw: dict[str, Any], region: str) -> Instance:
    return Instance(
        id=raw["InstanceId"], region=region, state=raw["State"]["Name"],
        instance_type=raw.get("InstanceType", ""),
        private_ip=raw.get("PrivateIpAddress", "") or "",
        public_ip=raw.get("PublicIpAddress", "") or "",
        tags={t["Key"]: t["Value"] for t in raw.get("Tags", [])},
        launched_at=raw.get("LaunchTime"),
        spot=raw.get("InstanceLifecycle") == "spot",
    )


@functools.cache
def fleet_for(regions: tuple[str, ...], attempts: int = 5) -> Fleet:
    return Fleet(list(regions), attempts)
