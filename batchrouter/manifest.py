"""Manifest parsing and preflight (SPEC §3): streaming, line-level errors, no reservation.

A manifest is JSONL (one item a line) in either the native shape or OpenAI's Batch line shape.
`Preflight` takes lines one at a time, so memory does not grow with the file beyond the
duplicate-id set (and the item summaries, when the caller keeps them for a quote). msgspec
decodes each line into typed structs, which checks most of the shape in C.
"""
from __future__ import annotations

import gc
import hashlib
import struct
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Annotated, Any

import msgspec
from msgspec import UNSET, Meta, Struct, UnsetType

OPENAI_URLS = {"/v1/chat/completions": "responses", "/v1/responses": "responses",
               "/v1/embeddings": "embeddings"}
OPERATIONS = ("responses", "embeddings", "vision")
MAX_ID_LEN = 128
MAX_METADATA_PAIRS = 16
ERROR_CAP = 1000
SINK_BATCH = 10_000


# --- wire shapes (decoded by msgspec; unknown fields are ignored) ------------------------

class Message(Struct, gc=False):
    role: str
    content: str | list[dict] | None = None
    tool_calls: list[dict] | UnsetType = UNSET
    tool_call_id: str | UnsetType = UNSET


class Body(Struct, gc=False):
    """A body as OpenAI's endpoints take it, and the `input` of a native item."""

    model: str | UnsetType = UNSET
    messages: list[Message] | UnsetType = UNSET
    input: str | list[Any] | UnsetType = UNSET
    instructions: str | UnsetType = UNSET
    max_output_tokens: int | UnsetType = UNSET
    max_tokens: int | UnsetType = UNSET
    max_completion_tokens: int | UnsetType = UNSET
    temperature: float | UnsetType = UNSET
    response_format: dict | UnsetType = UNSET
    text: dict | UnsetType = UNSET
    tools: list[dict] | UnsetType = UNSET


MetaKey = Annotated[str, Meta(max_length=64)]
MetaValue = Annotated[str, Meta(max_length=512)]
# Checked by msgspec while decoding: at most 16 pairs of short strings.
Metadata = Annotated[dict[MetaKey, MetaValue], Meta(max_length=MAX_METADATA_PAIRS)]


class Line(Struct, gc=False):
    """Every field either shape may carry."""

    customer_item_id: Any = UNSET
    operation: Any = UNSET
    model: Any = UNSET
    models: Any = UNSET
    input: Body | UnsetType = UNSET
    metadata: Metadata | UnsetType = UNSET
    custom_id: Any = UNSET
    method: Any = UNSET
    url: Any = UNSET
    body: Body | UnsetType = UNSET


_DECODER = msgspec.json.Decoder(Line)


# --- results -------------------------------------------------------------------------------

class ItemSummary(Struct, array_like=True, gc=False):
    """What quoting needs of an item (kept compact: 100k of these must stay small)."""

    line: int
    customer_item_id: str
    operation: str
    models: tuple
    input_chars: int
    messages: int
    images: int
    max_output_tokens: int | None
    needs: tuple  # features: tools, structured_output, vision


@dataclass
class Problem:
    line: int | None
    code: str
    message: str
    customer_item_id: str | None = None

    def to_json(self) -> dict:
        return {"line": self.line, "customer_item_id": self.customer_item_id,
                "code": self.code, "message": self.message}


@dataclass(frozen=True)
class Limits:
    max_items: int = 200_000
    max_bytes: int = 512 * 1024 * 1024
    max_line_bytes: int = 2 * 1024 * 1024


@dataclass
class Report:
    item_count: int
    bytes: int
    sha256: str
    errors: list[Problem]
    error_count: int
    items: list[ItemSummary] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.error_count == 0

    def to_json(self) -> dict:
        return {"ok": self.ok, "item_count": self.item_count, "bytes": self.bytes,
                "sha256": self.sha256, "error_count": self.error_count,
                "errors": [p.to_json() for p in self.errors],
                "errors_truncated": self.error_count > len(self.errors)}


class PreflightFailed(Exception):
    """Raised by callers that need a clean manifest; carries the report."""

    def __init__(self, report: Report):
        super().__init__(f"{report.error_count} preflight problem(s)")
        self.report = report


# --- the scanner ---------------------------------------------------------------------------

class Preflight:
    """Feed raw lines (bytes, with or without their newline); then `finish()`."""

    def __init__(self, models: dict[str, tuple], limits: Limits, *, keep_items: bool = True,
                 hash_lines: bool = True, sink=None):
        # models: slug -> operations tuple (the catalog, read once by the caller)
        self.models = models
        self.limits = limits
        self.keep_items = keep_items
        # Callers that read in chunks hash the chunks themselves (cheaper than per line).
        self.sha = hashlib.sha256() if hash_lines else None
        self.bytes = 0
        self.line_no = 0
        self.count = 0
        self.errors: list[Problem] = []
        self.error_count = 0
        self.items: list[ItemSummary] = []
        self.seen: set[str] = set()
        self._pending_blank: list[int] = []
        self._too_many = False
        self._max_items = limits.max_items
        self._max_line = limits.max_line_bytes
        # sink(list of summaries), called every SINK_BATCH items: summaries leave memory as
        # they are made (uploads store them beside the file for the quote).
        self._sink = sink
        self._batch: list[ItemSummary] = []

    def problem(self, code: str, message: str, line: int | None = None,
                item_id: str | None = None) -> None:
        self.error_count += 1
        if len(self.errors) < ERROR_CAP:
            self.errors.append(Problem(line, code, message, item_id))

    def feed(self, raw: bytes) -> None:
        if self.sha is not None:
            self.sha.update(raw)
        self.bytes += len(raw)
        self.line_no += 1
        line = raw[:-1] if raw[-1:] == b"\n" else raw
        if line[-1:] == b"\r":
            line = line[:-1]
        if self.line_no == 1 and line.startswith(b"\xef\xbb\xbf"):
            line = line[3:]  # a UTF-8 BOM is tolerated
        if line[:1] != b"{" and not line.strip():
            self._pending_blank.append(self.line_no)
            return
        if self._pending_blank:  # blank lines are errors only *inside* the file
            for blank in self._pending_blank:
                self.problem("blank_line", "Blank line inside the manifest.", blank)
            self._pending_blank.clear()
        self.count += 1
        if self.count > self._max_items:
            if not self._too_many:
                self._too_many = True
                self.problem("too_many_items", f"The manifest has more than "
                             f"{self.limits.max_items:,} items.", self.line_no)
            return
        self._check_line(line)

    def _check_line(self, line: bytes) -> None:
        n = self.line_no
        if len(line) > self._max_line:
            self.problem("line_too_large", f"The line is {len(line):,} bytes; the limit per "
                         f"item is {self._max_line:,}.", n)
            return
        if b"\x00" in line:
            self.problem("nul_byte", "The line contains a NUL byte.", n)
            return
        try:
            decoded = _DECODER.decode(line)
        except msgspec.ValidationError as exc:
            where = str(exc).rsplit("at `", 1)[-1]
            if where.startswith("$.metadata"):
                self.problem("invalid_metadata", f"metadata must be an object of at most "
                             f"{MAX_METADATA_PAIRS} string pairs ({exc}).", n)
                return
            code = "invalid_input" if where.startswith(("$.input", "$.body")) else "invalid_item"
            self.problem(code, f"The item has the wrong shape: {exc}.", n)
            return
        except UnicodeDecodeError:  # msgspec raises this for bad UTF-8 inside a string
            self.problem("invalid_utf8", "The line is not valid UTF-8.", n)
            return
        except msgspec.DecodeError as exc:
            try:
                line.decode("utf-8")
            except UnicodeDecodeError:
                self.problem("invalid_utf8", "The line is not valid UTF-8.", n)
                return
            self.problem("invalid_json", f"Invalid JSON: {exc}.", n)
            return
        if decoded.custom_id is not UNSET or decoded.url is not UNSET or \
                decoded.body is not UNSET:
            summary = self._openai_line(decoded, n)
        else:
            summary = self._native_line(decoded, n)
        if summary is None:
            return
        if self.keep_items:
            self.items.append(summary)
        if self._sink is not None:
            self._batch.append(summary)
            if len(self._batch) >= SINK_BATCH:
                self._sink(self._batch)
                self._batch = []

    def _item_id(self, value, n: int) -> str | None:
        if type(value) is str and 0 < len(value) <= MAX_ID_LEN and value not in self.seen:
            self.seen.add(value)  # the common case, checked first
            return value
        if value is UNSET or value is None or value == "":
            self.problem("missing_customer_item_id", "Every item needs a customer_item_id "
                         "(custom_id for OpenAI lines).", n)
            return None
        if not isinstance(value, str) or len(value) > MAX_ID_LEN:
            self.problem("invalid_customer_item_id", f"customer_item_id must be a string of "
                         f"1–{MAX_ID_LEN} characters.", n)
            return None
        if value in self.seen:
            self.problem("duplicate_customer_item_id", f"Duplicate customer_item_id "
                         f"{value[:64]!r}.", n, value)
            return None
        self.seen.add(value)
        return value

    def _openai_line(self, item: Line, n: int) -> ItemSummary | None:
        item_id = self._item_id(item.custom_id, n)
        if item_id is None:
            return None
        if item.method != "POST":
            self.problem("invalid_method", "OpenAI batch lines must use method POST.", n, item_id)
            return None
        operation = OPENAI_URLS.get(item.url) if isinstance(item.url, str) else None
        if operation is None:
            self.problem("unsupported_url", f"url must be one of {', '.join(OPENAI_URLS)}.",
                         n, item_id)
            return None
        body = item.body
        if body is UNSET or not isinstance(body.model, str):
            self.problem("invalid_input", "body.model is required.", n, item_id)
            return None
        return self._finish_item(n, item_id, operation, (body.model,), body, item.url)

    def _native_line(self, item: Line, n: int) -> ItemSummary | None:
        item_id = self._item_id(item.customer_item_id, n)
        if item_id is None:
            return None
        if item.operation not in OPERATIONS:
            self.problem("unknown_operation", f"operation must be one of "
                         f"{', '.join(OPERATIONS)}.", n, item_id)
            return None
        models = self._native_models(item, n, item_id)
        if models is None:
            return None
        if item.input is UNSET:
            self.problem("invalid_input", "input is required.", n, item_id)
            return None
        return self._finish_item(n, item_id, item.operation, models, item.input, None)

    def _native_models(self, item: Line, n: int, item_id: str) -> tuple | None:
        if item.models is not UNSET:
            models = item.models
            if not isinstance(models, list) or not models or \
                    not all(isinstance(m, str) for m in models):
                self.problem("invalid_item", "models must be a non-empty list of model slugs.",
                             n, item_id)
                return None
            return tuple(dict.fromkeys(models))  # keep order, drop repeats
        if isinstance(item.model, str):
            return (item.model,)
        self.problem("invalid_item", "Give model (a slug) or models (a list of slugs).", n,
                     item_id)
        return None

    def _finish_item(self, n, item_id, operation, models, body: Body, url) -> ItemSummary | None:
        known = self.models
        for model in models:
            if model not in known:
                self.problem("unknown_model", f"Unknown model {model[:80]!r}; see "
                             "GET /v1/catalog/models.", n, item_id)
                return None
        shape = _input_shape(operation, body, url)
        if isinstance(shape, str):
            self.problem("invalid_input", shape, n, item_id)
            return None
        chars, messages, images, needs = shape
        if images and operation == "responses":
            operation = "vision"
        # With several acceptable models, one that supports the operation is enough; lanes of
        # the others are rejected later with operation_unsupported.
        for model in models:
            if operation in known[model]:
                break
        else:
            self.problem("model_operation_mismatch", f"No model listed supports {operation}: "
                         f"{', '.join(models)}.", n, item_id)
            return None
        cap = _output_cap(body)
        if cap is not None and cap <= 0:
            self.problem("invalid_input", "max_output_tokens must be positive.", n, item_id)
            return None
        return ItemSummary(n, item_id, operation, models, chars, messages, images, cap, needs)

    def finish(self, *, declared_count: int | None = None, declared_sha256: str | None = None,
               digest: str | None = None) -> Report:
        if self._sink is not None and self._batch:
            self._sink(self._batch)
            self._batch = []
        digest = digest or self.sha.hexdigest()
        if self.bytes > self.limits.max_bytes:
            self.problem("manifest_too_large", f"The manifest is {self.bytes:,} bytes; the "
                         f"limit is {self.limits.max_bytes:,}.")
        if self.count == 0 and self.error_count == 0:
            self.problem("empty_manifest", "The manifest has no items.")
        if declared_count is not None and declared_count != self.count:
            self.problem("item_count_mismatch", f"x-batchrouter-item-count says "
                         f"{declared_count} but the manifest has {self.count} items.")
        if declared_sha256 is not None and declared_sha256.lower() != digest:
            self.problem("content_sha256_mismatch", "x-content-sha256 does not match the "
                         "manifest's SHA-256.")
        return Report(self.count, self.bytes, digest, self.errors, self.error_count,
                      self.items)


def _output_cap(body: Body) -> int | None:
    for value in (body.max_output_tokens, body.max_completion_tokens, body.max_tokens):
        if value is not UNSET:
            return value
    return None


def _content_size(content) -> tuple[int, int] | str:
    """Characters and images of a message content (a string or a list of parts)."""
    if content is None:
        return 0, 0
    if isinstance(content, str):
        return len(content), 0
    chars = images = 0
    for part in content:
        kind = part.get("type")
        if kind in ("text", "input_text", "output_text") and isinstance(part.get("text"), str):
            chars += len(part["text"])
        elif kind in ("image_url", "input_image", "image"):
            images += 1
        else:
            return f"Unsupported content part type {str(kind)[:40]!r}."
    return chars, images


def _input_shape(operation: str, body: Body, url) -> tuple | str:
    """(chars, messages, images, needed features) or an error message."""
    if operation == "embeddings":
        value = body.input
        if isinstance(value, str) and value:
            return len(value), 0, 0, ()
        if isinstance(value, list) and value and all(isinstance(v, str) and v for v in value):
            return sum(map(len, value)), 0, 0, ()
        return "Embeddings input must be a non-empty string or list of strings."
    needs = []
    if body.tools:  # UNSET is falsy
        needs.append("tools")
    if body.response_format is not UNSET or (body.text is not UNSET and "format" in body.text):
        needs.append("structured_output")
    chars = images = messages = 0
    if body.messages is not UNSET:
        if not body.messages:
            return "messages must not be empty."
        for message in body.messages:
            content = message.content
            if type(content) is str:  # the common case, without a call
                chars += len(content)
                continue
            size = _content_size(content)
            if isinstance(size, str):
                return size
            chars += size[0]
            images += size[1]
        messages = len(body.messages)
    elif url == "/v1/responses" and isinstance(body.input, str) and body.input:
        chars, messages = len(body.input), 1
    elif url == "/v1/responses" and isinstance(body.input, list) and body.input:
        for entry in body.input:
            if not isinstance(entry, dict):
                return "input items must be objects."
            size = _content_size(entry.get("content"))
            if isinstance(size, str):
                return size
            chars, images, messages = chars + size[0], images + size[1], messages + 1
    else:
        return "input.messages must be a non-empty list of {role, content} messages."
    if body.instructions is not UNSET:
        chars += len(body.instructions)
    if images:
        needs.append("vision")
    return chars, messages, images, tuple(needs)


# --- entry points --------------------------------------------------------------------------

@contextmanager
def gc_paused():
    """Pause the cyclic GC: scanning allocates many short-lived objects and no cycles, and
    collections over a growing heap cost about a third of the scan."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def split_lines(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """Lines (with their newlines) of a sequence of byte chunks."""
    rest = b""
    for chunk in chunks:
        rest += chunk
        lines = rest.split(b"\n")
        rest = lines.pop()
        for line in lines:
            yield line + b"\n"
    if rest:
        yield rest


def iter_lines(stream, chunk_size: int = 1 << 20, sha=None) -> Iterator[bytes]:
    """Lines of a binary stream with their newlines, reading in chunks (bounded memory);
    `sha`, when given, is updated with every chunk."""
    def chunks():
        for chunk in iter(lambda: stream.read(chunk_size), b""):
            if sha is not None:
                sha.update(chunk)
            yield chunk
    return split_lines(chunks())


def scan(lines: Iterable[bytes], models: dict[str, tuple], limits: Limits, *,
         keep_items: bool = True, declared_count: int | None = None,
         declared_sha256: str | None = None, sha=None) -> Report:
    """Preflight every line and return the report (items kept when asked).

    `sha`: a hashlib object the line source already feeds (see iter_lines); else each line is
    hashed here."""
    checker = Preflight(models, limits, keep_items=keep_items, hash_lines=sha is None)
    feed = checker.feed
    with gc_paused():
        for line in lines:
            feed(line)
    return checker.finish(declared_count=declared_count, declared_sha256=declared_sha256,
                          digest=sha.hexdigest() if sha is not None else None)


_FRAME = struct.Struct(">I")
_SUMMARIES = msgspec.msgpack.Decoder(list[ItemSummary])


def write_summary_frame(fh, summaries: list) -> None:
    """Append one length-prefixed msgpack frame of item summaries."""
    data = msgspec.msgpack.encode(summaries)
    fh.write(_FRAME.pack(len(data)))
    fh.write(data)


def read_summaries(fh) -> list[ItemSummary]:
    """Every summary written by write_summary_frame, in order."""
    items: list[ItemSummary] = []
    with gc_paused():
        while header := fh.read(_FRAME.size):
            (size,) = _FRAME.unpack(header)
            items.extend(_SUMMARIES.decode(fh.read(size)))
    return items


def encode_items(items: list) -> Iterator[bytes]:
    """Inline items as canonical JSONL lines (the manifest hash of an inline manifest)."""
    encoder = msgspec.json.Encoder()
    for item in items:
        yield encoder.encode(item) + b"\n"
