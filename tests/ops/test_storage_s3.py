"""Manifests, summaries and artifacts on an S3-compatible store (moto's S3 server on loopback,
reached through boto3 exactly as a MinIO or AWS bucket would be)."""
import json

import boto3
import pytest

from tests.conftest import free_port
from tests.factories import bearer, make_key, make_user
from tests.quote.helpers import upload_multipart

BUCKET = "br-artifacts"


@pytest.fixture(scope="module")
def s3_endpoint():
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def s3(s3_endpoint, monkeypatch):
    for name, value in (("AWS_ACCESS_KEY_ID", "test"), ("AWS_SECRET_ACCESS_KEY", "test"),
                        ("AWS_DEFAULT_REGION", "us-east-1")):
        monkeypatch.setenv(name, value)
    client = boto3.client("s3", endpoint_url=s3_endpoint)
    client.create_bucket(Bucket=BUCKET)
    yield client
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET):
        for obj in page.get("Contents", []):
            client.delete_object(Bucket=BUCKET, Key=obj["Key"])
    client.delete_bucket(Bucket=BUCKET)


@pytest.fixture
def app_overrides(s3, s3_endpoint, tmp_path):
    return {"BATCHROUTER_STORAGE_URL": f"s3://{BUCKET}/prod", "BATCHROUTER_S3_ENDPOINT_URL":
            s3_endpoint, "BATCHROUTER_STORAGE_ROOT": str(tmp_path / "local"),
            "BATCHROUTER_SANDBOX_BATCH_DELAY": 0.0, "BATCHROUTER_POLL_INTERVAL": 0.0}


def manifest(n: int) -> bytes:
    return b"".join(json.dumps({"customer_item_id": f"s3-{i}", "operation": "responses",
                                "model": "sandbox-chat", "input": {"messages": [
                                    {"role": "user", "content": f"Question {i}?"}]}}).encode()
                    + b"\n" for i in range(n))


def test_a_file_batch_runs_with_every_byte_in_the_bucket(client, session, seeded_catalog,
                                                         worker, s3, tmp_path):
    _key, secret = make_key(session, make_user(session))
    uploaded = upload_multipart(client, secret, manifest(12))
    assert uploaded.status_code == 201, uploaded.get_json()
    file_id = uploaded.get_json()["id"]
    quote = client.post("/v1/quotes/model", json={"input_file_id": file_id},
                        headers=bearer(secret))
    assert quote.status_code == 201, quote.get_json()
    created = client.post("/v1/batches", json={"quote_id": quote.get_json()["id"]},
                          headers=bearer(secret))
    assert created.status_code == 201, created.get_json()
    worker()
    batch_id = created.get_json()["id"]
    body = client.get(f"/v1/batches/{batch_id}", headers=bearer(secret)).get_json()
    assert body["status"] == "completed" and body["counts"]["succeeded"] == 12
    urls = client.get(f"/v1/batches/{batch_id}/artifact-url", headers=bearer(secret)).get_json()
    download = client.get(urls["results"]["url"].split("5000", 1)[1])
    lines = [json.loads(line) for line in download.data.decode().splitlines()]
    assert [line["customer_item_id"] for line in lines] == [f"s3-{i}" for i in range(12)]
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET)["Contents"]]
    assert all(k.startswith("prod/") for k in keys)
    assert len(keys) >= 4  # manifest, its item summaries, results and errors artifacts
    # None of those objects was written to the local storage root (the sandbox provider may
    # keep its own simulated-batch state there).
    local = {p.name for p in (tmp_path / "local").rglob("*") if p.is_file()}
    assert not local & {k.rsplit("/", 1)[-1] for k in keys}


def test_storage_keys_cannot_escape_the_prefix(app):
    storage = app.extensions["batchrouter"].storage
    with pytest.raises(ValueError):
        storage.open("../other/secret")
    with pytest.raises(FileNotFoundError):
        storage.open("missing/key")
    size, _digest = storage.write_chunks("a/b.txt", [b"hello ", b"world"])
    assert size == 11 and storage.exists("a/b.txt")
    with storage.open("a/b.txt") as fh:
        assert fh.read() == b"hello world"
    storage.delete("a/b.txt")
    assert not storage.exists("a/b.txt")
