"""Kernel store on S3 (boto3), so that jobs on many machines share compiled kernels.

Layout under `prefix`: `objects/<kernel_id>.pt2` (artifact), `index/<spec_key>.json` (metadata,
written last and only if absent), `used/<kernel_id>` (touched on load, for tidying), `claims/<spec_key>` (a compile under way,
see `esper.kernels.claims`), and `quarantine/` for objects that failed verification. Credentials come from the standard AWS chain.
"""

from __future__ import annotations

import builtins
import logging
import re
import time
from typing import Any

from esper.contracts import KernelMetadata
from esper.kernels import claims
from esper.kernels.integrity import KernelIntegrityError
from esper.kernels.store import MalformedEntry, StoredKernel, parse_entry, repair_report

log = logging.getLogger(__name__)


class StoreUnavailableError(RuntimeError):
    pass


BUCKET_NAME = re.compile(r"^[a-zA-Z0-9.\-_]{1,255}$|^arn:")
"""What botocore lets through as a bucket: a name, or an ARN (which it checks itself)."""


class S3Store:
    kind = "s3"

    def __init__(
        self,
        bucket: str,
        prefix: str = "esper/kernels",
        region: str | None = None,
        endpoint_url: str | None = None,
        max_attempts: int = 5,
        retry_mode: str = "standard",
        connect_timeout_s: float = 5.0,
        read_timeout_s: float = 30.0,
    ) -> None:
        import boto3
        from botocore.config import Config

        if retry_mode not in ("legacy", "standard", "adaptive"):
            raise ValueError(
                f"storage.retry_mode={retry_mode!r}; allowed: legacy, standard, adaptive"
            )
        if max_attempts < 1:
            raise ValueError(f"storage.max_attempts={max_attempts} must be at least 1")
        if endpoint_url is not None and not re.match(r"https?://[^/\s]+", str(endpoint_url)):
            raise ValueError(  # helper-found: botocore's "Invalid endpoint" said no more
                f"storage.endpoint_url={endpoint_url!r}; allowed: a URL with its scheme, e.g. "
                "http://127.0.0.1:9000 or https://s3.example.com, or null for AWS's own"
            )
        if not isinstance(bucket, str) or not BUCKET_NAME.match(bucket):
            raise ValueError(  # botocore's own said it in three lines with two regexes
                f"storage.bucket={bucket!r}; allowed: 1 to 255 letters, digits, '.', '-' and "
                "'_' (AWS itself: 3 to 63 lowercase), or an access point's ARN"
            )
        self.bucket = bucket
        self.skipped_rows = 0
        self.prefix = prefix.strip("/")
        self.endpoint_url = endpoint_url
        self.client = boto3.client(
            "s3",
            region_name=region,
            endpoint_url=endpoint_url,
            config=Config(
                retries={"total_max_attempts": max_attempts, "mode": retry_mode},
                connect_timeout=connect_timeout_s,
                read_timeout=read_timeout_s,
            ),
        )
        self.check()

    def describe(self) -> str:
        return f"s3://{self.bucket}/{self.prefix} at {self.endpoint_url or 'AWS'}"

    def _where(self) -> str:
        return f"storage.bucket={self.bucket!r} at storage.endpoint_url={self.endpoint_url or 'AWS default'}"

    def check(self) -> None:
        """Fail before training if the bucket cannot be used, saying which and where."""
        from botocore.exceptions import (
            BotoCoreError,
            ClientError,
            EndpointConnectionError,
            NoCredentialsError,
        )

        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code"))
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code in ("404", "NoSuchBucket") or status == 404:
                raise StoreUnavailableError(f"{self._where()}: the bucket does not exist") from None
            if code in ("403", "AccessDenied") or status == 403:
                raise StoreUnavailableError(
                    f"{self._where()}: access denied; credentials come from the AWS chain "
                    "(AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE, instance role)"
                ) from None
            raise StoreUnavailableError(f"{self._where()}: {exc}") from None
        except NoCredentialsError:
            raise StoreUnavailableError(
                f"{self._where()}: no AWS credentials found (set AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY, or AWS_PROFILE)"
            ) from None
        except EndpointConnectionError as exc:
            raise StoreUnavailableError(f"{self._where()}: cannot connect ({exc})") from None
        except BotoCoreError as exc:
            raise StoreUnavailableError(f"{self._where()}: {exc}") from None

    # -- keys ------------------------------------------------------------------------------
    def _key(self, *parts: str) -> str:
        return "/".join([self.prefix, *parts]) if self.prefix else "/".join(parts)

    def _object_key(self, kernel_id: str) -> str:
        return self._key("objects", f"{kernel_id}.pt2")

    def _index_key(self, spec_key: str) -> str:
        return self._key("index", f"{spec_key}.json")

    def _get(self, key: str) -> bytes | None:
        try:
            return self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except self.client.exceptions.NoSuchKey:
            return None

    def _list(self, folder: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self._key(folder) + "/"):
            items.extend(page.get("Contents", []))
        return items

    # -- the store protocol ----------------------------------------------------------------
    def put(self, metadata: KernelMetadata, artifact: bytes) -> bool:
        from botocore.exceptions import ClientError

        self.client.put_object(
            Bucket=self.bucket, Key=self._object_key(metadata.kernel_id), Body=artifact
        )
        try:
            self.client.put_object(
                Bucket=self.bucket,
                Key=self._index_key(metadata.spec_key),
                Body=metadata.model_dump_json().encode(),
                ContentType="application/json",
                IfNoneMatch="*",
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("PreconditionFailed", "412"):
                return False  # another writer indexed this spec first; its kernel stands
            raise
        return True

    def claim(self, spec_key: str) -> bool:
        """An exclusive create of `claims/<spec_key>` (`If-None-Match: *`); a claim older than
        its lease is deleted and tried once more."""
        import json

        from botocore.exceptions import ClientError

        key = self._key("claims", spec_key)
        for _ in range(2):
            try:
                self.client.put_object(
                    Bucket=self.bucket,
                    Key=key,
                    Body=json.dumps(claims.owner()).encode(),
                    IfNoneMatch="*",
                )
                return True
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") not in ("PreconditionFailed", "412"):
                    raise
            try:
                head = self.client.head_object(Bucket=self.bucket, Key=key)
            except ClientError:
                continue  # released meanwhile: try again
            body = self._get(key) or b"null"
            try:
                held: object = json.loads(body)
            except ValueError:
                held = None
            age = time.time() - head["LastModified"].timestamp()
            if not claims.stale(held, age):
                return False
            self.client.delete_object(Bucket=self.bucket, Key=key)
        return False

    def release(self, spec_key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._key("claims", spec_key))

    def find(self, spec_key: str) -> KernelMetadata | None:
        body = self._get(self._index_key(spec_key))
        if body is None:
            return None
        try:
            return parse_entry(body, spec_key)
        except MalformedEntry as exc:
            where = self._move_to_quarantine(self._index_key(spec_key), f"index-{spec_key}.json")
            said = (
                f"index entry {spec_key[:16]} in {self.describe()}: {exc}; quarantined to {where}"
            )
            log.warning(said)  # as the local store's index does (adversarial case B32)
            raise KernelIntegrityError(said) from None

    def get_artifact(self, kernel_id: str) -> bytes:
        body = self._get(self._object_key(kernel_id))
        if body is None:
            raise FileNotFoundError(
                f"kernel {kernel_id[:16]}: indexed in {self.describe()} but its artifact is missing"
            )
        return body

    def touch(self, kernel_id: str) -> None:
        self.client.put_object(
            Bucket=self.bucket, Key=self._key("used", kernel_id), Body=str(time.time()).encode()
        )

    def _spec_key(self, key: str) -> str:
        return key.rsplit("/", 1)[-1].removesuffix(".json")

    def _index_entries(self) -> list[KernelMetadata]:
        """Every well-formed entry; malformed ones are counted in `skipped_rows` (find()
        quarantines one when a run asks for its spec, `tidy --repair` all of them)."""
        entries, skipped = [], 0
        for item in self._list("index"):
            body = self._get(item["Key"])
            if body is not None:
                try:
                    entries.append(parse_entry(body, self._spec_key(item["Key"])))
                except MalformedEntry:
                    skipped += 1
        self.skipped_rows = skipped
        return entries

    def list(self) -> list[StoredKernel]:
        sizes = {i["Key"]: i["Size"] for i in self._list("objects")}
        used = {
            i["Key"].rsplit("/", 1)[-1]: i["LastModified"].timestamp() for i in self._list("used")
        }
        out = []
        for meta in sorted(self._index_entries(), key=lambda m: m.created_at):
            out.append(
                StoredKernel(
                    meta,
                    sizes.get(self._object_key(meta.kernel_id), 0),
                    used.get(meta.kernel_id, meta.created_at),
                )
            )
        return out

    def _move_to_quarantine(self, key: str, name: str) -> str:
        target = self._key("quarantine", f"{name}.{time.time_ns()}")
        try:
            self.client.copy_object(
                Bucket=self.bucket, Key=target, CopySource={"Bucket": self.bucket, "Key": key}
            )
        except self.client.exceptions.NoSuchKey:
            return target
        self.client.delete_object(Bucket=self.bucket, Key=key)
        return f"s3://{self.bucket}/{target}"

    def quarantine(self, kernel_id: str, spec_key: str | None = None) -> str:
        where = self._move_to_quarantine(self._object_key(kernel_id), f"{kernel_id}.pt2")
        keys = (
            [spec_key]
            if spec_key
            else [m.spec_key for m in self._index_entries() if m.kernel_id == kernel_id]
        )
        for key in keys:
            self.client.delete_object(Bucket=self.bucket, Key=self._index_key(key))
        return where

    def quarantined(self) -> builtins.list[str]:
        return [f"s3://{self.bucket}/{i['Key']}" for i in self._list("quarantine")]

    def remove(self, kernel_id: str) -> None:
        for meta in self._index_entries():
            if meta.kernel_id == kernel_id:
                self.client.delete_object(Bucket=self.bucket, Key=self._index_key(meta.spec_key))
        self.client.delete_object(Bucket=self.bucket, Key=self._object_key(kernel_id))
        self.client.delete_object(Bucket=self.bucket, Key=self._key("used", kernel_id))

    def remove_quarantined(self) -> int:
        items = self._list("quarantine")
        for item in items:
            self.client.delete_object(Bucket=self.bucket, Key=item["Key"])
        return len(items)

    def orphans(self, written_before: float) -> builtins.list[str]:
        named = {self._object_key(m.kernel_id) for m in self._index_entries()}
        if self.skipped_rows:  # a malformed entry names some object: none is an orphan yet
            return []
        return sorted(
            f"s3://{self.bucket}/{item['Key']}"
            for item in self._list("objects")
            if item["Key"] not in named and item["LastModified"].timestamp() < written_before
        )

    def remove_orphans(self, names: builtins.list[str]) -> None:
        prefix = f"s3://{self.bucket}/"
        for name in names:
            self.client.delete_object(Bucket=self.bucket, Key=name.removeprefix(prefix))

    def repair(self) -> builtins.list[str]:
        """Quarantine malformed index entries, drop entries whose artifact is gone."""
        objects = {i["Key"] for i in self._list("objects")}
        malformed = missing = total = 0
        for item in self._list("index"):
            body = self._get(item["Key"])
            if body is None:
                continue
            total += 1
            try:
                metadata = parse_entry(body, self._spec_key(item["Key"]))
            except MalformedEntry:
                self._move_to_quarantine(item["Key"], f"index-{self._spec_key(item['Key'])}.json")
                malformed += 1
                continue
            if self._object_key(metadata.kernel_id) not in objects:
                self.client.delete_object(Bucket=self.bucket, Key=item["Key"])
                missing += 1
        if not (malformed or missing):
            return [f"index is sound: {total} entries in {self.describe()}"]
        return repair_report(malformed, missing)
