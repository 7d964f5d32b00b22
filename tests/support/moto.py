"""moto's EC2 server over HTTP: the AWS the lifecycle tests talk to."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import boto3
import httpx

from simnode.testing import free_port

__all__ = ["MotoServer", "moto_server"]


class MotoServer:
    def __init__(self, url: str) -> None:
        self.url = url
        self.env = {"AWS_ENDPOINT_URL": url, "AWS_ACCESS_KEY_ID": "testing",
                    "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}

    def ec2(self, region: str = "us-east-1"):
        return boto3.client("ec2", region_name=region, endpoint_url=self.url,
                            aws_access_key_id="testing", aws_secret_access_key="testing")

    def reset(self) -> None:
        httpx.post(self.url + "/moto-api/reset").raise_for_status()

    def image(self) -> str:
        return self.ec2().describe_images(Owners=["amazon"])["Images"][0]["ImageId"]

    def state(self, instance_id: str) -> str:
        answer = self.ec2().describe_instances(InstanceIds=[instance_id])
        return answer["Reservations"][0]["Instances"][0]["State"]["Name"]

    def run_node(self, model: str, instance_type: str = "g5.xlarge", *,
                 stopped: bool = False) -> str:
        """An instance tagged as a node of ``model``, made behind the portal's back."""
        answer = self.ec2().run_instances(
            ImageId=self.image(), MinCount=1, MaxCount=1, InstanceType=instance_type,
            TagSpecifications=[{"ResourceType": "instance", "Tags": [
                {"Key": "role", "Value": "vllm_node"}, {"Key": "model", "Value": model},
                {"Key": "Name", "Value": f"test-{model}"}]}])
        instance_id = answer["Instances"][0]["InstanceId"]
        if stopped:
            self.ec2().stop_instances(InstanceIds=[instance_id])
        return instance_id


@contextmanager
def moto_server() -> Iterator[MotoServer]:
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "moto.server", "-p", str(port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env={**os.environ})
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            httpx.get(url + "/moto-api/", timeout=1)
            break
        except httpx.TransportError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("moto server did not start") from None
            time.sleep(0.1)
    try:
        yield MotoServer(url)
    finally:
        process.terminate()
        process.wait(10)
