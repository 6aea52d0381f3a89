"""A real S3 endpoint over HTTP on 127.0.0.1 (moto's server), and a proxy that injects faults."""

from __future__ import annotations

import http.client
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import boto3

CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def start_moto() -> tuple[object, str]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    return server, f"http://{host}:{port}"


def new_bucket(endpoint: str) -> str:
    name = f"esper-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket=name)
    return name


class FaultProxy:
    """Forwards HTTP to `target`, answering the next N matching requests with a fault instead."""

    def __init__(self, target: str) -> None:
        self.target = urlsplit(target)
        self.requests: list[tuple[str, str]] = []
        self._faults: list[tuple[int, str, str]] = []  # (status, code, path substring)
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                return None

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                with proxy._lock:
                    proxy.requests.append((self.command, self.path))
                    fault = next((f for f in proxy._faults if f[2] in self.path), None)
                    if fault is not None:
                        proxy._faults.remove(fault)
                if fault is not None:
                    status, code, _ = fault
                    payload = (
                        f"<?xml version='1.0' encoding='UTF-8'?><Error><Code>{code}</Code>"
                        f"<Message>injected</Message></Error>"
                    ).encode()
                    self.send_response(status)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(payload)
                    return
                conn = http.client.HTTPConnection(proxy.target.hostname, proxy.target.port)
                headers = {k: v for k, v in self.headers.items()}
                conn.request(self.command, self.path, body=body, headers=headers)
                answer = conn.getresponse()
                data = answer.read()
                self.send_response(answer.status)
                for key, value in answer.getheaders():
                    if key.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                conn.close()

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def fail_next(
        self, count: int, status: int = 503, code: str = "SlowDown", path: str = ""
    ) -> None:
        with self._lock:
            self._faults.extend([(status, code, path)] * count)

    def count(self, path: str) -> int:
        with self._lock:
            return sum(path in p for _, p in self.requests)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def racing_put(endpoint: str, bucket: str, metadata_json: str, artifact: bytes, rounds: int) -> int:
    """Writes the same kernel `rounds` times (run in two processes at once); returns index wins."""
    from esper.contracts import KernelMetadata
    from esper.kernels import S3Store

    store = S3Store(bucket, endpoint_url=endpoint, region="us-east-1")
    metadata = KernelMetadata.model_validate_json(metadata_json)
    return sum(store.put(metadata, artifact) for _ in range(rounds))


def iter_keys(endpoint: str, bucket: str) -> Iterator[str]:
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for item in page.get("Contents", []):
            yield item["Key"]
