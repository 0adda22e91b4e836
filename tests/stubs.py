"""A small kit for loopback HTTP stub servers standing in for external services.

    stub = StubServer()
    stub.route("POST", "/emails", lambda req: (200, {"id": "re_1"}))
    stub.start()            # stub.url == "http://127.0.0.1:<port>"
    ...                     # point an SDK at stub.url
    stub.requests           # every request received: method, path, headers, body, json

A handler may answer bytes (sent verbatim: JSONL files, truncated bodies) or RESET (the
connection is dropped without an answer).
"""
from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict
    body: bytes
    query: str = ""

    @property
    def json(self):
        return json.loads(self.body or b"null")


RESET = object()


@dataclass
class StubServer:
    host: str = "127.0.0.1"
    routes: dict = field(default_factory=dict)
    requests: list = field(default_factory=list)

    def route(self, method: str, path: str, handler) -> None:
        """handler(Recorded) -> (status, json_body or bytes[, headers]) or a list of them to
        play in turn. A path ending in `*` matches every path with that prefix."""
        self.routes[(method.upper(), path)] = handler

    def start(self) -> StubServer:
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _handle(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                path, _, query = self.path.partition("?")
                rec = Recorded(self.command, path, {k.lower(): v for k, v in self.headers.items()},
                               body, query)
                stub.requests.append(rec)
                handler = stub.routes.get((self.command, path)) or next(
                    (h for (m, p), h in stub.routes.items() if m == self.command
                     and p.endswith("*") and path.startswith(p[:-1])), None)
                if handler is None:
                    status, payload, headers = 404, {"error": "no stub route"}, {}
                else:
                    if isinstance(handler, list):
                        result = handler.pop(0) if len(handler) > 1 else handler[0]
                        result = result(rec) if callable(result) else result
                    else:
                        result = handler(rec)
                    if result is RESET:
                        self.close_connection = True
                        self.connection.shutdown(2)
                        return
                    status, payload = result[0], result[1]
                    headers = result[2] if len(result) > 2 else {}
                # bytes are sent as they are (an HTML page, a JSONL file, a truncated body)
                raw = isinstance(payload, bytes)
                data = payload if raw else json.dumps(payload).encode()
                self.send_response(status)
                if "Content-Type" not in headers:
                    self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in headers.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

        self.server = ThreadingHTTPServer((self.host, 0), Handler)
        self.url = f"http://{self.host}:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def received(self, method: str, path: str) -> list[Recorded]:
        return [r for r in self.requests if r.method == method and r.path == path]
