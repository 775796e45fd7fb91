"""A real S3 HTTP endpoint for tests: moto's server on loopback.

Use the fixtures by importing them into a test module (or conftest)::

    from sf_activation_tests.support.s3 import s3_server, s3_url  # noqa: F401

``s3_url`` yields ``s3://<bucket>/<unique prefix>`` for one test; the endpoint, fake
credentials and region are in the environment (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, …)
for the whole session, so boto3 and pyarrow's S3 client both reach moto.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

BUCKET = "sf-activation-test"


@dataclass(frozen=True)
class S3Server:
    endpoint_url: str
    bucket: str

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}"

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint_url, region_name="us-east-1")

    def keys(self, prefix: str = "") -> list[str]:
        """Every object key under ``prefix`` in the test bucket."""
        paginator = self.client().get_paginator("list_objects_v2")
        out: list[str] = []
        for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
            out += [o["Key"] for o in page.get("Contents", [])]
        return out


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """moto's S3 server on 127.0.0.1 (any free port) with one bucket, for the session."""
    from moto.server import ThreadedMotoServer

    # moto's werkzeug logs every request at INFO; pytest would print them all on failure.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    mp = pytest.MonkeyPatch()
    env = {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": "us-east-1",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    for name, value in env.items():
        mp.setenv(name, value)
    # Real credentials or profiles on a developer's machine must not leak into tests.
    for name in ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_ENDPOINT_URL_S3"):
        mp.delenv(name, raising=False)
    handle = S3Server(endpoint_url=endpoint, bucket=BUCKET)
    try:
        handle.client().create_bucket(Bucket=BUCKET)
        yield handle
    finally:
        mp.undo()
        server.stop()


@pytest.fixture
def s3_url(s3_server: S3Server) -> str:
    """``s3://bucket/<unique prefix>``: a fresh place for one test."""
    return f"{s3_server.url}/t-{uuid.uuid4().hex[:12]}"
