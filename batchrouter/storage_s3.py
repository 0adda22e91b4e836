"""The storage interface over an S3-compatible object store (AWS S3, MinIO, Ceph, R2…).

Selected with BATCHROUTER_STORAGE_URL=s3://bucket/prefix; credentials and region come from
the usual AWS variables (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION) and
BATCHROUTER_S3_ENDPOINT_URL points at a non-AWS store. Objects appear only once written
completely (S3 uploads are atomic), so readers never see half a manifest or artifact.
"""
from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Iterable
from contextlib import contextmanager
from typing import BinaryIO
from urllib.parse import urlparse

SPOOL = 8 << 20  # bytes kept in memory before a write or read spills to a temp file


class S3Storage:
    def __init__(self, url: str, *, endpoint_url: str | None = None, client=None):
        parsed = urlparse(url)
        if parsed.scheme != "s3" or not parsed.netloc:
            raise ValueError("BATCHROUTER_STORAGE_URL must look like s3://bucket/prefix")
        self.bucket = parsed.netloc
        self.prefix = parsed.path.strip("/")
        if client is None:
            import boto3

            client = boto3.client("s3", endpoint_url=endpoint_url or None)
        self.client = client

    def _key(self, key: str) -> str:
        if key.startswith("/") or ".." in key.split("/"):
            raise ValueError("storage key escapes the root")
        return f"{self.prefix}/{key}" if self.prefix else key

    def write_chunks(self, key: str, chunks: Iterable[bytes]) -> tuple[int, str]:
        """Store chunks under key; returns (bytes, sha256) computed on the way."""
        digest, size = hashlib.sha256(), 0
        with self.open_write(key) as fh:
            for chunk in chunks:
                digest.update(chunk)
                size += len(chunk)
                fh.write(chunk)
        return size, digest.hexdigest()

    @contextmanager
    def open_write(self, key: str):
        """A file handle whose content is uploaded under key only when the block succeeds."""
        with tempfile.SpooledTemporaryFile(max_size=SPOOL) as spool:
            yield spool
            spool.seek(0)
            # upload_fileobj switches to a multipart upload for large bodies by itself.
            self.client.upload_fileobj(spool, self.bucket, self._key(key))

    def write_stream(self, key: str, stream: BinaryIO, chunk_size: int = 1 << 20):
        return self.write_chunks(key, iter(lambda: stream.read(chunk_size), b""))

    def open(self, key: str) -> BinaryIO:
        """A seekable, line-iterable local copy (callers read manifests line by line)."""
        # The caller closes it (a `with` block or the download response's close hook).
        spool = tempfile.SpooledTemporaryFile(max_size=SPOOL)  # noqa: SIM115
        try:
            self.client.download_fileobj(self.bucket, self._key(key), spool)
        except self.client.exceptions.ClientError as exc:
            spool.close()
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey"):
                raise FileNotFoundError(key) from exc
            raise
        spool.seek(0)
        return spool

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._key(key))

    def exists(self, key: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(key))
            return True
        except self.client.exceptions.ClientError:
            return False

    def clear(self) -> None:
        """Delete every object under the prefix (tests and `make clean` only)."""
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix):
            keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
            if keys:
                self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": keys})
