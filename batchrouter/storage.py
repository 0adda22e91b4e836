"""Where bytes live: a small interface with a filesystem implementation here and an
S3-compatible one in storage_s3.py; `make_storage` picks one from the configuration."""
from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Iterable
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO


class FilesystemStorage:
    """Keys are relative paths under `root`; writes go to a temp file and are renamed."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if not str(path).startswith(str(self.root.resolve()) + os.sep):
            raise ValueError("storage key escapes the root")
        return path

    def write_chunks(self, key: str, chunks: Iterable[bytes]) -> tuple[int, str]:
        """Store chunks under key; returns (bytes, sha256) computed on the way."""
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".part")
        digest, size = hashlib.sha256(), 0
        with open(tmp, "wb") as fh:
            for chunk in chunks:
                digest.update(chunk)
                size += len(chunk)
                fh.write(chunk)
        os.replace(tmp, path)
        return size, digest.hexdigest()

    @contextmanager
    def open_write(self, key: str):
        """A file handle whose content appears under key only when the block succeeds."""
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".part")
        try:
            with open(tmp, "wb") as fh:
                yield fh
            os.replace(tmp, path)
        finally:
            if tmp.exists():
                tmp.unlink()

    def write_stream(self, key: str, stream: BinaryIO, chunk_size: int = 1 << 20):
        return self.write_chunks(key, iter(lambda: stream.read(chunk_size), b""))

    def open(self, key: str) -> BinaryIO:
        return open(self._path(key), "rb")

    def delete(self, key: str) -> None:
        try:
            self._path(key).unlink()
        except FileNotFoundError:
            pass

    def exists(self, key: str) -> bool:
        return self._path(key).exists()

    def clear(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def make_storage(config: dict):
    """S3Storage when BATCHROUTER_STORAGE_URL is s3://bucket/prefix, else the filesystem."""
    url = config.get("BATCHROUTER_STORAGE_URL")
    if url:
        from batchrouter.storage_s3 import S3Storage

        return S3Storage(url, endpoint_url=config.get("BATCHROUTER_S3_ENDPOINT_URL"))
    return FilesystemStorage(config["BATCHROUTER_STORAGE_ROOT"])
